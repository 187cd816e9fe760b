"""Guided attention for monotonic alignments on FSDD: an attention-based recognizer with and
without guidance, tested on utterances longer than any seen in training.

Model: :class:`graphattn.models.guided.AttentionRecognizer` -- the graphattn Encoder
(``local(window=8)`` self-attention, rotary positions, a convolutional input layer) over
log-mel frames (40 bands + deltas + delta-deltas, CMVN per utterance; 3 frames stacked into one
30 ms vector), an LSTM decoder over characters with additive attention to the encoder states.
Variants (each trained from scratch, same seed, same data order):

* ``content``: content-only additive attention, cross-entropy only (the unguided baseline).
* ``location``: location-aware attention (Chorowski et al. 2015), cross-entropy only.
* ``guided``: location-aware attention + the diagonal guide loss (Tachibana et al. 2017,
  ``g = 0.2``, weight ``--guide-weight``).

Every model is then decoded greedily twice: over every frame, and with the monotonic window
(``--window back ahead``: each step attends only around the previous alignment's peak; a sparse
attention pattern of graphattn.nn.guided.monotonic_window_graph).

Data (official split): training examples are 1 or 2 training utterances (takes 10-49) read one
after the other (features concatenated, words joined by a space: "seven two"), drawn afresh each
epoch; validation (half of takes 5-9: singles and fixed pairs) picks the best epoch by greedy CER. Test:
the 300 test utterances (takes 0-4) alone, and fixed random concatenations of 2, 3 and 4 of them
(3 and 4 words are LONGER than anything seen in training). Scores: character error rate (CER;
the space counts as a character), word-sequence accuracy, and the share of monotonic steps (the
alignment peak never moves back by more than one vector).

Writes experiments/results/guided_attention.{json,md,png} after every model (``--out`` elsewhere;
``--quick`` into a temporary folder). The figure shows the alignment (decoder step x encoder
vector) of one single and one 3-word test input per model and decoding mode.

    python experiments/guided_attention.py --budget-minutes 4          # the three variants
    python experiments/guided_attention.py --quick                     # smoke test, ~1 minute
    python experiments/guided_attention.py --models content guided --epochs 20
    python experiments/guided_attention.py --markdown-only             # rewrite the .md from the .json
"""
from __future__ import annotations

import argparse
import copy
import json
import shlex
import math
import random
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch
from tqdm import tqdm

from graphattn.compare import machine_info
from graphattn.data.speech import (
    BOS,
    CHARACTER_VOCAB_SIZE,
    CHARACTERS,
    EOS,
    FIRST_CHARACTER,
    PAD,
    FeatureConfig,
    SpokenDigit,
    encode_characters,
    load_fsdd,
)
from graphattn.models import TransformerConfig, Vectors, character_error_rate, count_parameters
from graphattn.models.guided import AttentionRecognizer, RecognizerConfig

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "speech" / "fsdd"
SPACE = CHARACTER_VOCAB_SIZE  # the word separator, one id after the speech alphabet
VOCAB = CHARACTER_VOCAB_SIZE + 1
MODELS = ("content", "location", "guided")
DESCRIPTIONS = {
    "content": "content-only additive attention",
    "location": "location-aware attention",
    "guided": "location-aware attention + diagonal guide loss",
}


@dataclass(frozen=True)
class Settings:
    """Everything a run depends on (stored in the JSON)."""

    num_filters: int = 40
    delta_order: int = 2
    stack: int = 3
    d_model: int = 96
    num_heads: int = 4
    num_layers: int = 3
    ff_dim: int = 192
    pattern: str = "local(window=8)"
    input_kernel: int = 3
    decoder_dim: int = 128
    embed_dim: int = 64
    attention_dim: int = 128
    location_channels: int = 10
    location_kernel: int = 15
    dropout: float = 0.1
    guide_weight: float = 1.0
    guide_width: float = 0.2
    window_back: int = 1
    window_ahead: int = 6
    max_train_words: int = 2
    test_words: tuple = (1, 2, 3, 4)
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup_epochs: float = 1.0
    epochs: int = 30
    budget_minutes: float = 4.0
    seed: int = 0


# ---------------------------------------------------------------------- data
@dataclass
class Example:
    """Frames ``[L, F]`` of one or more utterances in a row, and their words."""

    features: torch.Tensor
    words: tuple
    names: tuple

    @property
    def text(self) -> str:
        return " ".join(self.words)


def concatenate(utterances: Sequence[SpokenDigit]) -> Example:
    return Example(torch.cat([u.features for u in utterances]), tuple(u.word for u in utterances),
                   tuple(f"{u.label}_{u.speaker}_{u.index}" for u in utterances))


def encode_text(text: str) -> list[int]:
    """``"seven two"`` -> ``[BOS, s, e, v, e, n, SPACE, t, w, o, EOS]``."""
    ids = [BOS]
    for position, word in enumerate(text.split(" ")):
        if position:
            ids.append(SPACE)
        ids.extend(encode_characters(word))
    return ids + [EOS]


def decode_text(ids: Sequence[int]) -> str:
    out = []
    for value in ids:
        value = int(value)
        if value == EOS:
            break
        if value == SPACE:
            out.append(" ")
        elif FIRST_CHARACTER <= value < CHARACTER_VOCAB_SIZE:
            out.append(CHARACTERS[value - FIRST_CHARACTER])
    return "".join(out)


def collate(examples: Sequence[Example]) -> tuple[Vectors, torch.Tensor]:
    lengths = torch.tensor([len(e.features) for e in examples])
    features = torch.zeros(len(examples), int(lengths.max()), examples[0].features.size(1))
    for i, e in enumerate(examples):
        features[i, : len(e.features)] = e.features
    ids = [encode_text(e.text) for e in examples]
    targets = torch.full((len(ids), max(map(len, ids))), PAD, dtype=torch.long)
    for i, sequence in enumerate(ids):
        targets[i, : len(sequence)] = torch.tensor(sequence)
    return Vectors(features, lengths), targets


def training_examples(utterances: Sequence[SpokenDigit], max_words: int, rng: random.Random) -> list[Example]:
    """The training utterances in a random order, cut into runs of 1..max_words (uniformly)."""
    order = list(range(len(utterances)))
    rng.shuffle(order)
    out, position = [], 0
    while position < len(order):
        words = rng.randint(1, max_words)
        out.append(concatenate([utterances[i] for i in order[position:position + words]]))
        position += words
    return out


def fixed_concatenations(utterances: Sequence[SpokenDigit], words: int, seed: int) -> list[Example]:
    """A fixed random partition of ``utterances`` into runs of ``words`` (the rest dropped)."""
    if words == 1:
        return [concatenate([u]) for u in utterances]
    order = list(range(len(utterances)))
    random.Random(seed * 1000 + words).shuffle(order)
    return [concatenate([utterances[i] for i in order[s:s + words]])
            for s in range(0, len(order) - words + 1, words)]


def length_batches(examples: Sequence[Example], batch_size: int, rng: random.Random | None) -> list[list[int]]:
    """Indices in batches of similar length; shuffled when ``rng`` is given."""
    keys = [len(e.features) + (rng.random() * 6 if rng else 0.0) for e in examples]
    order = sorted(range(len(examples)), key=keys.__getitem__)
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if rng is not None:
        rng.shuffle(batches)
    return batches


# ---------------------------------------------------------------------- model, training, evaluation
def build(settings: Settings, attention: str, num_features: int) -> AttentionRecognizer:
    encoder = TransformerConfig(
        vocab_size=VOCAB, input_features=settings.stack * num_features, input_kernel=settings.input_kernel,
        d_model=settings.d_model, num_heads=settings.num_heads, num_layers=settings.num_layers,
        ff_dim=settings.ff_dim, dropout=settings.dropout, position="rotary", encoder_pattern=settings.pattern,
        pad_id=PAD, bos_id=BOS, eos_id=EOS, unk_id=PAD,
    )
    return AttentionRecognizer(RecognizerConfig(
        encoder, stack=settings.stack, embed_dim=settings.embed_dim, decoder_dim=settings.decoder_dim,
        attention=attention, attention_dim=settings.attention_dim, location_channels=settings.location_channels,
        location_kernel=settings.location_kernel, dropout=settings.dropout,
    ))


@torch.no_grad()
def transcribe(model: AttentionRecognizer, examples: Sequence[Example], window, keep: Sequence[int] = ()):
    """Greedy transcripts of ``examples`` with ``model.window = window``; also the share of
    monotonic steps and the alignments of the examples in ``keep``."""
    model.eval()
    model.window = window
    out, kept = [""] * len(examples), {}
    monotonic, steps = 0, 0
    try:
        for indices in length_batches(examples, 100, None):
            inputs, _ = collate([examples[i] for i in indices])
            words = max(len(examples[i].words) for i in indices)
            result = model.greedy_decode(inputs, max_length=6 * words + 2)
            peaks = result.alignments.argmax(-1)  # [B, S]
            for row, i in enumerate(indices):
                n = int(result.lengths[row])
                out[i] = decode_text(result.tokens[row, :n].tolist())
                moves = peaks[row, 1:n] - peaks[row, : n - 1]
                monotonic += int((moves >= -1).sum())
                steps += max(n - 1, 0)
                if i in keep:
                    t = int(result.memory_lengths[row])
                    kept[i] = {"alignment": result.alignments[row, :n, :t].clone(), "tokens": result.tokens[row, :n].tolist()}
    finally:
        model.window = None
    return out, (monotonic / steps if steps else 1.0), kept


def scores(transcripts: Sequence[str], examples: Sequence[Example]) -> dict:
    references = [e.text for e in examples]
    return {
        "cer": character_error_rate(list(transcripts), references),
        "accuracy": sum(t == r for t, r in zip(transcripts, references)) / len(references),
    }


def train(name: str, model: AttentionRecognizer, train_set, validation_set, settings: Settings, guide_weight: float,
          quick: bool) -> dict:
    torch.manual_seed(settings.seed)
    rng = random.Random(settings.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    mean_words = (1 + settings.max_train_words) / 2
    steps_per_epoch = math.ceil(len(train_set) / mean_words / settings.batch_size)
    total = settings.epochs * steps_per_epoch
    warmup = max(1, int(settings.warmup_epochs * steps_per_epoch))
    budget = 60 * settings.budget_minutes
    start = time.perf_counter()

    def lr_at(step: int) -> float:
        """Linear warm-up, then cosine decay to 0 over the epochs or the time budget, whichever ends first."""
        if step < warmup:
            return (step + 1) / warmup
        progress = max((step - warmup) / max(1, total - warmup), (time.perf_counter() - start) / budget)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    best, best_state, best_epoch, history = -math.inf, None, 0, []
    epoch = 0
    for epoch in range(1, settings.epochs + 1):
        model.train()
        examples = training_examples(train_set, settings.max_train_words, rng)
        sums = {"loss": 0.0, "cross_entropy": 0.0, "guide": 0.0}
        count = 0
        batches = length_batches(examples, settings.batch_size, rng)
        for indices in tqdm(batches, desc=f"[{name}] epoch {epoch}", leave=False, disable=not sys.stderr.isatty()):
            inputs, targets = collate([examples[i] for i in indices])
            loss = model.loss(inputs, targets, guide_weight=guide_weight, guide_width=settings.guide_width)
            optimizer.zero_grad(set_to_none=True)
            loss.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            for key, value in zip(sums, loss):
                sums[key] += float(value.detach()) * len(indices)
            count += len(indices)
        transcripts, _, _ = transcribe(model, validation_set, None)
        validation = scores(transcripts, validation_set)["cer"]
        elapsed = time.perf_counter() - start
        history.append({"epoch": epoch, **{k: round(v / count, 4) for k, v in sums.items()},
                        "validation_cer": round(validation, 4), "seconds": round(elapsed, 1)})
        print(f"[{name}] epoch {epoch:2d}  loss {sums['loss'] / count:.4f} (ce {sums['cross_entropy'] / count:.4f}, "
              f"guide {sums['guide'] / count:.4f})  validation CER {validation:.4f}  {elapsed:.0f}s", flush=True)
        if -validation > best:
            best, best_epoch, best_state = -validation, epoch, copy.deepcopy(model.state_dict())
        if elapsed > budget:
            print(f"[{name}] time budget of {settings.budget_minutes} min reached after epoch {epoch}", flush=True)
            break
    model.load_state_dict(best_state)
    model.eval()
    return {"epochs": epoch, "best_epoch": best_epoch, "best_validation_cer": -best,
            "train_seconds": round(time.perf_counter() - start, 1), "history": history}


# ---------------------------------------------------------------------- results
def percent(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def write_markdown(payload: dict, path: Path) -> None:
    settings = payload["settings"]
    lines = [
        "# Guided attention on FSDD (experiments/guided_attention.py)",
        "",
        f"Command: `{payload['command']}`. {payload.get('budget_note', '')}",
        "",
        f"Data: FSDD official split, {settings['num_filters']}-band log-mel + deltas (CMVN per utterance), "
        f"{settings['stack']} frames stacked per encoder vector. Training inputs: 1 to {settings['max_train_words']} "
        f"training utterances in a row (takes 10-49, {payload['data']['train_utterances']} utterances, fresh "
        f"combinations every epoch), words joined by a space. Validation: half of takes 5-9, singles and fixed pairs "
        f"({payload['data']['validation']} inputs; greedy CER picks the epoch). Test: the {payload['data']['test_utterances']} "
        f"test utterances (takes 0-4) alone and in fixed random runs of 2, 3 and 4 "
        f"({', '.join(f'{k} words: {v}' for k, v in payload['data']['test'].items())} inputs); **3 and 4 words are longer "
        f"than any training input** (mean frames per test input: {payload['data']['mean_test_frames']}).",
        "",
        f"Models: graphattn Encoder (d_model {settings['d_model']}, {settings['num_layers']} layers, {settings['num_heads']} heads, "
        f"`{settings['pattern']}`, rotary, conv input k={settings['input_kernel']}) + LSTM decoder ({settings['decoder_dim']}) "
        f"with additive attention ({settings['attention_dim']}); location features: {settings['location_channels']} filters "
        f"of width {settings['location_kernel']} vectors. Guide loss weight {settings['guide_weight']}, g = "
        f"{settings['guide_width']}. AdamW lr {settings['lr']}, batch {settings['batch_size']}, warm-up + cosine decay over "
        f"{settings['epochs']} epochs or {settings['budget_minutes']} min of training per model, whichever ends first, dropout "
        f"{settings['dropout']}, seed {settings['seed']}, no augmentation. Greedy decoding, over every encoder vector "
        f"(`full`) or within the monotonic window (`window`: {settings['window_back']} back, {settings['window_ahead']} "
        f"ahead of the previous peak; a sparse pattern from `monotonic_window_graph`).",
        "",
        "## Character error rate (lower is better)",
        "",
    ]
    words = [str(w) for w in settings["test_words"]]
    header = "| model | params | epochs (best) | train time | decoding | " + " | ".join(
        f"CER {w} word{'s' if w != '1' else ''}" for w in words) + " | " + " | ".join(
        f"exact {w}" for w in words) + " | monotonic steps (3 words) |"
    lines += [header, "|" + "---|" * (header.count("|") - 1)]
    for name, row in payload["results"].items():
        for mode in ("full", "window"):
            result = row["test"].get(mode)
            if result is None:
                continue
            cers = " | ".join(percent(result.get(w, {}).get("cer")) for w in words)
            exact = " | ".join(percent(result.get(w, {}).get("accuracy")) for w in words)
            mono = percent(result.get("3", {}).get("monotonic"))
            lines.append(f"| {name}: {DESCRIPTIONS[name]} | {row['params']:,} | {row['epochs']} ({row['best_epoch']}) | "
                         f"{row['train_seconds'] / 60:.1f} min | {mode} | {cers} | {exact} | {mono} |")
    lines += [
        "",
        "CER = edit distance / reference characters over the set (the space between words counts); exact = the whole "
        "word sequence right; monotonic steps = share of decoder steps whose alignment peak moves back by at most one "
        "vector.",
        "",
        "## Alignments",
        "",
        "`guided_attention.png`: greedy alignments (decoder step x encoder vector, 30 ms each) of one single test "
        "utterance and one 3-word test input, per model and decoding mode; the title gives the transcript.",
        "",
    ]
    if payload.get("examples"):
        lines.append("Plotted inputs: " + "; ".join(f"{k}: {v}" for k, v in payload["examples"].items()) + ".")
        lines.append("")
    if payload.get("observations"):
        lines += ["## Observations", "", *payload["observations"], ""]
    lines.append(f"Machine: {json.dumps(payload['machine'])}")
    path.write_text("\n".join(lines) + "\n")


def plot(payload: dict, path: Path) -> None:
    """The alignments stored in ``payload["alignments"]``: one row per model and decoding mode, the
    single test utterance left, the 3-word input right; the dashed line is the diagonal the guide
    loss favours (``t / T = n / N``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    alignments, references = payload["alignments"], payload["plot_references"]
    rows = list(alignments)
    figure, axes = plt.subplots(len(rows), 2, figsize=(13, 2.6 * len(rows) + 0.5), squeeze=False,
                                gridspec_kw={"width_ratios": [1, 2.6]})
    for r, key in enumerate(rows):
        for c, which in enumerate(("short", "long")):
            ax = axes[r, c]
            item = alignments[key].get(which)
            if item is None:
                ax.axis("off")
                continue
            matrix = torch.tensor(item["alignment"]).numpy()  # [steps, T]
            steps, slots = matrix.shape
            ax.imshow(matrix, origin="lower", aspect="auto", cmap="viridis", interpolation="nearest", vmin=0, vmax=1)
            ax.plot([-0.5, slots - 0.5], [-0.5, steps - 0.5], color="white", lw=0.8, ls="--", alpha=0.6)
            labels = ["_" if t == SPACE else ("$" if t == EOS else decode_text([t]) or "?") for t in item["tokens"]]
            ax.set_yticks(range(len(labels)))
            ax.set_yticklabels(labels, fontsize=6)
            ax.set_title(f"{key} | heard \"{decode_text(item['tokens'])}\" | ref \"{references[which]}\"", fontsize=8)
            if r == len(rows) - 1:
                ax.set_xlabel("encoder vector (30 ms)")
            if c == 0:
                ax.set_ylabel("output character ($ = EOS)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def save(payload: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "guided_attention.json").write_text(json.dumps(payload, indent=2))
    write_markdown(payload, out / "guided_attention.md")
    if payload["alignments"]:
        plot(payload, out / "guided_attention.png")


# ---------------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=ROOT, help="the FSDD folder (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=None, help=f"results folder (default: {RESULTS}; --quick: a temporary folder)")
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp/fsdd_cache"), help="feature cache folder")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--epochs", type=int, default=Settings.epochs)
    parser.add_argument("--budget-minutes", type=float, default=Settings.budget_minutes, help="training time per model")
    parser.add_argument("--guide-weight", type=float, default=Settings.guide_weight)
    parser.add_argument("--window", type=int, nargs=2, default=(Settings.window_back, Settings.window_ahead),
                        metavar=("BACK", "AHEAD"), help="the monotonic window at inference, in encoder vectors")
    parser.add_argument("--seed", type=int, default=Settings.seed)
    parser.add_argument("--quick", action="store_true", help="smoke test: 1 epoch on a few hundred utterances")
    parser.add_argument("--budget-note", default="", help="a sentence on the time budget, copied into the Markdown")
    parser.add_argument("--markdown-only", action="store_true",
                        help="only rewrite guided_attention.md from guided_attention.json in --out")
    args = parser.parse_args(argv)
    if args.markdown_only:
        folder = args.out or RESULTS
        payload = json.loads((folder / "guided_attention.json").read_text())
        write_markdown(payload, folder / "guided_attention.md")
        if payload.get("alignments"):
            plot(payload, folder / "guided_attention.png")
        print(f"[guided_attention] rewrote {folder / 'guided_attention.md'} and the plot")
        return
    torch.set_num_threads(1)
    out = args.out or (Path(tempfile.mkdtemp(prefix="guided_attention_")) if args.quick else RESULTS)
    settings = Settings(epochs=1 if args.quick else args.epochs, budget_minutes=args.budget_minutes,
                        guide_weight=args.guide_weight, window_back=args.window[0], window_ahead=args.window[1],
                        seed=args.seed)
    features = FeatureConfig("log_mel", num_filters=settings.num_filters, delta_order=settings.delta_order)
    train_all = list(load_fsdd(args.root, split="train", features=features, cache_dir=args.cache_dir))
    test_utterances = list(load_fsdd(args.root, split="test", features=features, cache_dir=args.cache_dir))
    train_set = [e for e in train_all if e.index >= 10]
    validation_utterances = [e for e in train_all if e.index < 10]
    if args.quick:
        train_set, validation_utterances, test_utterances = train_set[::8], validation_utterances[::6], test_utterances[::6]
    validation_utterances = validation_utterances[::2]  # 150 singles + 75 pairs: validating costs little
    validation_set = (fixed_concatenations(validation_utterances, 1, settings.seed)
                      + fixed_concatenations(validation_utterances, 2, settings.seed))
    tests = {w: fixed_concatenations(test_utterances, w, settings.seed) for w in settings.test_words}
    sevens = [i for i, e in enumerate(tests[1]) if e.words == ("seven",)] or list(range(len(tests[1])))
    short = max(sevens, key=lambda i: len(tests[1][i].features))  # "seven": two syllables
    long = 0
    plot_examples = {"short": tests[1][short], "long": tests[3][long]}
    num_features = train_set[0].features.size(1)
    command = shlex.join(["python", "experiments/guided_attention.py", *(sys.argv[1:] if argv is None else argv)])
    payload = {
        "command": command, "budget_note": args.budget_note, "settings": asdict(settings),
        "data": {"train_utterances": len(train_set), "validation": len(validation_set),
                 "test_utterances": len(test_utterances), "test": {str(w): len(v) for w, v in tests.items()},
                 "longest_possible_training_input_frames": sum(sorted(len(e.features) for e in train_set)[-settings.max_train_words:]),
                 "mean_test_frames": {str(w): round(sum(len(e.features) for e in v) / len(v), 1) for w, v in tests.items()}},
        "examples": {k: f"{' + '.join(v.names)} (\"{v.text}\", {len(v.features)} frames)" for k, v in plot_examples.items()},
        "machine": machine_info(), "results": {}, "alignments": {},
        "plot_references": {k: v.text for k, v in plot_examples.items()},
    }
    window = (settings.window_back, settings.window_ahead)
    for name in args.models:
        torch.manual_seed(settings.seed)
        model = build(settings, "content" if name == "content" else "location", num_features)
        row = {"model": DESCRIPTIONS[name], "attention": "content" if name == "content" else "location",
               "guide_weight": settings.guide_weight if name == "guided" else 0.0, "params": count_parameters(model)}
        row.update(train(name, model, train_set, validation_set, settings, row["guide_weight"], args.quick))
        row["test"] = {}
        for mode, mode_window in (("full", None), ("window", window)):
            results = {}
            start = time.perf_counter()
            for words, examples in tests.items():
                keep = [short] if words == 1 else [long] if words == 3 else []
                transcripts, monotonic, kept = transcribe(model, examples, mode_window, keep)
                results[str(words)] = {**scores(transcripts, examples), "monotonic": monotonic,
                                       "errors": [{"ref": e.text, "heard": t} for e, t in zip(examples, transcripts)
                                                  if t != e.text][:8]}
                for i, item in kept.items():
                    stored = {"alignment": [[round(float(a), 4) for a in step] for step in item["alignment"]],
                              "tokens": item["tokens"]}
                    payload["alignments"].setdefault(f"{name} / {mode}", {})["short" if words == 1 else "long"] = stored
            results["seconds"] = round(time.perf_counter() - start, 1)
            row["test"][mode] = results
            print(f"[{name}] {mode}: " + ", ".join(f"{w} words CER {results[str(w)]['cer']:.4f}" for w in tests), flush=True)
        payload["results"][name] = row
        save(payload, out)
    print(f"[guided_attention] results in {out / 'guided_attention.json'}, .md, .png", flush=True)


if __name__ == "__main__":
    main()
