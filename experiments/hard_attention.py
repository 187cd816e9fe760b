"""Soft vs hard attention on a lookup task, and what the REINFORCE baseline is worth (issue 8).

Task (associative recall, generated): an example is ``K`` (key, value) pairs -- ``K`` distinct
key symbols and random value symbols out of ``S`` -- and a query, one of the keys; the answer is
the value paired with the query. One attention layer does it: the query attends over the ``K``
pair nodes (a ``full(1, K)`` graph per example, batched), keys are projected from the key
symbols, values from the value symbols, and a linear layer reads the answer from the attention
output. All variants share that model (:class:`graphattn.nn.HardMultiheadAttention`, 1 head);
only the attention and the training differ:

* ``soft``: softmax attention (the layer's inherited :meth:`attend`), cross-entropy, backprop;
* ``hard_reinforce``: one sampled pair per query; the classifier learns by cross-entropy on the
  chosen value, the scores by REINFORCE (:func:`graphattn.nn.reinforce_loss`) with the reward
  ``log p(answer | chosen pair)`` and no baseline;
* ``hard_reinforce_baseline``: the same with :class:`graphattn.nn.MovingAverageBaseline`;
* hard variants are evaluated with the argmax choice (the layer in ``eval()``).

Reported per variant (mean +- std over seeds): test accuracy after the budget, the step at which
the validation accuracy first reached 90%, and the variance of the score-function gradient (sum
over the query projection's entries, over 64 batches at initialization) with and without the
baseline. ``hard_attention.png`` plots validation accuracy against steps.

    python experiments/hard_attention.py                  # 3 variants x 3 seeds: ~3 min on 1 thread
    python experiments/hard_attention.py --quick --out /tmp/hard   # seconds
"""
from __future__ import annotations

import argparse
import json
import math
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphattn import AttentionGraph
from graphattn.compare import machine_info
from graphattn.nn import HardMultiheadAttention, MovingAverageBaseline, reinforce_loss
from graphattn.patterns import full

RESULTS = Path(__file__).resolve().parent / "results"
VARIANTS = ("soft", "hard_reinforce", "hard_reinforce_baseline")


def make_examples(count: int, pairs: int, symbols: int, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``count`` recall examples -> keys ``[B, K]``, values ``[B, K]``, query ``[B]``, answer ``[B]``."""
    if pairs > symbols:
        raise ValueError(f"Expected at most as many pairs as symbols (distinct keys), got {pairs} > {symbols}")
    keys = torch.rand(count, symbols, generator=generator).argsort(1)[:, :pairs]
    values = torch.randint(symbols, (count, pairs), generator=generator)
    slot = torch.randint(pairs, (count,), generator=generator)
    rows = torch.arange(count)
    return keys, values, keys[rows, slot], values[rows, slot]


class RecallModel(nn.Module):
    """Symbol embeddings -> one attention layer (query over the pair nodes) -> answer logits."""

    def __init__(self, symbols: int, dim: int) -> None:
        super().__init__()
        self.key_embedding = nn.Embedding(symbols, dim)
        self.value_embedding = nn.Embedding(symbols, dim)
        self.query_embedding = nn.Embedding(symbols, dim)
        self.attention = HardMultiheadAttention(dim, 1)
        self.classifier = nn.Linear(dim, symbols)

    def forward(self, keys: Tensor, values: Tensor, query: Tensor, graph: AttentionGraph, *, hard: bool,
                generator: torch.Generator | None = None) -> tuple[Tensor, Tensor | None]:
        """-> (logits ``[B, S]``, log-probability of the sampled choice ``[B]`` or None)."""
        x_query = self.query_embedding(query)  # [B, d]
        x_key = self.key_embedding(keys).flatten(0, 1)  # [B*K, d]
        x_value = self.value_embedding(values).flatten(0, 1)
        layer = self.attention
        if hard:
            out, result = layer(x_query, x_key, x_value, graph, generator=generator)
            return self.classifier(out), result.log_prob.sum(1)
        q, k, v = layer.project(x_query, x_key, x_value)
        out, _ = layer.attend(q, k, v, graph)
        return self.classifier(layer.project_output(out, graph)), None


def recall_graph(batch: int, pairs: int) -> AttentionGraph:
    return AttentionGraph.batch([full(1, pairs)] * batch)


def accuracy(model: RecallModel, data: tuple[Tensor, ...], hard: bool) -> float:
    keys, values, query, answer = data
    model.eval()
    with torch.no_grad():
        logits, _ = model(keys, values, query, recall_graph(len(query), keys.size(1)), hard=hard)
    model.train()
    return float((logits.argmax(1) == answer).float().mean())


def losses(model: RecallModel, batch: tuple[Tensor, ...], variant: str, baseline: MovingAverageBaseline | None,
           generator: torch.Generator, graph: AttentionGraph) -> tuple[Tensor, Tensor | None]:
    """-> (the training loss, the REINFORCE surrogate alone or None)."""
    keys, values, query, answer = batch
    hard = variant != "soft"
    logits, log_prob = model(keys, values, query, graph, hard=hard, generator=generator)
    nll = F.cross_entropy(logits, answer, reduction="none")  # [B]
    if not hard:
        return nll.mean(), None
    reward = -nll.detach()  # log p(answer | chosen pair)
    surrogate = reinforce_loss(log_prob, reward, baseline(reward) if baseline is not None else None)
    return nll.mean() + surrogate, surrogate


def gradient_variance(args: argparse.Namespace, seed: int, with_baseline: bool) -> float:
    """Variance of the REINFORCE gradient w.r.t. the query projection at initialization: sum over
    entries of the variance across ``args.variance_batches`` batches."""
    torch.manual_seed(seed)
    model = RecallModel(args.symbols, args.dim)
    generator = torch.Generator().manual_seed(10_000 + seed)
    baseline = MovingAverageBaseline(args.baseline_decay) if with_baseline else None
    graph = recall_graph(args.batch_size, args.pairs)
    # warm the baseline up on a few batches (it is an average of past rewards)
    grads = []
    for index in range(args.variance_batches + 8):
        batch = make_examples(args.batch_size, args.pairs, args.symbols, generator)
        _, surrogate = losses(model, batch, "hard_reinforce_baseline" if with_baseline else "hard_reinforce",
                              baseline, generator, graph)
        model.zero_grad()
        surrogate.backward()
        if index >= 8:
            grads.append(model.attention.q_proj.weight.grad.flatten().clone())
    return float(torch.stack(grads).var(0).sum())


def train(args: argparse.Namespace, variant: str, seed: int, valid: tuple[Tensor, ...], test: tuple[Tensor, ...]) -> dict:
    torch.manual_seed(seed)
    model = RecallModel(args.symbols, args.dim)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    generator = torch.Generator().manual_seed(seed)
    baseline = MovingAverageBaseline(args.baseline_decay) if variant == "hard_reinforce_baseline" else None
    graph = recall_graph(args.batch_size, args.pairs)
    hard = variant != "soft"
    curve, reached = [], None
    started = time.perf_counter()
    for step in range(1, args.steps + 1):
        batch = make_examples(args.batch_size, args.pairs, args.symbols, generator)
        loss, _ = losses(model, batch, variant, baseline, generator, graph)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % args.eval_every == 0 or step == args.steps:
            value = accuracy(model, valid, hard)
            curve.append((step, value))
            if reached is None and value >= 0.9:
                reached = step
    return {
        "variant": variant, "seed": seed, "test_accuracy": accuracy(model, test, hard), "steps_to_90": reached,
        "curve": curve, "train_s": time.perf_counter() - started,
    }


def summarize(runs: list[dict], variances: dict[str, list[float]]) -> dict:
    summary = {}
    for variant in VARIANTS:
        chosen = [r for r in runs if r["variant"] == variant]
        if not chosen:
            continue
        accs = [r["test_accuracy"] for r in chosen]
        reached = [r["steps_to_90"] for r in chosen]
        summary[variant] = {
            "test_accuracy_mean": statistics.fmean(accs),
            "test_accuracy_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
            "seeds_reaching_90": sum(r is not None for r in reached),
            "steps_to_90_mean": statistics.fmean([r for r in reached if r is not None]) if any(r is not None for r in reached) else None,
            "seeds": len(chosen),
        }
    for name, values in variances.items():
        summary[f"gradient_variance_{name}"] = statistics.fmean(values)
    return summary


def markdown(args: argparse.Namespace, payload: dict) -> str:
    s = payload["summary"]
    lines = [
        "# Soft vs hard attention on associative recall (experiments/hard_attention.py)",
        "",
        f"Command: `{payload['command']}`  ",
        f"Machine: {payload['machine']['cpu']}, {payload['machine']['torch_threads']} torch thread(s).",
        "",
        f"Task: {args.pairs} (key, value) pairs over {args.symbols} symbols and a query key; answer = its value "
        f"(chance {100 / args.symbols:.1f}%). Model: symbol embeddings (d = {args.dim}), one attention layer "
        f"(query over the {args.pairs} pair nodes), a linear read-out. Adam lr {args.lr:g}, batch {args.batch_size}, "
        f"{args.steps} steps; validation {args.valid_size} / test {args.test_size} new examples; seeds "
        f"{', '.join(map(str, args.seeds))}. Hard variants are tested with the argmax choice.",
        "",
        "| variant | test accuracy | seeds reaching 90% validation | mean steps to 90% |",
        "|---|---|---|---|",
    ]
    for variant in VARIANTS:
        if variant in s:
            r = s[variant]
            steps = "-" if r["steps_to_90_mean"] is None else f"{r['steps_to_90_mean']:.0f}"
            lines.append(f"| {variant} | {100 * r['test_accuracy_mean']:.2f}% ± {100 * r['test_accuracy_std']:.2f} | "
                         f"{r['seeds_reaching_90']} / {r['seeds']} | {steps} |")
    if "gradient_variance_without_baseline" in s:
        ratio = s["gradient_variance_without_baseline"] / max(s["gradient_variance_with_baseline"], 1e-30)
        lines += [
            "",
            f"Variance of the score-function gradient of the query projection at initialization "
            f"({args.variance_batches} batches of {args.batch_size}, summed over its entries, mean over seeds): "
            f"**{s['gradient_variance_without_baseline']:.3g} without the baseline, "
            f"{s['gradient_variance_with_baseline']:.3g} with it ({ratio:.1f}x lower)**.",
        ]
    lines += ["", "Per run:", "", "| variant | seed | test accuracy | steps to 90% | training s |", "|---|---|---|---|---|"]
    for r in payload["runs"]:
        lines.append(f"| {r['variant']} | {r['seed']} | {100 * r['test_accuracy']:.2f}% | {r['steps_to_90'] or '-'} | "
                     f"{r['train_s']:.1f} |")
    return "\n".join(lines) + "\n"


def plot(payload: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    colors = dict(zip(VARIANTS, ("tab:blue", "tab:red", "tab:green")))
    for variant in VARIANTS:
        first = True
        for run in (r for r in payload["runs"] if r["variant"] == variant):
            steps, values = zip(*run["curve"])
            ax.plot(steps, [100 * v for v in values], color=colors[variant], alpha=0.8, label=variant if first else None)
            first = False
    ax.set_xlabel("training step")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title("Associative recall: soft vs hard attention")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: the curves fill the axes
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument("--symbols", type=int, default=64)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--baseline-decay", type=float, default=0.9)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--valid-size", type=int, default=1000)
    parser.add_argument("--test-size", type=int, default=5000)
    parser.add_argument("--variance-batches", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--quick", action="store_true", help="a few steps, one seed: checks the script")
    parser.add_argument("--plot-only", action="store_true", help="redraw hard_attention.png from the JSON in --out")
    args = parser.parse_args(argv)
    if args.plot_only:
        payload = json.loads((args.out / "hard_attention.json").read_text())
        plot(payload, args.out / "hard_attention.png")
        return payload
    if args.quick:
        args.steps, args.seeds, args.eval_every, args.valid_size, args.test_size, args.variance_batches = 40, [0], 20, 100, 100, 4
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(12345)
    valid = make_examples(args.valid_size, args.pairs, args.symbols, generator)
    test = make_examples(args.test_size, args.pairs, args.symbols, generator)
    runs = []
    for seed in args.seeds:
        for variant in args.variants:
            run = train(args, variant, seed, valid, test)
            print(f"[hard_attention] {variant} seed {seed}: test {100 * run['test_accuracy']:.2f}%, 90% validation at "
                  f"step {run['steps_to_90']}, {run['train_s']:.1f} s", flush=True)
            runs.append(run)
    variances = {"without_baseline": [], "with_baseline": []}
    for seed in args.seeds:
        variances["without_baseline"].append(gradient_variance(args, seed, with_baseline=False))
        variances["with_baseline"].append(gradient_variance(args, seed, with_baseline=True))
    command = shlex.join(["python", "experiments/hard_attention.py", *(sys.argv[1:] if argv is None else argv)])
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    payload = {"command": command, "machine": machine_info(), "settings": settings, "runs": runs,
               "summary": summarize(runs, variances)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "hard_attention.json").write_text(json.dumps(payload, indent=2) + "\n")
    (args.out / "hard_attention.md").write_text(markdown(args, payload))
    plot(payload, args.out / "hard_attention.png")
    print(f"[hard_attention] wrote {args.out / 'hard_attention.md'}", flush=True)
    return payload


if __name__ == "__main__":
    main()
