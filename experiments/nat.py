"""Non-autoregressive translation on a task with several valid outputs per input.

The task ("paraphrase", generated): a source is ``n`` symbols; a target renders the whole
source in **one** style drawn uniformly for the sentence (``--styles``, default 2): every symbol
has two target tokens of its own per style, and an *emphasis* (a quarter of the symbols) that
makes a word 2 tokens long instead of 1 -- in style ``m`` the emphasis moves ``m`` words to the
right. So every source has several equally valid targets of one length, which differ at every
position and in which words get two tokens (the fertilities) -- the multi-modality problem of
non-autoregressive translation: a decoder that chooses every token independently mixes the
styles (``a1 b2 a3``), which is no valid output.

Pipeline (every model trained from scratch with AdamW, warm-up then a cosine to 0 over its time
budget, on one fixed pool of training pairs):

1. the autoregressive teacher (``EncoderDecoder``) on the raw pairs;
2. sequence-level knowledge distillation: the teacher decodes (greedy) every training source
   (``graphattn.decoding.distill``) -- one style per source, chosen by the teacher;
3. the NATs, each on the raw pairs and on the distilled ones: a fertility NAT (Gu et al. 2018:
   fertilities predicted per source token, the decoder reads the source embeddings copied by
   fertility; fertility targets from the task's alignment -- the source symbol every target token
   renders -- standing in for an external aligner), a conditional masked LM (Mask-Predict,
   Ghazvininejad et al. 2019: length classifier, [MASK] inputs); on the distilled pairs only, a CTC
   NAT with Imputer-style refinement (encoder states upsampled x3) and a (simplified) Levenshtein
   Transformer (Gu et al. 2019: deletion, placeholder and token heads, edit-distance oracle) and
   two Insertion Transformers (Stern et al. 2019: a token -- or nothing -- for every slot
   between neighbouring output tokens, all slots at once), one trained with the balanced binary
   tree loss, one with the uniform loss.

Decoding (``graphattn.decoding``): the teacher with greedy search and beam 4; the fertility NAT
with arg-max fertilities and with noisy parallel decoding (s = 1, 10, 100 sampled fertility
vectors rescored by the teacher in one teacher-forced pass); Mask-Predict with T = 1, 4, 10
iterations (length beam ``--length-beam``); CTC best path and CTC + 4 refinement iterations; the
Levenshtein Transformer with at most 10 delete / insert / fill iterations; the Insertion
Transformers by parallel insertion until no slot inserts anything (``decoder passes`` in the
table: the mean number of decoder passes per sentence of the iterative decoders; the balanced
tree should need about log2(n) + 1).

Metrics: BLEU (sacreBLEU via ``graphattn.train.corpus_bleu``) where every hypothesis is scored
against the valid output (style) nearest to it in edit distance -- the multi-reference view:
a consistent output in any style is perfect, a mix is not; the share of outputs that are exactly
a valid target; and decoding latency on CPU: milliseconds per sentence decoding one sentence at
a time (batch 1, ``--latency-sentences`` test sentences) and per batch of 64 sentences.

FSDD (when ``--fsdd-root`` exists, or with ``--fsdd``): speech recognition of the spoken digit word
(letters) from log-mel frames with the same model sizes -- the autoregressive encoder-decoder
(greedy), Mask-Predict (T = 1, 4) and the CTC NAT (best path, Imputer T = 4), reading speech frames
through the encoder's vector input: character error rate, word accuracy and latency.

Writes experiments/results/nat.json, nat.md (after every finished cell) and nat.png (BLEU
against batch-1 latency):

    python experiments/nat.py                           # the full run (about --budget-minutes + evaluation)
    python experiments/nat.py --budget-minutes 30       # shorter training
    python experiments/nat.py --quick                   # smoke test into a temporary folder

Trained models are kept in ``--work-dir`` and reused by a later run with the same training
settings (``--fresh`` retrains), so the decoding rows can be re-evaluated without training.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from graphattn.compare import machine_info
from graphattn.decoding import (
    ctc_decode,
    distill,
    generate,
    insertion_decode,
    levenshtein_decode,
    mask_predict,
    noisy_parallel_decode,
)
from graphattn.models import (
    CTCNAT,
    CTCNATConfig,
    EncoderDecoder,
    InsertionTransformer,
    LevenshteinTransformer,
    NATConfig,
    NonAutoregressiveTransformer,
    TransformerConfig,
    edit_distance,
    nat_targets,
    uniform_fertilities,
)
from graphattn.train import BudgetCosine, Seq2SeqLoss, corpus_bleu, sequence_cross_entropy
from graphattn.train.checkpoint import atomic_save

RESULTS = Path(__file__).resolve().parent / "results"
PAD, BOS, EOS, UNK, MASK = 0, 1, 2, 3, 4
FIRST = 5  # the first source symbol
TRAIN_SEED, TEST_SEED = 1_000_000, 3_000_000


# ---------------------------------------------------------------------------------------------
# the task
# ---------------------------------------------------------------------------------------------


@dataclass
class ParaphraseTask:
    """Sources of ``num_symbols`` symbols. Every symbol has an *emphasis* (a quarter of the
    symbols) and, per style, two target tokens of its own. In style ``m`` the emphasis moves ``m``
    words to the right (cyclically): the word at position ``i`` is rendered with 2 tokens if the
    word at ``i - m`` is emphatic, else with 1 (the first of its two). Every style of a source
    has the same length, but the styles differ at every word, and so does the fertility of a
    word (target tokens per source word) wherever the emphasis moved -- the latent variable
    a fertility NAT can use to keep one style (the table is drawn from ``seed``)."""

    num_symbols: int = 16
    styles: int = 2
    double_rate: float = 0.25
    seed: int = 0
    emphatic: list[bool] = field(init=False)
    table: list[list[list[int]]] = field(init=False)  # [style][symbol] -> its two target tokens

    def __post_init__(self) -> None:
        rng = random.Random(self.seed)
        self.emphatic = [rng.random() < self.double_rate for _ in range(self.num_symbols)]
        if not any(self.emphatic):
            self.emphatic[0] = True
        next_id = FIRST + self.num_symbols
        self.table = []
        for _ in range(self.styles):
            self.table.append([[next_id + 2 * s, next_id + 2 * s + 1] for s in range(self.num_symbols)])
            next_id += 2 * self.num_symbols
        self.vocab_size = next_id

    def fertilities(self, src: Sequence[int], style: int) -> list[int]:
        """Target tokens per source word in ``style``."""
        n = len(src)
        return [2 if self.emphatic[src[(i - style) % n] - FIRST] else 1 for i in range(n)]

    def render(self, src: Sequence[int], style: int) -> list[int]:
        return [t for s, f in zip(src, self.fertilities(src, style)) for t in self.table[style][s - FIRST][:f]]

    def references(self, src: Sequence[int]) -> list[list[int]]:
        """Every valid target of ``src`` (one per style)."""
        return [self.render(src, style) for style in range(self.styles)]

    def alignment(self, src: Sequence[int], tgt: Sequence[int]) -> list[int] | None:
        """The fertilities of ``tgt`` if it is a valid target of ``src`` (the task's aligner), else None."""
        for style in range(self.styles):
            if self.render(src, style) == list(tgt):
                return self.fertilities(src, style)
        return None

    def examples(self, count: int, min_length: int, max_length: int, seed: int) -> list[tuple[list[int], list[int]]]:
        """``count`` pairs ``(source, target)`` (targets without BOS / EOS), the style of each
        drawn uniformly."""
        rng = random.Random(seed)
        out = []
        for _ in range(count):
            src = [FIRST + rng.randrange(self.num_symbols) for _ in range(rng.randint(min_length, max_length))]
            out.append((src, self.render(src, rng.randrange(self.styles))))
        return out


def pad(rows: Sequence[Sequence[int]]) -> torch.Tensor:
    out = torch.full((len(rows), max(len(r) for r in rows)), PAD, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return out


def text(tokens: Sequence[int]) -> str:
    return " ".join(f"w{t}" for t in tokens)


def score(task: ParaphraseTask, sources, hypotheses) -> dict:
    """BLEU against the nearest valid output, and the share of exactly valid outputs."""
    references, valid = [], 0
    for src, hyp in zip(sources, hypotheses):
        options = task.references(src)
        nearest = min(options, key=lambda ref: edit_distance(hyp, ref))
        references.append(text(nearest))
        valid += hyp in options
    bleu = corpus_bleu([text(h) for h in hypotheses], references)
    return {"bleu": round(bleu, 2), "valid": round(valid / len(hypotheses), 4)}


# ---------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------


# the settings a trained model depends on: a saved model is reused only when all of them match
TRAINING_SETTINGS = ("budget_minutes", "teacher_share", "max_steps", "train_size", "min_length", "max_length",
                     "num_symbols", "styles", "d_model", "heads", "layers", "batch_size", "lr", "warmup", "seed",
                     "fsdd_minutes", "quick")


def train(model: torch.nn.Module, loss_fn: Callable, pairs, args, seconds: float, label: str) -> dict:
    """Train on shuffled batches of ``pairs`` until ``seconds`` or ``args.max_steps``.

    The trained weights and statistics go to ``<work-dir>/models/<label>.pt``; a later run with
    the same training settings loads them instead of training again (``--fresh``: retrain), so
    decoding can be re-evaluated, and an interrupted run continues, without the training time."""
    key = {name: getattr(args, name) for name in TRAINING_SETTINGS} | {"seconds": round(seconds, 3), "label": label}
    path = Path(args.work_dir) / "models" / ("".join(c if c.isalnum() else "_" for c in label) + ".pt")
    if path.exists() and not args.fresh:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if saved.get("key") == json.loads(json.dumps(key)):
            model.load_state_dict(saved["state"])
            model.eval()
            print(f"[nat] {label}: reused the model trained earlier ({path})", flush=True)
            return saved["stats"] | {"reused": True}
    stats = _train(model, loss_fn, pairs, args, seconds, label)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save({"key": key, "state": model.state_dict(), "stats": stats}, path)
    return stats


def _train(model: torch.nn.Module, loss_fn: Callable, pairs, args, seconds: float, label: str) -> dict:
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.98), weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, BudgetCosine(args.warmup, seconds=seconds))
    rng = random.Random(args.seed)
    order: list[int] = []
    model.train()
    started = time.perf_counter()
    steps, running = 0, None
    bar = tqdm(total=args.max_steps, desc=label, disable=not args.progress, leave=False)
    while steps < args.max_steps and time.perf_counter() - started < seconds:
        if len(order) < args.batch_size:
            order = list(range(len(pairs)))
            rng.shuffle(order)
        batch = [pairs[i] for i in order[: args.batch_size]]
        order = order[args.batch_size:]
        loss, _ = loss_fn(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        steps += 1
        value = float(loss.detach())
        running = value if running is None else 0.98 * running + 0.02 * value
        bar.update(1)
        bar.set_postfix(loss=f"{running:.3f}")
    bar.close()
    model.eval()
    elapsed = time.perf_counter() - started
    print(f"[nat] {label}: {steps} steps in {elapsed:.0f} s, loss {running:.3f}", flush=True)
    return {"steps": steps, "train_seconds": round(elapsed, 1), "final_loss": round(running or float("nan"), 4),
            "parameters": sum(p.numel() for p in model.parameters())}


def teacher_loss(model, batch):
    src = pad([s for s, _ in batch])
    tgt = pad([[BOS] + t + [EOS] for _, t in batch])
    return Seq2SeqLoss(pad_id=PAD)(model, (src, tgt))


def nat_loss(task: ParaphraseTask):
    def loss(model, batch):
        src, target = pad([s for s, _ in batch]), pad([t for _, t in batch])
        fertilities = None
        if model.nat.length == "fertility":  # the task's alignment; uniform where a distilled output breaks it
            rows = []
            for s, t in batch:
                f = task.alignment(s, t)
                if f is None:
                    f = uniform_fertilities(torch.tensor([len(s)]), torch.tensor([len(t)]))[0].tolist()
                rows.append(f)
            fertilities = pad(rows)
            fertilities = torch.where(src != PAD, fertilities, 0)
        return model.loss(src, target, fertilities=fertilities)

    return loss


def insertion_loss(weighting: str):
    def loss(model, batch):
        return model.loss(pad([s for s, _ in batch]), pad([t for _, t in batch]), weighting=weighting)

    return loss


def ctc_loss(model, batch):
    """The loss of models that take (src, target) only: CTC and Levenshtein."""
    return model.loss(pad([s for s, _ in batch]), pad([t for _, t in batch]))


# ---------------------------------------------------------------------------------------------
# decoding and timing
# ---------------------------------------------------------------------------------------------


def outputs(result) -> list[list[int]]:
    if hasattr(result, "sequences") and hasattr(result, "lengths"):
        return [row[:n] for row, n in zip(result.sequences.tolist(), result.lengths.tolist())]
    raise TypeError(type(result).__name__)


PASSES: list[int] = []
"""Decoder passes of every sentence decoded by the current cell (iterative decoders only)."""


def counted_outputs(result) -> list[list[int]]:
    """:func:`outputs`, and the decoder passes of every row into :data:`PASSES`."""
    if result.iterations is not None:
        PASSES.extend(result.iterations.tolist())
    return outputs(result)


def ar_outputs(result) -> list[list[int]]:
    rows = outputs(result)
    return [row[:-1] if row and row[-1] == EOS else row for row in rows]


def evaluate(decode: Callable, task: ParaphraseTask, test, args) -> dict:
    """BLEU / validity from batches of 64, latency at batch 1 and 64 (ms)."""
    sources = [s for s, _ in test]
    indices = list(range(len(sources)))
    hypotheses, batch_times = [], []
    with torch.inference_mode():
        decode(pad(sources[:1]), indices[:1])  # warm-up
        for start in range(0, len(sources), 64):
            chunk = sources[start:start + 64]
            began = time.perf_counter()
            result = decode(pad(chunk), indices[start:start + 64])
            batch_times.append(time.perf_counter() - began)
            hypotheses += result
        single_times = []
        for i in range(min(args.latency_sentences, len(sources))):
            began = time.perf_counter()
            decode(pad(sources[i:i + 1]), indices[i:i + 1])
            single_times.append(time.perf_counter() - began)
    full = [t for t, chunk in zip(batch_times, range(0, len(sources), 64)) if len(sources) - chunk >= 64] or batch_times
    row = score(task, sources, hypotheses)
    row.update(
        latency_batch1_ms=round(1000 * sum(single_times) / len(single_times), 2),
        latency_batch64_ms=round(1000 * sum(full) / len(full), 2),
        mean_output_length=round(sum(len(h) for h in hypotheses) / len(hypotheses), 2),
        example=text(hypotheses[0]),
    )
    return row


# ---------------------------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------------------------


def save(payload: dict, out: Path) -> None:
    (out / "nat.json").write_text(json.dumps(payload, indent=2))
    write_markdown(payload, out / "nat.md")
    plot(payload["results"], out / "nat.png")


def write_markdown(payload: dict, path: Path) -> None:
    s = payload["settings"]
    rows = payload["results"]
    base = next((r for r in rows if r["cell"] == "AR teacher / greedy"), None)
    lines = [
        "# Non-autoregressive translation (experiments/nat.py)",
        "",
        f"Command: `{payload['command']}`.",
        "",
        f"Task: paraphrase -- sources of {s['min_length']}-{s['max_length']} symbols ({s['num_symbols']} symbols, a "
        f"quarter of them emphatic: 2 tokens, moved one word right per style), each target one of {s['styles']} "
        "styles drawn per sentence, so every source "
        "has several valid targets that differ at every position. BLEU (sacreBLEU) against the valid target nearest "
        "to each hypothesis; `valid` = share of outputs that are exactly a valid target. Latency on CPU "
        f"({payload['machine'].get('torch_threads', s['threads'])} threads): ms per sentence decoded alone (batch 1, "
        f"{s['latency_sentences']} sentences) and ms per batch of 64. Speed-up: AR greedy latency / latency at batch 1.",
        "",
        f"Models: d_model {s['d_model']}, {s['heads']} heads, {s['layers']}+{s['layers']} layers; {s['train_size']} "
        f"training pairs; total training budget {s['budget_minutes']} min (teacher {s['teacher_share']:.0%}, the rest "
        f"split over the NATs); test on {s['test_size']} sources; Mask-Predict length beam {s['length_beam']} (rows "
        "marked l=1: a length beam of 1).",
        "",
        "| model | training data | decoding | BLEU | valid | decoder passes | batch 1 (ms) | batch 64 (ms) | speed-up at batch 1 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        speedup = f"{base['latency_batch1_ms'] / r['latency_batch1_ms']:.1f}x" if base else "-"
        lines.append(
            f"| {r['model']} | {r['data']} | {r['decoding']} | {r['bleu']:.2f} | {100 * r['valid']:.1f}% | "
            f"{'-' if r.get('mean_decoder_passes') is None else r['mean_decoder_passes']} | "
            f"{r['latency_batch1_ms']:.1f} | {r['latency_batch64_ms']:.1f} | {speedup} |"
        )
    lines += ["", "Training:", "", "| model | steps | time | final loss | parameters |", "|---|---|---|---|---|"]
    for name, t in payload["training"].items():
        lines.append(f"| {name} | {t['steps']} | {t['train_seconds']:.0f} s | {t['final_loss']} | {t['parameters']:,} |")
    checks = shape_checks(rows)
    if checks:
        lines += ["", "The published shape:", ""] + [f"- {c}" for c in checks]
    fsdd = payload.get("fsdd")
    if fsdd and fsdd["results"]:
        ar = next((r for r in fsdd["results"] if r["model"] == "AR encoder-decoder"), None)
        lines += [
            "",
            f"## FSDD speech recognition (letters of the spoken digit word; official split, {fsdd['data']['train']} "
            f"training and {fsdd['data']['test']} test recordings, 40 log-mel bands, 2 frames stacked; training "
            f"budget {s['fsdd_minutes']} min for the 3 models)",
            "",
            "| model | decoding | CER | word accuracy | batch 1 (ms) | batch 64 (ms) | speed-up at batch 1 |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in fsdd["results"]:
            speedup = f"{ar['latency_batch1_ms'] / r['latency_batch1_ms']:.1f}x" if ar else "-"
            lines.append(f"| {r['model']} | {r['decoding']} | {100 * r['cer']:.2f}% | {100 * r['word_accuracy']:.1f}% | "
                         f"{r['latency_batch1_ms']:.1f} | {r['latency_batch64_ms']:.1f} | {speedup} |")
        lines += ["", "| FSDD model | steps | time | final loss |", "|---|---|---|---|"]
        for name, t in fsdd["training"].items():
            lines.append(f"| {name} | {t['steps']} | {t['train_seconds']:.0f} s | {t['final_loss']} |")
    lines += ["", f"Machine: {json.dumps(payload['machine'])}", ""]
    path.write_text("\n".join(lines))


def shape_checks(rows: list[dict]) -> list[str]:
    """Statements of the published shape, each marked as reproduced or not on these results."""
    cell = {r["cell"]: r for r in rows}
    out = []

    def mark(ok: bool) -> str:
        return "yes" if ok else "**no**"

    for data in ("raw", "distilled"):
        t = [cell.get(f"Mask-Predict ({data}) / T={k}") for k in (1, 4, 10)]
        if all(t):
            ok = t[0]["bleu"] < t[1]["bleu"] - 1 and abs(t[1]["bleu"] - t[2]["bleu"]) <= max(2.0, 0.05 * t[2]["bleu"])
            out.append(f"Mask-Predict {data}: T=1 {t[0]['bleu']:.1f} well below T=4 {t[1]['bleu']:.1f} ~ T=10 "
                       f"{t[2]['bleu']:.1f}: {mark(ok)}")
    raw, dist = cell.get("Mask-Predict (raw) / T=1"), cell.get("Mask-Predict (distilled) / T=1")
    if raw and dist:
        out.append(f"distillation lifts Mask-Predict T=1 ({raw['bleu']:.1f} -> {dist['bleu']:.1f}): {mark(dist['bleu'] > raw['bleu'])}")
    raw, dist = cell.get("fertility NAT (raw) / NPD s=1"), cell.get("fertility NAT (distilled) / NPD s=1")
    if raw and dist:
        out.append(f"distillation lifts the vanilla NAT ({raw['bleu']:.1f} -> {dist['bleu']:.1f}): {mark(dist['bleu'] > raw['bleu'])}")
    for data in ("raw", "distilled"):
        npd = [cell.get(f"fertility NAT ({data}) / NPD s={s}") for s in (1, 10, 100)]
        if all(npd):
            ok = npd[0]["bleu"] <= npd[1]["bleu"] <= npd[2]["bleu"] and npd[2]["bleu"] > npd[0]["bleu"]
            out.append(f"NPD improves with s ({data}): " + " / ".join(f"{r['bleu']:.1f}" for r in npd) + f": {mark(ok)}")
    ar = cell.get("AR teacher / greedy")
    for decoding in ("T=4", "T=4, l=1"):
        t4 = cell.get(f"Mask-Predict (distilled) / {decoding}")
        if ar and t4:
            speed = ar["latency_batch1_ms"] / t4["latency_batch1_ms"]
            out.append(f"speed-up of Mask-Predict {decoding} (distilled, BLEU {t4['bleu']:.1f}) over AR greedy at "
                       f"batch 1: {speed:.1f}x (target >= 3x): {mark(speed >= 3)}")
    return out


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(f"{r['model']} ({r['data']})", []).append(r)
    for name, items in groups.items():
        x = [r["latency_batch1_ms"] for r in items]
        y = [r["bleu"] for r in items]
        ax.plot(x, y, marker="o", label=name)
        for r in items:
            ax.annotate(r["decoding"], (r["latency_batch1_ms"], r["bleu"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("latency per sentence at batch 1 (ms, log scale)")
    ax.set_ylabel("BLEU (nearest valid output)")
    ax.set_title("Non-autoregressive decoding: quality vs latency")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)

# ---------------------------------------------------------------------------------------------
# FSDD: speech recognition of the spoken digit words (frames in, letters out)
# ---------------------------------------------------------------------------------------------

FSDD_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "speech" / "fsdd"


def run_fsdd(args, payload: dict, out: Path) -> None:
    """The AR encoder-decoder (greedy), Mask-Predict (T = 1, 4) and CTC (+ Imputer T = 4) on
    FSDD (official split; 40 log-mel bands, every 2 frames stacked into one vector): character
    error rate, word accuracy and latency at batch 1 and 64."""
    from graphattn.data.speech import CHARACTER_VOCAB_SIZE, CHARACTERS, FIRST_CHARACTER, collate, load_fsdd
    from graphattn.models import Vectors, character_error_rate

    limit = (256, 64) if args.quick else (None, None)
    train_set = load_fsdd(args.fsdd_root, split="train", limit=limit[0], cache_dir=args.fsdd_cache)
    test_set = load_fsdd(args.fsdd_root, split="test", limit=limit[1], cache_dir=args.fsdd_cache)

    def stacked(dataset) -> list:
        out = []
        for example in dataset.examples:
            x = example.features
            groups = -(-x.size(0) // 2)
            x = torch.cat([x, x[-1:].expand(groups * 2 - x.size(0), -1)]).reshape(groups, -1)
            out.append(example._replace(features=x))
        return out

    train_data, test_data = stacked(train_set), stacked(test_set)
    features = train_data[0].features.size(1)
    fsdd_mask = CHARACTER_VOCAB_SIZE  # one more id: [MASK]
    config = TransformerConfig(
        vocab_size=CHARACTER_VOCAB_SIZE + 1, input_features=features, d_model=args.d_model, num_heads=args.heads,
        num_layers=args.layers, dropout=0.1, mask_id=fsdd_mask, pad_id=0, bos_id=1, eos_id=2, unk_id=fsdd_mask,
    )

    def batch_of(examples):
        b = collate(examples, targets="seq2seq")
        return Vectors(b.features, b.lengths), b.targets

    def letters(ids) -> str:
        return "".join(CHARACTERS[i - FIRST_CHARACTER] for i in ids if FIRST_CHARACTER <= i < CHARACTER_VOCAB_SIZE)

    section = payload.setdefault("fsdd", {"training": {}, "results": [],
                                          "data": {"train": len(train_data), "test": len(test_data), "features": features}})
    seconds = args.fsdd_minutes * 60 / 3

    def fsdd_record(model_name: str, decoding: str, decode: Callable) -> None:
        words = [e.word for e in test_data]
        hypotheses, batch_times = [], []
        with torch.inference_mode():
            decode(batch_of(test_data[:1])[0])
            for start in range(0, len(test_data), 64):
                chunk = test_data[start:start + 64]
                began = time.perf_counter()
                hypotheses += decode(batch_of(chunk)[0])
                batch_times.append(time.perf_counter() - began)
            singles = []
            for example in test_data[: args.latency_sentences]:
                began = time.perf_counter()
                decode(batch_of([example])[0])
                singles.append(time.perf_counter() - began)
        strings = [letters(h) for h in hypotheses]
        row = {"model": model_name, "decoding": decoding,
               "cer": round(character_error_rate(strings, words), 4),
               "word_accuracy": round(sum(s == w for s, w in zip(strings, words)) / len(words), 4),
               "latency_batch1_ms": round(1000 * sum(singles) / len(singles), 2),
               "latency_batch64_ms": round(1000 * sum(batch_times) / len(batch_times), 2)}
        section["results"].append(row)
        save(payload, out)
        print(f"[nat] FSDD {model_name} / {decoding}: CER {100 * row['cer']:.2f}%, words {100 * row['word_accuracy']:.1f}%, "
              f"{row['latency_batch1_ms']:.1f} ms at batch 1", flush=True)

    def pairs_loss(kind: str):
        def loss(model, batch):
            src, tgt = batch_of(batch)
            if kind == "ar":
                return sequence_cross_entropy(model(src, tgt[:, :-1]), tgt[:, 1:], 0), {}
            return model.loss(src, nat_targets(tgt, pad_id=0, bos_id=1, eos_id=2))
        return loss

    torch.manual_seed(args.seed)
    teacher = EncoderDecoder(config)
    section["training"]["AR encoder-decoder"] = train(teacher, pairs_loss("ar"), train_data, args, seconds, "FSDD AR")
    fsdd_record("AR encoder-decoder", "greedy",
                lambda src: ar_outputs(generate(teacher, src, max_new_tokens=8)))

    torch.manual_seed(args.seed)
    cmlm = NonAutoregressiveTransformer(config, NATConfig(length="classifier", decoder_input="mask", max_target_length=8))
    section["training"]["Mask-Predict"] = train(cmlm, pairs_loss("nat"), train_data, args, seconds, "FSDD CMLM")
    for t in (1, 4):
        fsdd_record("Mask-Predict", f"T={t}", lambda src, t=t: outputs(mask_predict(cmlm, src, iterations=t, length_beam=2)))

    torch.manual_seed(args.seed)
    ctc = CTCNAT(config, CTCNATConfig(upsample=1, imputer=True))
    section["training"]["CTC + Imputer"] = train(ctc, pairs_loss("nat"), train_data, args, seconds, "FSDD CTC")
    fsdd_record("CTC", "best path", lambda src: outputs(ctc_decode(ctc, src)))
    fsdd_record("CTC", "Imputer T=4", lambda src: outputs(ctc_decode(ctc, src, iterations=4)))



# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget-minutes", type=float, default=60.0, help="total training time of all models")
    parser.add_argument("--teacher-share", type=float, default=0.25, help="share of the budget for the teacher")
    parser.add_argument("--max-steps", type=int, default=100_000)
    parser.add_argument("--train-size", type=int, default=20_000)
    parser.add_argument("--test-size", type=int, default=512)
    parser.add_argument("--latency-sentences", type=int, default=64)
    parser.add_argument("--min-length", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=16)
    parser.add_argument("--num-symbols", type=int, default=16)
    parser.add_argument("--styles", type=int, default=2)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--length-beam", type=int, default=3)
    parser.add_argument("--npd-samples", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--iterations", type=int, nargs="+", default=[1, 4, 10])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--progress", action="store_true", help="tqdm bars while training")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--fsdd", action=argparse.BooleanOptionalAction, default=None,
                        help="also the FSDD speech study (default: when --fsdd-root exists)")
    parser.add_argument("--fsdd-root", type=Path, default=FSDD_ROOT)
    parser.add_argument("--fsdd-cache", type=Path, default=Path("/tmp/fsdd_cache"), help="feature cache folder")
    parser.add_argument("--fsdd-minutes", type=float, default=10.0, help="FSDD training time of the 3 models")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/graphattn-nat"),
                        help="trained models, reused by a later run with the same training settings")
    parser.add_argument("--fresh", action="store_true", help="retrain every model even if a saved one matches")
    parser.add_argument("--quick", action="store_true", help="tiny run into a temporary folder, to check the script")
    args = parser.parse_args(argv)
    if args.quick:
        args.budget_minutes, args.train_size, args.test_size, args.latency_sentences = 0.5, 512, 64, 4
        args.min_length, args.max_length, args.d_model, args.layers, args.warmup = 3, 6, 32, 1, 20
        args.threads = 1
        args.fsdd_minutes = 0.3
        args.out = tempfile.mkdtemp(prefix="graphattn-nat-quick-")
        args.work_dir = Path(args.out) / "work"
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = " ".join(["python", "experiments/nat.py", *(sys.argv[1:] if argv is None else argv)])

    task = ParaphraseTask(args.num_symbols, args.styles, seed=args.seed)
    train_pairs = task.examples(args.train_size, args.min_length, args.max_length, TRAIN_SEED + args.seed)
    test = task.examples(args.test_size, args.min_length, args.max_length, TEST_SEED + args.seed)
    max_target = 2 * args.max_length
    config = TransformerConfig(
        vocab_size=task.vocab_size, d_model=args.d_model, num_heads=args.heads, num_layers=args.layers,
        dropout=0.1, mask_id=MASK,
    )
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
                if k not in ("out", "work_dir", "fresh")}
    settings["vocab_size"] = task.vocab_size
    payload = {"command": command, "machine": machine_info(), "settings": settings, "training": {}, "results": []}
    nat_seconds = args.budget_minutes * 60 * (1 - args.teacher_share) / 8  # 8 NAT trainings

    def record(model: str, data: str, decoding: str, decode: Callable) -> None:
        cell = f"{model} / {decoding}" if model == "AR teacher" else f"{model} ({data}) / {decoding}"
        row = {"cell": cell, "model": model, "data": data, "decoding": decoding}
        PASSES.clear()
        row.update(evaluate(decode, task, test, args))
        row["mean_decoder_passes"] = round(sum(PASSES) / len(PASSES), 2) if PASSES else None
        payload["results"].append(row)
        save(payload, out)
        print(f"[nat] {row['cell']}: BLEU {row['bleu']:.2f}, valid {100 * row['valid']:.1f}%, "
              f"{row['latency_batch1_ms']:.1f} ms at batch 1, {row['latency_batch64_ms']:.1f} ms per 64", flush=True)

    # 1. the autoregressive teacher
    torch.manual_seed(args.seed)
    teacher = EncoderDecoder(config)
    payload["training"]["AR teacher (raw)"] = train(
        teacher, teacher_loss, train_pairs, args, args.budget_minutes * 60 * args.teacher_share, "AR teacher")
    teacher.eval()
    cap = max_target + 2
    record("AR teacher", "raw", "greedy", lambda src, idx: ar_outputs(generate(teacher, src, max_new_tokens=cap)))
    record("AR teacher", "raw", "beam 4",
           lambda src, idx: ar_outputs(generate(teacher, src, max_new_tokens=cap, num_beams=4)))

    # 2. sequence-level knowledge distillation
    began = time.perf_counter()
    distilled_targets = distill(teacher, [s for s, _ in train_pairs], batch_size=256, max_new_tokens=cap,
                                progress=args.progress)
    # valid outputs are at most 2 tokens per source symbol; cut longer (broken) teacher outputs there, and give
    # an empty one a token, so that every NAT can train on every pair
    distilled = [(s, t[: 2 * len(s)] if t else s[:1]) for (s, _), t in zip(train_pairs, distilled_targets)]
    consistent = sum(t in task.references(s) for s, t in distilled) / len(distilled)
    payload["distillation"] = {"seconds": round(time.perf_counter() - began, 1), "valid_outputs": round(consistent, 4)}
    print(f"[nat] distilled {len(distilled)} sources in {payload['distillation']['seconds']} s; "
          f"{100 * consistent:.1f}% of the teacher's outputs are valid", flush=True)

    # 3. the NATs
    for data, pairs in (("raw", train_pairs), ("distilled", distilled)):
        torch.manual_seed(args.seed)
        nat = NonAutoregressiveTransformer(config, NATConfig(length="fertility", max_fertility=4, max_target_length=max_target))
        payload["training"][f"fertility NAT ({data})"] = train(nat, nat_loss(task), pairs, args, nat_seconds, f"fertility NAT ({data})")
        for s in args.npd_samples:
            record("fertility NAT", data, f"NPD s={s}",
                   lambda src, idx, s=s: outputs(noisy_parallel_decode(nat, teacher, src, samples=s, seed=[args.seed + i for i in idx])))

        torch.manual_seed(args.seed)
        cmlm = NonAutoregressiveTransformer(
            config, NATConfig(length="classifier", decoder_input="mask", max_target_length=max_target))
        payload["training"][f"Mask-Predict ({data})"] = train(cmlm, nat_loss(task), pairs, args, nat_seconds, f"CMLM ({data})")
        for beam in dict.fromkeys([args.length_beam, 1]):  # the chosen length beam, then l = 1 (the fastest)
            for t in args.iterations:
                record("Mask-Predict", data, f"T={t}" if beam == args.length_beam else f"T={t}, l={beam}",
                       lambda src, idx, t=t, beam=beam: counted_outputs(
                           mask_predict(cmlm, src, iterations=t, length_beam=beam)))

    torch.manual_seed(args.seed)
    ctc = CTCNAT(config, CTCNATConfig(upsample=3, imputer=True))
    payload["training"]["CTC + Imputer (distilled)"] = train(ctc, ctc_loss, distilled, args, nat_seconds, "CTC (distilled)")
    record("CTC", "distilled", "best path", lambda src, idx: outputs(ctc_decode(ctc, src)))
    record("CTC", "distilled", "Imputer T=4", lambda src, idx: outputs(ctc_decode(ctc, src, iterations=4)))

    torch.manual_seed(args.seed)
    levenshtein = LevenshteinTransformer(config, max_insertions=8)
    payload["training"]["Levenshtein (distilled)"] = train(levenshtein, ctc_loss, distilled, args, nat_seconds, "Levenshtein (distilled)")
    record("Levenshtein", "distilled", "<= 10 iterations",
           lambda src, idx: counted_outputs(levenshtein_decode(levenshtein, src, max_iterations=10)))

    for weighting in ("binary_tree", "uniform"):
        torch.manual_seed(args.seed)
        insertion = InsertionTransformer(config)
        name = f"Insertion, {weighting.replace('_', ' ')} loss"
        payload["training"][f"{name} (distilled)"] = train(
            insertion, insertion_loss(weighting), distilled, args, nat_seconds, f"{name} (distilled)")
        record(name, "distilled", "parallel insertion",
               lambda src, idx, m=insertion: counted_outputs(insertion_decode(m, src, max_length=max_target)))

    if args.fsdd or (args.fsdd is None and Path(args.fsdd_root).exists()):
        run_fsdd(args, payload, out)
    save(payload, out)
    print(f"[nat] wrote {out / 'nat.json'}, {out / 'nat.md'} and {out / 'nat.png'}", flush=True)
    for line in shape_checks(payload["results"]):
        print(f"[nat] {line}", flush=True)


if __name__ == "__main__":
    main()
