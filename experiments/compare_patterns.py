"""Long-Range-Arena-style comparison of attention patterns and mechanisms (LRA, Tay et al. 2021).

Three studies, one subcommand each (``all`` runs them in turn), all through graphattn's public
API (:mod:`graphattn.compare`):

* ``speed``: LRA's Table 2. Training steps/s (forward + backward + AdamW step on random byte
  tokens, batch 2 by default, every sequence full length) and peak memory of every variant at
  1K, 2K, 3K and 4K tokens, relative to full attention measured in the same run: all variants
  of one length interleaved (order reversed every other round), 2 warm-up steps, median of 5;
  forward-only time (eval, no gradients) and the first step (one-off costs: pattern and CSR
  structures, optimizer state) reported apart. Peak memory: on CUDA ``max_memory_allocated``;
  on CPU :class:`graphattn.compare.TensorMemoryTracker` (the peak of live tensor storage,
  counted at the operator level; kernel-internal scratch memory is not seen). Both include the
  parameters, buffers and optimizer state. Written to ``results/lra_speed.{json,md}``, one
  length at a time. Target (issue): at 4K tokens ``local`` and ``linear`` reach >= 5x full
  attention's steps/s and <= 1/5 of its peak memory.
* ``accuracy``: LRA's Table 1. For each task (listops, text, pathfinder, image) and variant,
  :func:`graphattn.compare.train_and_evaluate`: a :class:`~graphattn.models.classifier.SequenceClassifier`
  (d_model 64, 4 heads, 2 layers, feed-forward 128, mean pooling; the same for all variants)
  trained for ``--budget-minutes`` of training time (validation excluded), AdamW lr 1e-3 with
  100 warm-up steps and a cosine to 0 over the budget, batch 32 as micro-batches of similar
  lengths and at most 8,192 padded tokens (8 x 1024, 4 x 2000, 2 x 4000; memory); the state
  with the best validation accuracy (5 validations over the budget) is tested. Written to
  ``results/lra_accuracy.{json,md}`` after every cell, next to LRA's published numbers. Target
  (issue): full attention >= 36% on ListOps at the stated budget.
* ``plot``: the bubble chart (LRA's Figure 3) from the two JSON files: x = steps/s relative to
  full at 4K tokens, y = mean test accuracy over the tasks, bubble area = peak memory relative
  to full at 4K. ``results/lra_bubbles.png``; redrawn by the other studies after every result.

Data: ListOps 20,000 / 256 / 1,000 expressions of 500-2,000 tokens; Pathfinder 8,000 / 256 /
1,000 32x32 images; Image (shapes, not CIFAR-10) 10,000 / 256 / 1,000; Text = byte-level genre
of UD English-EWT documents of 1,000-4,000 bytes (455 / 83 / 83, the treebank's own splits; the
treebank is read from ``--data-dir``/text/ud_english_ewt, default ``$GRAPHATTN_SHARED_DATA`` or
``<repository>/../shared/data``). Generated tasks are cached in ``--work-dir``.

Commands (from the repository root). Times are estimates for this project's 2-core machine,
extrapolated from steps measured with one thread under ``nice -n 19`` while another job ran
(at batch 2, d_model 64: full 0.11 s per training step at 1K tokens and 1.5 s at 4K, local 0.07 s
and 0.30 s, linear 0.04 s and 0.16 s; the slowest at 4K: dense Synthesizer 20 s, LSH 9 s,
Sinkhorn 3.6 s); an idle machine with 2 threads is faster::

    python experiments/compare_patterns.py speed                    # 1K-4K x 13 variants: ~15 min
    python experiments/compare_patterns.py speed --lengths 4096     # the targets only: ~7 min
    python experiments/compare_patterns.py accuracy                 # 4 tasks x 13 variants x 20 min: ~21 h
    python experiments/compare_patterns.py accuracy --tasks listops # ~5 h (one task: 12 x 20 min + evaluation)
    python experiments/compare_patterns.py accuracy --tasks listops --variants full --budget-minutes 30  # ~35 min
    python experiments/compare_patterns.py accuracy --skip-done     # continue: only the cells not in the results yet
                                                                    # (a run cut off mid-way resumes from its checkpoint
                                                                    # in <work-dir>/runs, budget and best state kept)
    python experiments/compare_patterns.py plot                     # seconds
    python experiments/compare_patterns.py all                      # speed, accuracy, plot: ~20 h
    python experiments/compare_patterns.py all --quick              # smoke test: ~15 s, temp folder

Evaluation is not in the budget: 6 validations (256 examples) and the test (1,000) take about a
minute for the fast variants but 10-20 minutes for LSH (0.5 s per 1K-token sequence, forward
only), Sinkhorn and the dense Synthesizer on text.

``--quick`` uses tiny lengths, data, model and budget (each only where the flag is not given
explicitly) and writes into ``<work-dir>/quick`` instead of ``experiments/results``.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from graphattn.compare import (
    TASK_LENGTHS,
    TASKS,
    VARIANT_NAMES,
    VARIANTS,
    ModelSettings,
    TaskData,
    bubble_points,
    compare,
    load_task,
    machine_info,
    measure_steps,
    plot_bubbles,
)
from graphattn.data.lra import SequenceClassificationData

REPOSITORY = Path(__file__).resolve().parents[1]
RESULTS = REPOSITORY / "experiments" / "results"
SPEED_LENGTHS = (1024, 2048, 3072, 4096)
TARGET_LENGTH = 4096
TARGET_SPEEDUP, TARGET_MEMORY_SHARE, TARGET_LISTOPS = 5.0, 0.2, 0.36
PUBLISHED_TASK_COLUMNS = {"listops": "listops", "text": "text", "pathfinder": "pathfinder", "image": "image"}

# flag dest -> (default, --quick default)
DEFAULTS = {
    "lengths": (list(SPEED_LENGTHS), [64, 128]),
    "speed_batch_size": (2, 2),
    "speed_steps": (5, 2),
    "warmup": (2, 1),
    "tasks": (list(TASKS), ["listops", "image"]),
    "budget_minutes": (20.0, 0.02),
    "batch_size": (32, 8),
    "lr": (1e-3, 1e-3),
    "evaluations": (5, 1),
    "max_steps": (None, 3),
    "train_size": (None, 48),
    "valid_size": (None, 16),
    "test_size": (None, 16),
    "d_model": (64, 16),
    "heads": (4, 2),
    "layers": (2, 1),
    "ff_dim": (128, 32),
}
QUICK_TASK_LENGTHS = {"listops": 64, "text": 1000, "pathfinder": 256, "image": 256}


# ============================================================================== environment
def shared_data_dir(given: Path | None) -> Path | None:
    """The shared data folder: ``given``, ``$GRAPHATTN_SHARED_DATA`` or ``<repository>/../shared/data``
    (None when none exists)."""
    candidates = [given] if given is not None else [os.environ.get("GRAPHATTN_SHARED_DATA"), REPOSITORY.parent / "shared" / "data"]
    for candidate in candidates:
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


def published(shared: Path | None, name: str) -> dict[str, dict[str, str]]:
    """Rows of ``published/<name>`` by model name (empty when the file is absent)."""
    if shared is None or not (shared / "published" / name).is_file():
        return {}
    with open(shared / "published" / name, newline="") as handle:
        return {row["model"]: row for row in csv.DictReader(handle)}


def model_settings(args: argparse.Namespace) -> ModelSettings:
    return ModelSettings(d_model=args.d_model, num_heads=args.heads, num_layers=args.layers, ff_dim=args.ff_dim)


# ============================================================================== result files
def load_payload(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {"commands": [], "machine": machine_info(), "results": []}


def merge(path: Path, rows: list[dict], key, command: str) -> dict[str, Any]:
    """Merge ``rows`` into ``path`` (replacing rows of the same cell), keep only the commands that
    produced a kept row, write atomically; returns the payload."""
    payload = load_payload(path)
    for row in rows:
        row["command"] = command
    new_keys = {key(row) for row in rows}
    payload["results"] = [r for r in payload["results"] if key(r) not in new_keys] + rows
    order = {name: i for i, name in enumerate(VARIANT_NAMES)}
    payload["results"].sort(key=lambda r: (key(r)[:-1], order.get(r["variant"], 99), key(r)[-1]))
    if command not in payload["commands"]:
        payload["commands"].append(command)
    payload["commands"] = [c for c in payload["commands"] if any(r.get("command") == c for r in payload["results"])]
    payload["machine"] = machine_info()
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(payload, indent=2))
    os.replace(temporary, path)
    return payload


def speed_key(row: dict) -> tuple:
    return (row["length"], row["variant"])


def accuracy_key(row: dict) -> tuple:
    # the budget is part of the cell: a longer run of one variant (e.g. the ListOps target) sits
    # next to the table's run instead of replacing it
    return (TASKS.index(row["task"]) if row["task"] in TASKS else 99, row["variant"], row["budget_minutes"])


def table_budget(rows: list[dict]) -> float:
    """The budget most cells were trained with: the one the main accuracy table shows."""
    counts: dict[float, int] = {}
    for r in rows:
        counts[r["budget_minutes"]] = counts.get(r["budget_minutes"], 0) + 1
    return max(counts, key=lambda b: (counts[b], -b))


def _ratio(row: dict, base: dict | None, field: str) -> float | None:
    if base is None or row.get(field) is None or not base.get(field):
        return None
    return row[field] / base[field]


def write_speed_markdown(payload: dict, path: Path, shared: Path | None) -> None:
    rows = payload["results"]
    lengths = sorted({r["length"] for r in rows})
    by = {(r["variant"], r["length"]): r for r in rows}
    order = {name: i for i, name in enumerate(VARIANT_NAMES)}
    names = sorted({r["variant"] for r in rows}, key=lambda n: order.get(n, 99))
    lra = published(shared, "lra_table2_speed_memory.csv")
    first = rows[0]
    lines = [
        "# Speed and memory of the attention variants (experiments/compare_patterns.py speed)",
        "",
        "LRA's Table 2 protocol on this machine: a training step (forward, cross-entropy, backward, AdamW step) of a "
        f"SequenceClassifier ({first['settings']['model']}) on random byte tokens, batch {first['batch_size']}, every "
        "sequence full length; all variants of one length in the same process, interleaved (order reversed every other "
        f"round), {first['settings']['warmup']} warm-up steps, median of {first['timed_steps']} timed steps; "
        f"{first['threads']} torch threads on {first['device']}. Peak memory: {first['memory_method']} "
        "(parameters, buffers and optimizer state plus the peak of the tensors allocated during one step; on CPU "
        "counted at the operator level by graphattn.compare.TensorMemoryTracker, which does not see scratch memory "
        "inside kernels). Ratios are to full attention measured in the same run. Commands: "
        + ", ".join(f"`{c}`" for c in payload["commands"]) + ".",
        "",
        "## Training steps per second (ratio to full)",
        "",
        "| variant | " + " | ".join(f"{n} tokens" for n in lengths) + " | LRA speed-up at 1K / 2K / 3K / 4K |",
        "|---" * (len(lengths) + 2) + "|",
    ]
    for name in names:
        cells = []
        for n in lengths:
            r = by.get((name, n))
            ratio = _ratio(r, by.get(("full", n)), "steps_per_second") if r else None
            cells.append("-" if r is None else f"{r['steps_per_second']:.3g}" + (f" ({ratio:.2f}x)" if ratio else ""))
        row = lra.get(VARIANTS[name].published_name or "", {}) if name in VARIANTS else {}
        reference = " / ".join(row.get(f"speedup_{k}k", "-") for k in (1, 2, 3, 4)) if row else "-"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {reference} |")
    lines += [
        "",
        "## Peak memory in MiB (share of full)",
        "",
        "| variant | " + " | ".join(f"{n} tokens" for n in lengths) + " | LRA peak GB at 1K / 2K / 3K / 4K |",
        "|---" * (len(lengths) + 2) + "|",
    ]
    for name in names:
        cells = []
        for n in lengths:
            r = by.get((name, n))
            share = _ratio(r, by.get(("full", n)), "peak_memory_bytes") if r else None
            if r is None or r.get("peak_memory_bytes") is None:
                cells.append("-")
            else:
                cells.append(f"{r['peak_memory_bytes'] / 2**20:.1f}" + (f" ({share:.2f})" if share else ""))
        row = lra.get(VARIANTS[name].published_name or "", {}) if name in VARIANTS else {}
        reference = " / ".join(row.get(f"peak_mem_gb_{k}k", "-") for k in (1, 2, 3, 4)) if row else "-"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {reference} |")
    lines += [
        "",
        "## Forward only (eval, no gradients) and the first step, seconds",
        "",
        "| variant | " + " | ".join(f"{n}: forward / first step" for n in lengths) + " |",
        "|---" * (len(lengths) + 1) + "|",
    ]
    for name in names:
        cells = []
        for n in lengths:
            r = by.get((name, n))
            if r is None:
                cells.append("-")
            else:
                forward = "-" if r["forward_seconds"] is None else f"{r['forward_seconds']:.3g}"
                cells.append(f"{forward} / {r['first_step_seconds']:.3g}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", f"What `auto` ran for the softmax variants at {lengths[-1]} tokens (`graphattn.explain`):", ""]
    for name in names:
        r = by.get((name, lengths[-1]))
        if r is not None and r.get("attention_backend"):
            lines.append(f"* {name}: {r['attention_backend']}")
    lines += ["", f"## Target at {TARGET_LENGTH} tokens (issue): local and linear >= {TARGET_SPEEDUP:g}x full's steps/s "
              f"and <= {TARGET_MEMORY_SHARE:g} of its peak memory", ""]
    base = by.get(("full", TARGET_LENGTH))
    for name in ("local", "linear"):
        r = by.get((name, TARGET_LENGTH))
        if r is None or base is None:
            lines.append(f"* {name}: not measured at {TARGET_LENGTH} tokens yet.")
            continue
        speedup = _ratio(r, base, "steps_per_second")
        share = _ratio(r, base, "peak_memory_bytes")
        speed_text = f"{speedup:.2f}x steps/s ({'met' if speedup >= TARGET_SPEEDUP else 'NOT met'})"
        memory_text = ("memory not measured" if share is None else
                       f"{share:.2f} of the peak memory ({'met' if share <= TARGET_MEMORY_SHARE else 'NOT met'})")
        lines.append(f"* {name}: {speed_text}; {memory_text}.")
    fused = by.get(("full_sdpa", TARGET_LENGTH))
    if fused is not None:
        lines += ["", f"Against `full_sdpa` (the same full attention through fused SDPA kernels that never store the "
                  f"L x L scores) at {TARGET_LENGTH} tokens, which is the harder baseline:", ""]
        for name in ("local", "linear"):
            r = by.get((name, TARGET_LENGTH))
            if r is not None:
                share = _ratio(r, fused, "peak_memory_bytes")
                lines.append(f"* {name}: {_ratio(r, fused, 'steps_per_second'):.2f}x the steps/s of full_sdpa"
                             + ("" if share is None else f", {share:.2f}x its peak memory") + ".")
        lines += [
            "",
            "`full` is the vanilla Transformer of LRA's Table 2: the [B, H, L, L] scores are stored (and, with "
            "attention dropout, a dropped copy), so its memory grows quadratically and its CPU time is dominated by "
            "memory traffic. `full_sdpa` is the same attention as graphattn runs it by default (`auto` picks "
            "`F.scaled_dot_product_attention`, a fused kernel whose memory grows linearly with L).",
        ]
    lines += ["", f"Machine: {json.dumps(payload['machine'])}", ""]
    path.write_text("\n".join(lines))


def micro_batches(payload: dict) -> str:
    """``"8 x 1024, 4 x 2000"``: micro-batch size x longest length of the tasks in the results."""
    sizes = sorted({(r["max_length"], r["settings"].get("micro_batch_size")) for r in payload["results"]})
    return ", ".join(f"{m} x {n}" for n, m in sizes)


def write_accuracy_markdown(payload: dict, path: Path, shared: Path | None) -> None:
    rows = payload["results"]
    tasks = [t for t in TASKS if any(r["task"] == t for r in rows)]
    budget = table_budget(rows)
    by = {(r["variant"], r["task"]): r for r in rows if r["budget_minutes"] == budget}
    order = {name: i for i, name in enumerate(VARIANT_NAMES)}
    names = sorted({r["variant"] for r in rows}, key=lambda n: order.get(n, 99))
    lra = published(shared, "lra_table1_accuracy.csv")
    first = rows[0]["settings"]
    budgets = sorted({r["budget_minutes"] for r in rows})
    lines = [
        "# Accuracy of the attention variants on LRA-style tasks (experiments/compare_patterns.py accuracy)",
        "",
        f"Test accuracy (%) of the best-validation state after {budget:g} minutes of training per cell (runs with "
        f"other budgets -- {', '.join(f'{b:g}' for b in budgets if b != budget) or 'none'} min -- are in the second "
        f"table) on {first['threads']} CPU thread(s) (validation excluded; LRA trained 5K-50K steps of "
        "larger models on TPUs, so the budgets here are far smaller -- compare the variants with each other, and "
        f"LRA's numbers, in parentheses, only as a reference). Model: d_model {first['d_model']}, {first['num_heads']} "
        f"heads, {first['num_layers']} layers, feed-forward {first['ff_dim']}, dropout {first['dropout']}, "
        f"{first['pooling']} pooling, {first['position']} positions; batch {first['batch_size']} "
        f"as {'micro-batches of similar lengths' if first.get('length_buckets') else 'random micro-batches'} "
        f"({micro_batches(payload)} tokens), gradients accumulated, AdamW lr {first['lr']}, weight decay "
        f"{first['weight_decay']}, {first['warmup_steps']} warm-up steps then a cosine to 0 over the budget, "
        f"{first['evaluations']} validations. Rows whose settings differ say so. Commands: "
        + ", ".join(f"`{c}`" for c in payload["commands"]) + ".",
        "",
        "| variant | " + " | ".join(f"{t} (LRA)" for t in tasks) + " | mean |",
        "|---" * (len(tasks) + 2) + "|",
    ]
    for name in names:
        cells, values = [], []
        reference = lra.get(VARIANTS[name].published_name or "", {}) if name in VARIANTS else {}
        for t in tasks:
            r = by.get((name, t))
            ref = reference.get(PUBLISHED_TASK_COLUMNS[t])
            ref_text = f" ({ref})" if ref else ""
            if r is None:
                cells.append("-" + ref_text)
                continue
            values.append(r["test_accuracy"])
            differs = {k: v for k, v in r["settings"].items()
                       if first.get(k) != v and k not in ("train_examples", "micro_batch_size")}
            note = f" [{differs}]" if differs else ""
            cells.append(f"{100 * r['test_accuracy']:.2f}{ref_text}{note}")
        mean = f"{100 * sum(values) / len(values):.2f}" if values else "-"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {mean} |")
    lines += [
        "",
        "| task | variant | budget (min) | length | train / valid / test | params | steps | examples seen | train min | "
        "best step | valid acc | test acc |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['task']} | {r['variant']}: `{r['encoder_pattern']}` / `{r['encoder_attention']}` | "
            f"{r['budget_minutes']:g} | {r['max_length']} | "
            f"{r['settings']['train_examples']} / {r['valid_examples']} / {r['test_examples']} | {r['parameters']:,} | "
            f"{r['steps']} | {r['examples_seen']:,} | {r['train_seconds'] / 60:.1f} | {r['best_step']} | "
            f"{100 * (r['valid_accuracy'] or 0):.2f} | {100 * r['test_accuracy']:.2f} |"
        )
    full_runs = [r for r in rows if r["task"] == "listops" and r["variant"] in ("full", "full_sdpa")]
    lines += ["", f"Target (issue): full attention >= {100 * TARGET_LISTOPS:g}% test accuracy on ListOps at the stated "
              "budget (`full` and `full_sdpa` are the same attention, stored scores or fused kernels): "
              + ("not measured yet." if not full_runs else "; ".join(
                  f"{r['variant']} {100 * r['test_accuracy']:.2f}% after {r['budget_minutes']:g} min, {r['steps']} steps "
                  f"({'met' if r['test_accuracy'] >= TARGET_LISTOPS else 'NOT met'})" for r in full_runs) + "."),
              "", f"Machine: {json.dumps(payload['machine'])}", ""]
    path.write_text("\n".join(lines))


def redraw_bubbles(out: Path) -> Path | None:
    """``lra_bubbles.png`` from the two JSON files, when both hold results (and matplotlib exists)."""
    speed, accuracy = out / "lra_speed.json", out / "lra_accuracy.json"
    if not (speed.exists() and accuracy.exists()):
        return None
    speed_rows = json.loads(speed.read_text())["results"]
    accuracy_rows = json.loads(accuracy.read_text())["results"]
    lengths = sorted({r["length"] for r in speed_rows if r["variant"] == "full"})
    if not lengths or not accuracy_rows:
        return None
    budget = table_budget(accuracy_rows)  # the main table's cells only
    accuracy_rows = [r for r in accuracy_rows if r["budget_minutes"] == budget]
    length = TARGET_LENGTH if TARGET_LENGTH in lengths else lengths[-1]
    points = bubble_points(accuracy_rows, speed_rows, length=length)
    if not points:
        return None
    try:
        tasks = sorted({r["task"] for r in accuracy_rows})
        return plot_bubbles(points, out / "lra_bubbles.png", title=(
            f"Mean test accuracy over {', '.join(tasks)} vs training speed at {length} tokens\n"
            "bubble area = peak memory; speed and memory relative to full attention"))
    except ImportError:
        print("[compare_patterns] matplotlib is not installed: no bubble chart", flush=True)
        return None


# ============================================================================== data
def cached_task(task: str, args: argparse.Namespace, shared: Path | None) -> TaskData:
    """``load_task`` with the generated splits cached in ``--work-dir/data`` (tensors only)."""
    length = args.length if args.length is not None else (QUICK_TASK_LENGTHS[task] if args.quick else TASK_LENGTHS[task])
    ewt = None
    if task == "text":
        ewt = (shared / "text" / "ud_english_ewt") if shared is not None else None
        if ewt is None or not ewt.is_dir():
            raise SystemExit(f"[compare_patterns] the text task needs UD English-EWT at <shared data>/text/ud_english_ewt "
                             f"(looked in {shared}); pass --data-dir or set GRAPHATTN_SHARED_DATA")
    sizes = (args.train_size, args.valid_size, args.test_size)
    cache = Path(args.work_dir) / "data" / f"{task}-L{length}-{'-'.join(str(s) for s in sizes)}-seed{args.seed}.pt"
    if task != "text" and cache.exists():
        stored = torch.load(cache, weights_only=True)
        splits = []
        for split in ("train", "valid", "test"):
            part = stored[split]
            tokens = list(torch.split(part["tokens"], part["lengths"].tolist()))
            splits.append(SequenceClassificationData(task if task != "image" else "shapes", tokens, part["labels"],
                                                     stored["vocab_size"], stored["num_classes"],
                                                     tuple(stored["class_names"])))
        return TaskData(task, *splits, max_length=length)
    started = time.perf_counter()
    data = load_task(task, max_length=length, train_size=sizes[0], valid_size=sizes[1], test_size=sizes[2],
                     seed=args.seed, ewt_path=ewt)
    print(f"[compare_patterns] {data} made in {time.perf_counter() - started:.0f} s", flush=True)
    if task != "text":
        cache.parent.mkdir(parents=True, exist_ok=True)
        payload = {"vocab_size": data.vocab_size, "num_classes": data.num_classes,
                   "class_names": list(data.train.class_names)}
        for split in ("train", "valid", "test"):
            part = getattr(data, split)
            payload[split] = {"tokens": torch.cat(part.tokens), "lengths": part.lengths(), "labels": part.labels}
        torch.save(payload, cache)
    return data


# ============================================================================== studies
def run_speed(args: argparse.Namespace, out: Path, command: str, shared: Path | None) -> None:
    variants = list(args.variants) if "full" in args.variants else ["full", *args.variants]
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = model_settings(args)
    for length in args.lengths:
        print(f"[compare_patterns] speed at {length} tokens: {', '.join(variants)}", flush=True)
        started = time.perf_counter()
        measured = measure_steps(variants, length, batch_size=args.speed_batch_size, model=model,
                                 steps=args.speed_steps, warmup=args.warmup, device=device, seed=args.seed)
        rows = []
        for m in measured:
            row = asdict(m)
            row["settings"] = {"model": asdict(model), "warmup": args.warmup, "seed": args.seed}
            rows.append(row)
        payload = merge(out / "lra_speed.json", rows, speed_key, command)
        write_speed_markdown(payload, out / "lra_speed.md", shared)
        redraw_bubbles(out)
        base = measured[0]
        summary = ", ".join(f"{m.variant} {m.steps_per_second / base.steps_per_second:.2f}x" for m in measured[1:])
        print(f"[compare_patterns] {length} tokens done in {time.perf_counter() - started:.0f} s: {summary}", flush=True)


def run_accuracy(args: argparse.Namespace, out: Path, command: str, shared: Path | None) -> None:
    model = model_settings(args)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    train_options = {"batch_size": args.batch_size, "micro_batch_tokens": args.micro_batch_tokens, "lr": args.lr,
                     "evaluations": args.evaluations,
                     "max_steps": args.max_steps, "seed": args.seed, "device": device}

    def save(result) -> None:
        row = asdict(result)
        payload = merge(out / "lra_accuracy.json", [row], accuracy_key, command)
        write_accuracy_markdown(payload, out / "lra_accuracy.md", shared)
        redraw_bubbles(out)
        print(f"[compare_patterns] {result.task} / {result.variant}: test accuracy {100 * result.test_accuracy:.2f}% "
              f"after {result.steps} steps ({result.train_seconds / 60:.1f} min)", flush=True)

    done = {(row["task"], row["variant"]) for row in load_payload(out / "lra_accuracy.json")["results"]
            if row.get("budget_minutes") == args.budget_minutes} if args.skip_done else set()
    for task in args.tasks:
        variants = [name for name in args.variants if (task, name) not in done]
        if len(variants) < len(args.variants):
            print(f"[compare_patterns] {task}: skipping the cells already in the results at this budget: "
                  f"{', '.join(n for n in args.variants if n not in variants)}", flush=True)
        if not variants:
            continue
        data = cached_task(task, args, shared)
        compare([data], variants, budget_minutes=args.budget_minutes, model=model, train_options=train_options,
                on_result=save, progress=args.progress, checkpoint_dir=Path(args.work_dir) / "runs")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("study", choices=["speed", "accuracy", "plot", "all"])
    parser.add_argument("--variants", nargs="+", choices=VARIANT_NAMES, default=list(VARIANT_NAMES))
    parser.add_argument("--lengths", nargs="+", type=int, default=None, help="speed: tokens (default 1024 2048 3072 4096)")
    parser.add_argument("--speed-batch-size", type=int, default=None, help="speed: sequences per step (default 2)")
    parser.add_argument("--speed-steps", type=int, default=None, help="speed: timed steps per variant (default 5)")
    parser.add_argument("--warmup", type=int, default=None, help="speed: warm-up steps (default 2)")
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=None, help="accuracy: tasks (default all four)")
    parser.add_argument("--length", type=int, default=None, help="accuracy: longest sequence (default per task, as LRA)")
    parser.add_argument("--budget-minutes", type=float, default=None, help="accuracy: training time per cell (default 20)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--micro-batch-tokens", type=int, default=8192,
                        help="accuracy: each step as accumulated micro-batches of at most N padded tokens (default 8192)")
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--evaluations", type=int, default=None)
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--train-size", type=int, default=None)
    parser.add_argument("--valid-size", type=int, default=None)
    parser.add_argument("--test-size", type=int, default=None)
    parser.add_argument("--d-model", type=int, default=None)
    parser.add_argument("--heads", type=int, default=None)
    parser.add_argument("--layers", type=int, default=None)
    parser.add_argument("--ff-dim", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2, the machine's cores)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--data-dir", type=Path, default=None, help="shared data folder (published/, text/ud_english_ewt)")
    parser.add_argument("--work-dir", default="/tmp/graphattn-lra",
                        help="data cache and the training checkpoints (runs/): an interrupted accuracy study, run "
                        "again with the same flags, continues every run where it stopped (and --quick results)")
    parser.add_argument("--out", default=None, help=f"results folder (default {RESULTS}; --quick: <work-dir>/quick)")
    parser.add_argument("--progress", action="store_true", help="a progress bar over the runs")
    parser.add_argument("--quick", action="store_true", help="tiny run to check the script works")
    parser.add_argument("--skip-done", action="store_true",
                        help="accuracy: skip the cells (task, variant) already in the results file at the same "
                        "--budget-minutes (to continue an interrupted study)")
    args = parser.parse_args(argv)
    for name, (default, quick) in DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else default)
    out = Path(args.out) if args.out is not None else (Path(args.work_dir) / "quick" if args.quick else RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    shared = shared_data_dir(args.data_dir)
    command = shlex.join(["python", "experiments/compare_patterns.py", *(sys.argv[1:] if argv is None else argv)])
    if args.study in ("speed", "all"):
        run_speed(args, out, command, shared)
    if args.study in ("accuracy", "all"):
        run_accuracy(args, out, command, shared)
    if args.study in ("plot", "all"):
        for name, write in (("speed", write_speed_markdown), ("accuracy", write_accuracy_markdown)):
            if (out / f"lra_{name}.json").is_file():  # the tables too, from the JSON (e.g. after a format change)
                write(load_payload(out / f"lra_{name}.json"), out / f"lra_{name}.md", shared)
        written = redraw_bubbles(out)
        print(f"[compare_patterns] {'wrote ' + str(written) if written else 'no bubble chart: need both speed and accuracy results'}",
              flush=True)
    print(f"[compare_patterns] results in {out}", flush=True)


if __name__ == "__main__":
    main()
