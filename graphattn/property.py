"""Molecule property prediction end to end: a CSV of SMILES in, a trained model and honest test
metrics out. The library side of ``graphattn molecules train`` / ``graphattn molecules predict``.

* :func:`train_property_model`: featurize a CSV (:func:`~graphattn.data.molecule_datasets.load_molecule_csv`,
  cached in ``out_dir/cache``; RDKit's bundled NCI/TPSA set when no CSV is given), split it
  (seeded random, OGB scaffold, or a fixed index file), standardize regression targets with the
  *training* statistics, train a :class:`~graphattn.models.GraphTransformer` or a PyG baseline
  with :func:`graphattn.train.fit` on a masked loss (missing labels of multi-task files are left
  out), stop early on the validation metric, evaluate the best checkpoint on the test set, and
  write ``model.pt``, ``config.json``, ``metrics.json`` and ``split.csv`` into ``out_dir``.
* :func:`load_property_model` / :class:`PropertyModel`: ``predict(smiles) -> [N, T]`` in the
  original units (probabilities for classification); :func:`predict_csv` writes one column per
  task.
* The pieces, usable on their own: :func:`masked_loss`, :func:`roc_auc` (rank based, ties count
  one half), :func:`evaluate_predictions` (RMSE / MAE or ROC-AUC per task and their mean, OGB
  style), :class:`TargetScaler`.

Metrics. Regression: RMSE and MAE per task over the molecules that have a label, in the units of
the file, and their mean over tasks. Classification: ROC-AUC per task over the labelled
molecules, for tasks whose labels hold both classes, and their mean over those tasks (as OGB's
``Evaluator``); a task without both classes reports ``None``. Early stopping watches the
validation RMSE (lower is better) or ROC-AUC (higher is better); when no validation task has
both classes, the validation loss is watched instead, with a warning.

Files in ``out_dir``:

==================  ===============================================================================
``model.pt``        ``torch.load(..., weights_only=True)``: ``state_dict``, the model settings, the
                    task, target names, target mean / std, featurizer, SMILES column, descriptor
                    scaler (with ``descriptors=``)
``config.json``     every setting of the run (data, split, model, training)
``metrics.json``    test and validation metrics, epochs, parameter count, split sizes, skipped rows,
                    times (the only entry that changes between two runs with the same seed, on CPU)
``split.csv``       the split as file row indices (columns ``train,val,test``): ``split=`` accepts it
``train/``          :func:`graphattn.train.fit`'s ``checkpoint.pt``, ``best.pt``, ``metrics.jsonl``;
                    ``run.json``: the run's settings when it started (``resume=True`` checks them)
``cache/``          the featurized data set
==================  ===============================================================================

Example:
    >>> import torch
    >>> roc_auc(torch.tensor([0.1, 0.4, 0.4, 0.8]), torch.tensor([0, 0, 1, 1]))  # one tie: half a pair
    0.875
    >>> metrics = evaluate_predictions(torch.tensor([[1.0], [3.0]]), torch.tensor([[2.0], [3.0]]), "regression")
    >>> {name: round(value, 6) for name, value in metrics.mean.items()}  # rmse = sqrt(1 / 2)
    {'rmse': 0.707107, 'mae': 0.5}
"""
from __future__ import annotations

import argparse
import csv as csv_module
import dataclasses
import gzip
import inspect
import io
import json
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, NamedTuple, Sequence, TextIO, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphattn._argtypes import non_negative_float as _non_negative_float
from graphattn._argtypes import non_negative_int as _non_negative_int
from graphattn._argtypes import positive_float as _positive_float
from graphattn._argtypes import positive_int as _positive_int
from graphattn.data.descriptors import DESCRIPTOR_SET
from graphattn.train.config import SCHEDULES

if TYPE_CHECKING:  # pragma: no cover
    from torch_geometric.data import Data

    from graphattn.data.descriptors import DescriptorScaler
    from graphattn.data.molecule_datasets import MoleculeDataset, SkippedRow, Split

__all__ = [
    "MODELS",
    "SPLITS",
    "TASKS",
    "DESCRIPTORS",
    "TargetScaler",
    "PropertyMetrics",
    "PropertyModel",
    "PropertyResult",
    "CsvPredictions",
    "masked_loss",
    "roc_auc",
    "evaluate_predictions",
    "train_property_model",
    "load_property_model",
    "predict_csv",
    "add_subcommand",
]

MODELS = ("graph_transformer", "gin", "gcn", "gat", "gps")
"""Model kinds of :func:`train_property_model`: our graph transformer, or a PyG baseline."""
SPLITS = ("random", "scaffold")
"""Named splits; any other ``split`` is the path of an index file or split folder."""
DESCRIPTORS = (DESCRIPTOR_SET,)
"""Molecule-level input features of :func:`train_property_model` (``descriptors=``)."""
TASKS = ("regression", "classification")

PathLike = Union[str, "os.PathLike[str]"]
MODEL_FORMAT = "graphattn.property_model/1"
MODEL_FILE, CONFIG_FILE, METRICS_FILE, SPLIT_FILE = "model.pt", "config.json", "metrics.json", "split.csv"
RUN_FILE = "run.json"  # in out_dir/train: the settings of a started run, checked by resume=True
_RESUME_FREE = {("training", "progress"), ("training", "device"), ("out_dir", None)}  # may change on resume
NCI_SOURCE = "rdkit:Data/NCI/first_5k.tpsa.csv"

# the settings train_property_model chooses from the data, not from model_config
_DATA_SETTINGS = ("num_tasks", "task_level", "featurizer", "atom_feature_dims", "bond_feature_dims", "graph_feature_dim")
_GRAPH_TRANSFORMER_DEFAULTS = {"hidden_dim": 64, "num_heads": 4, "num_layers": 4}
_BASELINE_DEFAULTS = {"hidden": 64, "layers": 4}


# ====================================================================== targets, loss, metrics
@dataclass(frozen=True)
class TargetScaler:
    """Per-task standardization ``z = (y - mean) / std`` of regression targets.

    Fitted on the training labels only (missing labels, NaN, are ignored); ``std`` is the
    population standard deviation (``ddof=0``, as chemprop's ``StandardScaler``), replaced by 1
    for a task whose training labels are all equal.

    Attributes:
        mean: one value per task.
        std: one value per task (> 0).

    Example:
        >>> scaler = TargetScaler.fit(torch.tensor([[1.0, 5.0], [3.0, float("nan")]]))
        >>> scaler
        TargetScaler(mean=(2.0, 5.0), std=(1.0, 1.0))
        >>> scaler.inverse(scaler.transform(torch.tensor([[4.0, 7.0]])))
        tensor([[4., 7.]])
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        mean, std = tuple(float(m) for m in self.mean), tuple(float(s) for s in self.std)
        if len(mean) != len(std) or not mean:
            raise ValueError(f"Expected one mean and one std per task, got {len(mean)} means and {len(std)} stds")
        if not all(math.isfinite(m) for m in mean) or not all(math.isfinite(s) and s > 0 for s in std):
            raise ValueError(f"Expected finite means and positive finite stds, got mean={mean}, std={std}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    @classmethod
    def fit(cls, y: Tensor) -> "TargetScaler":
        """The statistics of ``y`` ``[N, T]`` (NaN = missing), per column.

        Raises:
            ValueError: ``y`` is not 2-d, or a column has no label.
        """
        if not isinstance(y, Tensor) or y.dim() != 2:
            raise ValueError(f"Expected targets y of shape [N, T], got {_describe(y)}")
        y = y.double()
        present = ~y.isnan()
        counts = present.sum(0)
        if bool((counts == 0).any()):
            column = int((counts == 0).nonzero()[0])
            raise ValueError(
                f"Expected at least one label per task to standardize with, got none in column {column}; "
                f"drop that target column or use a split whose training set has labels for it"
            )
        filled = torch.where(present, y, torch.zeros_like(y))
        mean = filled.sum(0) / counts
        variance = torch.where(present, (y - mean) ** 2, torch.zeros_like(y)).sum(0) / counts
        std = variance.sqrt()
        std = torch.where(std > 1e-12, std, torch.ones_like(std))
        return cls(tuple(mean.tolist()), tuple(std.tolist()))

    @property
    def num_tasks(self) -> int:
        return len(self.mean)

    def _tensors(self, like: Tensor) -> tuple[Tensor, Tensor]:
        if like.dim() != 2 or like.size(1) != self.num_tasks:
            raise ValueError(f"Expected a tensor [N, {self.num_tasks}] (one column per task), got {_describe(like)}")
        dtype = like.dtype if like.is_floating_point() else torch.float32
        return (
            torch.tensor(self.mean, dtype=dtype, device=like.device),
            torch.tensor(self.std, dtype=dtype, device=like.device),
        )

    def transform(self, y: Tensor) -> Tensor:
        """``(y - mean) / std``, ``[N, T]`` (NaN stays NaN)."""
        mean, std = self._tensors(y)
        return (y - mean) / std

    def inverse(self, z: Tensor) -> Tensor:
        """``z * std + mean``, ``[N, T]``: standardized values back in the original units."""
        mean, std = self._tensors(z)
        return z * std + mean


def masked_loss(prediction: Tensor, target: Tensor, task: str) -> Tensor:
    """Mean loss over the labels that are present (``target`` NaN = missing), as OGB's examples.

    Regression: squared error; classification: binary cross-entropy on logits. Every present
    (molecule, task) label weighs the same; missing ones contribute nothing, to the value or to
    the gradient. A batch without any label gives ``0`` (still attached to the graph).

    Args:
        prediction: ``[B, T]`` model outputs (standardized values or logits).
        target: ``[B, T]`` labels (standardized values or 0 / 1), NaN where missing.
        task: ``"regression"`` or ``"classification"``.

    Returns:
        A 0-d tensor.

    Example:
        >>> nan = float("nan")
        >>> masked_loss(torch.tensor([[1.0, 2.0], [0.0, 5.0]]), torch.tensor([[2.0, nan], [0.0, 3.0]]), "regression")
        tensor(1.6667)
    """
    if task not in TASKS:
        raise ValueError(f"Expected task to be one of {TASKS}, got {task!r}")
    if not isinstance(prediction, Tensor) or not isinstance(target, Tensor) or prediction.shape != target.shape:
        raise ValueError(
            f"Expected prediction and target of the same shape [B, T], got {_describe(prediction)} and {_describe(target)}"
        )
    present = ~target.isnan()
    if not bool(present.any()):
        return prediction.sum() * 0.0
    chosen, labels = prediction[present], target[present].to(prediction.dtype)
    if task == "regression":
        return F.mse_loss(chosen, labels)
    return F.binary_cross_entropy_with_logits(chosen, labels)


def roc_auc(scores: Tensor, labels: Tensor) -> float:
    """Area under the ROC curve of binary ``labels`` ranked by ``scores``.

    The Mann-Whitney form: the fraction of (positive, negative) pairs in which the positive has
    the higher score, a tie counting one half; computed from average ranks in
    ``O(n log n)``. Equals ``sklearn.metrics.roc_auc_score``.

    Args:
        scores: ``[N]`` real scores (probabilities or logits), finite.
        labels: ``[N]`` 0 / 1 (any dtype).

    Returns:
        The AUC in ``[0, 1]``, or NaN when ``labels`` does not hold both classes.

    Example:
        >>> roc_auc(torch.tensor([0.2, 0.9, 0.5]), torch.tensor([0, 1, 1]))
        1.0
        >>> roc_auc(torch.tensor([0.5, 0.5]), torch.tensor([1, 0]))
        0.5
    """
    if not isinstance(scores, Tensor) or not isinstance(labels, Tensor) or scores.dim() != 1 or scores.shape != labels.shape:
        raise ValueError(f"Expected scores and labels of the same shape [N], got {_describe(scores)} and {_describe(labels)}")
    scores = scores.detach().double().cpu()
    labels = labels.detach().double().cpu()
    if not bool(torch.isfinite(scores).all()):
        raise ValueError("Expected finite scores, got NaN or inf; check the model's outputs")
    if not bool(((labels == 0) | (labels == 1)).all()):
        raise ValueError(f"Expected labels 0 or 1, got values {sorted(set(labels.tolist()))[:5]}")
    positives = int(labels.sum())
    negatives = labels.numel() - positives
    if positives == 0 or negatives == 0:
        return math.nan
    order = scores.argsort()
    _, group, counts = torch.unique_consecutive(scores[order], return_inverse=True, return_counts=True)
    last = counts.cumsum(0).double()  # 1-based rank of the last member of each group of ties
    average = last - (counts.double() - 1) / 2  # mean of the ranks first..last
    ranks = torch.empty_like(scores)
    ranks[order] = average[group]
    rank_sum = float(ranks[labels == 1].sum())
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


@dataclass(frozen=True)
class PropertyMetrics:
    """Metrics of predictions against labels, per task and averaged over tasks.

    Attributes:
        task: ``"regression"`` (metrics ``rmse``, ``mae``) or ``"classification"`` (``roc_auc``).
        mean: metric -> mean over the tasks where it is defined (``None`` where it is nowhere).
        per_task: target name -> metric -> value (``None``: no label, or not both classes).
        counts: target name -> number of labelled molecules.
    """

    task: str
    mean: dict[str, float | None]
    per_task: dict[str, dict[str, float | None]]
    counts: dict[str, int]

    @property
    def primary(self) -> str:
        """The metric early stopping watches: ``"rmse"`` or ``"roc_auc"``."""
        return "rmse" if self.task == "regression" else "roc_auc"

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly: ``{**mean, "per_task": ..., "labels": counts}``."""
        return {**self.mean, "per_task": {k: dict(v) for k, v in self.per_task.items()}, "labels": dict(self.counts)}


def evaluate_predictions(
    prediction: Tensor, target: Tensor, task: str, target_names: Sequence[str] | None = None
) -> PropertyMetrics:
    """RMSE and MAE (regression) or ROC-AUC (classification) per task, and their mean.

    Args:
        prediction: ``[N, T]`` values in the units of ``target`` (regression) or scores,
            e.g. probabilities (classification).
        target: ``[N, T]`` labels, NaN where missing.
        task: ``"regression"`` or ``"classification"``.
        target_names: ``T`` names (default ``task0``, ``task1``, ...).

    Returns:
        :class:`PropertyMetrics`. A task without labels (or, for ROC-AUC, without both classes)
        reports ``None`` and is left out of the mean, as OGB's evaluator does.

    Example:
        >>> nan = float("nan")
        >>> m = evaluate_predictions(torch.tensor([[0.9, 0.2], [0.1, 0.7], [0.4, 0.1]]),
        ...                          torch.tensor([[1.0, nan], [0.0, 1.0], [0.0, 1.0]]), "classification", ["a", "b"])
        >>> m.mean, m.per_task
        ({'roc_auc': 1.0}, {'a': {'roc_auc': 1.0}, 'b': {'roc_auc': None}})
    """
    if task not in TASKS:
        raise ValueError(f"Expected task to be one of {TASKS}, got {task!r}")
    if not isinstance(prediction, Tensor) or not isinstance(target, Tensor) or prediction.dim() != 2 or prediction.shape != target.shape:
        raise ValueError(
            f"Expected prediction and target of the same shape [N, T], got {_describe(prediction)} and {_describe(target)}"
        )
    names = list(target_names) if target_names is not None else [f"task{t}" for t in range(target.size(1))]
    if len(names) != target.size(1):
        raise ValueError(f"Expected {target.size(1)} target names, got {len(names)}: {names}")
    prediction, target = prediction.detach().double().cpu(), target.detach().double().cpu()
    per_task: dict[str, dict[str, float | None]] = {}
    counts: dict[str, int] = {}
    for column, name in enumerate(names):
        present = ~target[:, column].isnan()
        counts[name] = int(present.sum())
        p, y = prediction[present, column], target[present, column]
        if task == "regression":
            error = p - y
            per_task[name] = {
                "rmse": float(error.pow(2).mean().sqrt()) if len(y) else None,
                "mae": float(error.abs().mean()) if len(y) else None,
            }
        else:
            auc = roc_auc(p, y) if len(y) else math.nan
            per_task[name] = {"roc_auc": None if math.isnan(auc) else auc}
    metric_names = ("rmse", "mae") if task == "regression" else ("roc_auc",)
    mean: dict[str, float | None] = {}
    for metric in metric_names:
        values = [values[metric] for values in per_task.values() if values[metric] is not None]
        mean[metric] = sum(values) / len(values) if values else None
    return PropertyMetrics(task, mean, per_task, counts)


# ====================================================================== models
def _model_settings(
    kind: str, overrides: dict[str, Any], *, featurizer: str, num_tasks: int, graph_feature_dim: int = 0
) -> dict[str, Any]:
    """The complete, JSON-friendly constructor settings of model ``kind``."""
    from graphattn.models import GraphTransformerConfig, PygGNN

    if kind not in MODELS:
        raise ValueError(f"Unknown model {kind!r}; expected one of {', '.join(map(repr, MODELS))}")
    if not isinstance(overrides, dict):
        raise TypeError(f"Expected model_config to be a dict of settings, got {type(overrides).__name__}")
    fixed = sorted(set(overrides) & set(_DATA_SETTINGS))
    if fixed:
        raise ValueError(
            f"model_config may not set {fixed}: train_property_model sets them from the data (pass "
            f"featurizer=... to choose the featurizer, descriptors=... for molecule-level features)"
        )
    if kind == "graph_transformer":
        allowed = {f.name for f in dataclasses.fields(GraphTransformerConfig)} - set(_DATA_SETTINGS)
        defaults: dict[str, Any] = dict(_GRAPH_TRANSFORMER_DEFAULTS)
    else:
        allowed = set(inspect.signature(PygGNN.__init__).parameters) - {"self", "kind", *_DATA_SETTINGS}
        defaults = dict(_BASELINE_DEFAULTS)
    unknown = sorted(set(overrides) - allowed)
    if unknown:
        raise ValueError(f"Unknown model_config keys {unknown} for model {kind!r}; expected a subset of {sorted(allowed)}")
    settings = {
        **defaults, **overrides, "featurizer": featurizer, "num_tasks": num_tasks, "graph_feature_dim": graph_feature_dim,
    }
    if kind == "graph_transformer":
        return GraphTransformerConfig.from_dict(settings).to_dict()
    return dict(PygGNN(kind, **settings).settings)


def _build_model(kind: str, settings: dict[str, Any]) -> nn.Module:
    from graphattn.models import GraphTransformer, GraphTransformerConfig, PygGNN

    if kind == "graph_transformer":
        return GraphTransformer(GraphTransformerConfig.from_dict(dict(settings)))
    if kind not in MODELS:
        raise ValueError(f"Unknown model {kind!r}; expected one of {', '.join(map(repr, MODELS))}")
    return PygGNN(**settings)


def _with_positional_encoding(graphs: Iterator["Data"] | Sequence["Data"], settings: dict[str, Any]) -> list["Data"]:
    """The graphs with the model's positional encoding precomputed, one molecule at a time (so
    a molecule's encoding never depends on what it is batched with)."""
    from graphattn.models import AddGraphPositionalEncoding

    kind = settings.get("positional_encoding", "none")
    if kind == "none":
        return list(graphs)
    transform = AddGraphPositionalEncoding(kind, settings["pe_size"])
    return [transform(graph) for graph in graphs]


def _with_descriptors(
    graphs: Sequence["Data"], scaler: "DescriptorScaler | None", raw: Tensor | None = None
) -> Sequence["Data"]:
    """The graphs with ``graph_features`` ``[1, D]``: their RDKit descriptors (``raw`` ``[M, D]``,
    else computed from each graph's ``smiles``) normalized by ``scaler``; unchanged without one."""
    if scaler is None:
        return graphs
    from graphattn.data.descriptors import descriptor_matrix

    if raw is None:
        missing = [index for index, graph in enumerate(graphs) if not isinstance(getattr(graph, "smiles", None), str)]
        if missing:
            raise ValueError(
                f"The model uses RDKit descriptors, computed from each graph's 'smiles' attribute, but graph "
                f"{missing[0]} has none; use PropertyModel.predict(smiles), or graphs of a MoleculeDataset"
            )
        raw = descriptor_matrix([graph.smiles for graph in graphs])
    features = scaler.transform(raw)  # [M, D]
    out = []
    for graph, row in zip(graphs, features):
        graph = graph.clone()
        graph.graph_features = row.unsqueeze(0)
        out.append(graph)
    return out


def _dataset_descriptors(dataset: "MoleculeDataset", cache_dir: Path, progress: bool) -> Tensor:
    """RDKit descriptors ``float64 [M, D]`` of every molecule of ``dataset``, cached in ``cache_dir``
    (keyed by the SMILES, the descriptor names and the RDKit version)."""
    import hashlib

    from rdkit import __version__ as rdkit_version

    from graphattn.data.descriptors import descriptor_matrix, descriptor_names
    from graphattn.train.checkpoint import atomic_save

    names = descriptor_names()
    digest = hashlib.sha256(json.dumps([rdkit_version, names, dataset.smiles]).encode()).hexdigest()[:24]
    path = cache_dir / f"descriptors.{digest}.pt"
    if path.is_file():
        try:
            values = torch.load(path, weights_only=True)
            if isinstance(values, Tensor) and values.shape == (len(dataset), len(names)):
                return values
        except Exception as error:  # unreadable: compute again
            warnings.warn(f"Ignoring the unreadable descriptor cache {path} ({error}); computing again", stacklevel=3)
    values = descriptor_matrix(dataset.smiles, progress=progress)
    atomic_save(values, path)
    return values


def _collate(graphs: list["Data"]) -> Any:
    from torch_geometric.data import Batch

    return Batch.from_data_list(graphs)


def _raw_outputs(module: nn.Module, graphs: Sequence["Data"], batch_size: int) -> Tensor:
    """``[N, T]`` float32 CPU outputs of ``module`` in eval mode, without gradients."""
    parameter = next(iter(module.parameters()), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    was_training = module.training
    module.eval()
    outputs = []
    try:
        with torch.no_grad():
            for start in range(0, len(graphs), batch_size):
                batch = _collate(list(graphs[start : start + batch_size])).to(device)
                outputs.append(module(batch).float().cpu())
    finally:
        module.train(was_training)
    return torch.cat(outputs)


class PropertyModel:
    """A trained property model: the network, how to featurize its input and how to read its
    output. Made by :func:`train_property_model`, saved as ``model.pt``, loaded with
    :func:`load_property_model`.

    Attributes:
        module: the network (``GraphTransformer`` or ``PygGNN``); predictions run it in eval mode.
        kind: one of :data:`MODELS`.
        settings: the constructor settings of ``module`` (JSON-friendly).
        task: ``"regression"`` or ``"classification"``.
        target_names: one name per output column.
        featurizer: ``"ogb"`` or ``"zinc"``.
        scaler: the training targets' :class:`TargetScaler` (regression), else ``None``.
        smiles_col: the SMILES column of the training file (the default of :func:`predict_csv`).
        descriptor_scaler: the :class:`~graphattn.data.descriptors.DescriptorScaler` of a model
            trained with RDKit descriptors as molecule-level inputs, else ``None``.
    """

    def __init__(
        self,
        module: nn.Module,
        *,
        kind: str,
        settings: dict[str, Any],
        task: str,
        target_names: Sequence[str],
        featurizer: str,
        scaler: TargetScaler | None,
        smiles_col: str = "smiles",
        descriptor_scaler: "DescriptorScaler | None" = None,
    ) -> None:
        if task not in TASKS:
            raise ValueError(f"Expected task to be one of {TASKS}, got {task!r}")
        if (task == "regression") != (scaler is not None):
            raise ValueError("Expected a TargetScaler for regression and none for classification")
        self.module = module
        self.kind = kind
        self.settings = dict(settings)
        self.task = task
        self.target_names = tuple(target_names)
        self.featurizer = featurizer
        self.scaler = scaler
        self.smiles_col = smiles_col
        self.descriptor_scaler = descriptor_scaler

    @property
    def num_parameters(self) -> int:
        """Trainable parameters of :attr:`module`."""
        from graphattn.models import count_parameters

        return count_parameters(self.module)

    def outputs_to_predictions(self, outputs: Tensor) -> Tensor:
        """Raw network outputs ``[N, T]`` -> original units (regression) or probabilities."""
        if self.scaler is not None:
            return self.scaler.inverse(outputs)
        return torch.sigmoid(outputs)

    def predict_graphs(self, graphs: Sequence["Data"], *, batch_size: int = 256) -> Tensor:
        """Predictions ``[N, T]`` for featurized molecules (``Data`` from ``smiles_to_graph``
        with this model's featurizer, or a :class:`~graphattn.data.molecule_datasets.MoleculeDataset`).
        A model trained with descriptors computes them from each graph's ``smiles`` attribute
        (graphs of a ``MoleculeDataset`` have it), unless ``graph_features`` are attached already."""
        _check_positive(batch_size, "batch_size")
        if len(graphs) == 0:
            return torch.empty(0, len(self.target_names))
        prepared = _with_positional_encoding(iter(graphs), self.settings)
        if self.descriptor_scaler is not None and not all(hasattr(graph, "graph_features") for graph in prepared):
            prepared = list(_with_descriptors(prepared, self.descriptor_scaler))
        return self.outputs_to_predictions(_raw_outputs(self.module, prepared, batch_size))

    def predict(self, smiles: Sequence[str], *, batch_size: int = 256) -> Tensor:
        """Predictions ``float32 [N, T]`` for a list of SMILES: original units for regression,
        probabilities for classification.

        Raises:
            TypeError: ``smiles`` is a single string rather than a list.
            InvalidSmilesError: RDKit rejects a SMILES (the message names its position).
        """
        from graphattn.data.molecule import MoleculeError, smiles_to_graph

        if isinstance(smiles, str):
            raise TypeError(f"Expected a list of SMILES, got the string {smiles!r}; pass [{smiles!r}]")
        graphs = []
        for index, text in enumerate(smiles):
            try:
                graphs.append(smiles_to_graph(text, featurizer=self.featurizer))
            except MoleculeError as error:
                raise type(error)(
                    f"smiles[{index}]: {error}", smiles=error.smiles, line=error.line, reason=error.reason
                ) from None
        return self.predict_graphs(graphs, batch_size=batch_size)

    def payload(self) -> dict[str, Any]:
        """What ``model.pt`` holds (``torch.load(..., weights_only=True)``-readable)."""
        return {
            "format": MODEL_FORMAT,
            "model": self.kind,
            "settings": self.settings,
            "state_dict": {k: v.detach().cpu() for k, v in self.module.state_dict().items()},
            "task": self.task,
            "target_names": list(self.target_names),
            "featurizer": self.featurizer,
            "target_mean": list(self.scaler.mean) if self.scaler is not None else None,
            "target_std": list(self.scaler.std) if self.scaler is not None else None,
            "smiles_col": self.smiles_col,
            "descriptors": self.descriptor_scaler.state() if self.descriptor_scaler is not None else None,
        }

    def save(self, path: PathLike) -> Path:
        """Write :meth:`payload` to ``path`` atomically; returns the path."""
        from graphattn.train.checkpoint import atomic_save

        path = Path(path)
        atomic_save(self.payload(), path)
        return path

    def __repr__(self) -> str:
        return (
            f"PropertyModel({self.kind}, {self.task}, targets {list(self.target_names)}, featurizer "
            f"{self.featurizer!r}, {self.num_parameters:,} parameters)"
        )


def load_property_model(model_dir: PathLike, *, device: str | torch.device = "cpu") -> PropertyModel:
    """Load the ``model.pt`` that :func:`train_property_model` wrote (``weights_only=True``).

    Args:
        model_dir: the training ``out_dir``, or the ``model.pt`` file itself.
        device: where the network goes.

    Raises:
        FileNotFoundError: no ``model.pt``.
        ValueError: the file is not a graphattn property model.
    """
    path = Path(model_dir)
    if path.is_dir():
        path = path / MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"No {MODEL_FILE} at {path}; expected the out_dir of train_property_model / graphattn molecules train"
        )
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        got = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"{path} is not a graphattn property model (expected format {MODEL_FORMAT!r}, got {got!r})")
    module = _build_model(payload["model"], payload["settings"])
    module.load_state_dict(payload["state_dict"])
    module.to(device).eval()
    descriptor_scaler = None
    if payload.get("descriptors") is not None:
        from graphattn.data.descriptors import DescriptorScaler

        descriptor_scaler = DescriptorScaler.from_state(payload["descriptors"])
        descriptor_scaler.check_names()
    scaler = None
    if payload["target_mean"] is not None:
        scaler = TargetScaler(tuple(payload["target_mean"]), tuple(payload["target_std"]))
    return PropertyModel(
        module,
        kind=payload["model"],
        settings=payload["settings"],
        task=payload["task"],
        target_names=payload["target_names"],
        featurizer=payload["featurizer"],
        scaler=scaler,
        smiles_col=payload.get("smiles_col") or "smiles",
        descriptor_scaler=descriptor_scaler,
    )


# ====================================================================== training
@dataclass
class PropertyResult:
    """What :func:`train_property_model` returns (``metrics`` is ``metrics.json``).

    Attributes:
        model: the best model (by validation), as saved in ``model.pt``.
        test: its test metrics (original units).
        valid: its validation metrics.
        monitor: the validation metric early stopping watched (``"rmse"``, ``"roc_auc"``, or
            ``"loss"`` when no validation task had both classes).
        best_validation: the best value of ``monitor``.
        epochs_run: epochs trained (fewer than asked after early stopping).
        best_epoch: the epoch whose end gave the best model.
        stopped_early: patience ran out.
        num_parameters: trainable parameters.
        split_sizes: ``(train, valid, test)`` molecules.
        skipped: rows left out by ``skip_invalid=True``.
        wall_time_s: seconds, featurization to the last file.
        out_dir: where the files are.
        metrics: the content of ``metrics.json``.
    """

    model: PropertyModel
    test: PropertyMetrics
    valid: PropertyMetrics
    monitor: str
    best_validation: float | None
    epochs_run: float
    best_epoch: float | None
    stopped_early: bool
    num_parameters: int
    split_sizes: tuple[int, int, int]
    skipped: list["SkippedRow"]
    wall_time_s: float
    out_dir: Path
    metrics: dict[str, Any]


def _load_data(
    csv: PathLike | None,
    smiles_col: str | None,
    target_cols: str | Sequence[str] | None,
    *,
    task: str,
    featurizer: str,
    skip_invalid: bool,
    cache_dir: Path,
) -> tuple["MoleculeDataset", str, str]:
    """``(dataset, source, smiles_col)``; RDKit's NCI/TPSA set when ``csv`` is None."""
    from graphattn.data.molecule_datasets import load_molecule_csv, nci_tpsa

    if csv is None:
        if smiles_col is not None or target_cols is not None:
            raise ValueError(
                "Expected no smiles_col / target_cols without a CSV (the default data set is RDKit's NCI/TPSA "
                "file, target TPSA); pass csv=... to train on your own file"
            )
        if task != "regression":
            raise ValueError(f"The default NCI/TPSA data set is a regression task, got task={task!r}; pass a CSV")
        return nci_tpsa(featurizer=featurizer, cache_dir=cache_dir), NCI_SOURCE, "smiles"
    if smiles_col is None or target_cols is None:
        raise ValueError(
            f"Expected smiles_col and target_cols with csv={str(csv)!r}, got smiles_col={smiles_col!r}, "
            f"target_cols={target_cols!r}; name the SMILES column and one or more target columns"
        )
    dataset = load_molecule_csv(
        csv, smiles_col, target_cols, task=task, featurizer=featurizer, skip_invalid=skip_invalid, cache_dir=cache_dir
    )
    return dataset, str(csv), smiles_col


def _make_split(dataset: "MoleculeDataset", split: str | PathLike, fractions: Sequence[float], seed: int) -> tuple["Split", str]:
    """``(split over dataset positions, kind)`` with kind ``random``, ``scaffold`` or ``file``."""
    from graphattn.data.molecule_datasets import index_split, random_split, scaffold_split

    if split == "random":
        return random_split(len(dataset), fractions, seed=seed), "random"
    if split == "scaffold":
        return scaffold_split(dataset.smiles, fractions), "scaffold"
    path = Path(split)
    if not path.exists():
        raise ValueError(
            f"Expected split 'random', 'scaffold' or the path of an index file / split folder, got {str(split)!r} "
            f"(no such file)"
        )
    num_rows = len(dataset) + len(dataset.skipped)  # the split file counts the file's data rows
    return index_split(path, num_rows=num_rows).restrict(dataset.rows), "file"


def _check_split(dataset: "MoleculeDataset", split: "Split") -> None:
    sizes = split.sizes()
    for name, size in zip(("train", "validation", "test"), sizes):
        if size == 0:
            raise ValueError(
                f"The split leaves no {name} molecule (train/valid/test sizes {sizes} of {len(dataset)} molecules); "
                f"use more molecules, other fractions or another split"
            )
    train_y = dataset.y[split.train]
    empty = [name for column, name in enumerate(dataset.target_names) if bool(train_y[:, column].isnan().all())]
    if empty:
        raise ValueError(
            f"Expected every target to have labels in the training set, got none for {empty}; drop those "
            f"columns or choose another split"
        )


def _write_split_csv(dataset: "MoleculeDataset", split: "Split", path: Path) -> None:
    """The split as file data-row indices, in the layout :func:`index_split` reads."""
    from graphattn.train.checkpoint import atomic_write_text

    parts = [dataset.rows[part].tolist() for part in split]
    buffer = io.StringIO()
    writer = csv_module.writer(buffer, lineterminator="\n")
    writer.writerow(["train", "val", "test"])
    for row in range(max(len(part) for part in parts)):
        writer.writerow([part[row] if row < len(part) else "" for part in parts])
    atomic_write_text(buffer.getvalue(), path)


def _has_both_classes(y: Tensor) -> bool:
    return any(bool((column == 0).any()) and bool((column == 1).any()) for column in y.t())


def _check_same_run(path: Path, run_config: dict[str, Any]) -> None:
    """Refuse to resume the run saved at ``path`` (``train/run.json``) with other settings."""
    if not path.is_file():
        raise ValueError(
            f"Cannot resume the run in {path.parent.parent}: it has a checkpoint but no {path.name} (a run of an older "
            "graphattn, or not started by train_property_model); pass resume=False (--fresh) or use another out_dir"
        )
    saved = json.loads(path.read_text())
    current = json.loads(json.dumps(run_config))  # tuples -> lists, as saved
    changed = [
        f"{part}.{key}: {saved.get(part, {}).get(key)!r} -> {value!r}"
        for part, values in current.items() if isinstance(values, dict)
        for key, value in values.items()
        if (part, key) not in _RESUME_FREE and saved.get(part, {}).get(key) != value
    ]
    if changed:
        raise ValueError(
            f"Cannot resume the run in {path.parent.parent} with other settings ({'; '.join(changed)}); restore "
            "them, pass resume=False to start afresh, or use another out_dir"
        )


def train_property_model(
    csv: PathLike | None,
    smiles_col: str | None = None,
    target_cols: str | Sequence[str] | None = None,
    *,
    task: str = "regression",
    split: str | PathLike = "random",
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    epochs: int = 30,
    batch_size: int = 32,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    schedule: str = "constant",
    warmup_epochs: int = 0,
    model: str = "graph_transformer",
    model_config: dict[str, Any] | None = None,
    featurizer: str = "ogb",
    descriptors: str | None = None,
    skip_invalid: bool = False,
    patience: int | None = 10,
    out_dir: PathLike = "graphattn-molecules",
    device: str | None = None,
    progress: bool = True,
    resume: bool = False,
) -> PropertyResult:
    """Train a molecule property model on a CSV and evaluate it on a held-out test set.

    Steps: featurize (cached in ``out_dir/cache``); split; standardize regression targets with
    the training statistics; optionally compute RDKit descriptors and fit their normalization on
    the training molecules; train with :func:`graphattn.train.fit` on :func:`masked_loss`
    (AdamW, ``lr`` under ``schedule``), validating at each epoch end and stopping after ``patience``
    validations without improvement; reload the best checkpoint; evaluate it on the test set in
    the original units; write the files listed in :mod:`graphattn.property`.

    Deterministic: the same arguments and ``seed`` give the same split, weights and metrics on
    CPU (``metrics.json`` differs only in ``time``).

    Args:
        csv: a CSV (or ``.csv.gz``) with a header; ``None``: RDKit's bundled NCI/TPSA set (4991
            molecules, regression target ``TPSA``; its 8 SMILES that RDKit rejects are skipped).
        smiles_col: the SMILES column (``None`` with ``csv=None``).
        target_cols: one target column or several (multi-task; empty cells are missing labels).
        task: ``"regression"`` or ``"classification"`` (binary 0 / 1 labels).
        split: ``"random"`` (seeded, ``fractions``), ``"scaffold"`` (OGB's deterministic scaffold
            split, ``fractions``) or the path of an index CSV (columns ``train,val,test``: file
            data-row indices, 0-based, counting rows that ``skip_invalid`` drops) or of a split
            folder (``train.csv``, ``valid.csv``, ``test.csv``). ``out_dir/split.csv`` of an
            earlier run is such a file.
        fractions: ``(train, valid, test)`` for the random and scaffold splits.
        seed: seeds the random split, the initial weights and the training order (the global
            ``torch`` / ``numpy`` / ``random`` generators are reseeded, as :func:`~graphattn.train.fit` does).
        epochs, batch_size, lr: training length, molecules per step, AdamW (peak) learning rate.
        weight_decay: AdamW's decoupled weight decay.
        schedule: learning-rate schedule over all ``epochs`` (one of
            :data:`graphattn.train.SCHEDULES`; ``"cosine"`` decays to 0 at the last epoch, so early
            stopping ends it sooner).
        warmup_epochs: epochs of linear warm-up before the schedule.
        model: one of :data:`MODELS`.
        model_config: settings of the model that override the defaults: fields of
            :class:`~graphattn.models.GraphTransformerConfig` (default ``hidden_dim=64,
            num_heads=4, num_layers=4``) or keyword arguments of
            :class:`~graphattn.models.PygGNN` (default ``hidden=64, layers=4``). The number of
            tasks and the featurizer come from the data.
        featurizer: ``"ogb"`` or ``"zinc"``.
        descriptors: ``"rdkit2d"``: RDKit's 2D descriptors of every molecule
            (:mod:`graphattn.data.descriptors`, CDF-normalized with the training molecules' statistics)
            join the pooled molecule vector before the head, as chemprop's ``rdkit_2d_normalized``;
            ``None`` (default): atoms and bonds only.
        skip_invalid: skip (and report) rows whose SMILES RDKit rejects instead of raising.
        patience: validations (epochs) without improvement before stopping; ``None`` = never.
        out_dir: output folder (created).
        device: ``"cpu"``, ``"cuda"``...; default CUDA when available.
        progress: show a progress bar (on a terminal).
        resume: continue an interrupted run in ``out_dir`` from its last checkpoint
            (``train/checkpoint.pt``, written at every epoch end) instead of starting afresh. The
            run's settings (data, split, model, training; ``config.json``'s content, saved as
            ``train/run.json`` when the run starts) must be the ones given now, else a ValueError
            says which differ. Without a checkpoint the run starts afresh. The result equals an
            uninterrupted run's on CPU.

    Returns:
        :class:`PropertyResult`.

    Raises:
        FileNotFoundError: no file at ``csv`` (or at the split path).
        ValueError: a column is missing (the message lists the file's columns), a SMILES is
            invalid (naming its line) without ``skip_invalid``, a split part is empty, a target has
            no training label, an argument is out of range, or ``resume`` finds a run with other
            settings in ``out_dir``.
    """
    from graphattn.train import TrainConfig, fit, load_checkpoint
    from graphattn.train.checkpoint import BEST_NAME, CHECKPOINT_NAME, atomic_write_text

    started = time.perf_counter()
    if task not in TASKS:
        raise ValueError(f"Expected task to be one of {TASKS}, got {task!r}")
    if model not in MODELS:
        raise ValueError(f"Unknown model {model!r}; expected one of {', '.join(map(repr, MODELS))}")
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        _check_positive(value, name)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"Expected seed to be a non-negative int, got {seed!r}")
    if descriptors is not None and descriptors not in DESCRIPTORS:
        raise ValueError(f"Unknown descriptors {descriptors!r}; expected None or one of {', '.join(map(repr, DESCRIPTORS))}")
    if isinstance(warmup_epochs, bool) or not isinstance(warmup_epochs, int) or warmup_epochs < 0:
        raise ValueError(f"Expected warmup_epochs to be a non-negative int, got {warmup_epochs!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    dataset, source, smiles_col = _load_data(
        csv, smiles_col, target_cols, task=task, featurizer=featurizer, skip_invalid=skip_invalid,
        cache_dir=out_dir / "cache",
    )
    parts, split_kind = _make_split(dataset, split, fractions, seed)
    _check_split(dataset, parts)
    _write_split_csv(dataset, parts, out_dir / SPLIT_FILE)
    train_set, valid_set, test_set = dataset.split(parts)
    names = list(dataset.target_names)
    scaler = TargetScaler.fit(train_set.y) if task == "regression" else None
    descriptor_scaler, raw_descriptors = None, None
    if descriptors is not None:
        from graphattn.data.descriptors import DescriptorScaler

        raw_descriptors = _dataset_descriptors(dataset, out_dir / "cache", progress)  # [M, D]
        descriptor_scaler = DescriptorScaler.fit(raw_descriptors[parts.train])

    settings = _model_settings(
        model, dict(model_config or {}), featurizer=featurizer, num_tasks=len(names),
        graph_feature_dim=descriptor_scaler.num_features if descriptor_scaler is not None else 0,
    )
    torch.manual_seed(seed)  # the initial weights
    module = _build_model(model, settings)
    property_model = PropertyModel(
        module, kind=model, settings=settings, task=task, target_names=names, featurizer=featurizer, scaler=scaler,
        smiles_col=smiles_col, descriptor_scaler=descriptor_scaler,
    )

    def prepared(part: "MoleculeDataset", positions: Tensor) -> list["Data"]:
        graphs = _with_positional_encoding(iter(part), settings)
        raw = raw_descriptors[positions] if raw_descriptors is not None else None
        return list(_with_descriptors(graphs, descriptor_scaler, raw))

    train_graphs = prepared(train_set, parts.train)
    valid_graphs = prepared(valid_set, parts.valid)
    test_graphs = prepared(test_set, parts.test)
    valid_y = valid_set.y

    monitor = "rmse" if task == "regression" else "roc_auc"
    if task == "classification" and not _has_both_classes(valid_y):
        warnings.warn(
            "No validation task has both classes, so ROC-AUC is undefined there; early stopping watches the "
            "validation loss instead (use more molecules or another split for an ROC-AUC-based choice)",
            stacklevel=2,
        )
        monitor = "loss"

    def loss_fn(network: nn.Module, batch: Any, state: Any) -> Tensor:
        target = batch.y
        if scaler is not None:
            target = scaler.transform(target)
        return masked_loss(network(batch), target, task)

    def evaluate_fn(network: nn.Module, graphs: list["Data"]) -> dict[str, float]:
        outputs = _raw_outputs(network, graphs, batch_size)
        metrics = evaluate_predictions(property_model.outputs_to_predictions(outputs), valid_y, task, names)
        target = scaler.transform(valid_y) if scaler is not None else valid_y
        values = {f"val_{k}": (math.nan if v is None else v) for k, v in metrics.mean.items()}
        return {**values, "val_loss": float(masked_loss(outputs, target, task))}

    steps_per_epoch = math.ceil(len(train_graphs) / batch_size)
    config = TrainConfig(
        epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, schedule=schedule,
        warmup_steps=warmup_epochs * steps_per_epoch, seed=seed, monitor=f"val_{monitor}",
        mode="max" if monitor == "roc_auc" else "min", patience=patience, progress=progress, device=device,
    )
    run_config = {
        "data": {
            "csv": source, "smiles_col": smiles_col, "target_cols": names, "task": task, "featurizer": featurizer,
            "descriptors": descriptors, "skip_invalid": skip_invalid,
        },
        "split": {"split": str(split), "kind": split_kind, "fractions": list(fractions), "seed": seed},
        "model": {"kind": model, "settings": settings},
        "training": config.to_dict(),
        "out_dir": str(out_dir),
    }
    train_dir = out_dir / "train"
    resuming = resume and (train_dir / CHECKPOINT_NAME).is_file()
    if resuming:
        _check_same_run(train_dir / RUN_FILE, run_config)
    else:
        train_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(json.dumps(run_config, indent=2) + "\n", train_dir / RUN_FILE)
    module.train()
    train_started = time.perf_counter()
    fitted = fit(
        module, train_graphs, loss_fn=loss_fn, config=config, collate_fn=_collate, val_data=valid_graphs,
        evaluate_fn=evaluate_fn, out_dir=train_dir, resume=resuming,
    )
    train_time = time.perf_counter() - train_started
    if (train_dir / BEST_NAME).is_file():
        load_checkpoint(train_dir / BEST_NAME, module)
    else:  # the validation metric was never a number
        warnings.warn("No validation improved on the start; the model after the last epoch is used", stacklevel=2)
    module.eval()

    def predictions(graphs: list["Data"]) -> Tensor:  # the graphs already carry their encodings and descriptors
        return property_model.outputs_to_predictions(_raw_outputs(module, graphs, batch_size))

    test_metrics = evaluate_predictions(predictions(test_graphs), test_set.y, task, names)
    valid_metrics = evaluate_predictions(predictions(valid_graphs), valid_y, task, names)
    best_epoch = next(
        (event["epoch"] for event in fitted.history if event.get("event") == "validation" and event["step"] == fitted.best_step),
        None,
    )
    property_model.save(out_dir / MODEL_FILE)

    atomic_write_text(json.dumps(run_config, indent=2) + "\n", out_dir / CONFIG_FILE)

    sizes = parts.sizes()
    wall_time = time.perf_counter() - started
    metrics = {
        "task": task,
        "targets": names,
        "model": model,
        "seed": seed,
        "test": test_metrics.to_dict(),
        "validation": {
            "metric": monitor,
            "mode": config.mode,
            "best": fitted.best_metric,
            **valid_metrics.to_dict(),
        },
        "epochs_run": fitted.epochs_completed,
        "best_epoch": best_epoch,
        "stopped_early": fitted.stopped_early,
        "num_parameters": property_model.num_parameters,
        "split": {"kind": split_kind, "train": sizes[0], "valid": sizes[1], "test": sizes[2]},
        "skipped_rows": [{"line": row.line, "smiles": row.smiles, "reason": row.reason} for row in dataset.skipped],
        "time": {"wall_s": wall_time, "train_s": train_time},
    }
    atomic_write_text(json.dumps(metrics, indent=2) + "\n", out_dir / METRICS_FILE)
    return PropertyResult(
        model=property_model,
        test=test_metrics,
        valid=valid_metrics,
        monitor=monitor,
        best_validation=fitted.best_metric,
        epochs_run=fitted.epochs_completed,
        best_epoch=best_epoch,
        stopped_early=fitted.stopped_early,
        num_parameters=property_model.num_parameters,
        split_sizes=sizes,
        skipped=list(dataset.skipped),
        wall_time_s=wall_time,
        out_dir=out_dir,
        metrics=metrics,
    )


# ====================================================================== prediction files
class CsvPredictions(NamedTuple):
    """What :func:`predict_csv` wrote: the output file, its data rows, the rows left empty."""

    path: Path
    num_rows: int
    invalid: list["SkippedRow"]


def _open_csv(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def _read_smiles_column(path: Path, smiles_col: str) -> list[tuple[int, str]]:
    """``(1-based line, SMILES)`` of every data row."""
    if not path.is_file():
        raise FileNotFoundError(f"No CSV file at {path}; give the path of a .csv or .csv.gz file")
    with _open_csv(path) as handle:
        reader = csv_module.reader(handle)
        header = [cell.strip() for cell in next(reader, [])]
        if smiles_col not in header:
            raise ValueError(
                f"Expected a SMILES column {smiles_col!r} in {path}, but its columns are {header}; pass "
                f"smiles_col (--smiles-col) from that list"
            )
        column = header.index(smiles_col)
        return [(reader.line_num, row[column] if column < len(row) else "") for row in reader if row]


def predict_csv(
    model_dir: PathLike,
    csv: PathLike,
    smiles_col: str | None,
    out_csv: PathLike,
    *,
    skip_invalid: bool = False,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
) -> CsvPredictions:
    """Predict every molecule of a CSV with a trained model; write ``smiles_col`` and one column
    per task (named as the training targets; probabilities for classification).

    Args:
        model_dir: the training ``out_dir`` (or its ``model.pt``).
        csv: a CSV (or ``.csv.gz``) with a header.
        smiles_col: its SMILES column; ``None``: the training file's SMILES column name.
        out_csv: the file to write (atomically; parent folders are created).
        skip_invalid: ``False``: a SMILES that RDKit rejects raises, naming its line.
            ``True``: its row gets empty predictions, is listed in the result and counted in a
            warning.
        batch_size: molecules per forward pass.
        device: where the network runs.

    Returns:
        :class:`CsvPredictions`.

    Raises:
        FileNotFoundError: no model or no CSV.
        ValueError: the SMILES column is missing (the message lists the columns), or
            :class:`~graphattn.data.molecule.InvalidSmilesError` without ``skip_invalid``.
    """
    from graphattn.data.molecule import MoleculeError, smiles_to_graph
    from graphattn.data.molecule_datasets import SkippedRow
    from graphattn.train.checkpoint import atomic_write_text

    property_model = load_property_model(model_dir, device=device)
    path = Path(csv)
    smiles_col = smiles_col or property_model.smiles_col
    rows = _read_smiles_column(path, smiles_col)
    graphs, valid_rows, invalid = [], [], []
    for position, (line, text) in enumerate(rows):
        try:
            graphs.append(smiles_to_graph(text.strip(), featurizer=property_model.featurizer, line=line))
            valid_rows.append(position)
        except MoleculeError as error:
            if not skip_invalid:
                raise type(error)(
                    f"{path}: {error} (or pass skip_invalid=True / --skip-invalid to leave its predictions empty)",
                    smiles=error.smiles, line=error.line, reason=error.reason,
                ) from None
            invalid.append(SkippedRow(line, text, error.reason))
    predictions = property_model.predict_graphs(graphs, batch_size=batch_size)
    cells: list[list[str]] = [[""] * len(property_model.target_names) for _ in rows]
    for position, values in zip(valid_rows, predictions.tolist()):
        cells[position] = [repr(float(value)) for value in values]

    buffer = io.StringIO()
    writer = csv_module.writer(buffer, lineterminator="\n")
    writer.writerow([smiles_col, *property_model.target_names])
    for (_, text), values in zip(rows, cells):
        writer.writerow([text, *values])
    out_path = Path(out_csv)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(buffer.getvalue(), out_path)
    if invalid:
        shown = ", ".join(str(row.line) for row in invalid[:10]) + (", ..." if len(invalid) > 10 else "")
        warnings.warn(
            f"{len(invalid)} of {len(rows)} SMILES of {path} are invalid (lines {shown}); their predictions are empty",
            stacklevel=2,
        )
    return CsvPredictions(out_path, len(rows), invalid)


# ====================================================================== the `graphattn molecules` command
def _check_positive(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"Expected '{name}' to be a positive int, got {value!r}")
    return value


def _describe(value: object) -> str:
    if isinstance(value, Tensor):
        return f"a tensor of shape {list(value.shape)}"
    return type(value).__name__








def add_subcommand(subparsers: Any) -> None:
    """Add ``graphattn molecules`` (``train``, ``predict``) to the ``graphattn`` parser."""
    parser = subparsers.add_parser(
        "molecules",
        help="molecule property prediction: train on a CSV of SMILES, predict new molecules",
        description="Molecule property prediction with a graph transformer (or a PyG baseline).",
    )
    commands = parser.add_subparsers(title="commands", dest="molecules_command", metavar="COMMAND")
    commands.required = True

    train = commands.add_parser(
        "train",
        help="train a model on a CSV of SMILES and targets; writes model.pt, config.json, metrics.json",
        description=(
            "Train a property model on a CSV with a SMILES column and one or more target columns, with early "
            "stopping on the validation metric (RMSE or ROC-AUC), and report its test metrics. Without --csv, "
            "RDKit's bundled NCI molecules with their TPSA are used."
        ),
    )
    train.add_argument("--csv", type=Path, default=None, metavar="FILE", help="CSV (or .csv.gz) file; default RDKit's NCI/TPSA set")
    train.add_argument("--smiles-col", default=None, metavar="COL", help="SMILES column (default 'smiles')")
    train.add_argument(
        "--target-col", action="append", default=None, metavar="COL",
        help="target column; repeat for several tasks (required with --csv)",
    )
    train.add_argument("--task", choices=TASKS, default="regression", help="regression (default) or classification (0/1)")
    train.add_argument(
        "--split", default="random", metavar="random|scaffold|FILE",
        help="random 80/10/10 (default), OGB scaffold split, or an index file / split folder",
    )
    train.add_argument("--seed", type=_non_negative_int, default=0, metavar="N", help="random seed (default 0)")
    train.add_argument("--epochs", type=_positive_int, default=30, metavar="N", help="maximum epochs (default 30)")
    train.add_argument("--patience", type=_positive_int, default=10, metavar="N", help="epochs without improvement before stopping (default 10)")
    train.add_argument("--batch-size", type=_positive_int, default=32, metavar="N", help="molecules per step (default 32)")
    train.add_argument("--lr", type=_positive_float, default=1e-3, metavar="X", help="(peak) learning rate (default 1e-3)")
    train.add_argument("--weight-decay", type=_non_negative_float, default=0.0, metavar="X", help="AdamW weight decay (default 0)")
    train.add_argument(
        "--schedule", choices=SCHEDULES, default="constant",
        help="learning-rate schedule over --epochs (default constant)",
    )
    train.add_argument("--warmup-epochs", type=_non_negative_int, default=0, metavar="N", help="epochs of linear warm-up (default 0)")
    train.add_argument("--model", choices=MODELS, default="graph_transformer", help="model (default graph_transformer)")
    train.add_argument("--hidden", type=_positive_int, default=None, metavar="N", help="hidden size (default 64)")
    train.add_argument("--layers", type=_positive_int, default=None, metavar="N", help="layers (default 4)")
    train.add_argument("--heads", type=_positive_int, default=None, metavar="N", help="attention heads (default 4)")
    train.add_argument("--featurizer", choices=("ogb", "zinc"), default="ogb", help="atom/bond features (default ogb)")
    train.add_argument(
        "--descriptors", choices=DESCRIPTORS, default=None,
        help="add RDKit's 2D descriptors (CDF-normalized on the training set) as molecule-level inputs",
    )
    train.add_argument("--skip-invalid", action="store_true", help="skip and report rows whose SMILES RDKit rejects")
    train.add_argument("--device", default=None, help="torch device (default cuda if available, else cpu)")
    train.add_argument("--out", type=Path, default=Path("graphattn-molecules"), metavar="DIR", help="output folder (default ./graphattn-molecules)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument(
        "--resume", action="store_true",
        help="continue an interrupted run in --out from its last checkpoint (the same settings are required)",
    )
    train.set_defaults(run=_run_train, parser=train)

    predict = commands.add_parser(
        "predict",
        help="predict the properties of the molecules of a CSV with a trained model",
        description="Predict every SMILES of a CSV with a model written by 'graphattn molecules train'.",
    )
    predict.add_argument("--model", type=Path, required=True, metavar="DIR", help="the --out folder of 'graphattn molecules train'")
    predict.add_argument("--csv", type=Path, required=True, metavar="FILE", help="CSV (or .csv.gz) with a SMILES column")
    predict.add_argument("--out", type=Path, required=True, metavar="FILE", help="CSV file to write (SMILES and one column per task)")
    predict.add_argument("--smiles-col", default=None, metavar="COL", help="SMILES column (default: the training file's)")
    predict.add_argument("--skip-invalid", action="store_true", help="leave the predictions of invalid SMILES empty")
    predict.add_argument("--batch-size", type=_positive_int, default=256, metavar="N", help="molecules per forward pass (default 256)")
    predict.add_argument("--device", default="cpu", help="torch device (default cpu)")
    predict.set_defaults(run=_run_predict, parser=predict)


def _model_overrides(args: argparse.Namespace) -> dict[str, Any]:
    names = (
        {"hidden": "hidden_dim", "layers": "num_layers", "heads": "num_heads"}
        if args.model == "graph_transformer"
        else {"hidden": "hidden", "layers": "layers", "heads": "heads"}
    )
    return {names[flag]: getattr(args, flag) for flag in names if getattr(args, flag) is not None}


def _check_device(parser: argparse.ArgumentParser, device: str | None) -> None:
    if device is None:
        return
    try:
        kind = torch.device(device).type
    except RuntimeError:
        parser.error(f"argument --device: expected a torch device such as 'cpu' or 'cuda:0', got {device!r}")
    if kind == "cuda" and not torch.cuda.is_available():
        parser.error(f"argument --device: {device!r} requested but CUDA is not available; use --device cpu")


def _run_train(args: argparse.Namespace, stream: TextIO | None = None) -> int:
    parser = args.parser
    stream = stream or sys.stdout
    if args.csv is None and (args.target_col or args.smiles_col):
        parser.error("--smiles-col / --target-col need --csv (without --csv the NCI/TPSA set is used, target TPSA)")
    if args.csv is not None and not args.target_col:
        parser.error("--target-col is required with --csv (repeat it for several tasks)")
    _check_device(parser, args.device)
    try:
        result = train_property_model(
            args.csv,
            (args.smiles_col or "smiles") if args.csv is not None else None,
            args.target_col,
            task=args.task,
            split=args.split,
            seed=args.seed,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            weight_decay=args.weight_decay,
            schedule=args.schedule,
            warmup_epochs=args.warmup_epochs,
            model=args.model,
            model_config=_model_overrides(args),
            featurizer=args.featurizer,
            descriptors=args.descriptors,
            skip_invalid=args.skip_invalid,
            patience=args.patience,
            out_dir=args.out,
            device=args.device,
            progress=not args.no_progress,
            resume=args.resume,
        )
    except (ValueError, FileNotFoundError) as error:
        parser.error(str(error))
    print(_summary(result), file=stream)
    return 0


def _format(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _summary(result: PropertyResult) -> str:
    """The lines ``graphattn molecules train`` prints at the end."""
    test, sizes = result.test, result.split_sizes
    if test.task == "regression":
        headline = f"test RMSE {_format(test.mean['rmse'])}  MAE {_format(test.mean['mae'])}"
    else:
        headline = f"test ROC-AUC {_format(test.mean['roc_auc'])}"
    best = "n/a" if result.best_validation is None else f"{result.best_validation:.4f}"
    best_epoch = "n/a" if result.best_epoch is None else f"{result.best_epoch:g}"
    monitor = {"rmse": "RMSE", "roc_auc": "ROC-AUC"}.get(result.monitor, result.monitor)
    lines = [
        headline,
        f"  validation {monitor} {best} (best epoch {best_epoch}, {result.epochs_run:g} epochs run"
        f"{', stopped early' if result.stopped_early else ''})",
        f"  {result.num_parameters:,} parameters; split {sizes[0]}/{sizes[1]}/{sizes[2]}; "
        f"{len(result.skipped)} rows skipped; {result.wall_time_s:.1f} s",
    ]
    if len(test.per_task) > 1:
        for name, values in test.per_task.items():
            lines.append(f"  {name}: " + "  ".join(f"{k} {_format(v)}" for k, v in values.items()))
    for row in result.skipped[:10]:
        lines.append(f"  skipped line {row.line}: {row.smiles!r} ({row.reason})")
    if len(result.skipped) > 10:
        lines.append(f"  ... {len(result.skipped) - 10} more skipped rows, all listed in {METRICS_FILE}")
    files = ", ".join(str(result.out_dir / name) for name in (MODEL_FILE, CONFIG_FILE, METRICS_FILE))
    lines.append(f"wrote {files}")
    return "\n".join(lines)


def _run_predict(args: argparse.Namespace, stream: TextIO | None = None) -> int:
    parser = args.parser
    stream = stream or sys.stdout
    _check_device(parser, args.device)
    try:
        written = predict_csv(
            args.model, args.csv, args.smiles_col, args.out, skip_invalid=args.skip_invalid,
            batch_size=args.batch_size, device=args.device,
        )
    except (ValueError, FileNotFoundError) as error:
        parser.error(str(error))
    predicted = written.num_rows - len(written.invalid)
    print(f"wrote predictions for {predicted} of {written.num_rows} molecules to {written.path}", file=stream)
    for row in written.invalid:
        print(f"  invalid SMILES on line {row.line}: {row.smiles!r} ({row.reason}); predictions left empty", file=stream)
    return 0
