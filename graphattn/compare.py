"""Compare attention patterns and mechanisms the way the Long Range Arena does (Tay et al. 2021):
accuracy on long-sequence classification tasks, training speed and peak memory against full
attention, and the bubble chart that puts the three together (LRA's Figure 3).

The pieces, each usable on its own (only graphattn's public API underneath):

* :data:`VARIANTS` / :func:`variant_settings`: the attention variants of the comparison --
  full (the vanilla Transformer with its score matrix in memory, LRA's baseline) and full_sdpa
  (the same softmax through graphattn's fused full pattern), local, strided, longformer,
  bigbird (fixed patterns on the sparse core), lsh, routing, sinkhorn (data-dependent graphs),
  linformer, linear, performer, synthesizer (mechanisms without an edge set) -- as the
  ``(encoder_pattern, encoder_attention)`` strings of a
  :class:`~graphattn.models.TransformerConfig` for a given longest sequence.
* :func:`load_task`: the LRA-style tasks of :mod:`graphattn.data.lra` at a chosen length
  (``listops``, ``text`` = byte-level genre of UD English-EWT, ``pathfinder``, ``image`` =
  pixel-sequence shapes), as a :class:`TaskData`.
* :func:`build_classifier`: a :class:`~graphattn.models.classifier.SequenceClassifier` for a
  variant, a task and a :class:`ModelSettings`.
* :func:`measure_steps` / :func:`measure_step`: training steps per second (forward + backward +
  AdamW step on random tokens), forward-only time, one-off cost of the first step and peak
  memory, variants interleaved, medians after warm-up (:class:`StepMeasurement`). Peak memory
  on CUDA is ``torch.cuda.max_memory_allocated``; on CPU it is counted by
  :class:`TensorMemoryTracker` (see there for exactly what it counts).
* :func:`train_and_evaluate`: trains with :func:`graphattn.train.fit` under a wall-clock budget
  (:class:`TrainingBudget`: stops training, validates at regular intervals of training time,
  keeps the best state by validation accuracy, anneals the learning rate over the budget),
  then reports test accuracy (:class:`TrainResult`).
* :func:`compare`: variants x tasks (and the speed measurements) with a progress bar, calling
  back after every result so that a caller can save it at once (:class:`Comparison`).
* :func:`bubble_points` / :func:`plot_bubbles`: x = training speed relative to full attention,
  y = accuracy (mean over the tasks), bubble area = peak memory relative to full, labeled.
* :func:`accuracy_table` / :func:`speed_table`: Markdown tables as LRA's Tables 1 and 2.

Example:
    >>> variant_settings("local", 1024)
    VariantSettings(encoder_pattern='local(window=128)', encoder_attention='softmax')
    >>> variant_settings("sinkhorn", 2000).encoder_attention
    'sinkhorn(bucket_size=50)'
    >>> m = measure_step("linear", 64, batch_size=2, model=ModelSettings(d_model=16, num_heads=2,
    ...                  num_layers=1), steps=2, warmup=1)
    >>> m.steps_per_second > 0 and m.peak_memory_bytes > 0
    True
"""
from __future__ import annotations

import math
import os
import statistics
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode

from graphattn.data.lra import PaddedBatch, SequenceClassificationData, collate
from graphattn.models.classifier import CLASSIFIER_POOLINGS, SequenceClassifier
from graphattn.models.transformer import TransformerConfig
from graphattn.train import Callback, LengthBuckets, TrainConfig, TrainState, fit, make_optimizer

__all__ = [
    # variants
    "Variant",
    "VariantSettings",
    "VARIANTS",
    "VARIANT_NAMES",
    "variant_settings",
    # tasks and models
    "TASKS",
    "TASK_LENGTHS",
    "TaskData",
    "load_task",
    "ModelSettings",
    "build_classifier",
    # speed and memory
    "TensorMemoryTracker",
    "StepMeasurement",
    "measure_steps",
    "measure_step",
    # accuracy
    "TrainingBudget",
    "TrainResult",
    "classification_loss",
    "classification_accuracy",
    "train_and_evaluate",
    # the comparison
    "Comparison",
    "compare",
    "run_folder",
    "machine_info",
    "BubblePoint",
    "bubble_points",
    "plot_bubbles",
    "accuracy_table",
    "speed_table",
]


# ============================================================================ variants
class VariantSettings(NamedTuple):
    """The two :class:`~graphattn.models.TransformerConfig` fields that make a variant."""

    encoder_pattern: str
    encoder_attention: str


@dataclass(frozen=True)
class Variant:
    """One attention variant of the comparison.

    Attributes:
        name: the short name (a key of :data:`VARIANTS`).
        published_name: its row in LRA's Tables 1 and 2 (``../shared/data/published``), or None
            when LRA did not run it.
        description: what it is, in words.
        make: ``max_length -> VariantSettings``; use :meth:`settings`.
    """

    name: str
    published_name: str | None
    description: str
    make: Callable[[int], VariantSettings] = field(repr=False)

    def settings(self, max_length: int) -> VariantSettings:
        """The pattern and mechanism strings for sequences of at most ``max_length`` tokens."""
        return self.make(_check_length(max_length, "max_length"))


def _check_length(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"Expected '{name}' to be an int >= {minimum}, got {value!r}")
    return value


def _sqrt_size(max_length: int) -> int:
    """``round(sqrt(L))``, at least 1: the stride of the strided pattern, the cluster count of routing."""
    return max(1, round(math.sqrt(max_length)))


def _bucket_size(max_length: int, target: int = 64) -> int:
    """The largest divisor of ``max_length`` in ``[target / 2, target]`` (no partial last bucket),
    else ``min(target, max_length)``."""
    for size in range(min(target, max_length), max(target // 2, 1) - 1, -1):
        if max_length % size == 0:
            return size
    return min(target, max_length)


def _full(max_length: int) -> VariantSettings:
    # the vanilla Transformer of LRA's tables: the [B, H, L, L] scores in memory
    return VariantSettings("full", "materialized_softmax")


def _full_sdpa(max_length: int) -> VariantSettings:
    return VariantSettings("full", "softmax")


def _local(max_length: int) -> VariantSettings:
    return VariantSettings("local(window=128)", "softmax")


def _strided(max_length: int) -> VariantSettings:
    stride = _sqrt_size(max_length)
    return VariantSettings(f"union(local(window={stride}), strided(stride={stride}))", "softmax")


def _longformer(max_length: int) -> VariantSettings:
    return VariantSettings("longformer(window=128, positions=(0,))", "softmax")


def _bigbird(max_length: int) -> VariantSettings:
    return VariantSettings("bigbird(window=96, num_global=128, num_random=192)", "softmax")


def _lsh(max_length: int) -> VariantSettings:
    return VariantSettings("full", "lsh(chunk_size=64, num_rounds=2)")


def _routing(max_length: int) -> VariantSettings:
    clusters = _sqrt_size(max_length)
    # the window (members per centroid) fixed by max_length, not by a batch's padded length, so a
    # sequence's routing does not depend on the batch it is in
    return VariantSettings("full", f"routing(num_clusters={clusters}, window={math.ceil(max_length / clusters)})")


def _sinkhorn(max_length: int) -> VariantSettings:
    return VariantSettings("full", f"sinkhorn(bucket_size={_bucket_size(max_length)})")


def _linformer(max_length: int) -> VariantSettings:
    return VariantSettings("full", f"linformer(projected_length={min(256, max_length)})")


def _linear(max_length: int) -> VariantSettings:
    return VariantSettings("full", "linear")


def _performer(max_length: int) -> VariantSettings:
    return VariantSettings("full", "performer(num_features=256)")


def _synthesizer(max_length: int) -> VariantSettings:
    return VariantSettings("full", "synthesizer(kind='dense')")


VARIANTS: Mapping[str, Variant] = MappingProxyType({
    variant.name: variant
    for variant in (
        Variant("full", "Transformer",
                "softmax over every pair with the score matrix in memory (the vanilla Transformer LRA measured; the baseline)",
                _full),
        Variant("full_sdpa", None,
                "softmax over every pair through graphattn's full pattern: fused SDPA kernels that never store the scores",
                _full_sdpa),
        Variant("local", "Local Attention", "sliding window of 128 keys each side", _local),
        Variant("strided", "Sparse Trans.",
                "Sparse Transformer's strided pattern: window of s each side + every s-th key, s = round(sqrt(L))",
                _strided),
        Variant("longformer", "Longformer", "window of 128 each side + position 0 global", _longformer),
        Variant("bigbird", "BigBird",
                "LRA's BigBird at token level (blocks of 64): window of 96 each side, 128 global, 192 random keys",
                _bigbird),
        Variant("lsh", "Reformer", "Reformer LSH attention, chunks of 64, 2 hashing rounds, shared q/k", _lsh),
        Variant("routing", None,
                "Routing Transformer: online k-means, round(sqrt(L)) clusters of ceil(L / clusters) members", _routing),
        Variant("sinkhorn", "Sinkhorn Trans.", "Sparse Sinkhorn attention, buckets of ~64 tokens", _sinkhorn),
        Variant("linformer", "Linformer", "keys and values projected to k = 256 slots", _linformer),
        Variant("linear", "Linear Trans.", "kernelized linear attention, elu + 1 feature map", _linear),
        Variant("performer", "Performer", "FAVOR+ with 256 orthogonal random features", _performer),
        Variant("synthesizer", "Synthesizer", "dense Synthesizer (attention weights from an MLP, no q.k)", _synthesizer),
    )
})
"""The attention variants, in the order of the tables (name -> :class:`Variant`)."""

VARIANT_NAMES: tuple[str, ...] = tuple(VARIANTS)
"""``("full", "local", "strided", ...)``: every name :func:`variant_settings` accepts."""


def _variant(name: Any) -> Variant:
    if not isinstance(name, str) or name not in VARIANTS:
        raise ValueError(f"Unknown attention variant {name!r}; expected one of {', '.join(VARIANT_NAMES)}")
    return VARIANTS[name]


def variant_settings(name: str, max_length: int) -> VariantSettings:
    """``(encoder_pattern, encoder_attention)`` of variant ``name`` for sequences of at most
    ``max_length`` tokens (Linformer, Synthesizer and Sinkhorn size their parameters by it, and
    Sinkhorn's bucket size divides it where it can).

    Raises:
        ValueError: unknown ``name`` (the message lists :data:`VARIANT_NAMES`) or a
            ``max_length`` that is not a positive int.
    """
    return _variant(name).settings(max_length)


VariantLike = Union[str, VariantSettings]


def _resolve(variant: VariantLike, max_length: int) -> tuple[str, VariantSettings]:
    """``(label, settings)`` of a variant name or explicit settings."""
    if isinstance(variant, VariantSettings):
        return f"{variant.encoder_pattern} / {variant.encoder_attention}", variant
    return variant, variant_settings(variant, max_length)


# ============================================================================ tasks
TASKS = ("listops", "text", "pathfinder", "image")
"""The tasks :func:`load_task` makes (LRA's ListOps, Text, Pathfinder and Image counterparts)."""

TASK_LENGTHS: Mapping[str, int] = MappingProxyType({"listops": 2000, "text": 4000, "pathfinder": 1024, "image": 1024})
"""Default longest sequence per task, as in LRA (ListOps 2K, byte-level text 4K, 32x32 images)."""

_DEFAULT_SIZES = {"listops": (20000, 256, 1000), "text": (None, None, None), "pathfinder": (8000, 256, 1000),
                  "image": (10000, 256, 1000)}


@dataclass(frozen=True, eq=False)
class TaskData:
    """A task's three splits and the longest sequence a model must take.

    Attributes:
        task: one of :data:`TASKS`.
        train, valid, test: :class:`~graphattn.data.lra.SequenceClassificationData`.
        max_length: every sequence has at most this many tokens (the models' ``max_positions``).
    """

    task: str
    train: SequenceClassificationData
    valid: SequenceClassificationData
    test: SequenceClassificationData
    max_length: int

    def __post_init__(self) -> None:
        for name in ("train", "valid", "test"):
            data = getattr(self, name)
            if not isinstance(data, SequenceClassificationData):
                raise TypeError(f"Expected TaskData.{name} to be a SequenceClassificationData, got {type(data).__name__}")
            if len(data) == 0:
                raise ValueError(f"TaskData.{name} of task {self.task!r} is empty")
        longest = max(int(getattr(self, name).lengths().max()) for name in ("train", "valid", "test"))
        if longest > self.max_length:
            raise ValueError(f"Task {self.task!r} has a sequence of {longest} tokens, above max_length={self.max_length}")

    @property
    def vocab_size(self) -> int:
        return self.train.vocab_size

    @property
    def num_classes(self) -> int:
        return self.train.num_classes

    def __repr__(self) -> str:
        return (f"TaskData({self.task}: {len(self.train)} / {len(self.valid)} / {len(self.test)} examples, "
                f"max_length {self.max_length}, {self.num_classes} classes)")


def load_task(
    task: str,
    *,
    max_length: int | None = None,
    train_size: int | None = None,
    valid_size: int | None = None,
    test_size: int | None = None,
    seed: int = 0,
    ewt_path: str | os.PathLike | None = None,
) -> TaskData:
    """The three splits of ``task`` with sequences of at most ``max_length`` tokens.

    * ``listops``: :func:`~graphattn.data.lra.make_listops` with lengths strictly between
      ``max_length // 4`` and ``max_length`` (LRA: 500-2000).
    * ``text``: :func:`~graphattn.data.lra.load_ewt_genre` with ``max_length // 4`` to
      ``max_length`` bytes per example, the treebank's own splits (all of each unless a size is
      given: then a seeded random subset of that size, in file order).
    * ``pathfinder`` / ``image``: ``s x s`` images with ``s = sqrt(max_length)`` (a square
      number, ``s >= 16``); Pathfinder paths get ``round(6 s / 32)`` dashes and 2 distractors
      (LRA's 32x32 geometry scaled), or 2 dashes and 1 distractor below ``s = 24``.

    Args:
        task: one of :data:`TASKS`.
        max_length: default :data:`TASK_LENGTHS`.
        train_size, valid_size, test_size: examples per split (defaults: ListOps 20,000 / 256 /
            1,000, Pathfinder 8,000 / 256 / 1,000, Image 10,000 / 256 / 1,000, Text all).
        seed: seed of the generated tasks.
        ewt_path: the UD English-EWT folder (needed for ``text``).

    Raises:
        ValueError: unknown task or unusable size; FileNotFoundError: ``text`` without the treebank.
    """
    from graphattn.data import lra

    if task not in TASKS:
        raise ValueError(f"Unknown task {task!r}; expected one of {', '.join(TASKS)}")
    length = TASK_LENGTHS[task] if max_length is None else _check_length(max_length, "max_length", 2)
    defaults = _DEFAULT_SIZES[task]
    sizes = [d if s is None else _check_length(s, name, 1)
             for s, d, name in zip((train_size, valid_size, test_size), defaults, ("train_size", "valid_size", "test_size"))]
    splits = ("train", "valid", "test")
    if task == "listops":
        low = length // 4
        if length < 8:
            raise ValueError(f"Expected max_length >= 8 for listops, got {length}")
        data = [lra.make_listops(n, seed=seed, split=split, min_length=low, max_length=length) for n, split in zip(sizes, splits)]
    elif task == "text":
        if ewt_path is None:
            raise ValueError("The text task needs ewt_path, the UD English-EWT folder (en_ewt-ud-*.conllu)")
        data = []
        for n, split in zip(sizes, splits):
            full = lra.load_ewt_genre(ewt_path, split, min_bytes=max(1, length // 4), max_bytes=length)
            if n is not None and n < len(full):  # a seeded random subset: the file order groups the genres
                chosen = torch.randperm(len(full), generator=torch.Generator().manual_seed(seed))[:n]
                full = full.subset(torch.sort(chosen).values)
            data.append(full)
    else:
        side = math.isqrt(length)
        minimum = 16
        if side * side != length or side < minimum:
            raise ValueError(
                f"The {task} task needs max_length = side * side with side >= {minimum} (images are flattened), got "
                f"{length}; e.g. {max(minimum, side) ** 2}"
            )
        if task == "image":
            data = [lra.make_shapes(n, seed=seed, split=split, image_size=side) for n, split in zip(sizes, splits)]
        else:
            # LRA's 32x32 geometry scaled with the side; below 24 pixels that no longer fits
            segments, distractors = (round(6 * side / 32), 2) if side >= 24 else (2, 1)
            config = lra.PathfinderConfig(image_size=side, path_segments=segments, num_distractors=distractors)
            data = [lra.make_pathfinder(n, seed=seed, split=split, config=config) for n, split in zip(sizes, splits)]
    return TaskData(task, *data, max_length=length)


# ============================================================================ models
@dataclass(frozen=True)
class ModelSettings:
    """The classifier's size, the same for every variant (frozen; pass it whole).

    Defaults are a small model that trains on 2 CPU cores (LRA's models are 4-6 layers of
    256-512 on TPUs): ``d_model`` 64, 4 heads, 2 layers, feed-forward 128, dropout 0.1, mean
    pooling, sinusoidal positions (every mechanism accepts them).
    """

    d_model: int = 64
    num_heads: int = 4
    num_layers: int = 2
    ff_dim: int = 128
    dropout: float = 0.1
    pooling: str = "mean"
    position: str = "sinusoidal"

    def __post_init__(self) -> None:
        for name in ("d_model", "num_heads", "num_layers", "ff_dim"):
            _check_length(getattr(self, name), name)
        if self.pooling not in CLASSIFIER_POOLINGS:
            raise ValueError(f"Unknown pooling {self.pooling!r}; expected one of {', '.join(CLASSIFIER_POOLINGS)}")
        if self.position not in ("sinusoidal", "learned", "rotary", "none"):
            raise ValueError(f"Expected position 'sinusoidal', 'learned', 'rotary' or 'none' (what every mechanism "
                             f"accepts), got {self.position!r}")


def build_classifier(
    variant: VariantLike, max_length: int, vocab_size: int, num_classes: int, model: ModelSettings = ModelSettings()
) -> SequenceClassifier:
    """A :class:`~graphattn.models.classifier.SequenceClassifier` running ``variant`` (a name of
    :data:`VARIANTS` or explicit :class:`VariantSettings`) on sequences of up to ``max_length``."""
    _, settings = _resolve(variant, _check_length(max_length, "max_length"))
    if not isinstance(model, ModelSettings):
        raise TypeError(f"Expected model to be a ModelSettings, got {type(model).__name__}")
    config = TransformerConfig(
        vocab_size=vocab_size, d_model=model.d_model, num_heads=model.num_heads, num_layers=model.num_layers,
        ff_dim=model.ff_dim, dropout=model.dropout, position=model.position, max_positions=max_length,
        encoder_pattern=settings.encoder_pattern, encoder_attention=settings.encoder_attention,
    )
    return SequenceClassifier(config, num_classes, pooling=model.pooling)


def _parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ============================================================================ memory
def _tensor_parts(t: Tensor) -> list[Tensor]:
    """The strided tensors whose storages hold ``t`` (sparse tensors: their index and value tensors)."""
    if t.layout == torch.strided:
        return [t]
    if t.layout in (torch.sparse_csr, torch.sparse_bsr):
        return [t.crow_indices(), t.col_indices(), t.values()]
    if t.layout in (torch.sparse_csc, torch.sparse_bsc):
        return [t.ccol_indices(), t.row_indices(), t.values()]
    if t.layout == torch.sparse_coo:
        return [t._indices(), t._values()]
    return []


class TensorMemoryTracker(TorchDispatchMode):
    """Peak bytes of tensor storage alive at once, counted at the ATen operator level (CPU or any device).

    Inside ``with tracker:`` every operator's output tensors are seen (forward, the autograd
    backward and the optimizer alike); each new storage adds its ``nbytes`` when it first
    appears and subtracts them when it is freed (a weak reference to the storage, so views and
    tensors autograd saved for backward keep it counted). Storages of the tensors given as
    ``resident`` (a model's parameters and buffers, an optimizer's state) are counted from the
    start.

    What it measures: the largest sum of live tensor storage bytes (``peak_bytes``) -- what a
    perfect caching allocator would need, and the analogue of ``torch.cuda.max_memory_allocated``.
    What it does not see: scratch memory a kernel allocates and frees internally without
    returning it as a tensor (e.g. the per-thread blocks of the CPU flash-attention kernel,
    oneDNN workspaces), allocator fragmentation and rounding, and Python / library overhead. It
    slows every operator by a few microseconds of Python, so time steps without it.

    Example:
        >>> with TensorMemoryTracker() as tracker:
        ...     x = torch.empty(1000, 250)          # 1,000,000 bytes of float32
        ...     del x
        ...     y = torch.empty(500, 250)           # 500,000 bytes, after x was freed
        >>> tracker.peak_bytes, tracker.current_bytes
        (1000000, 500000)
    """

    def __init__(self, resident: Iterable[Tensor] = ()) -> None:
        super().__init__()
        self._live: dict[int, weakref.ref] = {}
        self.current_bytes = 0
        self.peak_bytes = 0
        self.resident_bytes = 0
        for tensor in resident:
            self._track(tensor)
        self.resident_bytes = self.current_bytes

    def _track(self, tensor: Tensor) -> None:
        for part in _tensor_parts(tensor):
            try:
                storage = part.untyped_storage()
            except (RuntimeError, NotImplementedError):  # tensors without storage (meta, functional wrappers)
                continue
            key = id(storage)
            if key in self._live:
                continue
            size = storage.nbytes()
            self._live[key] = weakref.ref(storage, lambda _ref, key=key, size=size: self._free(key, size))
            self.current_bytes += size
            self.peak_bytes = max(self.peak_bytes, self.current_bytes)

    def _free(self, key: int, size: int) -> None:
        if self._live.pop(key, None) is not None:
            self.current_bytes -= size

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for item in (out if isinstance(out, (tuple, list)) else (out,)):
            if isinstance(item, Tensor):
                self._track(item)
            elif isinstance(item, (tuple, list)):
                for inner in item:
                    if isinstance(inner, Tensor):
                        self._track(inner)
        return out

    def __exit__(self, *exc: Any) -> Any:
        result = super().__exit__(*exc)
        self._live.clear()  # dropping the weak references: later frees no longer change the counts
        return result


def _resident_tensors(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[Tensor]:
    tensors = list(model.parameters()) + list(model.buffers())
    tensors += [p.grad for p in model.parameters() if p.grad is not None]
    for state in optimizer.state.values():
        tensors += [v for v in state.values() if isinstance(v, Tensor)]
    return tensors


def _unique_bytes(tensors: Iterable[Tensor]) -> int:
    seen: dict[int, int] = {}
    for tensor in tensors:
        for part in _tensor_parts(tensor):
            storage = part.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


# ============================================================================ speed
@dataclass
class StepMeasurement:
    """Speed and memory of one variant at one length (:func:`measure_steps`).

    Attributes:
        variant: the variant's name (or ``"pattern / mechanism"`` for explicit settings).
        encoder_pattern, encoder_attention: what ran.
        length: tokens per sequence (every sequence full, no padding).
        batch_size: sequences per step.
        steps_per_second: ``1 / step_seconds``.
        step_seconds: median time of a training step (forward, cross-entropy, backward, AdamW
            step, zeroing the gradients) after warm-up.
        step_seconds_min, step_seconds_max: the fastest and slowest timed step.
        forward_seconds: median time of a forward pass in eval mode without gradients (None if
            not measured).
        first_step_seconds: the first training step, with the one-off costs (pattern and CSR
            structures, optimizer state, lazily built buffers).
        peak_memory_bytes: the model's parameters, buffers and optimizer state plus the peak of
            everything allocated during one training step (None if not measured).
        resident_bytes: the parameters, buffers and optimizer state alone.
        memory_method: ``"cuda.max_memory_allocated"`` or ``"TensorMemoryTracker"`` (CPU).
        attention_backend: for softmax over a pattern, what :func:`graphattn.explain` says
            ``auto`` runs on this batch (backend and reason); None for the other mechanisms.
        parameters: the model's parameter count.
        timed_steps: the steps behind the medians.
        device: where it ran; ``threads``: ``torch.get_num_threads()``.
    """

    variant: str
    encoder_pattern: str
    encoder_attention: str
    length: int
    batch_size: int
    steps_per_second: float
    step_seconds: float
    step_seconds_min: float
    step_seconds_max: float
    forward_seconds: float | None
    first_step_seconds: float
    peak_memory_bytes: int | None
    resident_bytes: int
    memory_method: str
    attention_backend: str | None
    parameters: int
    timed_steps: int
    device: str
    threads: int


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _softmax_backend(settings: VariantSettings, batch_size: int, length: int, model: ModelSettings,
                     device: torch.device) -> str | None:
    """What ``auto`` runs for the variant's pattern on ``batch_size`` full sequences (softmax only)."""
    if settings.encoder_attention != "softmax":
        return None
    from graphattn import explain
    from graphattn.patterns import PatternSpec, sequence_batch

    lengths = torch.full((batch_size,), length, dtype=torch.long, device=device)
    graph = sequence_batch(PatternSpec.parse(settings.encoder_pattern), lengths, query_slots=length, device=device)
    heads = torch.empty(batch_size * length, model.num_heads, model.d_model // model.num_heads, device=device,
                        requires_grad=True)  # [N, H, D]
    return str(explain(heads, heads, heads, graph, dropout=0.0))


def measure_steps(
    variants: Sequence[VariantLike],
    length: int,
    *,
    batch_size: int = 2,
    model: ModelSettings = ModelSettings(),
    vocab_size: int = 257,
    num_classes: int = 10,
    steps: int = 5,
    warmup: int = 2,
    device: str | torch.device = "cpu",
    seed: int = 0,
    measure_forward: bool = True,
    measure_memory: bool = True,
) -> list[StepMeasurement]:
    """Training speed and peak memory of several variants at one length, interleaved.

    Every variant gets its own model (:func:`build_classifier`) and AdamW optimizer and trains on
    the same random tokens ``[batch_size, length]`` (all real, no padding) and labels. After
    ``warmup`` steps each (the first is reported as ``first_step_seconds``), ``steps`` rounds
    time one step of every variant in turn, the order reversed every other round (shared,
    noisy machines: same inputs, interleaved, medians). Then, if asked, ``steps`` rounds of
    forward passes (eval mode, no gradients), and one more training step per variant for the
    peak memory: on CUDA ``torch.cuda.max_memory_allocated`` over the step minus what was
    allocated before it, on CPU :class:`TensorMemoryTracker`; both plus the model's resident
    parameters, buffers and optimizer state.

    Args:
        variants: names of :data:`VARIANTS` or explicit :class:`VariantSettings`.
        length: tokens per sequence (also the models' ``max_length``).
        batch_size: sequences per step.
        model: the classifier's size (:class:`ModelSettings`).
        vocab_size, num_classes: of the random task (257 / 10: bytes or pixels).
        steps: timed steps per variant (>= 1); ``warmup``: untimed steps before (>= 1).
        device: where to run.
        seed: seeds the weights and the random tokens.
        measure_forward, measure_memory: also time forward passes / measure peak memory.

    Returns:
        One :class:`StepMeasurement` per variant, in order.
    """
    length = _check_length(length, "length")
    batch_size = _check_length(batch_size, "batch_size")
    steps = _check_length(steps, "steps")
    warmup = _check_length(warmup, "warmup")
    vocab_size = _check_length(vocab_size, "vocab_size", 2)
    num_classes = _check_length(num_classes, "num_classes", 2)
    if isinstance(variants, (str, VariantSettings)) or not variants:
        raise ValueError(f"Expected a non-empty list of variants (names from {', '.join(VARIANT_NAMES)}), got {variants!r}")
    resolved = [_resolve(v, length) for v in variants]
    device = torch.device(device)
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab_size, (batch_size, length), generator=generator).to(device)
    labels = torch.randint(0, num_classes, (batch_size,), generator=generator).to(device)

    runs = []
    for label, settings in resolved:
        torch.manual_seed(seed)
        classifier = build_classifier(settings, length, vocab_size, num_classes, model).to(device)
        optimizer = torch.optim.AdamW(classifier.parameters(), lr=1e-4)
        runs.append((label, settings, classifier, optimizer))

    def train_step(classifier: nn.Module, optimizer: torch.optim.Optimizer) -> float:
        _synchronize(device)
        start = time.perf_counter()
        loss = F.cross_entropy(classifier(ids), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _synchronize(device)
        return time.perf_counter() - start

    first = [train_step(classifier, optimizer) for _, _, classifier, optimizer in runs]
    for _ in range(warmup - 1):
        for _, _, classifier, optimizer in runs:
            train_step(classifier, optimizer)
    times: list[list[float]] = [[] for _ in runs]
    for round_index in range(steps):
        order = range(len(runs)) if round_index % 2 == 0 else reversed(range(len(runs)))
        for i in order:
            times[i].append(train_step(runs[i][2], runs[i][3]))

    forward_times: list[list[float]] = [[] for _ in runs]
    if measure_forward:
        for _, _, classifier, _ in runs:
            classifier.eval()
        with torch.no_grad():
            for round_index in range(steps + 1):  # the first round warms up eval-mode caches
                order = range(len(runs)) if round_index % 2 == 0 else reversed(range(len(runs)))
                for i in order:
                    _synchronize(device)
                    start = time.perf_counter()
                    runs[i][2](ids)
                    _synchronize(device)
                    if round_index:
                        forward_times[i].append(time.perf_counter() - start)
        for _, _, classifier, _ in runs:
            classifier.train()

    results = []
    for i, (label, settings, classifier, optimizer) in enumerate(runs):
        resident = _unique_bytes(_resident_tensors(classifier, optimizer))
        peak: int | None = None
        method = "cuda.max_memory_allocated" if device.type == "cuda" else "TensorMemoryTracker"
        if measure_memory:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
                before = torch.cuda.memory_allocated(device)
                torch.cuda.reset_peak_memory_stats(device)
                train_step(classifier, optimizer)
                peak = torch.cuda.max_memory_allocated(device) - before + resident
            else:
                with TensorMemoryTracker(_resident_tensors(classifier, optimizer)) as tracker:
                    train_step(classifier, optimizer)
                peak = tracker.peak_bytes
        median = statistics.median(times[i])
        results.append(StepMeasurement(
            variant=label, encoder_pattern=settings.encoder_pattern, encoder_attention=settings.encoder_attention,
            length=length, batch_size=batch_size, steps_per_second=1.0 / median, step_seconds=median,
            step_seconds_min=min(times[i]), step_seconds_max=max(times[i]),
            forward_seconds=statistics.median(forward_times[i]) if forward_times[i] else None,
            first_step_seconds=first[i], peak_memory_bytes=peak, resident_bytes=resident, memory_method=method,
            attention_backend=_softmax_backend(settings, batch_size, length, model, device),
            parameters=_parameters(classifier), timed_steps=steps, device=str(device), threads=torch.get_num_threads(),
        ))
    return results


def measure_step(
    variant: VariantLike,
    length: int,
    *,
    batch_size: int = 2,
    d_model: int | None = None,
    num_heads: int | None = None,
    num_layers: int | None = None,
    model: ModelSettings | None = None,
    steps: int = 5,
    warmup: int = 2,
    device: str | torch.device = "cpu",
    **options: Any,
) -> StepMeasurement:
    """:func:`measure_steps` for one variant; ``d_model`` / ``num_heads`` / ``num_layers``
    override the fields of ``model`` (default :class:`ModelSettings`). Other keyword arguments
    go to :func:`measure_steps`."""
    settings = model if model is not None else ModelSettings()
    overrides = {k: v for k, v in (("d_model", d_model), ("num_heads", num_heads), ("num_layers", num_layers)) if v is not None}
    if overrides:
        settings = replace(settings, **overrides)
    return measure_steps([variant], length, batch_size=batch_size, model=settings, steps=steps, warmup=warmup,
                         device=device, **options)[0]


# ============================================================================ accuracy
def classification_loss(model: nn.Module, batch: PaddedBatch, state: TrainState | None = None) -> tuple[Tensor, dict]:
    """``loss_fn`` for :func:`graphattn.train.fit`: mean cross-entropy of ``model(batch.tokens)``
    against ``batch.labels``, and the batch accuracy as an extra logged value."""
    logits = model(batch.tokens)  # [B, C]
    loss = F.cross_entropy(logits, batch.labels)
    accuracy = (logits.detach().argmax(-1) == batch.labels).float().mean()
    return loss, {"accuracy": accuracy}


def classification_accuracy(
    model: nn.Module, data: SequenceClassificationData, *, batch_size: int = 32, device: str | torch.device | None = None
) -> float:
    """Share of ``data`` whose argmax logit is the label (eval mode, no gradients; the training
    mode is restored). Batches are formed in order after sorting by length (less padding)."""
    batch_size = _check_length(batch_size, "batch_size")
    if len(data) == 0:
        raise ValueError("Expected a non-empty data set to evaluate, got 0 examples")
    if device is None:
        parameter = next(iter(model.parameters()), None)
        device = parameter.device if parameter is not None else torch.device("cpu")
    order = torch.argsort(data.lengths(), stable=True).tolist()
    was_training = model.training
    model.eval()
    correct = 0
    try:
        with torch.no_grad():
            for start in range(0, len(order), batch_size):
                batch = collate([data[i] for i in order[start:start + batch_size]])
                logits = model(batch.tokens.to(device))
                correct += int((logits.argmax(-1).cpu() == batch.labels).sum())
    finally:
        model.train(was_training)
    return correct / len(data)


class TrainingBudget(Callback):
    """A :class:`~graphattn.train.Callback` for training to a wall-clock budget.

    * Stops :func:`~graphattn.train.fit` once ``seconds`` of *training* time have passed
      (validation time is not counted, so every variant trains for the same time), or after
      ``max_steps``.
    * Validates ``validate(model) -> score`` (higher is better; e.g. validation accuracy) each
      time another ``seconds / evaluations`` of training time has passed, at the end, and keeps
      a copy of the best state (``best_state``, ``best_score``, ``best_step``); ``history`` lists
      ``(step, training seconds, score)``.
    * :meth:`lr_multiplier` gives a schedule for ``torch.optim.lr_scheduler.LambdaLR``: linear
      warm-up, then a cosine that reaches 0 when the budget is used up (cf. Li et al. 2020,
      "Budgeted training").

    The validation runs in eval mode without gradients; the training mode is restored.

    Its state (training time used, validation times and history, the best state) travels in
    :func:`~graphattn.train.fit`'s checkpoints, so a run resumed after an interruption keeps its
    budget, its schedule and its best state; a resumed run whose budget is already used up stops
    before its first step.
    """

    def __init__(
        self,
        seconds: float,
        model: nn.Module,
        validate: Callable[[nn.Module], float] | None = None,
        *,
        evaluations: int = 5,
        max_steps: int | None = None,
    ) -> None:
        if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds > 0):
            raise ValueError(f"Expected a positive number of seconds, got {seconds!r}")
        self.seconds = float(seconds)
        self.model = model
        self.validate = validate
        self.evaluations = _check_length(evaluations, "evaluations")
        self.max_steps = None if max_steps is None else _check_length(max_steps, "max_steps")
        self.start: float | None = None
        self.validation_seconds = 0.0
        self.next_validation = self.seconds / self.evaluations
        self.last_validated_step: int | None = None
        self.best_score: float | None = None
        self.best_step: int | None = None
        self.best_state: dict[str, Tensor] | None = None
        self.history: list[tuple[int, float, float]] = []
        self.stopped_by: str | None = None
        self.steps = 0
        self.seconds_before = 0.0  # training time of the runs this one resumed

    @property
    def training_seconds(self) -> float:
        """Training time so far (validations excluded), over every resumed run."""
        if self.start is None:
            return self.seconds_before
        return self.seconds_before + time.perf_counter() - self.start - self.validation_seconds

    def state_dict(self) -> dict[str, Any]:
        return {
            "training_seconds": self.training_seconds, "next_validation": self.next_validation,
            "last_validated_step": self.last_validated_step, "best_score": self.best_score,
            "best_step": self.best_step, "best_state": self.best_state,
            "history": [list(entry) for entry in self.history], "steps": self.steps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seconds_before = float(state["training_seconds"])
        self.next_validation = float(state["next_validation"])
        self.last_validated_step = state["last_validated_step"]
        self.best_score, self.best_step = state["best_score"], state["best_step"]
        self.best_state = state["best_state"]
        self.history = [(int(step), float(seconds), float(score)) for step, seconds, score in state["history"]]
        self.steps = int(state["steps"])

    def progress(self, step: int) -> float:
        """Fraction of the budget used, in ``[0, 1]`` (time, or steps when ``max_steps`` is nearer)."""
        fraction = self.training_seconds / self.seconds
        if self.max_steps is not None:
            fraction = max(fraction, step / self.max_steps)
        return min(1.0, fraction)

    def lr_multiplier(self, warmup_steps: int) -> Callable[[int], float]:
        """``step -> factor``: ``min(1, (step + 1) / warmup_steps) * (1 + cos(pi * progress)) / 2``."""
        warmup_steps = max(1, int(warmup_steps))

        def multiplier(step: int) -> float:
            return min(1.0, (step + 1) / warmup_steps) * 0.5 * (1.0 + math.cos(math.pi * self.progress(step)))

        return multiplier

    def on_train_start(self, state: TrainState) -> None:
        self.start = time.perf_counter()
        self.validation_seconds = 0.0
        if self.seconds_before >= self.seconds:  # resumed after the budget was used up
            self.stopped_by = "budget"
            state.should_stop = True
        elif self.max_steps is not None and state.step >= self.max_steps:
            self.stopped_by = "max_steps"
            state.should_stop = True

    def on_step_end(self, state: TrainState) -> None:
        self.steps = state.step
        elapsed = self.training_seconds
        if elapsed >= self.seconds:
            self.stopped_by = "budget"
            state.should_stop = True
        elif self.max_steps is not None and state.step >= self.max_steps:
            self.stopped_by = "max_steps"
            state.should_stop = True
        if self.validate is not None and (state.should_stop or elapsed >= self.next_validation):
            self._validate(state.step)
            while self.next_validation <= elapsed:
                self.next_validation += self.seconds / self.evaluations

    def on_train_end(self, state: TrainState, result: Any) -> None:
        self.steps = state.step
        if self.stopped_by is None:
            self.stopped_by = "epochs"
        if self.validate is not None and self.last_validated_step != state.step:
            self._validate(state.step)

    def _validate(self, step: int) -> None:
        started = time.perf_counter()
        training_seconds = self.training_seconds
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                score = float(self.validate(self.model))
        finally:
            self.model.train(was_training)
        self.history.append((step, round(training_seconds, 3), score))
        self.last_validated_step = step
        if self.best_score is None or score > self.best_score:
            self.best_score, self.best_step = score, step
            self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        if self.start is not None:
            self.validation_seconds += time.perf_counter() - started


@dataclass
class TrainResult:
    """One training run of :func:`train_and_evaluate`.

    Attributes:
        task, variant, encoder_pattern, encoder_attention: what was trained.
        max_length: the task's longest sequence.
        parameters: the model's parameter count.
        steps: optimizer steps; ``examples_seen``: ``steps * batch_size``.
        train_seconds: training time (validations excluded; the budget counts this);
        wall_seconds: the whole run, validations and the test included.
        budget_minutes: the budget; ``stopped_by``: ``"budget"``, ``"max_steps"`` or ``"epochs"``.
        best_step: the step of the kept (best validation accuracy) state.
        valid_accuracy: its validation accuracy; ``test_accuracy``: its test accuracy.
        valid_examples, test_examples: split sizes.
        validations: ``[(step, training seconds, validation accuracy), ...]``.
        settings: the model and training settings.
        resumed_from_step: the checkpoint step this run continued from (``None``: trained in one
            go); ``wall_seconds`` then counts the last invocation only.
    """

    task: str
    variant: str
    encoder_pattern: str
    encoder_attention: str
    max_length: int
    parameters: int
    steps: int
    examples_seen: int
    train_seconds: float
    wall_seconds: float
    budget_minutes: float
    stopped_by: str
    best_step: int | None
    valid_accuracy: float | None
    test_accuracy: float
    valid_examples: int
    test_examples: int
    validations: list[tuple[int, float, float]]
    settings: dict[str, Any]
    resumed_from_step: int | None = None


def train_and_evaluate(
    task_data: TaskData,
    variant: VariantLike,
    *,
    budget_minutes: float,
    model: ModelSettings = ModelSettings(),
    batch_size: int = 32,
    lr: float = 1e-3,
    weight_decay: float = 0.01,
    warmup_steps: int = 100,
    clip_grad_norm: float | None = 1.0,
    evaluations: int = 5,
    micro_batch_tokens: int | None = 8192,
    eval_batch_size: int | None = None,
    max_steps: int | None = None,
    length_buckets: bool = True,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = False,
    out_dir: Union[str, "os.PathLike[str]", None] = None,
    checkpoint_every: int = 50,
) -> TrainResult:
    """Train a classifier for ``variant`` on ``task_data`` for ``budget_minutes`` of training
    time, keep the state with the best validation accuracy, and report its test accuracy.

    With ``out_dir`` the run checkpoints every ``checkpoint_every`` steps (and when interrupted)
    and a later call with the same ``out_dir`` and settings continues it, budget, schedule and
    best state included: a budget of hours can be spent over several sessions.

    Training is :func:`graphattn.train.fit` (AdamW, mean cross-entropy, right-padded batches,
    gradient clipping) with a :class:`TrainingBudget`: the learning rate warms up over
    ``warmup_steps`` and follows a cosine to 0 over the budget; validation accuracy is measured
    ``evaluations`` times, evenly over the training time, and at the end.

    Args:
        task_data: from :func:`load_task` (or built by hand).
        variant: a name of :data:`VARIANTS` or explicit :class:`VariantSettings`.
        budget_minutes: training time (validation excluded).
        model: the classifier's size.
        batch_size, lr, weight_decay, warmup_steps, clip_grad_norm: training settings.
        evaluations: validations spread over the budget.
        micro_batch_tokens: bounds the memory: each optimizer step of ``batch_size`` sequences
            runs as gradient-accumulated micro-batches of the largest divisor ``m`` of
            ``batch_size`` with ``m * max_length <= micro_batch_tokens`` (at least 1); None: one
            forward pass per step. The default 8,192 gives micro-batches of 8 at 1,024 tokens,
            4 at 2,000 and 2 at 4,000 (quadratic variants such as the dense Synthesizer otherwise
            need tens of GB at batch 32 and 4K tokens).
        eval_batch_size: batch of validation and test (default the micro-batch).
        max_steps: stop earlier after this many steps (None: only the budget).
        length_buckets: batches of similar lengths (fixed at the start: the examples in a seeded
            random order, cut into pools of 50 batches, each sorted by length; the batches are
            shuffled every epoch) instead of a new random batching every epoch -- much less
            padding on ListOps and text, no difference on images.
        seed: seeds the weights, the data order and dropout.
        device: default CUDA when available, else CPU.
        progress: :func:`fit`'s own progress bar.
        out_dir: folder of :func:`fit`'s checkpoints (``None``: no checkpoints, no resume).
        checkpoint_every: optimizer steps between checkpoints in ``out_dir``.

    Returns:
        :class:`TrainResult`.
    """
    if not isinstance(task_data, TaskData):
        raise TypeError(f"Expected task_data to be a TaskData (see load_task), got {type(task_data).__name__}")
    if not (isinstance(budget_minutes, (int, float)) and budget_minutes > 0):
        raise ValueError(f"Expected a positive budget_minutes, got {budget_minutes!r}")
    label, settings = _resolve(variant, task_data.max_length)
    batch_size = _check_length(batch_size, "batch_size")
    micro_batch = batch_size
    if micro_batch_tokens is not None:
        _check_length(micro_batch_tokens, "micro_batch_tokens")
        micro_batch = max([m for m in range(1, batch_size + 1)
                           if batch_size % m == 0 and m * task_data.max_length <= micro_batch_tokens] or [1])
    eval_batch_size = micro_batch if eval_batch_size is None else _check_length(eval_batch_size, "eval_batch_size")
    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    started = time.perf_counter()
    torch.manual_seed(seed)
    classifier = build_classifier(settings, task_data.max_length, task_data.vocab_size, task_data.num_classes, model)
    classifier.to(device)
    budget = TrainingBudget(
        budget_minutes * 60, classifier,
        lambda m: classification_accuracy(m, task_data.valid, batch_size=eval_batch_size, device=device),
        evaluations=evaluations, max_steps=max_steps,
    )
    config = TrainConfig(
        epochs=1_000_000, batch_size=micro_batch, grad_accumulation=batch_size // micro_batch, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.98), eps=1e-8,
        clip_grad_norm=clip_grad_norm, seed=seed, log_every=50, progress=progress, device=str(device),
        checkpoint_every=_check_length(checkpoint_every, "checkpoint_every") if out_dir is not None else None,
    )
    optimizer = make_optimizer(classifier.parameters(), config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, budget.lr_multiplier(warmup_steps))
    if length_buckets:  # every micro-batch of similar lengths; a step accumulates consecutive ones
        buckets = LengthBuckets(task_data.train, task_data.train.lengths(), micro_batch, collate, seed=seed)
        train_data, collate_fn = buckets, buckets.collate
        config = replace(config, batch_size=1)
    else:
        train_data, collate_fn = task_data.train, collate
    fitted = fit(classifier, train_data, loss_fn=classification_loss, config=config, collate_fn=collate_fn,
                 optimizer=optimizer, scheduler=scheduler, callbacks=[budget], out_dir=out_dir, resume=out_dir is not None)
    train_seconds = budget.training_seconds
    if budget.best_state is not None:
        classifier.load_state_dict(budget.best_state)
    test_accuracy = classification_accuracy(classifier, task_data.test, batch_size=eval_batch_size, device=device)
    return TrainResult(
        task=task_data.task, variant=label, encoder_pattern=settings.encoder_pattern,
        encoder_attention=settings.encoder_attention, max_length=task_data.max_length,
        parameters=_parameters(classifier), steps=budget.steps, examples_seen=budget.steps * batch_size,
        train_seconds=round(train_seconds, 2), wall_seconds=round(time.perf_counter() - started, 2),
        budget_minutes=float(budget_minutes), stopped_by=budget.stopped_by or "epochs", best_step=budget.best_step,
        valid_accuracy=budget.best_score, test_accuracy=test_accuracy, valid_examples=len(task_data.valid),
        test_examples=len(task_data.test), validations=list(budget.history),
        settings={**asdict(model), "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay,
                  "warmup_steps": warmup_steps, "clip_grad_norm": clip_grad_norm, "evaluations": evaluations,
                  "micro_batch_size": micro_batch,
                  "max_steps": max_steps, "length_buckets": length_buckets, "seed": seed, "device": str(device), "threads": torch.get_num_threads(),
                  "train_examples": len(task_data.train)},
        resumed_from_step=fitted.resumed_from,
    )


# ============================================================================ the comparison
@dataclass
class Comparison:
    """What :func:`compare` measured: ``accuracy`` (one :class:`TrainResult` per task and
    variant) and ``speed`` (one :class:`StepMeasurement` per length and variant)."""

    accuracy: list[TrainResult] = field(default_factory=list)
    speed: list[StepMeasurement] = field(default_factory=list)


def compare(
    tasks: Sequence[TaskData] | Mapping[str, TaskData] = (),
    variants: Sequence[str] = VARIANT_NAMES,
    *,
    budget_minutes: float = 10.0,
    model: ModelSettings = ModelSettings(),
    train_options: Mapping[str, Any] | None = None,
    speed_lengths: Sequence[int] = (),
    speed_options: Mapping[str, Any] | None = None,
    on_result: Callable[[TrainResult | list[StepMeasurement]], Any] | None = None,
    progress: bool = True,
    checkpoint_dir: Union[str, "os.PathLike[str]", None] = None,
) -> Comparison:
    """Train and test every variant on every task, and measure speed and memory.

    Args:
        tasks: :class:`TaskData` (from :func:`load_task`), or a mapping name -> TaskData.
        variants: names of :data:`VARIANTS`.
        budget_minutes: training time per task and variant.
        model: the classifier's size (the same for all).
        train_options: more keyword arguments for :func:`train_and_evaluate` (batch size, lr, ...).
        speed_lengths: lengths at which to run :func:`measure_steps` over all ``variants``
            (``"full"`` is added first when missing: speeds are relative to it).
        speed_options: more keyword arguments for :func:`measure_steps`.
        on_result: called with each :class:`TrainResult` and with each length's list of
            :class:`StepMeasurement` as soon as it exists (e.g. to save it).
        progress: a tqdm bar over the runs (only when stderr is a terminal: ``disable=None``).
        checkpoint_dir: keep each training run's checkpoints in a sub-folder named after the
            task, the variant and a digest of every setting (:func:`run_folder`), so that an
            interrupted comparison, called again, continues its runs where they stopped.

    Returns:
        :class:`Comparison`.
    """
    task_list = list(tasks.values()) if isinstance(tasks, Mapping) else list(tasks)
    for task in task_list:
        if not isinstance(task, TaskData):
            raise TypeError(f"Expected TaskData in tasks (see load_task), got {type(task).__name__}")
    if isinstance(variants, str):
        variants = [variants]
    for name in variants:
        _variant(name)
    if not variants:
        raise ValueError(f"Expected at least one variant of {', '.join(VARIANT_NAMES)}")
    lengths = [_check_length(n, "speed length") for n in speed_lengths]
    speed_variants = list(variants) if "full" in variants else ["full", *variants]
    from tqdm.auto import tqdm

    result = Comparison()
    total = len(task_list) * len(variants) + len(lengths)
    with tqdm(total=total, desc="compare", unit="run", disable=None if progress else True) as bar:
        for length in lengths:
            bar.set_postfix_str(f"speed at {length} tokens")
            measured = measure_steps(speed_variants, length, model=model, **dict(speed_options or {}))
            result.speed.extend(measured)
            if on_result is not None:
                on_result(measured)
            bar.update(1)
        for task in task_list:
            for name in variants:
                bar.set_postfix_str(f"{task.task} / {name}")
                options = dict(train_options or {})
                if checkpoint_dir is not None:
                    options["out_dir"] = run_folder(checkpoint_dir, task, name, budget_minutes, model, options)
                run = train_and_evaluate(task, name, budget_minutes=budget_minutes, model=model, **options)
                result.accuracy.append(run)
                if on_result is not None:
                    on_result(run)
                bar.update(1)
    return result


def run_folder(
    root: Union[str, "os.PathLike[str]"], task: TaskData, variant: str, budget_minutes: float, model: ModelSettings,
    options: Mapping[str, Any],
) -> Path:
    """``root / "<task>-L<max length>-<variant>-<digest>"``: the checkpoint folder of one training
    run, the digest covering the budget, the model and the training options (so a run never
    resumes the checkpoint of other settings)."""
    import hashlib
    import json

    settings = {"budget_minutes": float(budget_minutes), "model": asdict(model),
                "options": {k: str(v) for k, v in sorted(options.items()) if k not in ("progress", "out_dir")},
                "train_examples": len(task.train), "num_classes": task.num_classes}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    return Path(root) / f"{task.task}-L{task.max_length}-{variant}-{digest}"


def machine_info() -> dict[str, Any]:
    """The machine and library versions, for result files: CPU model, logical cores, torch
    threads, GPU (if any), platform, Python, torch, graphattn."""
    import platform

    import graphattn

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "graphattn": graphattn.__version__,
    }


# ============================================================================ bubbles and tables
class BubblePoint(NamedTuple):
    """One bubble: ``relative_speed`` (steps/s over full's), ``accuracy`` (mean over tasks, in
    ``[0, 1]``), ``relative_memory`` (peak memory over full's; None when not measured)."""

    variant: str
    relative_speed: float
    accuracy: float
    relative_memory: float | None
    tasks: int


def _field(row: Any, name: str) -> Any:
    return row[name] if isinstance(row, Mapping) else getattr(row, name)


def bubble_points(
    accuracy: Iterable[TrainResult | Mapping[str, Any]],
    speed: Iterable[StepMeasurement | Mapping[str, Any]],
    *,
    length: int | None = None,
) -> list[BubblePoint]:
    """The points of LRA's Figure 3 from training results and speed measurements (objects or
    their ``asdict`` rows).

    ``length``: the speed measurements to use (default the longest measured). A variant needs a
    speed at that length and at least one accuracy; its accuracy is the mean over its tasks.

    Raises:
        ValueError: no measurement of ``"full"`` at that length (everything is relative to it).
    """
    speed = list(speed)
    if not speed:
        raise ValueError("Expected speed measurements (measure_steps) to place the bubbles, got none")
    lengths = sorted({int(_field(m, "length")) for m in speed})
    length = lengths[-1] if length is None else length
    at_length = {_field(m, "variant"): m for m in speed if int(_field(m, "length")) == length}
    if "full" not in at_length:
        raise ValueError(f"Expected a speed measurement of 'full' at {length} tokens (measured lengths: {lengths}); "
                         "speed and memory are relative to it")
    base = at_length["full"]
    scores: dict[str, list[float]] = {}
    for row in accuracy:
        scores.setdefault(_field(row, "variant"), []).append(float(_field(row, "test_accuracy")))
    points = []
    base_memory = _field(base, "peak_memory_bytes")
    for name, m in at_length.items():
        if name not in scores:
            continue
        memory = _field(m, "peak_memory_bytes")
        points.append(BubblePoint(
            name, float(_field(m, "steps_per_second")) / float(_field(base, "steps_per_second")),
            statistics.fmean(scores[name]),
            None if memory is None or not base_memory else memory / base_memory, len(scores[name]),
        ))
    order = {name: i for i, name in enumerate(VARIANT_NAMES)}
    return sorted(points, key=lambda p: order.get(p.variant, len(order)))


def plot_bubbles(
    results: Comparison | Sequence[BubblePoint],
    path: str | os.PathLike,
    *,
    length: int | None = None,
    title: str | None = None,
) -> Path:
    """Write LRA's Figure 3 for ``results`` to ``path`` (PNG, or any format matplotlib knows by
    the suffix): x = training steps/s relative to full attention, y = accuracy (mean over the
    tasks, %), bubble area proportional to peak memory relative to full (capped at 40x full's
    bubble, so that one huge variant leaves room for the others); every bubble labeled, and a
    legend gives each variant's speed and memory ratios.

    Needs matplotlib (imported here, with the non-interactive Agg backend).

    Raises:
        ValueError: no points (see :func:`bubble_points`).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    points = bubble_points(results.accuracy, results.speed, length=length) if isinstance(results, Comparison) else list(results)
    if not points:
        raise ValueError("Nothing to plot: no variant has both an accuracy and a speed measurement")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure, axes = plt.subplots(figsize=(9.0, 5.5), dpi=120)
    colors = plt.get_cmap("tab20")
    base_area, largest_area = 300.0, 12000.0  # points^2: full attention's bubble, and a cap for readability
    offsets = [(7, 5), (7, -11), (-7, 8), (-7, -13)]  # label positions cycle, so neighbours overlap less
    for index, point in enumerate(points):
        area = base_area * (point.relative_memory if point.relative_memory is not None else 0.1)
        memory = "memory not measured" if point.relative_memory is None else f"{point.relative_memory:.2f}x memory"
        axes.scatter(point.relative_speed, 100 * point.accuracy, s=min(max(area, 12.0), largest_area), alpha=0.5,
                     color=colors(index % 20), edgecolors="black", linewidths=0.6,
                     label=f"{point.variant}: {point.relative_speed:.2f}x speed, {memory}")
        dx, dy = offsets[index % len(offsets)]
        axes.annotate(point.variant, (point.relative_speed, 100 * point.accuracy), xytext=(dx, dy),
                      textcoords="offset points", fontsize=8, ha="left" if dx > 0 else "right")
    legend = axes.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), markerscale=0.3, frameon=False)
    for handle in getattr(legend, "legend_handles", None) or getattr(legend, "legendHandles", []):  # matplotlib < 3.7
        handle.set_sizes([40.0])
    axes.set_xlabel("training speed relative to full attention (steps/s ratio)")
    axes.set_ylabel("accuracy (%)" + (" (mean over tasks)" if any(p.tasks > 1 for p in points) else ""))
    axes.set_title(title or "Accuracy vs training speed; bubble area = peak memory, both relative to full attention",
                   fontsize=9, wrap=True)
    axes.grid(True, alpha=0.3)
    speeds = [p.relative_speed for p in points]
    if max(speeds) / max(min(speeds), 1e-9) > 20:
        axes.set_xscale("log")
    axes.margins(0.15)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def accuracy_table(results: Iterable[TrainResult | Mapping[str, Any]], *, tasks: Sequence[str] = TASKS) -> str:
    """Markdown: one row per variant, one column per task (test accuracy %), and the mean over
    the tasks a variant has (LRA's Table 1)."""
    results = list(results)
    present = [t for t in tasks if any(_field(r, "task") == t for r in results)]
    cells: dict[str, dict[str, float]] = {}
    for r in results:
        cells.setdefault(_field(r, "variant"), {})[_field(r, "task")] = float(_field(r, "test_accuracy"))
    order = {name: i for i, name in enumerate(VARIANT_NAMES)}
    lines = ["| variant | " + " | ".join(present) + " | mean |", "|---" * (len(present) + 2) + "|"]
    for name in sorted(cells, key=lambda n: order.get(n, len(order))):
        row = cells[name]
        values = [f"{100 * row[t]:.2f}" if t in row else "-" for t in present]
        mean = statistics.fmean(row[t] for t in present if t in row) if any(t in row for t in present) else None
        lines.append(f"| {name} | " + " | ".join(values) + f" | {'-' if mean is None else f'{100 * mean:.2f}'} |")
    return "\n".join(lines)


def speed_table(measurements: Iterable[StepMeasurement | Mapping[str, Any]]) -> str:
    """Markdown: per variant and length, steps/s (and its ratio to full) and peak memory (and its
    ratio to full) -- LRA's Table 2."""
    measurements = list(measurements)
    lengths = sorted({int(_field(m, "length")) for m in measurements})
    by_key = {(_field(m, "variant"), int(_field(m, "length"))): m for m in measurements}
    order = {name: i for i, name in enumerate(VARIANT_NAMES)}
    names = sorted({_field(m, "variant") for m in measurements}, key=lambda n: order.get(n, len(order)))
    head = " | ".join(f"{n} steps/s" for n in lengths) + " | " + " | ".join(f"{n} peak MiB" for n in lengths)
    lines = [f"| variant | {head} |", "|---" * (1 + 2 * len(lengths)) + "|"]
    for name in names:
        speed_cells, memory_cells = [], []
        for n in lengths:
            m, base = by_key.get((name, n)), by_key.get(("full", n))
            if m is None:
                speed_cells.append("-")
                memory_cells.append("-")
                continue
            sps = float(_field(m, "steps_per_second"))
            ratio = f" ({sps / float(_field(base, 'steps_per_second')):.1f}x)" if base is not None else ""
            speed_cells.append(f"{sps:.3g}{ratio}")
            memory = _field(m, "peak_memory_bytes")
            base_memory = _field(base, "peak_memory_bytes") if base is not None else None
            if memory is None:
                memory_cells.append("-")
            else:
                share = f" ({memory / base_memory:.2f})" if base_memory else ""
                memory_cells.append(f"{memory / 2**20:.1f}{share}")
        lines.append(f"| {name} | " + " | ".join(speed_cells + memory_cells) + " |")
    return "\n".join(lines)
