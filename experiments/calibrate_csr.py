"""Measure the two csr kernels (tiled at every tile size, sparse) on many pattern families.

The cost model in graphattn/ops/csr.py (``TILED_NS_PER_CELL``, ``TILED_NS_PER_TILE_ROW``,
``TILED_NS_PER_GROUP``, ``SPARSE_NS_PER_EDGE``, ``SPARSE_NS_PER_NODE``, ``SPARSE_NS_FIXED``) is fitted to this table; the
last column is the time of the model's choice over the best kernel's (1.00 = it chose right).

    python experiments/calibrate_csr.py   # writes experiments/results/calibrate_csr.{json,md}
"""
from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

import torch

from graphattn import AttentionGraph, attention, patterns
from graphattn.ops.csr import TILE_SIZES, choose_kernel, choose_tile_size, tile_stats

RESULTS = Path(__file__).resolve().parent / "results"
HEADS, HEAD_DIM = 4, 64


def _time(fn, repeats: int = 5) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def molecule_batch(num_graphs: int = 32, seed: int = 0):
    """Bonds (+ self loops) of ``num_graphs`` molecule-like graphs of 15-35 atoms -- random trees
    with a ring closure every ~10 atoms, as one block-diagonal batch (ZINC-sized)."""
    generator = torch.Generator().manual_seed(seed)
    pieces = []
    for _ in range(num_graphs):
        n = int(torch.randint(15, 36, (1,), generator=generator))
        parents = [int(torch.randint(0, i, (1,), generator=generator)) for i in range(1, n)]
        edges = [(p, i) for i, p in enumerate(parents, start=1)]
        edges += [(i, i + 5) for i in range(0, n - 5, 10)]  # ring closures
        pieces.append(patterns.adjacency(torch.tensor(edges).t(), n, symmetric=True))
    return AttentionGraph.batch(pieces)


def cases() -> dict:
    ring = torch.arange(2048)
    ring_edges = torch.stack([ring, (ring + 1) % 2048])
    return {
        "local 1024 w32": patterns.local(1024, 32),
        "local 4096 w64": patterns.local(4096, 64),
        "local 4096 w8": patterns.local(4096, 8),
        "local 16384 w16": patterns.local(16384, 16),
        "block 4096 s64": patterns.block(4096, 64),
        "longformer 4096 w32": patterns.longformer(4096, 32, [0, 1, 2047]),
        "bigbird 4096": patterns.bigbird(4096, window=32, num_global=2, num_random=8, seed=0),
        "strided 2048 s16": patterns.strided(2048, 16),
        "random 4096 k32": patterns.random(4096, 32, seed=0),
        "random 1024 k8": patterns.random(1024, 8, seed=0),
        "grid2d 64x64 r2": patterns.grid2d(64, 64, 2),
        "axial 48x48": patterns.axial(48, 48),
        "k_hop ring 2048 k3": patterns.k_hop(ring_edges, 2048, 3, symmetric=True),
        "adjacency ring 2048": patterns.adjacency(ring_edges, 2048, symmetric=True),
        "32 molecules (bonds)": molecule_batch(),
    }


def main() -> None:
    torch.set_num_threads(os.cpu_count() or 1)
    rows = []
    for name, graph in cases().items():
        q, k, v = (torch.randn(graph.num_queries, HEADS, HEAD_DIM, requires_grad=True) for _ in range(3))

        def step(backend: str):
            def run():
                out = attention(q, k, v, graph, backend=backend)
                out.backward(torch.ones_like(out))

            return run

        chosen_size = choose_tile_size(graph)
        tiled = {}
        for size in TILE_SIZES:
            graph._cache["tile_size"] = size
            tiled[size] = _time(step("csr.tiled"), 3)
        graph._cache["tile_size"] = chosen_size
        sparse = _time(step("csr.sparse"), 3)
        best_size = min(tiled, key=tiled.__getitem__)
        kernel, reason = choose_kernel(graph, HEADS)
        faster = "tiled" if tiled[best_size] < sparse else "sparse"
        stats = {size: tile_stats(graph, size) for size in TILE_SIZES}
        rows.append(
            {
                "case": name, "edges": graph.num_edges, "tiled_seconds": tiled, "sparse_seconds": sparse,
                "tile_stats": stats, "model_tile_size": chosen_size, "best_tile_size": best_size,
                "model_kernel": kernel, "faster_kernel": faster, "reason": reason,
                "model_time_over_best": (tiled[chosen_size] if kernel == "tiled" else sparse)
                / min(sparse, tiled[best_size]),
            }
        )
        print(rows[-1]["case"], {s: round(t * 1e3, 1) for s, t in tiled.items()}, round(sparse * 1e3, 1), kernel, faster)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "calibrate_csr.json").write_text(json.dumps(rows, indent=2))
    lines = [
        "# csr kernel calibration (forward+backward ms, H=4, D=64, float32)",
        "",
        "Command: `python experiments/calibrate_csr.py`",
        "",
        "| case | edges | " + " | ".join(f"tiled T={s}" for s in TILE_SIZES) + " | sparse | model picks | time / best |",
        "|---|---|" + "---|" * len(TILE_SIZES) + "---|---|---|",
    ]
    for r in rows:
        picked = f"{r['model_kernel']}" + (f" T={r['model_tile_size']}" if r["model_kernel"] == "tiled" else "")
        lines.append(
            f"| {r['case']} | {r['edges']} | "
            + " | ".join(f"{r['tiled_seconds'][s] * 1e3:.1f}" for s in TILE_SIZES)
            + f" | {r['sparse_seconds'] * 1e3:.1f} | {picked} | {r['model_time_over_best']:.2f} |"
        )
    (RESULTS / "calibrate_csr.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
