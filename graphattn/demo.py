"""``graphattn demo``: compare attention patterns on a generated sequence.

For one random sequence of ``n`` tokens (``q``, ``k``, ``v`` of shape ``[n, H, D]``, seeded) and
every pattern family of :mod:`graphattn.patterns`, the demo measures what
``graphattn.attention(..., backend="auto")`` does against dense masked SDPA
(``backend="dense"``): the backend ``auto`` picks and why, forward and forward+backward time
(median of a few runs), the memory of the attention state, and the largest difference of the
output and of the gradients (a correctness check you can see). It prints a table and writes
``demo.json`` and ``patterns.png`` (the patterns drawn as query x key pictures).

Then (unless ``--no-inputs``) it shows the three input kinds as sets of vectors -- a generated
sentence tagged word by word, a generated recording classified from its log-mel frames, a
scikit-learn digit classified from its pixels -- each model trained for a few seconds over a
sparse pattern (:mod:`graphattn.demo_inputs`): a second table, ``inputs.png`` and an
``"inputs"`` entry in ``demo.json``.

Pattern parameters scale with ``n`` (window ``n/32``, stride ``sqrt(n)`` as in the Sparse
Transformer, block ``n/16``, ...), so ``patterns.png``, drawn at ``n = 128`` to stay legible,
shows the same families as the measured ones.

Example:
    $ graphattn demo --quick --out /tmp/demo
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, TextIO

import torch
from torch import Tensor

import graphattn
from graphattn import patterns
from graphattn._argtypes import positive_int as _positive_int
from graphattn.graph import AttentionGraph

__all__ = ["DemoConfig", "PatternResult", "demo_patterns", "run_demo", "add_subcommand"]

PLOT_SIZE = 128  # n of the patterns drawn in patterns.png (legible; same families and scaling)


@dataclass(frozen=True)
class DemoConfig:
    """Settings of one demo run (see ``graphattn demo --help``)."""

    n: int = 1024
    heads: int = 4
    head_dim: int = 32
    repeats: int = 5
    seed: int = 0
    device: str = "cpu"
    out: Path = Path("graphattn-demo")
    inputs: bool = True  # also the input kinds: a sentence, a recording, an image (graphattn.demo_inputs)
    quick: bool = False  # fewer training steps for the input kinds


@dataclass
class PatternResult:
    """Measurements for one pattern (one row of the table, one entry of ``demo.json``).

    Times are medians in milliseconds. ``memory_bytes`` is the attention state beyond inputs
    and outputs: measured peak on CUDA, estimated from shapes on CPU (``memory_kind``).
    ``max_abs_diff`` / ``max_abs_grad_diff``: largest ``|auto - dense|`` over the output and over
    the gradients of ``q``, ``k``, ``v``. ``backend`` (with ``reason``) is what ``auto`` runs for
    training (inputs that need gradients), ``forward_backend`` what it runs for inference.
    """

    name: str
    description: str
    edges: int
    density: float
    backend: str
    reason: str
    forward_backend: str
    forward_ms: float
    forward_backward_ms: float
    dense_forward_ms: float
    dense_forward_backward_ms: float
    speedup_forward: float
    speedup_forward_backward: float
    memory_bytes: int
    dense_memory_bytes: int
    memory_kind: str
    max_abs_diff: float
    max_abs_grad_diff: float


def demo_patterns(n: int, heads: int, seed: int = 0) -> dict[str, tuple[AttentionGraph, str]]:
    """The demo's patterns at sequence length ``n``: ``name -> (AttentionGraph, description)``.

    Args:
        n: sequence length (>= 8).
        heads: number of heads, used by the per-head pattern (one family per head, cycled).
        seed: seed of the random patterns.
    """
    window = max(1, n // 32)
    stride = max(2, round(math.sqrt(n)))
    size = max(2, n // 16)
    positions = list(range(max(2, n // 128)))
    k_random = max(1, n // 32)
    small = max(1, n // 64)
    built: dict[str, tuple[AttentionGraph, str]] = {
        "full": (patterns.full(n), "every pair"),
        "causal": (patterns.causal(n), "j <= i"),
        "local": (patterns.local(n, window), f"|i-j| <= {window}"),
        "strided": (patterns.strided(n, stride), f"(i-j) % {stride} == 0"),
        "block": (patterns.block(n, size), f"blocks of {size}"),
        "global_tokens": (patterns.global_tokens(n, positions), f"{len(positions)} global positions"),
        "longformer": (
            patterns.longformer(n, window, positions),
            f"local {window} + {len(positions)} global",
        ),
        "random": (patterns.random(n, k_random, seed=seed), f"{k_random} random keys per query"),
        "bigbird": (
            patterns.bigbird(n, small, 2, small, seed=seed),
            f"local {small} + 2 global + {small} random",
        ),
    }
    families = ["local", "strided", "block", "random"]
    per_head_names = [families[h % len(families)] for h in range(heads)]
    built["per_head"] = (
        patterns.per_head([built[name][0] for name in per_head_names]),
        "heads: " + ",".join(per_head_names),
    )
    return built


def run_demo(config: DemoConfig, *, progress: bool = True, stream: TextIO | None = None) -> list[PatternResult]:
    """Measure every pattern of :func:`demo_patterns`, print the table, write the outputs.

    Writes ``demo.json`` and ``patterns.png`` into ``config.out`` (created if missing).

    Args:
        config: sizes, repeats, seed, device and output folder.
        progress: show a progress bar over the patterns (on a terminal).
        stream: where the table goes; default ``sys.stdout``.

    Returns:
        one :class:`PatternResult` per pattern, in table order.
    """
    from tqdm.auto import tqdm

    stream = sys.stdout if stream is None else stream
    device = torch.device(config.device)
    generator = torch.Generator().manual_seed(config.seed)
    shape = (config.n, config.heads, config.head_dim)
    q, k, v, grad_output = (torch.randn(shape, generator=generator).to(device) for _ in range(4))

    built = demo_patterns(config.n, config.heads, config.seed)
    results = []
    for name, (graph, description) in tqdm(
        built.items(), desc="patterns", unit="pattern", leave=False,
        disable=None if progress else True,  # None: shown on a terminal only
    ):
        graph = graph.to(device)
        results.append(_measure(name, description, graph, q, k, v, grad_output, config))

    stream.write(format_table(results, config) + "\n")
    config.out.mkdir(parents=True, exist_ok=True)
    json_path = config.out / "demo.json"
    json_path.write_text(json.dumps(_report(config, results), indent=2) + "\n")
    png_path = config.out / "patterns.png"
    _plot(png_path, config)
    stream.write(f"wrote {json_path} and {png_path} (patterns drawn at n={PLOT_SIZE})\n")
    if config.inputs:
        from graphattn import demo_inputs

        stream.write("\ntraining one small model per input kind (text, speech, image)...\n")
        kinds = demo_inputs.run_input_kinds(quick=config.quick, seed=config.seed, out=config.out)
        stream.write(demo_inputs.format_input_table(kinds) + "\n")
        report = json.loads(json_path.read_text())
        report["inputs"] = demo_inputs.report(kinds)
        json_path.write_text(json.dumps(report, indent=2) + "\n")
        stream.write(f"wrote {config.out / 'inputs.png'} (attention over a sentence, a spectrogram and a digit)\n")
    return results


def _measure(
    name: str,
    description: str,
    graph: AttentionGraph,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    grad_output: Tensor,
    config: DemoConfig,
) -> PatternResult:
    """Check auto against dense, then time both; q, k, v, grad_output ``[n, H, D]``."""
    leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]

    def forward(backend: str) -> Callable[[], Tensor]:
        def run() -> Tensor:
            with torch.no_grad():
                return graphattn.attention(q, k, v, graph, backend=backend)

        return run

    def forward_backward(backend: str) -> Callable[[], list[Tensor]]:
        def run() -> list[Tensor]:
            for leaf in leaves:
                leaf.grad = None
            graphattn.attention(*leaves, graph, backend=backend).backward(grad_output)
            return [leaf.grad for leaf in leaves]

        return run

    choice = graphattn.explain(*leaves, graph)
    with torch.no_grad():
        forward_choice = graphattn.explain(q, k, v, graph)
    auto_out, dense_out = forward("auto")(), forward("dense")()
    auto_grads, dense_grads = forward_backward("auto")(), forward_backward("dense")()
    max_diff = (auto_out - dense_out).abs().max().item()
    max_grad_diff = max((a - d).abs().max().item() for a, d in zip(auto_grads, dense_grads))

    times = {}
    for backend in ("auto", "dense"):
        times[backend, "fwd"] = _median_ms(forward(backend), config.repeats, q.device)
        times[backend, "fwd+bwd"] = _median_ms(forward_backward(backend), config.repeats, q.device)
    if q.is_cuda:
        memory = _measured_peak(forward_backward("auto"), q.device)
        dense_memory = _measured_peak(forward_backward("dense"), q.device)
        memory_kind = "measured"
    else:
        memory = _memory_estimate(choice.backend, graph, config.heads, q.element_size())
        dense_memory = _memory_estimate("dense", graph, config.heads, q.element_size())
        memory_kind = "estimated"
    return PatternResult(
        name=name,
        description=description,
        edges=graph.num_edges,
        density=graph.density,
        backend=choice.backend,
        reason=choice.reason,
        forward_backend=forward_choice.backend,
        forward_ms=times["auto", "fwd"],
        forward_backward_ms=times["auto", "fwd+bwd"],
        dense_forward_ms=times["dense", "fwd"],
        dense_forward_backward_ms=times["dense", "fwd+bwd"],
        speedup_forward=times["dense", "fwd"] / times["auto", "fwd"],
        speedup_forward_backward=times["dense", "fwd+bwd"] / times["auto", "fwd+bwd"],
        memory_bytes=memory,
        dense_memory_bytes=dense_memory,
        memory_kind=memory_kind,
        max_abs_diff=max_diff,
        max_abs_grad_diff=max_grad_diff,
    )


def _median_ms(run: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Median wall time of ``run()`` in milliseconds, after one warm-up call."""
    run()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def _measured_peak(run: Callable[[], object], device: torch.device) -> int:
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    run()
    torch.cuda.synchronize(device)
    return int(torch.cuda.max_memory_allocated(device) - base)


def _memory_estimate(backend: str, graph: AttentionGraph, heads: int, itemsize: int) -> int:
    """Bytes of attention state a backend keeps beyond inputs and outputs, from shapes.

    dense / reference: ``[H, Nq, Nk]`` scores plus the boolean mask (none for full or causal
    patterns, where SDPA runs a fused kernel keeping a ``[H, Nq]`` log-sum-exp); csr: ``[E, H]``
    scores and weights plus int64 edge indices; flex: ``[H, Nq]`` log-sum-exp plus a block mask.
    """
    n_q, n_k, n_e = graph.num_queries, graph.num_keys, graph.num_edges
    if backend in ("dense", "reference"):
        if backend == "dense" and graph.head_mask is None and (graph.is_full or graph.is_causal):
            return heads * n_q * 4
        mask_heads = heads if graph.head_mask is not None else 1
        return heads * n_q * n_k * itemsize + mask_heads * n_q * n_k
    if backend.startswith("csr"):
        return 2 * n_e * heads * itemsize + 2 * n_e * 8
    if backend == "flex":
        return heads * n_q * 4 + math.ceil(n_q / 128) * math.ceil(n_k / 128) * 8
    return 0


def _report(config: DemoConfig, results: list[PatternResult]) -> dict:
    return {
        "config": {
            "n": config.n,
            "heads": config.heads,
            "head_dim": config.head_dim,
            "repeats": config.repeats,
            "seed": config.seed,
            "device": config.device,
            "plot_n": PLOT_SIZE,
            "dtype": "float32",
        },
        "environment": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
        },
        "results": [asdict(result) for result in results],
    }


def format_table(results: list[PatternResult], config: DemoConfig) -> str:
    """The results as an aligned text table, one row per pattern."""

    def backend_text(r: PatternResult) -> str:
        same = r.forward_backend == r.backend
        return r.backend if same else f"{r.forward_backend}/{r.backend}"

    width = max([len("auto backend")] + [len(backend_text(r)) for r in results]) + 2
    header = (
        f"{'pattern':<14}{'edges':>9}{'density':>9}  {'auto backend':<{width}}"
        f"{'fwd ms':>8}{'fwd+bwd':>9}{'dense f+b':>11}{'speedup':>9}{'memory':>10}{'dense mem':>11}"
        f"{'max|diff|':>11}"
    )
    lines = [
        f"graphattn demo: n={config.n}, heads={config.heads}, head_dim={config.head_dim}, float32, "
        f"{config.device}, {torch.get_num_threads()} threads, median of {config.repeats} runs (ms)",
        "speedup = dense masked SDPA time / auto time (forward+backward); max|diff| = largest "
        "|auto - dense| over output and gradients",
        header,
        "-" * len(header),
    ]
    for r in results:
        memory_note = "" if r.memory_kind == "measured" else "~"
        lines.append(
            f"{r.name:<14}{r.edges:>9}{r.density:>9.4f}  {backend_text(r):<{width}}"
            f"{r.forward_ms:>8.2f}{r.forward_backward_ms:>9.2f}{r.dense_forward_backward_ms:>11.2f}"
            f"{r.speedup_forward_backward:>8.1f}x"
            f"{memory_note + _bytes(r.memory_bytes):>10}{memory_note + _bytes(r.dense_memory_bytes):>11}"
            f"{max(r.max_abs_diff, r.max_abs_grad_diff):>11.1e}"
        )
    if any(r.forward_backend != r.backend for r in results):
        lines.append("a/b backend: auto runs a for inference, b when gradients are needed")
    if any(r.memory_kind != "measured" for r in results):
        lines.append("~ memory: attention state estimated from shapes (measured only on CUDA)")
    return "\n".join(lines)


def _bytes(count: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1024 or unit == "GB":
            return f"{count:.0f}{unit}" if unit == "B" else f"{count:.1f}{unit}"
        count /= 1024
    raise AssertionError("unreachable")


def _plot(path: Path, config: DemoConfig) -> None:
    small = {name: graph for name, (graph, _) in demo_patterns(PLOT_SIZE, config.heads, config.seed).items()}
    small["per_head: all heads"] = small.pop("per_head")
    patterns.plot_patterns(small, path)


# ---------------------------------------------------------------------------- command line


def add_subcommand(subparsers) -> None:
    """Add ``graphattn demo`` to the ``graphattn`` parser's subcommands."""
    parser = subparsers.add_parser(
        "demo",
        help="compare attention patterns on a generated sequence, then text / speech / image inputs as graphs",
        description=(
            "Compare attention patterns on a generated sequence: for every pattern family, the "
            "backend 'auto' picks, its forward and forward+backward time against dense masked "
            "SDPA, memory, and the largest difference to SDPA. Prints a table; writes demo.json "
            "and patterns.png into --out."
        ),
    )
    parser.add_argument("--n", type=_positive_int, default=None, help="sequence length (default 1024; 256 with --quick)")
    parser.add_argument("--heads", type=_positive_int, default=4, help="attention heads (default 4)")
    parser.add_argument("--head-dim", type=_positive_int, default=32, help="dimension per head (default 32)")
    parser.add_argument("--repeats", type=_positive_int, default=None, help="timed runs per measurement (default 5; 2 with --quick)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and the random patterns (default 0)")
    parser.add_argument(
        "--device", default=None, help="torch device (default: cuda if available, else cpu)"
    )
    parser.add_argument("--out", type=Path, default=Path("graphattn-demo"), help="output folder (default ./graphattn-demo)")
    parser.add_argument("--quick", action="store_true", help="small and fast: n=256, 2 runs, half the training steps of the input kinds")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--no-inputs", action="store_true",
        help="skip the second part: a sentence, a recording and an image as sets of vectors, one small model each",
    )
    parser.set_defaults(run=_run_command, parser=parser)


def _run_command(args: argparse.Namespace) -> int:
    n = args.n if args.n is not None else (256 if args.quick else 1024)
    if n < 8:
        args.parser.error(f"argument --n: expected at least 8, got {n}")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        torch.device(device)
    except RuntimeError:
        args.parser.error(f"argument --device: expected a torch device such as 'cpu' or 'cuda:0', got {device!r}")
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        args.parser.error(f"argument --device: {device!r} requested but CUDA is not available; use --device cpu")
    config = DemoConfig(
        n=n,
        heads=args.heads,
        head_dim=args.head_dim,
        repeats=args.repeats if args.repeats is not None else (2 if args.quick else 5),
        seed=args.seed,
        device=device,
        out=args.out,
        inputs=not args.no_inputs,
        quick=args.quick,
    )
    run_demo(config, progress=not args.no_progress)
    return 0
