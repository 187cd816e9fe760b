"""Molecule property data sets (CSV of SMILES + targets -> list of PyG graphs) and their splits.

* :func:`load_molecule_csv`: any CSV (or ``.csv.gz``) with a SMILES column and one or more target
  columns, regression or binary classification, missing labels (empty cells) as NaN. A SMILES
  that RDKit rejects is an error naming its line, unless ``skip_invalid=True``: then the row is
  skipped, listed in ``dataset.skipped`` and counted in one warning. Featurized data can be
  cached on disk (``cache_dir``), in a file that ``torch.load(..., weights_only=True)`` reads.
* Named loaders for the MoleculeNet / benchmark files (:data:`DATASETS`): :func:`load_esol`,
  :func:`load_freesolv`, :func:`load_lipophilicity`, :func:`load_bace`, :func:`load_bbbp`,
  :func:`load_hiv`, :func:`load_zinc12k`, each reading a given path; :func:`download` fetches the
  file from its canonical URL where a network exists. :func:`nci_tpsa` loads the 5000 NCI
  molecules that ship inside RDKit (TPSA target): a data set that needs no download.
* Splits (:class:`Split`, index tensors): :func:`random_split` (seeded), :func:`scaffold_split`
  (the deterministic OGB / MoleculeNet scaffold split, reproducing OGB's shipped split files) and
  :func:`index_split` (fixed index files such as ZINC's ``indexes_train_val_test.csv``).

A :class:`MoleculeDataset` is list-like: ``dataset[i]`` is a PyG ``Data(x, edge_index,
edge_attr, y [1, T], smiles)`` (features as in :mod:`graphattn.data.molecule`), indexing with a
tensor, list or slice gives a sub-dataset, and it works with ``torch_geometric.loader.DataLoader``.

Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "tiny.csv"
    >>> _ = path.write_text("smiles,logS\\nCCO,0.5\\nc1ccccc1,-1.5\\nCC(=O)O,\\n")
    >>> data = load_molecule_csv(path, "smiles", "logS")
    >>> data
    MoleculeDataset(tiny.csv: 3 molecules, targets ['logS'] (regression), featurizer 'ogb')
    >>> data[1]
    Data(x=[6, 9], edge_index=[2, 12], edge_attr=[12, 3], y=[1, 1], smiles='c1ccccc1', num_nodes=6)
    >>> data.y.flatten().tolist()
    [0.5, -1.5, nan]
"""
from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import math
import operator
import os
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, NamedTuple, Sequence, Union

import torch
from torch import Tensor

from graphattn.data.molecule import (
    FEATURIZERS,
    OGB_BOND_FEATURES,
    InvalidSmilesError,
    MoleculeError,
    _graph_tensors,
    parse_smiles,
)

if TYPE_CHECKING:  # pragma: no cover
    from torch_geometric.data import Data

__all__ = [
    "TASKS",
    "DATASETS",
    "MoleculeDatasetSpec",
    "SkippedRow",
    "Split",
    "MoleculeDataset",
    "load_molecule_csv",
    "load_esol",
    "load_freesolv",
    "load_lipophilicity",
    "load_bace",
    "load_bbbp",
    "load_hiv",
    "load_zinc12k",
    "zinc12k_split",
    "nci_tpsa",
    "download",
    "random_split",
    "murcko_scaffold",
    "scaffold_split",
    "index_split",
]

TASKS = ("regression", "classification")
PathLike = Union[str, "os.PathLike[str]"]
_CACHE_FORMAT = "graphattn.molecule_dataset/1"


class SkippedRow(NamedTuple):
    """A row left out by ``skip_invalid=True``: its 1-based line, its SMILES and why."""

    line: int
    smiles: str
    reason: str


# ----------------------------------------------------------------------------------------------
# splits
# ----------------------------------------------------------------------------------------------


class Split(NamedTuple):
    """Train / validation / test indices (``int64 [n_part]`` each, sorted, disjoint)."""

    train: Tensor
    valid: Tensor
    test: Tensor

    def sizes(self) -> tuple[int, int, int]:
        """``(len(train), len(valid), len(test))``."""
        return (len(self.train), len(self.valid), len(self.test))

    def restrict(self, rows: Tensor | Sequence[int]) -> "Split":
        """This split, computed over the rows of a file, in the positions of a data set that kept
        only the file rows ``rows`` (``MoleculeDataset.rows``): row ``rows[p]`` becomes ``p``,
        rows that are not kept disappear.

        Example:
            >>> s = Split(torch.tensor([0, 2]), torch.tensor([1]), torch.tensor([3]))
            >>> s.restrict([0, 2, 3])  # file row 1 was skipped
            Split(train=tensor([0, 1]), valid=tensor([], dtype=torch.int64), test=tensor([2]))
        """
        rows = torch.as_tensor(rows, dtype=torch.long)
        size = 1 + max([int(rows.max()) if rows.numel() else -1] + [int(p.max()) for p in self if p.numel()])
        position = torch.full((size,), -1, dtype=torch.long)
        position[rows] = torch.arange(len(rows))

        def move(part: Tensor) -> Tensor:
            moved = position[part]
            return moved[moved >= 0].sort().values

        return Split(move(self.train), move(self.valid), move(self.test))


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    if len(fractions) != 3 or any(not 0 <= f <= 1 for f in fractions):
        raise ValueError(
            f"Expected fractions = (train, valid, test), three numbers in [0, 1], got {tuple(fractions)}"
        )
    if abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(
            f"Expected fractions that sum to 1, got {tuple(fractions)} (sum {sum(fractions):g}); "
            f"e.g. (0.8, 0.1, 0.1)"
        )
    return (float(fractions[0]), float(fractions[1]), float(fractions[2]))


def random_split(n: int, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0) -> Split:
    """A seeded random split of ``n`` items.

    Sizes follow chemprop: ``n_train = int(f_train * n)``, ``n_train + n_valid =
    int((f_train + f_valid) * n)``, the rest is test. The permutation is
    ``torch.randperm(n, generator=torch.Generator().manual_seed(seed))``: the same on every
    machine.

    Args:
        n: number of items.
        fractions: ``(train, valid, test)`` fractions, summing to 1.
        seed: random seed.

    Returns:
        A :class:`Split` of sorted indices in ``[0, n)``.

    Example:
        >>> random_split(1128).sizes()
        (902, 113, 113)
        >>> random_split(10, seed=1)
        Split(train=tensor([0, 1, 2, 3, 5, 6, 8, 9]), valid=tensor([7]), test=tensor([4]))
    """
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"Expected n to be a non-negative int, got {n!r}")
    f_train, f_valid, _ = _check_fractions(fractions)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_train = int(f_train * n)
    n_train_valid = int((f_train + f_valid) * n)
    parts = order[:n_train], order[n_train:n_train_valid], order[n_train_valid:]
    return Split(*(part.sort().values for part in parts))


def murcko_scaffold(smiles: str, include_chirality: bool = True) -> str:
    """The Bemis-Murcko scaffold of a molecule as a SMILES (RDKit's ``MurckoScaffoldSmiles``);
    ``''`` for a molecule without rings.

    Raises:
        InvalidSmilesError: RDKit rejects the SMILES.

    Example:
        >>> murcko_scaffold("CCc1ccc(O)cc1C1CC1")
        'c1ccc(C2CC2)cc1'
        >>> murcko_scaffold("CCO")
        ''
    """
    from rdkit.Chem.Scaffolds import MurckoScaffold

    mol = parse_smiles(smiles)
    return MurckoScaffold.MurckoScaffoldSmiles(mol=mol, includeChirality=include_chirality)


def scaffold_split(
    smiles: Sequence[str],
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    *,
    include_chirality: bool = True,
    on_invalid: str = "error",
) -> Split:
    """The deterministic scaffold split of OGB (and MoleculeNet's ``pretrain-gnns`` code).

    Molecules are grouped by Murcko scaffold (with chirality), the groups sorted by (size, smallest
    index) in descending order -- largest first, ties broken by the *later* first occurrence --
    and given whole, in that order, to train while train stays within ``f_train * n`` molecules,
    then to valid while train + valid stay within ``(f_train + f_valid) * n``, the rest to test.
    Reproduces OGB's ``split/scaffold`` files (ogbg-molesol, -molfreesolv, -molbace, -molbbbp
    checked in the tests, on the SMILES of OGB's ``mapping/mol.csv.gz``) and 32901 / 4113 / 4113
    on HIV's 41127 SMILES (``on_invalid="own_group"``).

    Args:
        smiles: the SMILES of the data set, in data-set order.
        fractions: ``(train, valid, test)`` fractions, summing to 1.
        include_chirality: keep stereo marks in the scaffold (OGB: ``True``).
        on_invalid: what to do with a SMILES that RDKit rejects: ``"error"`` raises
            :class:`~graphattn.data.molecule.InvalidSmilesError` naming its index;
            ``"own_group"`` gives it a scaffold group of its own (this is how HIV's 7 SMILES
            that today's RDKit rejects, but OGB's older RDKit accepted, keep OGB's counts).

    Returns:
        A :class:`Split` of sorted indices into ``smiles``.

    Example:
        >>> smiles = ["c1ccccc1O", "c1ccccc1N", "C1CC1C", "c1ccccc1C", "CCO", "C1CCCCC1"]
        >>> scaffold_split(smiles, (0.5, 0.25, 0.25))
        Split(train=tensor([0, 1, 3]), valid=tensor([5]), test=tensor([2, 4]))
    """
    from rdkit import Chem, rdBase
    from rdkit.Chem.Scaffolds import MurckoScaffold

    if on_invalid not in ("error", "own_group"):
        raise ValueError(f"Expected on_invalid='error' or 'own_group', got {on_invalid!r}")
    f_train, f_valid, _ = _check_fractions(fractions)
    groups: dict[Any, list[int]] = {}
    with rdBase.BlockLogs():
        for index, text in enumerate(smiles):
            mol = Chem.MolFromSmiles(text) if isinstance(text, str) else None
            if mol is None or mol.GetNumAtoms() == 0:
                if on_invalid == "error":
                    _raise_invalid_at(text, index)
                key: Any = ("invalid", index)
            else:
                key = MurckoScaffold.MurckoScaffoldSmiles(mol=mol, includeChirality=include_chirality)
            groups.setdefault(key, []).append(index)
    ordered = sorted(groups.values(), key=lambda group: (len(group), group[0]), reverse=True)
    n = len(smiles)
    train_cutoff = f_train * n
    valid_cutoff = (f_train + f_valid) * n
    train: list[int] = []
    valid: list[int] = []
    test: list[int] = []
    for group in ordered:
        if len(train) + len(group) <= train_cutoff:
            train.extend(group)
        elif len(train) + len(valid) + len(group) <= valid_cutoff:
            valid.extend(group)
        else:
            test.extend(group)
    return Split(*(torch.tensor(sorted(part), dtype=torch.long) for part in (train, valid, test)))


def _raise_invalid_at(text: Any, index: int) -> None:
    try:
        parse_smiles(text)
    except InvalidSmilesError as error:
        raise InvalidSmilesError(
            f"scaffold_split: RDKit rejects the SMILES {text!r} at index {index} ({error.reason}); remove "
            f"it, or pass on_invalid='own_group' to give it a scaffold group of its own",
            smiles=text,
            reason=error.reason,
        ) from None
    raise InvalidSmilesError(f"scaffold_split: the SMILES {text!r} at index {index} has no atoms", smiles=text)


_SPLIT_COLUMNS = {"train": ("train",), "valid": ("valid", "val", "validation"), "test": ("test",)}


def index_split(path: PathLike, num_rows: int | None = None) -> Split:
    """A fixed split read from index files.

    Two layouts:

    * a CSV with columns ``train``, ``val`` (or ``valid`` / ``validation``) and ``test``, each a
      column of row indices, shorter columns padded with empty cells (ZINC-12k's
      ``indexes_train_val_test.csv``);
    * a directory holding ``train.csv[.gz]``, ``valid.csv[.gz]`` and ``test.csv[.gz]``, one index
      per line without header (OGB's ``split/scaffold/`` folder).

    Args:
        path: the CSV file or the directory.
        num_rows: if given, every index must be below it (the data set size).

    Returns:
        A :class:`Split` of sorted indices.

    Raises:
        FileNotFoundError: no such file, or a split file is missing from the directory.
        ValueError: a column is missing, a cell is not an integer, an index is negative or out of
            range, or an index is in two parts.
    """
    path = Path(path)
    if path.is_dir():
        parts = {name: _read_index_file(path, name) for name in ("train", "valid", "test")}
    else:
        parts = _read_index_columns(path)
    for name, values in parts.items():
        bad = [v for v in values if v < 0 or (num_rows is not None and v >= num_rows)]
        if bad:
            limit = f"[0, {num_rows})" if num_rows is not None else "non-negative"
            raise ValueError(f"Expected {name} indices in {path} to be {limit}, got {bad[0]}")
    seen: dict[int, str] = {}
    for name, values in parts.items():
        for value in values:
            if value in seen:
                raise ValueError(
                    f"Index {value} is in both {seen[value]} and {name} of {path}; a split's parts "
                    f"must be disjoint"
                )
            seen[value] = name
    return Split(*(torch.tensor(sorted(parts[name]), dtype=torch.long) for name in ("train", "valid", "test")))


def _read_index_file(folder: Path, name: str) -> list[int]:
    for candidate in (folder / f"{name}.csv", folder / f"{name}.csv.gz"):
        if candidate.exists():
            with _open_text(candidate) as handle:
                return [
                    _parse_index(cell.strip(), candidate, number)
                    for number, cell in enumerate(handle, 1)
                    if cell.strip()
                ]
    raise FileNotFoundError(
        f"Expected {name}.csv or {name}.csv.gz in {folder} (a split folder holds train, valid and "
        f"test index files)"
    )


def _read_index_columns(path: Path) -> dict[str, list[int]]:
    with _open_text(path) as handle:
        reader = csv.reader(handle)
        header = [cell.strip() for cell in next(reader, [])]
        columns = {}
        for name, aliases in _SPLIT_COLUMNS.items():
            found = [header.index(alias) for alias in aliases if alias in header]
            if not found:
                raise ValueError(
                    f"Expected a column {' / '.join(map(repr, aliases))} in the split file {path}, got "
                    f"columns {header}; a split CSV has columns train, val, test of row indices"
                )
            columns[name] = found[0]
        parts: dict[str, list[int]] = {name: [] for name in _SPLIT_COLUMNS}
        for row in reader:
            for name, column in columns.items():
                cell = row[column].strip() if column < len(row) else ""
                if cell:
                    parts[name].append(_parse_index(cell, path, reader.line_num))
    return parts


def _parse_index(cell: str, path: Path, line: int) -> int:
    try:
        return int(cell)
    except ValueError:
        raise ValueError(f"Expected an integer row index on line {line} of {path}, got {cell!r}") from None


# ----------------------------------------------------------------------------------------------
# the data set
# ----------------------------------------------------------------------------------------------


class MoleculeDataset(Sequence["Data"]):
    """Molecules as PyG graphs, with targets. List-like; build it with :func:`load_molecule_csv`
    or a named loader.

    All graphs live in a few concatenated tensors (like PyG's ``InMemoryDataset``);
    ``dataset[i]`` slices them into a ``Data``. Indexing with a slice, a list or a tensor of
    indices returns a sub-dataset sharing that storage.

    Attributes:
        name: the source file name.
        target_names: the target columns, in the order of ``y``'s columns.
        task: ``"regression"`` or ``"classification"``.
        featurizer: ``"ogb"`` or ``"zinc"``.
        skipped: the rows left out by ``skip_invalid=True`` (of the whole file, also in a
            sub-dataset).
    """

    def __init__(self, store: dict[str, Any], indices: Tensor | None = None):
        self._store = store
        self._indices = indices
        self.name: str = store["name"]
        self.target_names: tuple[str, ...] = tuple(store["target_names"])
        self.task: str = store["task"]
        self.featurizer: str = store["featurizer"]
        self.skipped: list[SkippedRow] = [SkippedRow(*row) for row in store["skipped"]]

    # -- size and items ------------------------------------------------------------------------

    def _positions(self) -> Tensor:
        if self._indices is None:
            return torch.arange(len(self._store["smiles"]))
        return self._indices

    def __len__(self) -> int:
        return len(self._store["smiles"]) if self._indices is None else len(self._indices)

    def __getitem__(self, index: Any) -> Any:
        if _is_scalar_index(index):
            return self._get(operator.index(index))
        positions = self._positions()
        if isinstance(index, slice):
            chosen = positions[index]
        else:
            selector = torch.as_tensor(index)
            if selector.dtype == torch.bool:
                if selector.shape != (len(self),):
                    raise ValueError(f"Expected a boolean mask of shape [{len(self)}], got {list(selector.shape)}")
                selector = selector.nonzero().flatten()
            elif selector.is_floating_point() or selector.dim() != 1:
                raise TypeError(
                    f"Expected an int, a slice, or a 1-d integer/boolean tensor or list of indices, got "
                    f"{type(index).__name__} {tuple(selector.shape)} {selector.dtype}"
                )
            if selector.numel() and (int(selector.min()) < -len(self) or int(selector.max()) >= len(self)):
                raise IndexError(f"Index out of range for a data set of {len(self)} molecules")
            chosen = positions[selector]
        return MoleculeDataset(self._store, chosen)

    def _get(self, index: int) -> "Data":
        from torch_geometric.data import Data

        if not -len(self) <= index < len(self):
            raise IndexError(f"Index {index} out of range for a data set of {len(self)} molecules")
        position = int(self._positions()[index])
        store = self._store
        n0, n1 = int(store["node_ptr"][position]), int(store["node_ptr"][position + 1])
        e0, e1 = int(store["edge_ptr"][position]), int(store["edge_ptr"][position + 1])
        return Data(
            x=store["x"][n0:n1],
            edge_index=store["edge_index"][:, e0:e1],
            edge_attr=store["edge_attr"][e0:e1],
            y=store["y"][position : position + 1],
            smiles=store["smiles"][position],
            num_nodes=n1 - n0,
        )

    def __iter__(self) -> Iterator["Data"]:
        for index in range(len(self)):
            yield self._get(index)

    # -- per-molecule columns ------------------------------------------------------------------

    @property
    def smiles(self) -> list[str]:
        """The SMILES of every molecule, in data-set order."""
        all_smiles = self._store["smiles"]
        return list(all_smiles) if self._indices is None else [all_smiles[i] for i in self._indices.tolist()]

    @property
    def y(self) -> Tensor:
        """Targets ``float32 [M, T]``; NaN = missing label."""
        return self._store["y"][self._positions()]

    @property
    def lines(self) -> Tensor:
        """``int64 [M]``: the 1-based file line of every molecule (for messages)."""
        return self._store["lines"][self._positions()]

    @property
    def rows(self) -> Tensor:
        """``int64 [M]``: the 0-based data-row index of every molecule in the source file,
        counting skipped rows too (to apply a split computed over the whole file, see
        :meth:`Split.restrict`)."""
        return self._store["rows"][self._positions()]

    @property
    def num_tasks(self) -> int:
        """Number of target columns ``T``."""
        return len(self.target_names)

    def split(self, split: Split) -> tuple["MoleculeDataset", "MoleculeDataset", "MoleculeDataset"]:
        """``(train, valid, test)`` sub-datasets of a :class:`Split` of this data set's positions."""
        return self[split.train], self[split.valid], self[split.test]

    def __repr__(self) -> str:
        skipped = f", {len(self.skipped)} rows skipped" if self.skipped else ""
        return (
            f"MoleculeDataset({self.name}: {len(self)} molecules, targets {list(self.target_names)} "
            f"({self.task}), featurizer {self.featurizer!r}{skipped})"
        )


def _is_scalar_index(index: Any) -> bool:
    """An int, a numpy integer or a 0-d integer tensor (not a bool, a slice or a sequence)."""
    if isinstance(index, bool) or isinstance(index, (slice, list, tuple, range)):
        return False
    if isinstance(index, Tensor):
        return index.dim() == 0 and not index.is_floating_point() and index.dtype != torch.bool
    return hasattr(index, "__index__") and getattr(index, "ndim", 0) == 0


# ----------------------------------------------------------------------------------------------
# loading
# ----------------------------------------------------------------------------------------------


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def _parse_target(cell: str, column: str, task: str, line: int, path: Path) -> float:
    cell = cell.strip()
    if cell == "" or cell.lower() in ("nan", "na", "n/a", "none"):
        return math.nan
    try:
        value = float(cell)
    except ValueError:
        raise ValueError(
            f"Expected a number (or an empty cell for a missing label) in column {column!r} on line "
            f"{line} of {path}, got {cell!r}; fix the file or choose other target columns"
        ) from None
    if not math.isfinite(value):
        raise ValueError(f"Expected a finite target in column {column!r} on line {line} of {path}, got {cell!r}")
    if task == "classification" and value not in (0.0, 1.0):
        raise ValueError(
            f"Expected 0 or 1 in the classification target column {column!r} on line {line} of {path}, "
            f"got {cell!r}; binarize the labels first, or use task='regression'"
        )
    return value


def _build_store(
    records: Iterable[tuple[int, str, list[str]]],
    *,
    path: Path,
    target_names: Sequence[str],
    task: str,
    featurizer: str,
    skip_invalid: bool,
) -> dict[str, Any]:
    """Featurize ``(line, smiles, target cells)`` records into the concatenated storage."""
    from rdkit import rdBase

    xs: list[Tensor] = []
    edge_indices: list[Tensor] = []
    edge_attrs: list[Tensor] = []
    targets: list[list[float]] = []
    smiles_list: list[str] = []
    lines: list[int] = []
    rows: list[int] = []
    skipped: list[list[Any]] = []
    num_rows = 0
    with rdBase.BlockLogs():
        for row, (line, smiles, cells) in enumerate(records):
            num_rows += 1
            values = [_parse_target(cell, column, task, line, path) for cell, column in zip(cells, target_names)]
            try:
                mol = parse_smiles(smiles.strip(), line=line)
                x, edge_index, edge_attr = _graph_tensors(mol, featurizer, smiles.strip(), line)
            except MoleculeError as error:
                if not skip_invalid:
                    raise type(error)(
                        f"{path}: {error}", smiles=error.smiles, line=error.line, reason=error.reason
                    ) from None
                skipped.append([line, smiles, error.reason])
                continue
            xs.append(x)
            edge_indices.append(edge_index)
            edge_attrs.append(edge_attr)
            targets.append(values)
            smiles_list.append(smiles.strip())
            lines.append(line)
            rows.append(row)
    if not smiles_list:
        raise ValueError(
            f"No molecule left in {path} ({num_rows} data rows, {len(skipped)} skipped); expected at least "
            f"one row with a valid SMILES"
        )
    node_counts = torch.tensor([len(x) for x in xs])
    edge_counts = torch.tensor([e.shape[1] for e in edge_indices])
    zero = torch.zeros(1, dtype=torch.long)
    num_bond_features = len(OGB_BOND_FEATURES) if featurizer == "ogb" else 1
    return {
        "format": _CACHE_FORMAT,
        "name": path.name,
        "target_names": list(target_names),
        "task": task,
        "featurizer": featurizer,
        "x": torch.cat(xs),
        "edge_index": torch.cat(edge_indices, dim=1),
        "edge_attr": torch.cat(edge_attrs) if edge_attrs else torch.empty(0, num_bond_features, dtype=torch.long),
        "node_ptr": torch.cat([zero, node_counts.cumsum(0)]),
        "edge_ptr": torch.cat([zero, edge_counts.cumsum(0)]),
        "y": torch.tensor(targets, dtype=torch.float32).reshape(len(targets), len(target_names)),
        "smiles": smiles_list,
        "lines": torch.tensor(lines, dtype=torch.long),
        "rows": torch.tensor(rows, dtype=torch.long),
        "skipped": skipped,
        "num_rows": num_rows,
    }


def _warn_skipped(store: dict[str, Any], path: Path) -> None:
    skipped = store["skipped"]
    if skipped:
        shown = ", ".join(str(line) for line, _, _ in skipped[:10]) + (", ..." if len(skipped) > 10 else "")
        warnings.warn(
            f"Skipped {len(skipped)} of {store['num_rows']} rows of {path} whose SMILES RDKit rejects or "
            f"the {store['featurizer']!r} featurizer cannot represent (lines {shown}); every one is listed, "
            f"with its reason, in dataset.skipped",
            stacklevel=_caller_stacklevel(),
        )


def _caller_stacklevel() -> int:
    """The ``stacklevel`` that makes a warning point at the first caller outside this module."""
    frame = sys._getframe(1)
    level = 1
    while frame is not None and frame.f_code.co_filename == __file__:
        frame = frame.f_back
        level += 1
    return level


def _cache_file(path: Path, cache_dir: PathLike, settings: dict[str, Any]) -> Path:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    digest.update(json.dumps({**settings, "format": _CACHE_FORMAT}, sort_keys=True).encode())
    return Path(cache_dir) / f"{path.name}.{digest.hexdigest()[:24]}.pt"


def _load_cache(file: Path) -> dict[str, Any] | None:
    if not file.exists():
        return None
    try:
        store = torch.load(file, weights_only=True)
    except Exception as error:  # unreadable: rebuild it
        warnings.warn(f"Ignoring the unreadable cache file {file} ({error}); rebuilding it", stacklevel=4)
        return None
    if not isinstance(store, dict) or store.get("format") != _CACHE_FORMAT:
        return None
    return store


def _save_cache(store: dict[str, Any], file: Path) -> None:
    file.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=file.parent, prefix=file.name, suffix=".tmp")
    os.close(handle)
    try:
        torch.save(store, temporary)
        os.replace(temporary, file)  # atomic: a reader never sees half a file
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def _load(
    path: Path,
    records: Any,
    *,
    target_names: Sequence[str],
    task: str,
    featurizer: str,
    skip_invalid: bool,
    cache_dir: PathLike | None,
    cache_settings: dict[str, Any],
) -> MoleculeDataset:
    """Common tail of the loaders: cache look-up, featurization, cache write, skip warning."""
    if task not in TASKS:
        raise ValueError(f"Expected task to be one of {TASKS}, got {task!r}")
    if featurizer not in FEATURIZERS:
        raise ValueError(f"Unknown featurizer {featurizer!r}; expected one of {FEATURIZERS}")
    cache_file = None
    store = None
    if cache_dir is not None:
        settings = {**cache_settings, "task": task, "featurizer": featurizer, "skip_invalid": skip_invalid}
        cache_file = _cache_file(path, cache_dir, settings)
        store = _load_cache(cache_file)
    if store is None:
        store = _build_store(
            records(),
            path=path,
            target_names=target_names,
            task=task,
            featurizer=featurizer,
            skip_invalid=skip_invalid,
        )
        if cache_file is not None:
            _save_cache(store, cache_file)
    _warn_skipped(store, path)
    return MoleculeDataset(store)


def load_molecule_csv(
    path: PathLike,
    smiles_col: str,
    target_cols: str | Sequence[str],
    *,
    task: str = "regression",
    featurizer: str = "ogb",
    skip_invalid: bool = False,
    cache_dir: PathLike | None = None,
) -> MoleculeDataset:
    """Load a CSV of SMILES and targets as a :class:`MoleculeDataset`.

    Args:
        path: a ``.csv`` file with a header row, or a gzip-compressed ``.csv.gz``.
        smiles_col: the SMILES column.
        target_cols: one target column, or several (multi-task; ``y`` has one column each).
        task: ``"regression"`` (any finite number) or ``"classification"`` (0 or 1). Empty cells
            (and ``nan``) are missing labels, NaN in ``y``.
        featurizer: ``"ogb"`` or ``"zinc"`` (see :mod:`graphattn.data.molecule`).
        skip_invalid: ``False``: a SMILES that RDKit rejects (or that the featurizer cannot
            represent) raises, naming its 1-based line and the string. ``True``: such rows are
            skipped; each is listed in ``dataset.skipped`` as ``(line, smiles, reason)`` and one
            warning gives the count.
        cache_dir: if given, the featurized data set is stored there and reused while the file's
            content, the columns, the task, the featurizer and ``skip_invalid`` stay the same
            (a ``torch.load(..., weights_only=True)``-readable dict of tensors and lists, written
            atomically).

    Returns:
        The data set; molecule ``i`` is ``Data(x, edge_index, edge_attr, y [1, T], smiles)``.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: a column is missing (the message lists the file's columns), a target cell is not
            a number, or not 0/1 for classification (naming the line and column), no molecule is
            left, or :class:`~graphattn.data.molecule.InvalidSmilesError` /
            :class:`~graphattn.data.molecule.UnsupportedMoleculeError` for a bad molecule when
            ``skip_invalid=False``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No CSV file at {path}; give the path of a .csv or .csv.gz file")
    target_names = [target_cols] if isinstance(target_cols, str) else list(target_cols)
    if not target_names:
        raise ValueError("Expected at least one target column, got none")
    with _open_text(path) as handle:
        header = next(csv.reader(handle), [])
    missing = [c for c in [smiles_col, *target_names] if c not in header]
    if missing:
        raise ValueError(
            f"Expected column(s) {missing} in {path}, but its columns are {header}; pass smiles_col / "
            f"target_cols names from that list"
        )

    def records() -> Iterator[tuple[int, str, list[str]]]:
        with _open_text(path) as handle:
            reader = csv.DictReader(handle)
            for row in reader:
                yield reader.line_num, row[smiles_col] or "", [row[c] or "" for c in target_names]

    return _load(
        path,
        records,
        target_names=target_names,
        task=task,
        featurizer=featurizer,
        skip_invalid=skip_invalid,
        cache_dir=cache_dir,
        cache_settings={"smiles_col": smiles_col, "target_cols": target_names},
    )


# ----------------------------------------------------------------------------------------------
# named data sets
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MoleculeDatasetSpec:
    """Where a benchmark file comes from and how to read it.

    Attributes:
        name: short name (the key in :data:`DATASETS`).
        filename: the file name the loader looks for in a directory.
        url: the canonical download URL.
        smiles_col: SMILES column.
        target_cols: target column(s) read by default (the first of ``alternatives`` found).
        task: ``"regression"`` or ``"classification"``.
        featurizer: the featurizer its published results use.
        split: the split its published results use.
        licence: licence of the file.
        extra_files: other files fetched by :func:`download` (name -> URL).
    """

    name: str
    filename: str
    url: str
    smiles_col: str
    target_cols: tuple[str, ...]
    task: str
    featurizer: str
    split: str
    licence: str
    extra_files: tuple[tuple[str, str], ...] = ()


_DEEPCHEM = "https://deepchemdata.s3-us-west-1.amazonaws.com/datasets/"
_GRAPHIUM_ZINC = (
    "https://raw.githubusercontent.com/datamol-io/graphium/2573628b14751178679cd4606a1523486585d873/ZINC_bench_gnn/"
)

DATASETS: dict[str, MoleculeDatasetSpec] = {
    "esol": MoleculeDatasetSpec(
        "esol", "delaney-processed.csv", _DEEPCHEM + "delaney-processed.csv", "smiles",
        ("measured log solubility in mols per litre",), "regression", "ogb", "random 80/10/10 or scaffold",
        "CC0 (MoleculeNet / DeepChem)",
    ),
    "freesolv": MoleculeDatasetSpec(
        "freesolv", "SAMPL.csv", _DEEPCHEM + "SAMPL.csv", "smiles", ("expt",), "regression", "ogb",
        "random 80/10/10 or scaffold", "CC0 (MoleculeNet / DeepChem)",
    ),
    "lipophilicity": MoleculeDatasetSpec(
        "lipophilicity", "Lipophilicity.csv", _DEEPCHEM + "Lipophilicity.csv", "smiles", ("exp",),
        "regression", "ogb", "random 80/10/10 or scaffold", "CC0 file; data from ChEMBL (CC BY-SA 3.0)",
    ),
    "bace": MoleculeDatasetSpec(
        "bace", "bace.csv", _DEEPCHEM + "bace.csv", "mol", ("Class",), "classification", "ogb",
        "scaffold", "CC0 (MoleculeNet / DeepChem)",
    ),
    "bbbp": MoleculeDatasetSpec(
        "bbbp", "BBBP.csv", _DEEPCHEM + "BBBP.csv", "smiles", ("p_np",), "classification", "ogb",
        "scaffold", "CC0 (MoleculeNet / DeepChem)",
    ),
    "hiv": MoleculeDatasetSpec(
        "hiv", "HIV.csv", _DEEPCHEM + "HIV.csv", "smiles", ("HIV_active",), "classification", "ogb",
        "scaffold (OGB: 32901 / 4113 / 4113)", "MoleculeNet / DeepChem (chemprop's copy: MIT)",
    ),
    "zinc12k": MoleculeDatasetSpec(
        "zinc12k", "smiles_score.csv", _GRAPHIUM_ZINC + "smiles_score.csv", "SMILES", ("score",),
        "regression", "zinc", "fixed: indexes_train_val_test.csv (10000 / 1000 / 1000)", "Apache-2.0 (graphium)",
        extra_files=(("indexes_train_val_test.csv", _GRAPHIUM_ZINC + "indexes_train_val_test.csv"),),
    ),
}  # fmt: skip

# Other names the same files are found under (the shared copies, OGB's, chemprop's).
_ALTERNATIVE_FILENAMES = {
    "hiv": ("HIV.csv", "hiv.csv", "hiv.csv.gz", "HIV.csv.gz"),
    "bbbp": ("BBBP.csv", "bbbp.csv"),
    "bace": ("bace.csv", "BACE.csv"),
}
# BBBP's label column is 'p_np' in MoleculeNet's file and 'BBBP' in AttentiveFP's copy.
_ALTERNATIVE_TARGETS = {"bbbp": ("p_np", "BBBP")}


def _dataset_file(spec: MoleculeDatasetSpec, path: PathLike) -> Path:
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        for name in _ALTERNATIVE_FILENAMES.get(spec.name, (spec.filename,)):
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(
            f"Expected {spec.filename} in {path}; download it from {spec.url} (graphattn.data."
            f"molecule_datasets.download({spec.name!r}, {str(path)!r}) does that) or pass the file's path"
        )
    raise FileNotFoundError(
        f"No file or directory at {path}; {spec.name} is {spec.filename}, from {spec.url} "
        f"(download({spec.name!r}, root) fetches it)"
    )


def _load_named(
    name: str,
    path: PathLike,
    *,
    target_cols: Sequence[str] | None = None,
    task: str | None = None,
    featurizer: str | None = None,
    skip_invalid: bool = False,
    cache_dir: PathLike | None = None,
) -> MoleculeDataset:
    spec = DATASETS[name]
    file = _dataset_file(spec, path)
    if target_cols is None:
        target_cols = spec.target_cols
        alternatives = _ALTERNATIVE_TARGETS.get(name)
        if alternatives:
            with _open_text(file) as handle:
                header = next(csv.reader(handle), [])
            target_cols = next(([c] for c in alternatives if c in header), list(alternatives[:1]))
    return load_molecule_csv(
        file,
        spec.smiles_col,
        list(target_cols),
        task=task or spec.task,
        featurizer=featurizer or spec.featurizer,
        skip_invalid=skip_invalid,
        cache_dir=cache_dir,
    )


def load_esol(
    path: PathLike, *, featurizer: str = "ogb", skip_invalid: bool = False, cache_dir: PathLike | None = None
) -> MoleculeDataset:
    """ESOL (Delaney) aqueous solubility, 1128 molecules, target ``measured log solubility in mols
    per litre`` (log mol/L), regression.

    ``path``: ``delaney-processed.csv`` or its directory; from
    https://deepchemdata.s3-us-west-1.amazonaws.com/datasets/delaney-processed.csv. Other
    arguments as :func:`load_molecule_csv`.
    """
    return _load_named("esol", path, featurizer=featurizer, skip_invalid=skip_invalid, cache_dir=cache_dir)


def load_freesolv(
    path: PathLike, *, featurizer: str = "ogb", skip_invalid: bool = False, cache_dir: PathLike | None = None
) -> MoleculeDataset:
    """FreeSolv hydration free energy, 642 molecules, target ``expt`` (kcal/mol), regression.

    ``path``: ``SAMPL.csv`` or its directory; from
    https://deepchemdata.s3-us-west-1.amazonaws.com/datasets/SAMPL.csv.
    """
    return _load_named("freesolv", path, featurizer=featurizer, skip_invalid=skip_invalid, cache_dir=cache_dir)


def load_lipophilicity(
    path: PathLike, *, featurizer: str = "ogb", skip_invalid: bool = False, cache_dir: PathLike | None = None
) -> MoleculeDataset:
    """Lipophilicity (octanol/water logD at pH 7.4, from ChEMBL), 4200 molecules, target ``exp``,
    regression.

    ``path``: ``Lipophilicity.csv`` or its directory; from
    https://deepchemdata.s3-us-west-1.amazonaws.com/datasets/Lipophilicity.csv.
    """
    return _load_named("lipophilicity", path, featurizer=featurizer, skip_invalid=skip_invalid, cache_dir=cache_dir)


def load_bace(
    path: PathLike,
    *,
    target: str = "Class",
    featurizer: str = "ogb",
    skip_invalid: bool = False,
    cache_dir: PathLike | None = None,
) -> MoleculeDataset:
    """BACE-1 inhibitors, 1513 molecules (SMILES column ``mol``): ``target="Class"`` (binary
    classification, the MoleculeNet / OGB task) or ``"pIC50"`` (regression).

    ``path``: ``bace.csv`` or its directory; from
    https://deepchemdata.s3-us-west-1.amazonaws.com/datasets/bace.csv.
    """
    if target not in ("Class", "pIC50"):
        raise ValueError(f"Expected target='Class' (classification) or 'pIC50' (regression), got {target!r}")
    task = "classification" if target == "Class" else "regression"
    return _load_named(
        "bace",
        path,
        target_cols=[target],
        task=task,
        featurizer=featurizer,
        skip_invalid=skip_invalid,
        cache_dir=cache_dir,
    )


def load_bbbp(
    path: PathLike, *, featurizer: str = "ogb", skip_invalid: bool = False, cache_dir: PathLike | None = None
) -> MoleculeDataset:
    """Blood-brain barrier penetration, 2050 rows, binary classification. The label column is
    ``p_np`` in MoleculeNet's file and ``BBBP`` in AttentiveFP's copy; either is found. 11 SMILES
    are rejected by RDKit: pass ``skip_invalid=True`` to skip (and report) them, which leaves the
    2039 molecules of ogbg-molbbbp.

    ``path``: ``BBBP.csv`` or its directory; from
    https://deepchemdata.s3-us-west-1.amazonaws.com/datasets/BBBP.csv.
    """
    return _load_named("bbbp", path, featurizer=featurizer, skip_invalid=skip_invalid, cache_dir=cache_dir)


def load_hiv(
    path: PathLike, *, featurizer: str = "ogb", skip_invalid: bool = False, cache_dir: PathLike | None = None
) -> MoleculeDataset:
    """HIV replication inhibition (DTP AIDS antiviral screen), 41127 rows, target ``HIV_active``,
    binary classification. ``.csv`` or ``.csv.gz``. Today's RDKit rejects 7 of the SMILES: pass
    ``skip_invalid=True`` to skip (and report) them; ``scaffold_split(all_smiles,
    on_invalid="own_group").restrict(dataset.rows)`` then gives OGB's scaffold split on the rest.

    ``path``: ``HIV.csv`` / ``hiv.csv.gz`` or its directory; from
    https://deepchemdata.s3-us-west-1.amazonaws.com/datasets/HIV.csv.
    """
    return _load_named("hiv", path, featurizer=featurizer, skip_invalid=skip_invalid, cache_dir=cache_dir)


def load_zinc12k(
    path: PathLike, *, featurizer: str = "zinc", skip_invalid: bool = False, cache_dir: PathLike | None = None
) -> MoleculeDataset:
    """ZINC-12k, the benchmarking-gnns subset of ZINC: 12000 molecules, target ``score``
    (constrained solubility: logP - SA - number of long cycles), regression, with the ZINC
    featurizer (28 atom types, 4 bond types) by default. Use :func:`zinc12k_split` for the fixed
    10000 / 1000 / 1000 split.

    ``path``: ``smiles_score.csv`` or its directory; from graphium's ``ZINC_bench_gnn/``
    (``download("zinc12k", root)`` also fetches ``indexes_train_val_test.csv``).
    """
    return _load_named("zinc12k", path, featurizer=featurizer, skip_invalid=skip_invalid, cache_dir=cache_dir)


def zinc12k_split(path: PathLike) -> Split:
    """The fixed ZINC-12k split: ``indexes_train_val_test.csv`` in directory ``path`` (or next to
    the file ``path``)."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    return index_split(folder / "indexes_train_val_test.csv")


def nci_tpsa(
    root: PathLike | None = None,
    *,
    featurizer: str = "ogb",
    skip_invalid: bool = True,
    cache_dir: PathLike | None = None,
) -> MoleculeDataset:
    """The NCI molecules that ship inside RDKit (``RDConfig.RDDataDir/NCI/first_5k.tpsa.csv``),
    with their topological polar surface area (TPSA, in square angstroms, computed with Daylight
    tools) as a regression target: a data set for a machine without a network.

    The file has ``#`` comment lines, then ``SMILES,TPSA`` rows without header; 4999 rows, of which
    today's RDKit rejects 8 (organometallics, hypervalent atoms): they are skipped and reported by
    default (``skip_invalid=True``), leaving 4991 molecules.

    Args:
        root: the file, or a directory holding ``first_5k.tpsa.csv``; default RDKit's own copy.
        featurizer, skip_invalid, cache_dir: as in :func:`load_molecule_csv`.

    Returns:
        A regression :class:`MoleculeDataset` with the single target ``"TPSA"``.
    """
    if root is None:
        from rdkit import RDConfig

        root = Path(RDConfig.RDDataDir) / "NCI"
    path = Path(root)
    if path.is_dir():
        path = path / "first_5k.tpsa.csv"
    if not path.is_file():
        raise FileNotFoundError(
            f"No NCI TPSA file at {path}; it ships with RDKit as RDConfig.RDDataDir/NCI/first_5k.tpsa.csv "
            f"(call nci_tpsa() without arguments to use it)"
        )

    def records() -> Iterator[tuple[int, str, list[str]]]:
        with _open_text(path) as handle:
            for line, text in enumerate(handle, 1):
                text = text.strip()
                if not text or text.startswith("#"):
                    continue
                smiles, _, tpsa = text.rpartition(",")
                if not smiles:
                    raise ValueError(f"Expected 'SMILES,TPSA' on line {line} of {path}, got {text!r}")
                yield line, smiles, [tpsa]

    return _load(
        path,
        records,
        target_names=["TPSA"],
        task="regression",
        featurizer=featurizer,
        skip_invalid=skip_invalid,
        cache_dir=cache_dir,
        cache_settings={"reader": "nci_tpsa"},
    )


def download(name: str, root: PathLike, *, overwrite: bool = False) -> Path:
    """Fetch a named data set's file(s) from its canonical URL (:data:`DATASETS`) into ``root``
    (needs a network; nothing in graphattn calls it implicitly).

    Args:
        name: a key of :data:`DATASETS` (``esol``, ``freesolv``, ``lipophilicity``, ``bace``,
            ``bbbp``, ``hiv``, ``zinc12k``).
        root: directory to write to (created if missing).
        overwrite: fetch again even if the file exists.

    Returns:
        The path of the main file, ready for the matching ``load_*`` function.
    """
    import urllib.request

    if name not in DATASETS:
        raise ValueError(f"Unknown data set {name!r}; expected one of {', '.join(DATASETS)}")
    spec = DATASETS[name]
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for filename, url in ((spec.filename, spec.url), *spec.extra_files):
        target = root / filename
        if target.exists() and not overwrite:
            continue
        temporary = target.with_name(target.name + ".part")
        with urllib.request.urlopen(url, timeout=60) as response, open(temporary, "wb") as handle:
            while chunk := response.read(1 << 20):
                handle.write(chunk)
        os.replace(temporary, target)
    return root / spec.filename
