"""Pointer networks on planar point problems (Vinyals, Fortunato & Jaitly, 2015).

Studies (one subcommand each; each merges its rows into experiments/results/pointer.{json,md}
after every finished cell, so they can run separately and an interrupted run keeps what it
measured; a rerun of a cell replaces its row):

* ``hull``: convex hull of n = 5, 10, 50 points uniform in the unit square; exact-sequence
  accuracy, area coverage and invalid-output rate, greedy and beam, next to the paper's Ptr-Net
  (92.0% / 99.6% at n=5, 87.0% / 99.8% at n=10, 72.6% / 99.9% at n=50).
* ``tsp``: travelling salesman with n = 5, 10 (exact optimal tours from Held-Karp); average tour
  length against the optimum (target: within 1%), exact accuracy, invalid rate, greedy and beam.
* ``plot``: a few predicted hulls and tours next to the truth, from the examples stored in the
  JSON by the two studies, into pointer.png.

Every cell trains one PointerNetwork from scratch (``--encoders``: the original LSTM one and/or
the graphattn Transformer encoder with an LSTM pointer decoder, or ``--decoder transformer``)
with Adam and a cosine learning-rate decay over the wall-clock budget (``--budget-minutes``
per cell, or ``--max-steps``), on freshly generated examples (new ones every ``--fresh-every``
epochs), keeping the checkpoint with the best greedy validation score; the test set is new
examples. Masks: the TSP model may only choose unvisited points, the hull model may only close
the polygon once and then stop (both in training and decoding), so outputs are well-formed by
construction; the invalid rate also counts self-intersecting hull polygons.

    python experiments/pointer.py hull --budget-minutes 20
    python experiments/pointer.py tsp --sizes 5 --encoders lstm
    python experiments/pointer.py plot
    python experiments/pointer.py --quick          # seconds; writes into a temporary folder
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

import graphattn
from graphattn.data import geometry
from graphattn.decoding import generate
from graphattn.models import PointerConfig, PointerNetwork, count_parameters

RESULTS = Path(__file__).resolve().parent / "results"
TRAIN_SEED, VALIDATION_SEED, TEST_SEED = 1_000_000, 2_000_000, 3_000_000
PAPER = {
    # Vinyals et al. 2015, Table 1 (Ptr-Net trained and tested on the same n) and Table 2
    ("hull", 5): {"accuracy": 0.920, "area_coverage": 0.996},
    ("hull", 10): {"accuracy": 0.870, "area_coverage": 0.998},
    ("hull", 50): {"accuracy": 0.726, "area_coverage": 0.999},
    ("tsp", 5): {"mean_optimal": 2.12, "mean_length": 2.12},
    ("tsp", 10): {"mean_optimal": 2.87, "mean_length": 2.88},
}
DEFAULT_SIZES = {"hull": [5, 10, 50], "tsp": [5, 10]}


# ------------------------------------------------------------------------------------ data
TASK_OFFSET = {"hull": 0, "tsp": 500_000}  # so the two tasks never share point sets


def make_data(task: str, num_examples: int, n: int, seed: int) -> geometry.PointerData:
    seed += TASK_OFFSET[task]
    if task == "hull":
        return geometry.convex_hull_examples(num_examples, n, seed=seed)
    return geometry.tsp_examples(num_examples, n, seed=seed)


def batches(data: geometry.PointerData, batch_size: int, rng: np.random.Generator):
    order = rng.permutation(len(data))
    for begin in range(0, len(order) - batch_size + 1, batch_size):
        rows = order[begin : begin + batch_size]
        yield geometry.collate_points([data.points[i] for i in rows], [data.targets[i] for i in rows])


@torch.no_grad()
def decode(model: PointerNetwork, data: geometry.PointerData, *, num_beams: int, device: torch.device,
           batch_size: int = 250) -> list[list[int]]:
    """Pointer outputs (lists, END-terminated) of every example."""
    model.eval()
    outputs: list[list[int]] = []
    for begin in range(0, len(data), batch_size):
        batch = geometry.collate_points(data.points[begin : begin + batch_size])
        steps = batch.points.shape[1] + 2
        out = generate(model, (batch.points.to(device), batch.lengths.to(device)), max_new_tokens=steps,
                       num_beams=num_beams)
        outputs += [row[: int(length)] for row, length in zip(out.sequences.cpu().tolist(), out.lengths.cpu().tolist())]
    return outputs


def evaluate(task: str, model: PointerNetwork, data: geometry.PointerData, *, num_beams: int,
             device: torch.device) -> tuple[dict, list[list[int]]]:
    outputs = decode(model, data, num_beams=num_beams, device=device)
    if task == "hull":
        return geometry.evaluate_hull(data.points, outputs, data.targets), outputs
    return geometry.evaluate_tsp(data.points, outputs, data.targets, data.optimal_lengths), outputs


def validation_score(task: str, metrics: dict) -> float:
    """Higher is better: hull accuracy (area coverage breaks ties), TSP minus the length ratio."""
    if task == "hull":
        return metrics["accuracy"] + 1e-3 * metrics["area_coverage"] - metrics["invalid_rate"]
    ratio = metrics["length_ratio"]
    return -(ratio if math.isfinite(ratio) else 10.0) - metrics["invalid_rate"]


# ------------------------------------------------------------------------------------ one cell
def run_cell(task: str, n: int, encoder: str, args, device: torch.device) -> dict:
    torch.manual_seed(args.seed)
    decoder = args.decoder or "lstm"
    config = PointerConfig(
        encoder=encoder,
        decoder=decoder,
        hidden_size=args.hidden,
        num_layers=args.layers,
        num_heads=args.heads,
        pattern=args.pattern,
        mask="hull" if task == "hull" else "tsp",
        logit_clip=args.logit_clip,
    )
    model = PointerNetwork(config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    validation = make_data(task, args.validation_examples, n, VALIDATION_SEED + n)
    test = make_data(task, args.test_examples, n, TEST_SEED + n)
    budget = args.budget_minutes * 60.0
    rng = np.random.default_rng(args.seed)
    start = time.perf_counter()
    step, epoch, seen, best_score, best_state, best_step = 0, 0, 0, -math.inf, None, 0
    history = []
    bar = tqdm(total=args.max_steps if args.max_steps < 1_000_000 else None, desc=f"{task} n={n} {encoder}", unit="step", disable=not args.progress)
    done = False
    train = None
    while not done:
        if train is None or epoch % args.fresh_every == 0:  # new examples every fresh_every epochs
            train = make_data(task, args.train_examples, n, TRAIN_SEED + 1000 * n + epoch // args.fresh_every)
        epoch += 1
        for batch in batches(train, args.batch_size, rng):
            elapsed = time.perf_counter() - start
            if elapsed >= budget or step >= args.max_steps:
                done = True
                break
            progress = min(1.0, max(elapsed / budget, step / args.max_steps))
            for group in optimizer.param_groups:  # linear warm-up, then a cosine to 10% over the budget
                group["lr"] = args.lr * min(1.0, (step + 1) / args.warmup) * (0.1 + 0.45 * (1 + math.cos(math.pi * progress)))
            model.train()
            loss = model.loss(batch.points.to(device), batch.targets.to(device), batch.lengths.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
            optimizer.step()
            step += 1
            seen += len(batch.lengths)
            bar.update(1)
            if step % args.eval_every == 0:
                metrics, _ = evaluate(task, model, validation, num_beams=1, device=device)
                score = validation_score(task, metrics)
                history.append({"step": step, "seconds": round(time.perf_counter() - start, 1), "loss": loss.item(), **metrics})
                bar.set_postfix(loss=f"{loss.item():.3f}", val=f"{score:.4f}")
                if score > best_score:
                    best_score, best_step = score, step
                    best_state = copy.deepcopy(model.state_dict())
    bar.close()
    train_seconds = time.perf_counter() - start
    if step and (not history or history[-1]["step"] != step):
        metrics, _ = evaluate(task, model, validation, num_beams=1, device=device)
        history.append({"step": step, "seconds": round(time.perf_counter() - start, 1), **metrics})
        if validation_score(task, metrics) > best_score:
            best_state, best_step = copy.deepcopy(model.state_dict()), step
    if best_state is not None:
        model.load_state_dict(best_state)
    greedy, greedy_out = evaluate(task, model, test, num_beams=1, device=device)
    beam, beam_out = evaluate(task, model, test, num_beams=args.beams, device=device)
    examples = [
        {
            "points": np.round(test.points[i], 5).tolist(),
            "truth": test.targets[i].tolist(),
            "greedy": greedy_out[i],
            "beam": beam_out[i],
        }
        for i in range(min(args.keep_examples, len(test)))
    ]
    return {
        "task": task,
        "n": n,
        "encoder": encoder,
        "decoder": decoder,
        "config": config.to_dict(),
        "parameters": count_parameters(model),
        "budget": {
            "budget_minutes": args.budget_minutes,
            "max_steps": args.max_steps,
            "train_minutes": round(train_seconds / 60, 2),
            "steps": step,
            "examples_seen": seen,
            "examples_per_epoch": args.train_examples,
            "fresh_examples_every_epochs": args.fresh_every,
            "epochs_started": epoch,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "best_validation_step": best_step,
        },
        "validation_examples": len(validation),
        "test_examples": len(test),
        "beams": args.beams,
        "greedy": greedy,
        "beam": beam,
        "paper": PAPER.get((task, n)),
        "history": history,
        "examples": examples,
        "device": str(device),
    }


# ------------------------------------------------------------------------------------ results
def machine(device: torch.device) -> dict:
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "graphattn": getattr(graphattn, "__version__", "?"),
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def row_key(row: dict) -> tuple:
    return (row["task"], row["n"], row["encoder"], row["decoder"])


def sort_key(row: dict) -> tuple:
    return (["hull", "tsp"].index(row["task"]), row["n"], row["encoder"], row["decoder"])


def percent(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{100 * value:.1f}%"


def write_markdown(payload: dict, path: Path) -> None:
    rows = payload["results"]
    lines = [
        "# Pointer networks (experiments/pointer.py)",
        "",
        "Vinyals, Fortunato & Jaitly (2015) on points uniform in the unit square. Every row is one "
        "model trained from scratch on freshly generated examples (new ones every `fresh_examples_every_epochs` "
        "epochs of `examples_per_epoch`, see pointer.json) for the stated "
        "budget, with the checkpoint of the best greedy validation score; test = new examples. Outputs "
        "are masked (hull: no repeated point except the closing one, END only after closing; TSP: every "
        "point once), so they are well-formed; the hull invalid rate also counts self-intersecting "
        "polygons (area coverage 0). Commands: " + ", ".join(f"`{c}`" for c in payload["commands"]) + ".",
        "",
    ]
    hull = [r for r in rows if r["task"] == "hull"]
    if hull:
        lines += [
            "## Convex hull",
            "",
            "| n | encoder / decoder | params | budget (min / steps / examples) | accuracy greedy | accuracy beam | "
            "area coverage greedy | area coverage beam | invalid greedy / beam | paper (accuracy / area) |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in hull:
            b, g, m, p = r["budget"], r["greedy"], r["beam"], r["paper"] or {}
            lines.append(
                f"| {r['n']} | {r['encoder']} / {r['decoder']} | {r['parameters']:,} | {b['train_minutes']:.1f} / "
                f"{b['steps']:,} / {b['examples_seen']:,} | {percent(g['accuracy'])} | {percent(m['accuracy'])} | "
                f"{percent(g['area_coverage'])} | {percent(m['area_coverage'])} | {percent(g['invalid_rate'])} / "
                f"{percent(m['invalid_rate'])} | {percent(p.get('accuracy'))} / {percent(p.get('area_coverage'))} |"
            )
        lines.append("")
    tsp = [r for r in rows if r["task"] == "tsp"]
    if tsp:
        lines += [
            "## Travelling salesman",
            "",
            "Tour length: mean over the test set (valid outputs); ratio = mean predicted / mean optimal "
            "length (target: <= 1.01). Exact = the optimal tour itself.",
            "",
            "| n | encoder / decoder | params | budget (min / steps / examples) | optimal | greedy length (ratio) | "
            "beam length (ratio) | exact greedy / beam | invalid greedy / beam | paper (optimal / Ptr-Net) |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in tsp:
            b, g, m, p = r["budget"], r["greedy"], r["beam"], r["paper"] or {}
            paper = f"{p['mean_optimal']:.2f} / {p['mean_length']:.2f}" if p else "-"
            lines.append(
                f"| {r['n']} | {r['encoder']} / {r['decoder']} | {r['parameters']:,} | {b['train_minutes']:.1f} / "
                f"{b['steps']:,} / {b['examples_seen']:,} | {g['mean_optimal']:.3f} | {g['mean_length']:.3f} "
                f"({g['length_ratio']:.4f}) | {m['mean_length']:.3f} ({m['length_ratio']:.4f}) | "
                f"{percent(g['accuracy'])} / {percent(m['accuracy'])} | {percent(g['invalid_rate'])} / "
                f"{percent(m['invalid_rate'])} | {paper} |"
            )
        lines.append("")
    if rows:
        c = rows[0]["config"]
        lines += [
            f"Settings: hidden size {c['hidden_size']}, {c['num_layers']} layer(s), {c['num_heads']} heads and pattern "
            f"`{c['pattern']}` in the Transformer encoder, logit clip {c['logit_clip']}; batch "
            f"{rows[0]['budget']['batch_size']}, Adam lr {rows[0]['budget']['lr']} (warm-up, cosine to 10% over the "
            f"budget), beam = {rows[0]['beams']} beams, {rows[0]['test_examples']} test examples. Rows differing say so "
            "in pointer.json.",
            "",
        ]
    lines += [f"Machine: {json.dumps(payload['machine'])}", ""]
    path.write_text("\n".join(lines))


def save(row: dict, out: Path, command: str, device: torch.device) -> None:
    path = out / "pointer.json"
    payload = json.loads(path.read_text()) if path.exists() else {"commands": [], "machine": {}, "results": []}
    row["command"] = command
    payload["results"] = sorted([r for r in payload["results"] if row_key(r) != row_key(row)] + [row], key=sort_key)
    if command not in payload["commands"]:
        payload["commands"].append(command)
    payload["commands"] = [c for c in payload["commands"] if any(r.get("command") == c for r in payload["results"])]
    payload["machine"] = machine(device)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=1))
    tmp.replace(path)
    write_markdown(payload, out / "pointer.md")
    print(f"[pointer] saved {row['task']} n={row['n']} {row['encoder']}/{row['decoder']} to {path}", flush=True)


# ------------------------------------------------------------------------------------ plot
def plot(out: Path, per_row: int = 3) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = out / "pointer.json"
    if not path.exists():
        raise SystemExit(f"No results at {path}; run the hull or tsp study first")
    rows = [r for r in json.loads(path.read_text())["results"] if r.get("examples")]
    if not rows:
        raise SystemExit(f"No stored examples in {path}")
    fig, axes = plt.subplots(len(rows), per_row, figsize=(3.2 * per_row, 3.2 * len(rows)), squeeze=False)
    for axis_row, r in zip(axes, rows):
        for axis, example in zip(axis_row, r["examples"][:per_row] + [None] * per_row):
            axis.set_xticks([])
            axis.set_yticks([])
            axis.set_xlim(-0.05, 1.05)
            axis.set_ylim(-0.05, 1.05)
            axis.set_aspect("equal")
            if example is None:
                axis.axis("off")
                continue
            points = np.asarray(example["points"])
            truth = geometry.from_pointer(example["truth"])
            predicted = geometry.from_pointer(example["beam"])
            if r["task"] == "tsp":  # close the tours
                truth = np.append(truth, truth[:1])
                predicted = np.append(predicted, predicted[:1]) if predicted.size else predicted
            axis.plot(points[truth, 0], points[truth, 1], "-", color="tab:green", lw=4, alpha=0.4, label="truth")
            if predicted.size:
                axis.plot(points[predicted, 0], points[predicted, 1], "--", color="tab:red", lw=1.5, label="predicted (beam)")
            axis.scatter(points[:, 0], points[:, 1], s=12, color="black", zorder=3)
            exact = list(example["beam"]) == list(example["truth"])
            axis.set_title(f"{r['task']} n={r['n']} {r['encoder']}: {'exact' if exact else 'differs'}", fontsize=8)
    axes[0][0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    target = out / "pointer.png"
    fig.savefig(target, dpi=110)
    plt.close(fig)
    print(f"[pointer] plot written to {target}", flush=True)
    return target


# ------------------------------------------------------------------------------------ main
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("study", nargs="?", choices=["hull", "tsp", "plot", "all"], default="all")
    parser.add_argument("--sizes", type=int, nargs="+", help="point counts (default: hull 5 10 50, tsp 5 10)")
    parser.add_argument("--encoders", nargs="+", default=["lstm", "transformer"], choices=["lstm", "transformer"])
    parser.add_argument("--decoder", choices=["lstm", "transformer"], default=None,
                        help="pointer decoder (default lstm, the original)")
    parser.add_argument("--budget-minutes", type=float, default=10.0, help="wall-clock training budget per cell")
    parser.add_argument("--max-steps", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--pattern", default="full", help="self-attention pattern of the Transformer encoder")
    parser.add_argument("--logit-clip", type=float, default=0.0, help="C in C * tanh(u) (Bello et al.); 0 = off (the paper)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--clip", type=float, default=2.0, help="gradient-norm clipping (the paper's 2.0)")
    parser.add_argument("--train-examples", type=int, default=100_000, help="fresh examples generated per epoch")
    parser.add_argument("--fresh-every", type=int, default=1,
                        help="generate new training examples every this many epochs (TSP labels cost time)")
    parser.add_argument("--validation-examples", type=int, default=500)
    parser.add_argument("--test-examples", type=int, default=1000)
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--beams", type=int, default=5)
    parser.add_argument("--keep-examples", type=int, default=4, help="test examples stored for the plot")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--progress", action="store_true", help="tqdm progress bars")
    parser.add_argument("--out", default=None, help=f"results folder (default {RESULTS}; --quick: a temporary folder)")
    parser.add_argument("--quick", action="store_true", help="tiny run (seconds) to check the script works")
    args = parser.parse_args(argv)
    if args.fresh_every < 1:
        parser.error(f"--fresh-every must be >= 1, got {args.fresh_every}")
    torch.set_num_threads(args.threads)
    if args.logit_clip == 0:
        args.logit_clip = None
    if args.quick:
        args.budget_minutes, args.max_steps = min(args.budget_minutes, 0.1), min(args.max_steps, 30)
        args.hidden, args.heads, args.batch_size = 32, 4, 32
        args.train_examples, args.validation_examples, args.test_examples = 640, 40, 40
        args.eval_every, args.beams, args.warmup = 15, 2, 5
    out = Path(args.out) if args.out else (Path(tempfile.mkdtemp(prefix="graphattn-pointer-")) if args.quick else RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    command = "python experiments/pointer.py " + " ".join(argv if argv is not None else sys.argv[1:])
    studies = ["hull", "tsp", "plot"] if args.study == "all" else [args.study]
    for study in studies:
        if study == "plot":
            plot(out)
            continue
        sizes = args.sizes or DEFAULT_SIZES[study]
        if args.quick and not args.sizes:
            sizes = [5]
        for n in sizes:
            for encoder in args.encoders:
                row = run_cell(study, n, encoder, args, device)
                g, b = row["greedy"], row["beam"]
                if study == "hull":
                    summary = (f"accuracy {percent(g['accuracy'])} / {percent(b['accuracy'])}, area "
                               f"{percent(g['area_coverage'])} / {percent(b['area_coverage'])}")
                else:
                    summary = f"length ratio {g['length_ratio']:.4f} / {b['length_ratio']:.4f}"
                print(f"[pointer] {study} n={n} {encoder}: {summary} (greedy / beam), invalid "
                      f"{percent(g['invalid_rate'])} / {percent(b['invalid_rate'])}, {row['budget']['steps']} steps "
                      f"in {row['budget']['train_minutes']:.1f} min", flush=True)
                save(row, out, command, device)
    print(f"[pointer] results in {out}", flush=True)


if __name__ == "__main__":
    main()
