"""Molecule-level RDKit descriptors as extra model inputs, and their normalization.

Graph networks see atoms and bonds; a few whole-molecule numbers that chemists compute anyway
(Crippen logP, TPSA, molar refractivity, ring and charge counts...) carry information that is
hard to learn from a thousand molecules. chemprop's strongest MoleculeNet results add RDKit's
2D descriptors to the learned molecule vector ("rdkit_2d_normalized"); this module provides the
same inputs for :mod:`graphattn.property`:

* :func:`descriptor_names`: the descriptors, RDKit's ``Descriptors._descList`` (217 in
  RDKit 2024+; the list depends on the RDKit version, so it is stored with every scaler).
* :func:`molecule_descriptors` / :func:`descriptor_matrix`: raw values ``float64 [D]`` /
  ``[M, D]``. A descriptor that RDKit cannot compute for a molecule (it raises, or returns NaN
  or an infinity, e.g. ``Ipc`` overflowing for large molecules) is NaN, never a silent zero.
* :class:`DescriptorScaler`: fitted on the *training* molecules only; maps each descriptor
  through its empirical CDF to ``[-1, 1]`` (``2 * CDF - 1``, linear between 101 stored
  quantiles, ties at their mid-rank), like chemprop's CDF normalization but without an outside
  reference set. Heavy tails and different units stop mattering; NaN maps to 0, the training
  median. Descriptors that are constant on the training set map to 0 everywhere.

Example:
    >>> values = descriptor_matrix(["CCO", "c1ccccc1", "CC(=O)O"])
    >>> values.shape[0], values.dtype
    (3, torch.float64)
    >>> scaler = DescriptorScaler.fit(values)
    >>> scaled = scaler.transform(values)
    >>> bool(scaled.abs().max() <= 1)
    True
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Sequence, Union

import torch
from torch import Tensor

if TYPE_CHECKING:  # pragma: no cover
    from rdkit.Chem import Mol

__all__ = ["DESCRIPTOR_SET", "descriptor_names", "molecule_descriptors", "descriptor_matrix", "DescriptorScaler"]

DESCRIPTOR_SET = "rdkit2d"
"""The name of the descriptor set (the ``descriptors=`` value of :mod:`graphattn.property`)."""

NUM_QUANTILES = 101

MolOrSmiles = Union[str, "Mol"]


def _descriptor_functions() -> list[tuple[str, Any]]:
    from rdkit.Chem import Descriptors

    return list(Descriptors._descList)


def descriptor_names() -> tuple[str, ...]:
    """The names of RDKit's 2D descriptors (``Descriptors._descList``), in order."""
    return tuple(name for name, _ in _descriptor_functions())


def molecule_descriptors(mol_or_smiles: MolOrSmiles) -> Tensor:
    """RDKit's 2D descriptors of one molecule, ``float64 [D]`` in :func:`descriptor_names` order.

    Raises:
        InvalidSmilesError: RDKit rejects the SMILES (from :func:`~graphattn.data.molecule.parse_smiles`).
    """
    return descriptor_matrix([mol_or_smiles])[0]


def descriptor_matrix(molecules: Iterable[MolOrSmiles], *, progress: bool = False) -> Tensor:
    """RDKit's 2D descriptors of many molecules, ``float64 [M, D]`` (NaN where RDKit fails).

    Args:
        molecules: SMILES strings or RDKit ``Mol`` objects.
        progress: show a tqdm bar (worth it from a few thousand molecules: about 5 ms each).

    Raises:
        InvalidSmilesError: RDKit rejects a SMILES; the message gives its position.
    """
    from rdkit import rdBase

    from graphattn.data.molecule import MoleculeError, _as_mol

    functions = _descriptor_functions()
    items = list(molecules)
    if progress:
        from tqdm.auto import tqdm

        items = tqdm(items, desc="RDKit descriptors", unit="mol")
    rows: list[list[float]] = []
    with rdBase.BlockLogs():
        for index, item in enumerate(items):
            try:
                mol, _ = _as_mol(item)
            except MoleculeError as error:
                raise type(error)(
                    f"molecules[{index}]: {error}", smiles=error.smiles, line=error.line, reason=error.reason
                ) from None
            rows.append([_safe_value(function, mol) for _, function in functions])
    return torch.tensor(rows, dtype=torch.float64).reshape(len(rows), len(functions))


def _safe_value(function: Any, mol: "Mol") -> float:
    try:
        value = float(function(mol))
    except Exception:  # RDKit raises for a few descriptors on unusual molecules
        return math.nan
    return value if math.isfinite(value) else math.nan


@dataclass(frozen=True)
class DescriptorScaler:
    """Empirical-CDF normalization of descriptors, fitted on training molecules.

    Attributes:
        names: the descriptor names the scaler was fitted on (:func:`descriptor_names` of the
            RDKit that computed them).
        quantiles: ``float64 [Q, D]`` (``Q = 101``): the 0th, 1st, ..., 100th percentile of every
            descriptor over the finite training values; a column without finite values is NaN.
    """

    names: tuple[str, ...]
    quantiles: Tensor

    def __post_init__(self) -> None:
        if not isinstance(self.quantiles, Tensor) or self.quantiles.dim() != 2:
            raise ValueError(f"Expected quantiles as a 2-d tensor [Q, D], got {self.quantiles!r}")
        if self.quantiles.size(1) != len(self.names) or self.quantiles.size(0) < 2:
            raise ValueError(
                f"Expected quantiles [Q >= 2, {len(self.names)}] for {len(self.names)} descriptor names, got "
                f"{list(self.quantiles.shape)}"
            )

    @classmethod
    def fit(cls, values: Tensor, names: Sequence[str] | None = None) -> "DescriptorScaler":
        """Fit on ``values`` ``[M, D]`` (raw descriptors of the training molecules, NaN allowed).

        ``names`` defaults to :func:`descriptor_names` (their count must match ``D``).
        """
        values = _as_matrix(values, "values")
        names = tuple(descriptor_names() if names is None else names)
        if len(names) != values.size(1):
            raise ValueError(f"Expected {len(names)} descriptor columns (one per name), got {values.size(1)}")
        if values.size(0) == 0:
            raise ValueError("Expected at least one training molecule to fit the descriptor scaler on, got none")
        levels = torch.linspace(0, 1, NUM_QUANTILES, dtype=torch.float64)
        columns = []
        for column in values.t():
            finite = column[torch.isfinite(column)]
            columns.append(torch.quantile(finite, levels) if finite.numel() else torch.full_like(levels, math.nan))
        return cls(names, torch.stack(columns, dim=1))

    @property
    def num_features(self) -> int:
        """``D``."""
        return len(self.names)

    def transform(self, values: Tensor) -> Tensor:
        """``float32 [M, D]`` in ``[-1, 1]``: ``2 * CDF - 1`` of each value under the training
        distribution; NaN and columns constant (or empty) in training give 0."""
        values = _as_matrix(values, "values")
        if values.size(1) != self.num_features:
            raise ValueError(
                f"Expected {self.num_features} descriptor columns (the scaler's), got {values.size(1)}; compute "
                f"them with the same RDKit version"
            )
        q = self.quantiles  # [Q, D]
        steps = q.size(0) - 1
        out = torch.zeros(values.shape, dtype=torch.float64)
        for d in range(values.size(1)):
            grid = q[:, d].contiguous()
            if torch.isnan(grid[0]) or grid[0] == grid[-1]:
                continue
            column = values[:, d].contiguous()
            below = torch.searchsorted(grid, column, right=False)  # quantiles < value
            upto = torch.searchsorted(grid, column, right=True)  # quantiles <= value
            tied = upto > below
            left = (below - 1).clamp(0, steps)
            right = below.clamp(0, steps)
            span = grid[right] - grid[left]
            fraction = torch.where(span > 0, (column - grid[left]) / span.clamp_min(1e-300), torch.zeros_like(column))
            rank = torch.where(tied, (below + upto - 1).double() / 2, left.double() + fraction)
            rank = torch.where(below == 0, torch.where(tied, rank, torch.zeros_like(rank)), rank)
            rank = torch.where(below > steps, torch.full_like(rank, float(steps)), rank)
            cdf = rank / steps
            out[:, d] = torch.where(torch.isnan(column), torch.zeros_like(cdf), 2 * cdf - 1)
        return out.float()

    def state(self) -> dict[str, Any]:
        """``torch.save``-able (``weights_only``) state; :meth:`from_state` inverts it."""
        return {"set": DESCRIPTOR_SET, "names": list(self.names), "quantiles": self.quantiles.clone()}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "DescriptorScaler":
        if not isinstance(state, dict) or state.get("set") != DESCRIPTOR_SET:
            raise ValueError(f"Expected a {DESCRIPTOR_SET!r} descriptor scaler state, got {state!r:.200}")
        return cls(tuple(state["names"]), state["quantiles"].double())

    def check_names(self) -> None:
        """Raise if this RDKit computes other descriptors than the ones the scaler was fitted on."""
        current = descriptor_names()
        if current != self.names:
            missing = sorted(set(self.names) - set(current))
            extra = sorted(set(current) - set(self.names))
            raise ValueError(
                f"This RDKit computes {len(current)} descriptors, the model was trained on {len(self.names)} "
                f"(missing here: {missing[:10]}, new here: {extra[:10]}); install the RDKit version the model "
                f"was trained with, or retrain"
            )


def _as_matrix(values: Any, name: str) -> Tensor:
    if not isinstance(values, Tensor):
        raise TypeError(f"Expected '{name}' to be a float tensor [M, D], got {type(values).__name__}")
    if values.dim() != 2 or not values.is_floating_point():
        raise ValueError(f"Expected '{name}' to be a float tensor [M, D], got {values.dtype} {list(values.shape)}")
    return values.double()
