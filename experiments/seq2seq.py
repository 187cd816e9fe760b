"""Algorithmic sequence-to-sequence with the encoder-decoder Transformer on the graphattn core.

Tasks (graphattn.data.algorithmic): copy, reverse, sort and multi-digit addition with source
lengths 20-40 (20 symbols; addition: 10 digits and '+', least significant digit first), each
trained from scratch with full, local and BigBird self-attention (encoder and decoder; the
cross-attention is full), plus copy with unknown words with and without the copy mechanism.
Source position ids (``EncoderDecoder``'s ``source_positions``) carry each task's structure:
addition gives every digit its place value (Abacus embeddings), sort gives every token the
same position (the encoder sees a set); ``--addition-positions plain`` / ``--sort-positions
plain`` run the usual ``0..S-1`` for comparison.

For every run: train with graphattn.train.fit on freshly generated examples until the greedy
exact match on a validation set has been 100% at three validations in a row, or the time budget
runs out; keep the best validation checkpoint (exact match, then token log-loss); report
exact-match accuracy on a held-out test set with greedy and beam decoding
(graphattn.decoding.generate), steps, wall time and parameter count.

Writes experiments/results/seq2seq.json and seq2seq.md, merging each run in as it finishes (a
rerun of one cell replaces its row). The full run (4 tasks x 3 patterns + 2 copy runs, 10
minutes each at most) takes up to about 2.5 hours on 2 CPU cores:

    python experiments/seq2seq.py
    python experiments/seq2seq.py --tasks reverse --patterns local --budget-minutes 3   # one cell
    python experiments/seq2seq.py --quick                                              # smoke test
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

import graphattn
from graphattn.data import algorithmic
from graphattn.data.algorithmic import EOS, PAD, PLUS, make_task, segment_positions, vocab_size
from graphattn.decoding import generate
from graphattn.models import EncoderDecoder, TransformerConfig
from graphattn.train import (
    Callback,
    Seq2SeqLoss,
    TrainConfig,
    fit,
    load_checkpoint,
    make_optimizer,
    sequence_cross_entropy,
)

RESULTS = Path(__file__).resolve().parent / "results"
PATTERNS = {
    "full": ("full", "causal"),
    "local": ("local(window=8)", "local(window=8, causal=True)"),
    "bigbird": (
        "bigbird(window=3, num_global=2, num_random=3)",
        "bigbird(window=3, num_global=2, num_random=3, causal=True)",
    ),
}
TRAIN_SEED, VALIDATION_SEED, TEST_SEED = 1_000_000, 2_000_000, 3_000_000


class GeneratedTask(Dataset):
    """Example ``i`` of a task, generated from seed ``base + i`` (so any index is reproducible).

    With ``bucket`` (the batch size), the examples ``i`` of one block ``i // bucket`` share one
    source length drawn for that block: read in order (no shuffling needed, the examples are
    random already), every batch is one length and carries no padding.
    """

    def __init__(self, name: str, size: int, base: int, bucket: int | None = None, **options) -> None:
        self.name, self.size, self.base, self.bucket, self.options = name, size, base, bucket, options

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int):
        options = dict(self.options)
        if self.bucket:
            low, high = options.get("min_length", 20), options.get("max_length", 40)
            length = random.Random(self.base - 1 - index // self.bucket).randint(low, high)
            options.update(min_length=length, max_length=length)
        return make_task(self.name, 1, seed=self.base + index, **options)[0]


def with_source_eos(examples):
    """Sources end with EOS (as in fairseq), so every encoder position can tell where the input ends."""
    return [(src + [EOS], tgt) for src, tgt in examples]


SOURCE_POSITIONS = {"plain": "0..S-1", "place": "place values", "set": "none (a set)"}


class Collate:
    """Right-padded ``(src, tgt)``. Source positions (:data:`SOURCE_POSITIONS`): ``"plain"``
    keeps the usual ``0..S-1``; otherwise the source is the pair ``(ids, position ids)``:
    ``"place"`` gives every digit its place value (positions restart after '+' and EOS: the
    Abacus embeddings of McLeish et al. 2024), so the two digits to add share one; ``"set"``
    gives every source token position 0 except EOS (position 1): the encoder sees the input as
    a set, which is all sorting needs."""

    def __init__(self, positions: str = "plain") -> None:
        if positions not in SOURCE_POSITIONS:
            raise ValueError(f"Unknown source positions {positions!r}; expected one of {', '.join(SOURCE_POSITIONS)}")
        self.positions = positions

    def __call__(self, examples):
        src, tgt = algorithmic.collate(with_source_eos(examples))
        if self.positions == "place":
            return (src, segment_positions(src, (PLUS, EOS))), tgt
        if self.positions == "set":
            return (src, (src == EOS).long()), tgt
        return src, tgt


def decode(model: EncoderDecoder, examples, collate: Collate, *, num_beams: int, batch_size: int = 250) -> list[list[int]]:
    """Generated target tokens (EOS and padding removed) for every example."""
    outputs = []
    model.eval()
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            chunk = examples[start:start + batch_size]
            src, tgt = collate(chunk)
            result = generate(model, src, max_new_tokens=tgt.size(1) + 5, num_beams=num_beams)
            for row, length in zip(result.sequences.tolist(), result.lengths.tolist()):
                tokens = row[:length]
                outputs.append(tokens[:-1] if tokens and tokens[-1] == EOS else tokens)
    return outputs


def exact_match(model: EncoderDecoder, examples, collate: Collate, *, num_beams: int = 1) -> float:
    predictions = decode(model, examples, collate, num_beams=num_beams)
    return sum(p == tgt[1:-1] for p, (_, tgt) in zip(predictions, examples)) / len(examples)


def validation_metrics(model: EncoderDecoder, examples, collate: Collate) -> dict:
    """Greedy exact match, the teacher-forced token log-loss, and their combination used to pick
    the best checkpoint: ``val_score = exact match - 0.01 * log-loss`` (exact match first; among
    equal exact match, the more confident model)."""
    exact = exact_match(model, examples, collate)
    src, tgt = collate(examples)
    logits = model(src, tgt[:, :-1])
    loss = float(sequence_cross_entropy(logits, tgt[:, 1:], PAD))
    return {"val_exact": exact, "val_loss": loss, "val_score": exact - 0.01 * loss}


class BudgetCosine:
    """Learning-rate multiplier for a wall-clock budget: linear warm-up over ``warmup`` steps, then
    a cosine from 1 to 0 over the budget's elapsed fraction (training to a fixed time budget with
    the rate annealed to zero at its end, cf. Li et al. 2020, "Budgeted training")."""

    def __init__(self, warmup: int, seconds: float) -> None:
        self.warmup, self.seconds, self.start = warmup, seconds, None

    def __call__(self, step: int) -> float:
        if self.start is None:
            self.start = time.perf_counter()
        progress = min(1.0, (time.perf_counter() - self.start) / self.seconds)
        return min(1.0, (step + 1) / self.warmup) * 0.5 * (1.0 + math.cos(math.pi * progress))


class StopWhen(Callback):
    """Stop on a wall-clock budget, or after ``solved_validations`` validations in a row with 100%
    exact match."""

    def __init__(self, seconds: float, solved_validations: int) -> None:
        self.seconds, self.needed, self.start = seconds, solved_validations, time.perf_counter()
        self.solved_at: tuple[int, float] | None = None
        self.streak = 0

    def on_step_end(self, state) -> None:
        if time.perf_counter() - self.start > self.seconds:
            state.should_stop = True

    def on_validation_end(self, state, metrics) -> None:
        if metrics.get("val_exact", 0.0) >= 1.0:
            if self.solved_at is None:
                self.solved_at = (state.step, time.perf_counter() - self.start)
            self.streak += 1
            if self.streak >= self.needed:
                state.should_stop = True
        else:
            self.streak = 0


@dataclass
class RunResult:
    task: str
    pattern: str
    source_positions: str
    encoder_pattern: str
    decoder_pattern: str
    copy_mechanism: bool
    parameters: int
    steps: int
    train_seconds: float
    solved_at_step: int | None
    solved_at_seconds: float | None
    best_validation_score: float | None
    test_exact_greedy: float
    test_exact_beam: float
    test_examples: int
    extra: dict
    settings: dict


def run(task: str, pattern: str, args, *, copy: bool = False, extended: bool = True, positions: str = "plain") -> RunResult:
    options = {"min_length": args.min_length, "max_length": args.max_length}
    if task != "addition":
        options["num_symbols"] = args.num_symbols
    if task == "copy_unknown":
        options.update(unknown_rate=args.unknown_rate, extended=extended)
    encoder_pattern, decoder_pattern = PATTERNS[pattern]
    config = TransformerConfig(
        vocab_size=vocab_size(task, args.num_symbols),
        d_model=args.d_model, num_heads=args.heads, num_layers=args.layers, dropout=0.0,
        encoder_pattern=encoder_pattern, decoder_pattern=decoder_pattern, copy=copy,
    )
    torch.manual_seed(args.seed)
    model = EncoderDecoder(config)
    parameters = sum(p.numel() for p in model.parameters())
    bucket = args.batch_size if args.length_buckets else None
    train = GeneratedTask(task, args.batch_size * args.max_steps, TRAIN_SEED, bucket, **options)
    validation = make_task(task, args.validation_size, seed=VALIDATION_SEED, **options)
    test = make_task(task, args.test_size, seed=TEST_SEED, **options)

    collate = Collate(positions)

    def evaluate_fn(model, _data):
        return validation_metrics(model, validation, collate)

    stopper = StopWhen(args.budget_minutes * 60, args.solved_validations)
    train_config = TrainConfig(
        epochs=1, max_steps=args.max_steps, batch_size=args.batch_size, lr=args.lr, betas=(0.9, 0.98),
        clip_grad_norm=1.0, seed=args.seed, eval_every=args.eval_every, monitor="val_score", mode="max",
        shuffle=not args.length_buckets,
        progress=args.progress, log_every=50,
    )
    optimizer = make_optimizer(model.parameters(), train_config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, BudgetCosine(args.warmup, args.budget_minutes * 60))
    suffix = "" if positions == "plain" else f"-{positions}"
    out_dir = Path(args.work_dir) / f"{task}-{pattern}{'-copy' if copy else ''}{suffix}"
    label = f"{task} / {pattern}{' / copy' if copy else ''}{'' if positions == 'plain' else f' / source positions {positions}'}"
    print(f"[seq2seq] {label}: {parameters:,} parameters, budget {args.budget_minutes} min", flush=True)
    started = time.perf_counter()
    result = fit(
        model, train,
        loss_fn=Seq2SeqLoss(pad_id=PAD),
        collate_fn=collate,
        val_data=validation,
        evaluate_fn=evaluate_fn,
        config=train_config, optimizer=optimizer, scheduler=scheduler,
        out_dir=out_dir, resume=False, callbacks=[stopper],
    )
    train_seconds = time.perf_counter() - started
    best = out_dir / "best.pt"
    if best.exists():
        load_checkpoint(best, model)
    greedy = exact_match(model, test, collate, num_beams=1)
    beam = exact_match(model, test, collate, num_beams=args.beams)
    extra = {}
    if task == "copy_unknown":
        extra = unknown_word_accuracy(model, test, collate, config.vocab_size, extended)
    print(
        f"[seq2seq] {label}: {result.steps} steps in {train_seconds:.0f} s, test exact match greedy "
        f"{greedy:.4f}, beam {beam:.4f} {extra}", flush=True,
    )
    return RunResult(
        task=task, pattern=pattern, source_positions=SOURCE_POSITIONS[positions], encoder_pattern=encoder_pattern, decoder_pattern=decoder_pattern,
        copy_mechanism=copy, parameters=parameters, steps=result.steps, train_seconds=round(train_seconds, 1),
        solved_at_step=stopper.solved_at[0] if stopper.solved_at else None,
        solved_at_seconds=round(stopper.solved_at[1], 1) if stopper.solved_at else None,
        best_validation_score=result.best_metric, test_exact_greedy=greedy, test_exact_beam=beam,
        test_examples=len(test), extra=extra, settings={k: v for k, v in vars(args).items() if k not in ("out", "work_dir")},
    )


def unknown_word_accuracy(model, test, collate: Collate, vocab: int, extended: bool) -> dict:
    """How often the words outside the vocabulary come out right (a model without copy can only
    write UNK, which never matches the word)."""
    predictions = decode(model, test, collate, num_beams=1)
    hits = total = with_unknown = exact_with_unknown = 0
    for prediction, (src, tgt) in zip(predictions, test):
        unknown_positions = [i for i, t in enumerate(tgt[1:-1]) if t >= vocab or (not extended and t == algorithmic.UNK)]
        if not unknown_positions:
            continue
        with_unknown += 1
        total += len(unknown_positions)
        # without extended ids the target holds UNK, which stands for a word the model cannot write
        hits += sum(1 for i in unknown_positions if extended and i < len(prediction) and prediction[i] == tgt[1 + i])
        exact_with_unknown += extended and prediction == tgt[1:-1]
    return {
        "unknown_word_accuracy": hits / max(total, 1),
        "exact_match_on_sequences_with_unknown_words": exact_with_unknown / max(with_unknown, 1),
        "sequences_with_unknown_words": with_unknown,
    }


def machine() -> dict:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "graphattn": graphattn.__version__,
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
    }


ORDER = ["copy", "reverse", "sort", "addition", "copy_unknown"]


def row_key(row: dict) -> tuple:
    """A result row's cell: task, pattern, copy mechanism, source positions."""
    return (row["task"], row["pattern"], row["copy_mechanism"], row["source_positions"])


def sort_key(row: dict) -> tuple:
    return (ORDER.index(row["task"]), list(PATTERNS).index(row["pattern"]), row["source_positions"], row["copy_mechanism"])


def write_markdown(payload: dict, path: Path) -> None:
    rows = payload["results"]
    first = rows[0]["settings"]
    lines = [
        "# Algorithmic seq2seq (experiments/seq2seq.py)",
        "",
        "Every row is one training run from scratch; `python experiments/seq2seq.py` runs all of "
        "them (each row can be rerun alone, e.g. `--tasks addition --patterns local --no-copy-task`, "
        "and replaces its row here). Commands run: "
        + ", ".join(f"`{c}`" for c in payload["commands"]) + ".",
        "",
        f"Model: encoder-decoder, d_model {first['d_model']}, {first['heads']} heads, {first['layers']}+{first['layers']} "
        f"layers, sinusoidal positions, no dropout; batch {first['batch_size']}, AdamW lr {first['lr']} ({first['warmup']} "
        "warm-up steps, then a cosine to 0 over the time budget); "
        f"{'each training batch of one source length; ' if first['length_buckets'] else ''}source lengths "
        f"{first['min_length']}-{first['max_length']} ({first['num_symbols']} symbols; addition: digits); validation every "
        f"{first['eval_every']} steps on {first['validation_size']} examples; stop after {first['solved_validations']} "
        f"validations in a row at 100% exact match or after {first['budget_minutes']} min (best validation "
        f"checkpoint kept); test on {first['test_size']} new examples; beam = {first['beams']} beams; "
        f"{first['threads']} CPU threads. Rows whose settings differ from these say so.",
        "",
        "Source positions: `0..S-1` is the usual absolute position of every source token; `place values` "
        "restarts the positions after '+' (numbers are least significant digit first, so each digit's "
        "position is its place value and the two digits to add share one -- the Abacus embeddings of "
        "McLeish et al. 2024); `none (a set)` gives every source token position 0 (EOS 1), so the encoder "
        "sees the input as a set, which is all sorting needs; both are passed to the model as `source_positions`.",
        "",
        "| task | pattern (encoder / decoder) | source positions | params | steps | train time | 100% val at | test exact (greedy) | test exact (beam) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        solved = f"step {r['solved_at_step']} ({r['solved_at_seconds']:.0f} s)" if r["solved_at_step"] else "not reached"
        name = r["task"] + (" + copy mechanism" if r["copy_mechanism"] else "")
        differs = {k: v for k, v in r["settings"].items() if first.get(k) != v and k not in ("tasks", "patterns", "no_copy_task", "addition_positions", "sort_positions")}
        note = f" (settings: {differs})" if differs else ""
        lines.append(
            f"| {name}{note} | {r['pattern']}: `{r['encoder_pattern']}` / `{r['decoder_pattern']}` | {r['source_positions']} | "
            f"{r['parameters']:,} | {r['steps']} | {r['train_seconds'] / 60:.1f} min | {solved} | "
            f"{100 * r['test_exact_greedy']:.2f}% | {100 * r['test_exact_beam']:.2f}% |"
        )
    copy_rows = [r for r in rows if r["task"] == "copy_unknown"]
    if copy_rows:
        lines += [
            "",
            "Copy with unknown words (each source word is, with probability "
            f"{first['unknown_rate']}, a word outside the vocabulary; without the copy mechanism it is UNK "
            "in source and target, and the model can only write UNK):",
            "",
            "| model | unknown words reproduced | exact match on sequences with unknown words |",
            "|---|---|---|",
        ]
        for r in copy_rows:
            lines.append(
                f"| {'with' if r['copy_mechanism'] else 'without'} copy mechanism | "
                f"{100 * r['extra']['unknown_word_accuracy']:.2f}% | "
                f"{100 * r['extra']['exact_match_on_sequences_with_unknown_words']:.2f}% "
                f"({r['extra']['sequences_with_unknown_words']} sequences) |"
            )
    lines += ["", f"Machine: {json.dumps(payload['machine'])}", ""]
    path.write_text("\n".join(lines))


def save(result: RunResult, out: Path, command: str) -> None:
    """Merge one run into ``out/seq2seq.{json,md}`` (replacing an earlier run of the same cell),
    right after it finishes, so an interrupted sweep keeps what it measured."""
    path = out / "seq2seq.json"
    payload = json.loads(path.read_text()) if path.exists() else {"commands": [], "machine": machine(), "results": []}
    row = asdict(result)
    row["command"] = command
    payload["results"] = sorted([r for r in payload["results"] if row_key(r) != row_key(row)] + [row], key=sort_key)
    if command not in payload["commands"]:
        payload["commands"].append(command)
    payload["commands"] = [c for c in payload["commands"] if any(r.get("command") == c for r in payload["results"])]
    payload["machine"] = machine()
    path.write_text(json.dumps(payload, indent=2))
    write_markdown(payload, out / "seq2seq.md")
    print(f"[seq2seq] saved to {path} and {out / 'seq2seq.md'}", flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="*", default=["copy", "reverse", "sort", "addition"],
                        choices=["copy", "reverse", "sort", "addition"])
    parser.add_argument("--patterns", nargs="+", default=list(PATTERNS), choices=list(PATTERNS))
    parser.add_argument("--addition-positions", nargs="+", default=["place"], choices=["place", "plain"],
                        help="source positions for addition: place values (restarting after '+') and/or plain 0..S-1")
    parser.add_argument("--sort-positions", nargs="+", default=["set"], choices=["set", "plain"],
                        help="source positions for sort: none (the encoder sees a set) and/or plain 0..S-1")
    parser.add_argument("--no-copy-task", action="store_true", help="skip the copy-with-unknown-words comparison")
    parser.add_argument("--budget-minutes", type=float, default=10.0)
    parser.add_argument("--max-steps", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--min-length", type=int, default=20)
    parser.add_argument("--max-length", type=int, default=40)
    parser.add_argument("--num-symbols", type=int, default=20)
    parser.add_argument("--unknown-rate", type=float, default=0.1)
    parser.add_argument("--length-buckets", action=argparse.BooleanOptionalAction, default=True,
                        help="one source length per training batch (no padding)")
    parser.add_argument("--validation-size", type=int, default=500)
    parser.add_argument("--solved-validations", type=int, default=3,
                        help="stop after this many validations in a row at 100%% exact match")
    parser.add_argument("--test-size", type=int, default=1000)
    parser.add_argument("--beams", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--work-dir", default="/tmp/graphattn-seq2seq")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--quick", action="store_true", help="tiny run to check the script works")
    args = parser.parse_args(argv)
    if args.quick:
        args.budget_minutes, args.max_steps, args.eval_every = 0.3, 30, 15
        args.validation_size, args.test_size, args.d_model, args.min_length, args.max_length = 20, 20, 32, 5, 8
        args.out = str(Path(args.work_dir) / "quick")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = " ".join(["python", "experiments/seq2seq.py", *(sys.argv[1:] if argv is None else argv)])
    for task in args.tasks:
        for pattern in args.patterns:
            kinds = {"addition": args.addition_positions, "sort": args.sort_positions}.get(task, ["plain"])
            for positions in kinds:
                save(run(task, pattern, args, positions=positions), out, command)
    if not args.no_copy_task:
        save(run("copy_unknown", "full", args, copy=False, extended=False), out, command)
        save(run("copy_unknown", "full", args, copy=True, extended=True), out, command)


if __name__ == "__main__":
    main()
