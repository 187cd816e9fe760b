"""``graphattn patterns compare``: the Long-Range-Arena-style comparison from the command line.

Trains one :class:`~graphattn.models.classifier.SequenceClassifier` per attention variant and
task under a wall-clock budget (:func:`graphattn.compare.train_and_evaluate`), measures each
variant's training speed and peak memory at the task's length against full attention
(:func:`graphattn.compare.measure_steps`), and writes into ``--out``:

================  ================================================================================
``compare.json``  every result (accuracy runs, speed measurements), the settings, the command, the
                  machine; rewritten after each result, so an interrupted run keeps what it measured
``compare.md``    the accuracy table (tasks x variants) and the speed / memory table
``bubbles.png``   accuracy vs speed relative to full, bubble area = memory relative to full
                  (needs matplotlib; the longest measured length)
================  ================================================================================

Example:
    $ graphattn patterns compare --task listops --patterns full local linear --budget-minutes 5 --out lra
    $ graphattn patterns compare --task image --quick --out /tmp/lra-quick      # seconds
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, TextIO

from graphattn._argtypes import positive_float as _positive_float
from graphattn._argtypes import positive_int as _positive_int

__all__ = ["add_subcommand", "default_ewt_path"]

# flag dest -> (default, --quick default); None in argparse means "not given"
_DEFAULTS = {
    "budget_minutes": (10.0, 0.02),
    "train_size": (None, 48),
    "valid_size": (None, 16),
    "test_size": (None, 16),
    "batch_size": (32, 8),
    "d_model": (64, 16),
    "heads": (4, 2),
    "layers": (2, 1),
    "ff_dim": (128, 32),
    "evaluations": (5, 1),
    "max_steps": (None, 3),
    "speed_steps": (5, 1),
}
_QUICK_LENGTHS = {"listops": 64, "text": 1000, "pathfinder": 256, "image": 256}


def default_ewt_path() -> Path:
    """Where the UD English-EWT treebank is looked for: ``$GRAPHATTN_SHARED_DATA/text/ud_english_ewt``,
    else ``<repository>/../shared/data/text/ud_english_ewt``."""
    shared = os.environ.get("GRAPHATTN_SHARED_DATA")
    if shared:
        return Path(shared) / "text" / "ud_english_ewt"
    return Path(__file__).resolve().parents[2] / "shared" / "data" / "text" / "ud_english_ewt"






def add_subcommand(subparsers: Any) -> None:
    """Add ``graphattn patterns`` (``compare``) to the ``graphattn`` parser."""
    from graphattn.compare import TASKS, VARIANT_NAMES

    parser = subparsers.add_parser(
        "patterns",
        help="compare attention patterns and mechanisms on Long-Range-Arena-style tasks",
        description="Attention patterns and mechanisms: the LRA-style comparison.",
    )
    commands = parser.add_subparsers(title="commands", dest="patterns_command", metavar="COMMAND")
    commands.required = True
    run = commands.add_parser(
        "compare",
        help="train every variant on LRA-style tasks under a time budget; accuracy, speed, memory, bubble chart",
        description=(
            "Train a sequence classifier with each attention variant on each task for a fixed wall-clock budget "
            "(best validation accuracy kept, test accuracy reported), measure training steps/s and peak memory at "
            "the task length relative to full attention, and write compare.json, compare.md and bubbles.png."
        ),
    )
    run.add_argument("--task", nargs="+", choices=TASKS, required=True, metavar="TASK",
                     help=f"one or more of {', '.join(TASKS)} (text = byte-level genre of UD English-EWT)")
    run.add_argument("--patterns", nargs="+", choices=VARIANT_NAMES, default=list(VARIANT_NAMES), metavar="VARIANT",
                     help=f"attention variants (default all): {', '.join(VARIANT_NAMES)}")
    run.add_argument("--length", type=_positive_int, default=None, metavar="N",
                     help="longest sequence (default per task: listops 2000, text 4000, pathfinder/image 1024; "
                          "images need a square number)")
    run.add_argument("--budget-minutes", type=_positive_float, default=None, metavar="X",
                     help="training time per task and variant, validation excluded (default 10)")
    run.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    run.add_argument("--data", type=Path, default=None, metavar="DIR",
                     help="UD English-EWT folder for the text task (default $GRAPHATTN_SHARED_DATA/text/ud_english_ewt "
                          "or <repository>/../shared/data/text/ud_english_ewt)")
    run.add_argument("--train-size", type=_positive_int, default=None, metavar="N", help="training examples (default per task)")
    run.add_argument("--valid-size", type=_positive_int, default=None, metavar="N", help="validation examples")
    run.add_argument("--test-size", type=_positive_int, default=None, metavar="N", help="test examples")
    run.add_argument("--batch-size", type=_positive_int, default=None, metavar="N", help="training batch (default 32)")
    run.add_argument("--micro-batch-tokens", type=_positive_int, default=8192, metavar="N",
                     help="run each step as accumulated micro-batches of at most N padded tokens (default 8192: "
                          "8 sequences at 1024 tokens, 2 at 4000), which bounds the memory")
    run.add_argument("--lr", type=_positive_float, default=1e-3, metavar="X", help="peak learning rate (default 1e-3)")
    run.add_argument("--d-model", type=_positive_int, default=None, metavar="N", help="model width (default 64)")
    run.add_argument("--heads", type=_positive_int, default=None, metavar="N", help="attention heads (default 4)")
    run.add_argument("--layers", type=_positive_int, default=None, metavar="N", help="encoder layers (default 2)")
    run.add_argument("--ff-dim", type=_positive_int, default=None, metavar="N", help="feed-forward size (default 128)")
    run.add_argument("--evaluations", type=_positive_int, default=None, metavar="N",
                     help="validations spread over the budget (default 5)")
    run.add_argument("--max-steps", type=_positive_int, default=None, metavar="N", help="also stop after N steps")
    run.add_argument("--speed-batch-size", type=_positive_int, default=2, metavar="N",
                     help="batch of the speed / memory measurement (default 2)")
    run.add_argument("--speed-steps", type=_positive_int, default=None, metavar="N", help="timed steps per variant (default 5)")
    run.add_argument("--no-speed", action="store_true", help="skip the speed / memory measurement (and the bubble chart)")
    run.add_argument("--seed", type=int, default=0, metavar="N", help="seed of data, weights and order (default 0)")
    run.add_argument("--device", default=None, help="torch device (default cuda if available, else cpu)")
    run.add_argument("--quick", action="store_true",
                     help="tiny data (listops 64 tokens, images 16x16, 48/16/16 examples), model and budget (3 steps): "
                          "a smoke test of seconds; options given explicitly still apply")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.set_defaults(run=_run_compare, parser=run)


def _resolve_defaults(args: argparse.Namespace) -> None:
    """Fill the options not given: the normal defaults, or tiny ones with ``--quick``."""
    for name, (default, quick) in _DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else default)


def _command(args: argparse.Namespace) -> str:
    """The command line that reproduces this run, every setting explicit."""
    parts = ["graphattn", "patterns", "compare", "--task", *args.task, "--patterns", *args.patterns]
    for name in ("length", "budget_minutes", "train_size", "valid_size", "test_size", "batch_size", "micro_batch_tokens",
                 "lr", "d_model",
                 "heads", "layers", "ff_dim", "evaluations", "max_steps", "speed_batch_size", "speed_steps", "seed",
                 "device", "data"):
        value = getattr(args, name)
        if value is not None:
            parts += ["--" + name.replace("_", "-"), str(value)]
    parts += ["--out", str(args.out)] + (["--no-speed"] if args.no_speed else [])
    return shlex.join(parts)


def _run_compare(args: argparse.Namespace, stream: TextIO | None = None) -> int:
    import torch

    from graphattn import compare as lra_compare

    parser = args.parser
    stream = stream or sys.stdout
    _resolve_defaults(args)
    if args.device is not None:
        try:
            kind = torch.device(args.device).type
        except RuntimeError:
            parser.error(f"argument --device: expected a torch device such as 'cpu' or 'cuda:0', got {args.device!r}")
        if kind == "cuda" and not torch.cuda.is_available():
            parser.error(f"argument --device: {args.device!r} requested but CUDA is not available; use --device cpu")
    tasks = list(dict.fromkeys(args.task))
    ewt = args.data if args.data is not None else default_ewt_path()
    if "text" in tasks and not ewt.is_dir():
        parser.error(
            f"the text task needs the UD English-EWT folder (en_ewt-ud-{{train,dev,test}}.conllu), not found at {ewt}; "
            "pass --data DIR or set GRAPHATTN_SHARED_DATA to the shared data folder"
        )
    try:
        model = lra_compare.ModelSettings(d_model=args.d_model, num_heads=args.heads, num_layers=args.layers,
                                          ff_dim=args.ff_dim)
        if args.d_model % args.heads:
            raise ValueError(f"--d-model {args.d_model} must be divisible by --heads {args.heads}")
        loaded = []
        for task in tasks:
            length = args.length if args.length is not None else (_QUICK_LENGTHS[task] if args.quick else None)
            print(f"[patterns compare] loading {task} ...", file=stream, flush=True)
            loaded.append(lra_compare.load_task(
                task, max_length=length, train_size=args.train_size, valid_size=args.valid_size,
                test_size=args.test_size, seed=args.seed, ewt_path=ewt if task == "text" else None,
            ))
    except (ValueError, FileNotFoundError) as error:
        parser.error(str(error))

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    command = _command(args)
    settings = {
        "tasks": tasks, "variants": list(args.patterns), "budget_minutes": args.budget_minutes,
        "model": asdict(model), "batch_size": args.batch_size, "micro_batch_tokens": args.micro_batch_tokens,
        "lr": args.lr, "evaluations": args.evaluations,
        "max_steps": args.max_steps, "speed_batch_size": args.speed_batch_size, "speed_steps": args.speed_steps,
        "seed": args.seed, "quick": bool(args.quick),
        "data": {t.task: {"max_length": t.max_length, "train": len(t.train), "valid": len(t.valid), "test": len(t.test)}
                 for t in loaded},
    }
    state: dict[str, Any] = {"accuracy": [], "speed": []}

    def save(result: Any) -> None:
        if isinstance(result, list):
            state["speed"].extend(asdict(m) for m in result)
        else:
            state["accuracy"].append(asdict(result))
        _write(out, command, settings, state, stream)

    lengths = [] if args.no_speed else sorted({t.max_length for t in loaded})
    try:
        lra_compare.compare(
            loaded, args.patterns, budget_minutes=args.budget_minutes, model=model,
            train_options={"batch_size": args.batch_size, "micro_batch_tokens": args.micro_batch_tokens,
                           "lr": args.lr, "evaluations": args.evaluations,
                           "max_steps": args.max_steps, "seed": args.seed, "device": args.device},
            speed_lengths=lengths,
            speed_options={"batch_size": args.speed_batch_size, "steps": args.speed_steps,
                           "device": args.device or ("cuda" if torch.cuda.is_available() else "cpu"), "seed": args.seed},
            on_result=save, progress=not args.no_progress,
        )
    except ValueError as error:
        parser.error(str(error))
    _write(out, command, settings, state, stream, final=True)
    return 0


def _write(out: Path, command: str, settings: dict, state: dict, stream: TextIO, final: bool = False) -> None:
    from graphattn import compare as lra_compare

    payload = {"command": command, "machine": lra_compare.machine_info(), "settings": settings, **state}
    temporary = out / "compare.json.tmp"
    temporary.write_text(json.dumps(payload, indent=2))
    os.replace(temporary, out / "compare.json")
    lines = [
        "# Attention variants compared (graphattn patterns compare)",
        "",
        f"Command: `{command}`. Training budget {settings['budget_minutes']:g} min per task and variant "
        f"(validation excluded), model {settings['model']}, batch {settings['batch_size']}, lr {settings['lr']}; "
        f"data {settings['data']}.",
        "",
    ]
    if state["accuracy"]:
        lines += ["## Test accuracy (%)", "", lra_compare.accuracy_table(state["accuracy"]), ""]
    if state["speed"]:
        lines += [
            "## Training speed and peak memory",
            "",
            f"Steps/s of a training step (batch {settings['speed_batch_size']}, random tokens, median of "
            f"{settings['speed_steps']} after warm-up, variants interleaved) and peak memory in MiB "
            f"({state['speed'][0]['memory_method']}); ratios to full attention in parentheses.",
            "",
            lra_compare.speed_table(state["speed"]),
            "",
        ]
    lines += [f"Machine: {json.dumps(payload['machine'])}", ""]
    (out / "compare.md").write_text("\n".join(lines))
    written = [out / "compare.json", out / "compare.md"]
    if state["accuracy"] and state["speed"]:
        try:
            points = lra_compare.bubble_points(state["accuracy"], state["speed"])
            if points:
                written.append(lra_compare.plot_bubbles(points, out / "bubbles.png"))
        except ImportError:
            pass
    if final:
        print(f"[patterns compare] wrote {', '.join(str(p) for p in written)}", file=stream, flush=True)
