"""Images as graphs: pixel attention on scikit-learn's 8x8 digits (issue 6).

Every pixel is a node -- its grey value (standardized) plus its position: by default a one-hot
row and a one-hot column, so the input ``Linear`` learns a row and a column embedding
(``--positions learned``: one learned vector per pixel 0..63 instead) -- and a
:class:`~graphattn.models.SequenceClassifier` (4 layers, d_model 64) attends over the pixels
with a 2-D pattern -- ``grid2d`` (every pixel sees its 3x3 neighbourhood, radius 1), optionally
``grid2d`` radius 2 (5x5), ``axial`` (row and column) or ``dilated2d`` -- or with full attention;
a small CNN (:class:`~graphattn.models.ImageCNN`) is the baseline.

Protocol: the held-out test split of :func:`graphattn.data.image.load_digits_split` (20%,
seed 0: 359 images); a stratified 10% of the 1,438 training images is the validation part
(the same for every run), the rest (1,295) is trained on. Every run trains from scratch with
AdamW (linear warm-up, then a cosine to 0) for a fixed number of epochs, evaluates the
validation part after every epoch and keeps the best checkpoint (validation accuracy, then
validation loss); the test accuracy of that checkpoint is reported, as mean +- std over the
seeds (seeds change the initialization and the batch order, not the split).

Writes into ``--out`` (default experiments/results):

* ``digits.json``: settings, every run, the summary per model, attention distances, machine;
* ``digits.md``: the table, the command and the machine;
* ``digits.png``: attention maps of the trained grid2d and full models (seed of the first run):
  for a few query pixels of one test digit, the weights over the 8x8 image per layer (mean of
  the heads) -- grid2d's local, learned receptive field next to how far full attention reaches;
* ``digits_patterns.png``: every pattern family of :mod:`graphattn.patterns` as an N x N picture.

    python experiments/digits.py --extra-models grid2d_r2 axial dilated2d    # the results: ~12 min, 1 thread
    python experiments/digits.py --models grid2d cnn --seeds 0 --epochs 20  # grid2d, full, cnn x 3 seeds by default
    python experiments/digits.py --quick --out /tmp/digits                  # smoke test, under a minute
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphattn import AttentionGraph, patterns
from graphattn.compare import machine_info
from graphattn.data.image import (
    LabeledImages,
    attention_map,
    image_pattern,
    load_digits_split,
    pixel_features,
    positions_2d,
)
from graphattn.models import ImageCNN, SequenceClassifier, TransformerConfig, Vectors, count_parameters
from graphattn.patterns import plot_patterns

RESULTS = Path(__file__).resolve().parent / "results"
SIDE = 8  # the digits are 8x8
PIXEL_PATTERNS = {
    "grid2d": "grid2d(width=8, radius=1)",
    "grid2d_r2": "grid2d(width=8, radius=2)",
    "full": "full",
    "axial": "axial(width=8)",
    "dilated2d": "dilated2d(width=8, radius=1, dilation=2)",
}
MODELS = tuple(PIXEL_PATTERNS) + ("cnn",)
MAP_QUERIES = ((1, 2), (4, 4), (6, 5))  # the query pixels (row, column) drawn in digits.png


@dataclass(frozen=True)
class Settings:
    epochs: int = 25
    batch_size: int = 32
    lr: float = 1e-3
    cnn_lr: float = 3e-3
    weight_decay: float = 0.01
    warmup_steps: int = 50
    validation_fraction: float = 0.1
    d_model: int = 64
    num_heads: int = 4
    num_layers: int = 4
    ff_dim: int = 128
    dropout: float = 0.0
    positions: str = "rowcol"
    shift: int = 0
    cnn_channels: tuple[int, ...] = (32, 64)
    threads: int = 1


class Run(NamedTuple):
    model: str
    seed: int
    params: int
    train_seconds: float
    best_epoch: int
    validation_accuracy: float
    test_accuracy: float
    test_loss: float


# ---------------------------------------------------------------------------------------- data


def validation_split(train: LabeledImages, fraction: float, seed: int = 0) -> tuple[LabeledImages, LabeledImages]:
    """A stratified ``fraction`` of every class of ``train`` as validation (seeded), the rest to train on."""
    rng = np.random.default_rng(seed)
    labels = train.labels.numpy()
    is_validation = np.zeros(len(labels), dtype=bool)
    for digit in np.unique(labels):
        members = np.flatnonzero(labels == digit)
        is_validation[rng.permutation(members)[: int(round(fraction * len(members)))]] = True

    def part(mask: np.ndarray) -> LabeledImages:
        rows = torch.from_numpy(np.flatnonzero(mask))
        return LabeledImages(train.images[rows], train.labels[rows], train.indices[rows])

    return part(~is_validation), part(is_validation)


POSITION_MODES = {
    "rowcol": "learned 2-D: the node features are [grey, one-hot row (8), one-hot column (8)], so Linear(17, E) adds a "
    "learned row and a learned column embedding to grey * w (position='none')",
    "learned": "learned 1-D: one vector per pixel 0..63 (position='learned', table drawn from N(0, 1))",
}


@dataclass(frozen=True)
class ModelInputs:
    """What each model reads, from images ``[B, 1, 8, 8]`` with grey values in ``[0, 1]``: the
    grey values are standardized (``(v - mean) / std``, the statistics of the images trained on);
    the CNN reads the images, pixel attention the pixels as nodes ``Vectors([B, 64, F], lengths
    [B])`` (:func:`pixel_features`)."""

    positions: str
    mean: float
    std: float

    def __call__(self, model: nn.Module, images: Tensor) -> Tensor | Vectors:
        if isinstance(model, ImageCNN):
            return (images - self.mean) / self.std
        nodes = pixel_features(images, coordinates=self.positions == "rowcol")  # [B, 64, F]
        nodes = torch.cat([(nodes[..., :1] - self.mean) / self.std, nodes[..., 1:]], dim=2)
        return Vectors(nodes, torch.full((nodes.size(0),), nodes.size(1), dtype=torch.long))


def random_shift(images: Tensor, pixels: int, generator: torch.Generator) -> Tensor:
    """Every image moved by its own random offset of up to ``pixels`` rows and columns (zeros
    shifted in): ``[B, C, H, W] -> [B, C, H, W]``; training-time augmentation."""
    if pixels == 0:
        return images
    batch, _, height, width = images.shape
    padded = F.pad(images, (pixels, pixels, pixels, pixels))
    top = torch.randint(0, 2 * pixels + 1, (batch,), generator=generator)
    left = torch.randint(0, 2 * pixels + 1, (batch,), generator=generator)
    return torch.stack([padded[b, :, top[b] : top[b] + height, left[b] : left[b] + width] for b in range(batch)])


# -------------------------------------------------------------------------------------- models


def build_model(name: str, settings: Settings) -> nn.Module:
    if name == "cnn":
        return ImageCNN(in_channels=1, num_classes=10, channels=settings.cnn_channels)
    rowcol = settings.positions == "rowcol"
    config = TransformerConfig(
        vocab_size=4,  # unused: the encoder reads vectors; ids only need room for pad/bos/eos/unk
        input_features=1 + 2 * SIDE if rowcol else 1,
        d_model=settings.d_model,
        num_heads=settings.num_heads,
        num_layers=settings.num_layers,
        ff_dim=settings.ff_dim,
        dropout=settings.dropout,
        position="none" if rowcol else "learned",
        max_positions=SIDE * SIDE,
        encoder_pattern=PIXEL_PATTERNS[name],
    )
    model = SequenceClassifier(config, num_classes=10, pooling="mean")
    if not rowcol:
        # One grey value per node makes every background pixel the same vector; the library's
        # N(0, 0.02^2) position table barely tells them apart and training sat at chance for the
        # first epochs, so the table starts from nn.Embedding's N(0, 1) instead (still learned).
        nn.init.normal_(model.encoder.embedding.positions.weight, 0.0, 1.0)
    return model


# ------------------------------------------------------------------------------------ training


@torch.no_grad()
def evaluate(model: nn.Module, data: LabeledImages, inputs: ModelInputs, batch_size: int = 512) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of ``model`` on ``data`` in eval mode."""
    model.eval()
    correct, loss = 0, 0.0
    for start in range(0, len(data.labels), batch_size):
        images, labels = data.images[start : start + batch_size], data.labels[start : start + batch_size]
        logits = model(inputs(model, images))
        correct += int((logits.argmax(1) == labels).sum())
        loss += float(F.cross_entropy(logits, labels, reduction="sum"))
    model.train()
    return correct / len(data.labels), loss / len(data.labels)


def train(
    name: str, seed: int, settings: Settings, inputs: ModelInputs, fit: LabeledImages, validation: LabeledImages, test: LabeledImages
) -> tuple[Run, nn.Module]:
    torch.manual_seed(seed)
    model = build_model(name, settings)
    lr = settings.cnn_lr if name == "cnn" else settings.lr
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=settings.weight_decay)
    steps_per_epoch = math.ceil(len(fit.labels) / settings.batch_size)
    total = settings.epochs * steps_per_epoch

    def schedule(step: int) -> float:
        warmup = min(1.0, (step + 1) / settings.warmup_steps)
        return warmup * 0.5 * (1.0 + math.cos(math.pi * min(1.0, step / total)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    order = torch.Generator().manual_seed(seed)
    shifts = torch.Generator().manual_seed(seed + 1)
    best = (-1.0, math.inf)
    best_state, best_epoch = None, 0
    start = time.perf_counter()
    model.train()
    for epoch in range(1, settings.epochs + 1):
        permutation = torch.randperm(len(fit.labels), generator=order)
        for first in range(0, len(permutation), settings.batch_size):
            rows = permutation[first : first + settings.batch_size]
            images = random_shift(fit.images[rows], settings.shift, shifts)  # [b, 1, 8, 8]
            logits = model(inputs(model, images))
            loss = F.cross_entropy(logits, fit.labels[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
        accuracy, validation_loss = evaluate(model, validation, inputs)
        if (accuracy, -validation_loss) > (best[0], -best[1]):
            best, best_epoch = (accuracy, validation_loss), epoch
            best_state = copy.deepcopy(model.state_dict())
    seconds = time.perf_counter() - start  # training + the validation passes
    model.load_state_dict(best_state)
    test_accuracy, test_loss = evaluate(model, test, inputs)
    model.eval()
    run = Run(name, seed, count_parameters(model), seconds, best_epoch, best[0], test_accuracy, test_loss)
    return run, model


# ------------------------------------------------------------------------ attention, pictures


@torch.no_grad()
def attention_distance(model: SequenceClassifier, images: Tensor, inputs: ModelInputs, chunk: int = 16) -> list[float]:
    """Per layer, the mean Euclidean distance (in pixels) between a query pixel and the pixels it
    attends to, weighted by attention (mean of heads), averaged over all pixels of ``images``
    -- the "attention distance" of ViT (Dosovitskiy et al. 2021, Fig. 7)."""
    where = positions_2d(SIDE, SIDE).float()  # [64, 2]
    totals: list[float] = []
    for start in range(0, len(images), chunk):  # the weights of a full graph over many images are large
        part = images[start : start + chunk]
        for layer, (graph, weights) in enumerate(model.encoder.attention_weights(inputs(model, part))):
            query, key = graph.row % (SIDE * SIDE), graph.col % (SIDE * SIDE)
            distance = (where[query] - where[key]).norm(dim=1)  # [E]
            total = float((weights.mean(1) * distance).sum())  # the weights of a query sum to 1
            if layer == len(totals):
                totals.append(0.0)
            totals[layer] += total
    return [total / (len(images) * SIDE * SIDE) for total in totals]


def plot_attention_maps(models: dict[str, SequenceClassifier], image: Tensor, label: int, inputs: ModelInputs, path: Path) -> None:
    """Rows: model x layer; columns: the digit, then one map per query pixel (mean of the heads)."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    layers = {name: model.encoder.attention_weights(inputs(model, image[None])) for name, model in models.items()}
    rows = sum(len(per_layer) for per_layer in layers.values())
    columns = 1 + len(MAP_QUERIES)
    figure = Figure(figsize=(2.1 * columns + 0.6, 2.1 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False)
    row = 0
    for name, per_layer in layers.items():
        for layer, (graph, weights) in enumerate(per_layer):
            ax = axes[row, 0]
            ax.imshow(image[0].numpy(), cmap="gray_r", vmin=0, vmax=1)
            ax.set_title(f"digit {label}", fontsize=9)
            ax.set_ylabel(f"{name}\nlayer {layer + 1}", fontsize=10)
            for column, (r, c) in enumerate(MAP_QUERIES, start=1):
                heat = attention_map(graph, weights, (r, c), SIDE, SIDE)  # [8, 8], sums to 1
                ax = axes[row, column]
                shown = ax.imshow(heat.numpy(), cmap="viridis", vmin=0)
                ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=1.5))
                ax.set_title(f"query ({r}, {c}), max {float(heat.max()):.2f}", fontsize=8)
                figure.colorbar(shown, ax=ax, fraction=0.046, pad=0.02).ax.tick_params(labelsize=6)
            for ax in axes[row]:
                ax.set_xticks([])
                ax.set_yticks([])
            row += 1
    figure.suptitle(
        "Attention of query pixels (red) over the 8x8 digit, mean of the heads, per layer", fontsize=11
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90, format="png")


def pattern_gallery(n: int = 64) -> dict[str, AttentionGraph]:
    """Every pattern family of :mod:`graphattn.patterns` over ``n = 64`` nodes (an 8x8 image for
    the image patterns, an 8x8 lattice graph for the graph patterns)."""
    side = int(math.isqrt(n))
    lattice = []  # the 4-neighbour lattice of the side x side grid, both directions
    for r in range(side):
        for c in range(side):
            if c + 1 < side:
                lattice += [(r * side + c, r * side + c + 1), (r * side + c + 1, r * side + c)]
            if r + 1 < side:
                lattice += [(r * side + c, (r + 1) * side + c), ((r + 1) * side + c, r * side + c)]
    edge_index = torch.tensor(lattice).t()
    return {
        "full": patterns.full(n),
        "causal": patterns.causal(n),
        "local(window=4)": patterns.local(n, 4),
        "strided(stride=8)": patterns.strided(n, 8),
        "block(size=16)": patterns.block(n, 16),
        "global_tokens([0, 32])": patterns.global_tokens(n, [0, 32]),
        "add_global_tokens(local, 2)": patterns.add_global_tokens(patterns.local(n - 2, 4), 2),
        "random(k=6)": patterns.random(n, 6),
        "bigbird(3, 2, 3)": patterns.bigbird(n, 3, 2, 3),
        "longformer(4, [0])": patterns.longformer(n, 4, [0]),
        "grid2d 8x8 r=1": patterns.grid2d(side, side, 1),
        "grid2d 8x8 r=2": patterns.grid2d(side, side, 2),
        "dilated2d 8x8": patterns.dilated2d(side, side, 1, 2),
        "axial 8x8": patterns.axial(side, side),
        "adjacency (8x8 lattice)": patterns.adjacency(edge_index, n),
        "k_hop(k=2)": patterns.k_hop(edge_index, n, 2),
        "full_per_graph (4 graphs)": patterns.full_per_graph(torch.arange(n) // 16),
        "union(axial, grid2d)": image_pattern("union(axial(), grid2d(radius=1))", side, side),
        "difference(full, grid2d r=2)": image_pattern("difference(full(), grid2d(radius=2))", side, side),
        "per_head(axial row, column)": image_pattern("per_head(axial(axis='row'), axial(axis='column'))", side, side),
        "batch(4 x causal 16)": patterns.batch([patterns.causal(16)] * 4),
    }


# ------------------------------------------------------------------------------------ results


def summarize(runs: list[Run]) -> dict[str, dict[str, float]]:
    out = {}
    for name in dict.fromkeys(run.model for run in runs):
        mine = [run for run in runs if run.model == name]
        accuracies = [run.test_accuracy for run in mine]
        out[name] = {
            "seeds": len(mine),
            "params": mine[0].params,
            "test_accuracy_mean": statistics.fmean(accuracies),
            "test_accuracy_std": statistics.stdev(accuracies) if len(mine) > 1 else 0.0,
            "test_accuracy_min": min(accuracies),
            "validation_accuracy_mean": statistics.fmean(run.validation_accuracy for run in mine),
            "train_seconds_mean": statistics.fmean(run.train_seconds for run in mine),
            "best_epoch_mean": statistics.fmean(run.best_epoch for run in mine),
        }
    return out


def describe(name: str) -> str:
    return f"pixel attention, `{PIXEL_PATTERNS[name]}`" if name in PIXEL_PATTERNS else "CNN baseline (`ImageCNN`)"


def write_markdown(path: Path, command: str, settings: Settings, sizes: dict[str, int], summary: dict, distances: dict, machine: dict, total_seconds: float) -> None:
    lines = [
        "# Images as graphs: pixel attention on 8x8 digits (experiments/digits.py)",
        "",
        f"Command: `{command}` (total {total_seconds / 60:.1f} min).",
        "",
        f"Data: scikit-learn's digits, the held-out test split of `load_digits_split(0.2, seed=0)` "
        f"({sizes['test']} images); the {sizes['train']} training images minus a stratified "
        f"{settings.validation_fraction:.0%} validation part ({sizes['validation']}) are trained on "
        f"({sizes['fit']}). Every pixel is a node (64 per image) with its grey value (standardized with the mean and std of the images trained on; the CNN reads the same standardized images); positions: "
        f"{POSITION_MODES[settings.positions]}. "
        + (f"Training images are shifted by a random offset of up to {settings.shift} pixel(s) in each direction "
           "(every model). " if settings.shift else "No augmentation. ")
        + "Pixel attention is a `SequenceClassifier` (pre-norm encoder, mean pooling, MLP head): "
        f"d_model {settings.d_model}, {settings.num_heads} heads, {settings.num_layers} layers, "
        f"feed-forward {settings.ff_dim}, dropout {settings.dropout}. The CNN is `ImageCNN(channels="
        f"{settings.cnn_channels})`: two stages of 2 x (3x3 conv, BatchNorm, ReLU) + 2x2 max-pool, global "
        "average, linear.",
        "",
        f"Training: {settings.epochs} epochs, batch {settings.batch_size}, AdamW (lr {settings.lr:g}, CNN "
        f"{settings.cnn_lr:g}; weight decay {settings.weight_decay:g}), {settings.warmup_steps} warm-up steps "
        "then a cosine to 0; the checkpoint with the best validation accuracy (then loss) is kept and tested. "
        f"Mean +- std over the seeds; train time includes the per-epoch validation, {settings.threads} CPU thread.",
        "",
        "| model | pattern / net | params | seeds | test accuracy | worst seed | val accuracy | best epoch | train time / run |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in summary.items():
        lines.append(
            f"| {name} | {describe(name)} | {row['params']:,} | {row['seeds']} | "
            f"{100 * row['test_accuracy_mean']:.2f}%"
            + (f" +- {100 * row['test_accuracy_std']:.2f} | " if row["seeds"] > 1 else " (one seed) | ")
            + f"{100 * row['test_accuracy_min']:.2f}% | {100 * row['validation_accuracy_mean']:.2f}% | "
            f"{row['best_epoch_mean']:.1f} | {row['train_seconds_mean']:.0f} s |"
        )
    met = {name: row["test_accuracy_mean"] >= 0.97 for name, row in summary.items()}
    lines += [
        "",
        "Target of issue 6: >= 97% test accuracy -- "
        + ", ".join(f"{name} {'met' if ok else 'NOT met'}" for name, ok in met.items())
        + " (on the mean over seeds). The validation part is small (one image = "
        f"{100 / sizes['validation']:.1f} points), so the selected epoch is noisy; one test image = "
        f"{100 / sizes['test']:.2f} points.",
    ]
    if "grid2d" in summary and "full" in summary:
        grid, full = summary["grid2d"], summary["full"]
        lines += [
            "",
            f"grid2d (every pixel attends to its 3x3 neighbourhood) is {100 * (grid['test_accuracy_mean'] - full['test_accuracy_mean']):+.2f} "
            "points against full attention with the same parameters and training",
        ]
        if "cnn" in summary:
            cnn = summary["cnn"]
            lines[-1] += (
                f"; the CNN is {100 * (cnn['test_accuracy_mean'] - grid['test_accuracy_mean']):+.2f} points against grid2d "
                f"with {grid['params'] / cnn['params']:.1f}x fewer parameters and {grid['train_seconds_mean'] / cnn['train_seconds_mean']:.0f}x "
                "less training time"
            )
        lines[-1] += "."
    if distances:
        layers = max(len(v) for v in distances.values())
        lines += [
            "",
            "Attention distance (mean Euclidean distance in pixels from a query pixel to what it attends to, weighted "
            "by attention, mean of heads, over every pixel of the test images; first seed): how far each layer looks.",
            "",
            "| model | " + " | ".join(f"layer {i + 1}" for i in range(layers)) + " |",
            "|---|" + "---|" * layers,
        ]
        for name, values in distances.items():
            lines.append(f"| {name} | " + " | ".join(f"{v:.2f}" for v in values) + " |")
    lines += [
        "",
        "Pictures: `digits.png` -- the attention of three query pixels (red squares) of one test digit over the "
        "8x8 image, per layer, mean of the heads, for the trained grid2d and full models: grid2d's weights stay in "
        "the 3x3 neighbourhood and are not uniform there, different per query and layer (a learned receptive "
        "field; through the stack it grows by one pixel per layer), while full attention reaches across the whole image. "
        "The attention-distance table above measures the same over all test images. `digits_patterns.png` -- every "
        "pattern family of `graphattn.patterns` as an N x N picture (query rows, key columns) at N = 64 (image "
        "patterns on the 8x8 grid, graph patterns on the 8x8 lattice graph); the data-dependent clustered "
        "patterns (LSH, k-means routing) are left out.",
        "",
        f"Machine: {json.dumps(machine)}",
        "",
    ]
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=MODELS, default=["grid2d", "full", "cnn"])
    parser.add_argument("--extra-models", nargs="*", choices=MODELS, default=[],
                        help="models run with the first seed only (e.g. axial dilated2d grid2d_r2)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=Settings.epochs)
    parser.add_argument("--lr", type=float, default=Settings.lr)
    parser.add_argument("--layers", type=int, default=Settings.num_layers)
    parser.add_argument("--heads", type=int, default=Settings.num_heads)
    parser.add_argument("--positions", choices=tuple(POSITION_MODES), default=Settings.positions)
    parser.add_argument("--shift", type=int, default=Settings.shift, help="random training shifts of up to this many pixels (0: none)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="smoke test: 2 epochs, one seed")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    settings = Settings(
        epochs=2 if args.quick else args.epochs, lr=args.lr, num_layers=args.layers, num_heads=args.heads,
        positions=args.positions, shift=args.shift, threads=args.threads,
    )
    seeds = args.seeds[:1] if args.quick else args.seeds
    command = "python experiments/digits.py " + " ".join(sys.argv[1:] if argv is None else argv)
    begin = time.perf_counter()

    split = load_digits_split(0.2, seed=0)
    fit, validation = validation_split(split.train, settings.validation_fraction)
    sizes = {"train": len(split.train.labels), "fit": len(fit.labels), "validation": len(validation.labels), "test": len(split.test.labels)}
    inputs = ModelInputs(settings.positions, float(fit.images.mean()), float(fit.images.std()))
    print(f"data: {sizes}, grey mean {inputs.mean:.3f} std {inputs.std:.3f}", flush=True)

    plan = [(name, seed) for name in args.models for seed in seeds]
    plan += [(name, seeds[0]) for name in args.extra_models if name not in args.models]
    runs: list[Run] = []
    first_models: dict[str, nn.Module] = {}
    for name, seed in plan:
        run, model = train(name, seed, settings, inputs, fit, validation, split.test)
        runs.append(run)
        first_models.setdefault(name, model)
        print(
            f"{name:10s} seed {seed}: test {100 * run.test_accuracy:.2f}%  val {100 * run.validation_accuracy:.2f}% "
            f"(epoch {run.best_epoch})  params {run.params:,}  {run.train_seconds:.0f} s",
            flush=True,
        )
    summary = summarize(runs)
    distances = {
        name: attention_distance(model, split.test.images, inputs) for name, model in first_models.items() if name in PIXEL_PATTERNS
    }

    args.out.mkdir(parents=True, exist_ok=True)
    drawn = {name: first_models[name] for name in ("grid2d", "full") if name in first_models}
    pictures = []
    if drawn:
        example = 0  # the first test image that every drawn model classifies correctly
        for index in range(len(split.test.labels)):
            image = split.test.images[index : index + 1]
            with torch.no_grad():
                right = all(int(m(inputs(m, image)).argmax()) == int(split.test.labels[index]) for m in drawn.values())
            if right:
                example = index
                break
        plot_attention_maps(
            drawn, split.test.images[example], int(split.test.labels[example]), inputs, args.out / "digits.png"
        )
        pictures.append("digits.png")
    plot_patterns(pattern_gallery(), args.out / "digits_patterns.png", columns=5, dpi=80)
    pictures.append("digits_patterns.png")

    total = time.perf_counter() - begin
    machine = machine_info()
    result = {
        "command": command,
        "settings": {**asdict(settings), "grey_mean": inputs.mean, "grey_std": inputs.std, "patterns": PIXEL_PATTERNS, "seeds": seeds, "split": sizes,
                     "test_split": "load_digits_split(test_fraction=0.2, seed=0)", "map_queries": MAP_QUERIES},
        "runs": [run._asdict() for run in runs],
        "summary": summary,
        "attention_distance": distances,
        "pictures": pictures,
        "total_seconds": total,
        "machine": machine,
    }
    (args.out / "digits.json").write_text(json.dumps(result, indent=2) + "\n")
    write_markdown(args.out / "digits.md", command, settings, sizes, summary, distances, machine, total)
    print(f"wrote {args.out / 'digits.json'}, digits.md, {', '.join(pictures)} ({total / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
