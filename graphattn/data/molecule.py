"""Molecules as graphs: SMILES or RDKit molecules -> PyG ``Data`` with categorical atom and bond
features, plus per-atom targets.

Two featurizers:

* ``"ogb"`` (default): the OGB standard features of ``ogb.utils.features``, re-derived from their
  published definition (and checked, in the tests, against every molecule OGB ships for
  ogbg-molesol, -molfreesolv, -molbace and -molbbbp). ``x`` is ``int64 [N, 9]``: atomic number,
  chirality, degree, formal charge, hydrogen count, radical electrons, hybridization,
  aromaticity, ring membership, each an index into its vocabulary (:data:`OGB_ATOM_VOCABULARIES`),
  an unknown value mapping to the vocabulary's last entry (``"misc"``). ``edge_attr`` is
  ``int64 [E, 3]``: bond type, bond stereo, conjugation.
* ``"zinc"``: the 28 atom types and 4 bond types of the benchmarking-gnns ZINC data set
  (:data:`ZINC_ATOM_TYPES`, :data:`ZINC_BOND_TYPES`), in which ZINC results are reported.
  ``x`` is ``int64 [N, 1]``, ``edge_attr`` ``int64 [E, 1]`` (``SINGLE = 1``, ``DOUBLE = 2``,
  ``TRIPLE = 3``; ``0`` means "no bond" and never occurs on an edge). The molecule is kekulized
  first, so aromatic bonds become single or double bonds. An atom type is the element symbol,
  then ``H<n>`` when the atom carries ``n > 0`` hydrogens *and a Kekulé SMILES must write it
  in brackets* (charged, chiral, or with a non-default hydrogen count), then ``+``/``-`` for a
  charge of +1/-1: ``[C@@H]`` is ``'C H1'``, ``[NH3+]`` ``'N H3 +'``, ``[O-]`` ``'O -'``, but the
  pyrrole nitrogen ``[nH]`` (``N`` in a Kekulé SMILES) is plain ``'N'``, as the dictionary has no
  ``'N H1'``. An atom outside the 28 types is an error (use the OGB featurizer for such data).

Every bond becomes two directed edges, in OGB's order: bond ``b`` between atoms ``u`` (begin)
and ``v`` (end) gives edge ``2b = (u, v)`` and edge ``2b + 1 = (v, u)``, both with the bond's
features. ``edge_index`` is ``int64 [2, E]`` with ``E = 2 * num_bonds`` (PyG direction: row 0
source, row 1 target).

A SMILES that RDKit rejects raises :class:`InvalidSmilesError` (naming the line when known and
the string); a molecule that a featurizer cannot represent raises
:class:`UnsupportedMoleculeError`. Both are :class:`MoleculeError`, a ``ValueError``. An empty
SMILES is rejected too: this module never returns a molecule without atoms.

RDKit is imported inside the functions that need it.

Example:
    >>> g = smiles_to_graph("CC(=O)O")
    >>> g.x.shape, g.edge_index.shape, g.edge_attr.shape
    (torch.Size([4, 9]), torch.Size([2, 6]), torch.Size([6, 3]))
    >>> g.edge_index
    tensor([[0, 1, 1, 2, 1, 3],
            [1, 0, 2, 1, 3, 1]])
    >>> smiles_to_graph("C[NH3+]", featurizer="zinc").x.flatten().tolist()  # 'C', 'N H3 +'
    [0, 10]
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Union

import torch
from torch import Tensor

if TYPE_CHECKING:  # pragma: no cover
    from rdkit.Chem import Mol
    from torch_geometric.data import Data

__all__ = [
    "FEATURIZERS",
    "OGB_ATOM_FEATURES",
    "OGB_ATOM_VOCABULARIES",
    "OGB_BOND_FEATURES",
    "OGB_BOND_VOCABULARIES",
    "ZINC_ATOM_TYPES",
    "ZINC_BOND_TYPES",
    "MoleculeError",
    "InvalidSmilesError",
    "UnsupportedMoleculeError",
    "atom_feature_dims",
    "bond_feature_dims",
    "parse_smiles",
    "mol_to_graph",
    "smiles_to_graph",
    "zinc_atom_types",
    "gasteiger_charges",
]

FEATURIZERS = ("ogb", "zinc")

MISC = "misc"

# The OGB vocabularies (ogb/utils/features.py, ``allowable_features``): one tuple per feature,
# values in the order of their indices. RDKit enums are named by their string form.
OGB_ATOM_FEATURES = (
    "atomic_num",
    "chirality",
    "degree",
    "formal_charge",
    "num_hs",
    "num_radical_electrons",
    "hybridization",
    "is_aromatic",
    "is_in_ring",
)
OGB_ATOM_VOCABULARIES: dict[str, tuple[Any, ...]] = {
    "atomic_num": tuple(range(1, 119)) + (MISC,),
    "chirality": ("CHI_UNSPECIFIED", "CHI_TETRAHEDRAL_CW", "CHI_TETRAHEDRAL_CCW", "CHI_OTHER", MISC),
    "degree": tuple(range(11)) + (MISC,),
    "formal_charge": tuple(range(-5, 6)) + (MISC,),
    "num_hs": tuple(range(9)) + (MISC,),
    "num_radical_electrons": tuple(range(5)) + (MISC,),
    "hybridization": ("SP", "SP2", "SP3", "SP3D", "SP3D2", MISC),
    "is_aromatic": (False, True),
    "is_in_ring": (False, True),
}
OGB_BOND_FEATURES = ("bond_type", "bond_stereo", "is_conjugated")
OGB_BOND_VOCABULARIES: dict[str, tuple[Any, ...]] = {
    "bond_type": ("SINGLE", "DOUBLE", "TRIPLE", "AROMATIC", MISC),
    # OGB has no "misc" here (an unlisted value is an error there); RDKit >= 2024.03 adds the
    # atropisomer values STEREOATROPCW / STEREOATROPCCW, which this module maps to STEREOANY.
    "bond_stereo": ("STEREONONE", "STEREOZ", "STEREOE", "STEREOCIS", "STEREOTRANS", "STEREOANY"),
    "is_conjugated": (False, True),
}

# benchmarking-gnns ZINC (atom_dict.pickle / bond_dict.pickle, printed in their issue #42):
# index = position in these tuples.
ZINC_ATOM_TYPES = (
    "C", "O", "N", "F", "C H1", "S", "Cl", "O -", "N H1 +", "Br", "N H3 +", "N H2 +", "N +", "N -",
    "S -", "I", "P", "O H1 +", "N H1 -", "O +", "S +", "P H1", "P H2", "C H2 -", "P +", "S H1 +",
    "C H1 -", "P H1 +",
)  # fmt: skip
ZINC_BOND_TYPES = ("NONE", "SINGLE", "DOUBLE", "TRIPLE")
_ZINC_ATOM_INDEX = {name: i for i, name in enumerate(ZINC_ATOM_TYPES)}

MolOrSmiles = Union[str, "Mol"]


class MoleculeError(ValueError):
    """A molecule that cannot become a graph. Base of :class:`InvalidSmilesError` and
    :class:`UnsupportedMoleculeError`.

    Attributes:
        smiles: the SMILES string (``None`` when the input was an RDKit molecule without one).
        line: 1-based line of the file it came from, when known.
        reason: why, in RDKit's words where RDKit said it.
    """

    def __init__(self, message: str, *, smiles: str | None = None, line: int | None = None, reason: str = ""):
        super().__init__(message)
        self.smiles = smiles
        self.line = line
        self.reason = reason


class InvalidSmilesError(MoleculeError):
    """RDKit rejects the SMILES (syntax, valence, aromaticity), or it has no atoms."""


class UnsupportedMoleculeError(MoleculeError):
    """The molecule is valid but the featurizer cannot represent it (an atom outside the ZINC
    dictionary, an element without Gasteiger parameters, ...)."""


def _where(smiles: str | None, line: int | None) -> str:
    text = f"SMILES {smiles!r}" if smiles is not None else "molecule"
    return f"{text} on line {line}" if line is not None else text


def _check_featurizer(featurizer: str) -> None:
    if featurizer not in FEATURIZERS:
        raise ValueError(
            f"Unknown featurizer {featurizer!r}; expected one of {', '.join(map(repr, FEATURIZERS))} "
            f"('ogb': 9 atom / 3 bond OGB features, 'zinc': the benchmarking-gnns ZINC types)"
        )


def atom_feature_dims(featurizer: str = "ogb") -> list[int]:
    """Vocabulary size of every atom feature (columns of ``x``), for embedding tables.

    Args:
        featurizer: ``"ogb"`` or ``"zinc"``.

    Returns:
        ``ogb``: 9 sizes (as ``ogb.utils.features.get_atom_feature_dims()``); ``zinc``: ``[28]``.

    Example:
        >>> atom_feature_dims()
        [119, 5, 12, 12, 10, 6, 6, 2, 2]
        >>> atom_feature_dims("zinc")
        [28]
    """
    _check_featurizer(featurizer)
    if featurizer == "zinc":
        return [len(ZINC_ATOM_TYPES)]
    return [len(OGB_ATOM_VOCABULARIES[name]) for name in OGB_ATOM_FEATURES]


def bond_feature_dims(featurizer: str = "ogb") -> list[int]:
    """Vocabulary size of every bond feature (columns of ``edge_attr``), for embedding tables.

    Example:
        >>> bond_feature_dims(), bond_feature_dims("zinc")
        ([5, 6, 2], [4])
    """
    _check_featurizer(featurizer)
    if featurizer == "zinc":
        return [len(ZINC_BOND_TYPES)]
    return [len(OGB_BOND_VOCABULARIES[name]) for name in OGB_BOND_FEATURES]


# ----------------------------------------------------------------------------------------------
# parsing
# ----------------------------------------------------------------------------------------------


def parse_smiles(smiles: str, *, line: int | None = None) -> "Mol":
    """Parse a SMILES with RDKit's defaults (``Chem.MolFromSmiles``: sanitized, explicit
    hydrogens removed), as OGB's ``smiles2graph`` does.

    Args:
        smiles: the SMILES string.
        line: 1-based line of the file it came from, named in the error.

    Returns:
        An RDKit ``Mol`` with at least one atom.

    Raises:
        TypeError: ``smiles`` is not a string.
        InvalidSmilesError: RDKit rejects it (the message gives RDKit's reason) or it has no atoms.

    Example:
        >>> parse_smiles("c1ccccc1").GetNumAtoms()
        6
        >>> parse_smiles("C(C)(C)(C)(C)C", line=7)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        graphattn.data.molecule.InvalidSmilesError: RDKit rejects SMILES 'C(C)(C)(C)(C)C' on line 7: Explicit valence ...
    """
    from rdkit import Chem, rdBase

    if not isinstance(smiles, str):
        raise TypeError(f"Expected a SMILES string, got {type(smiles).__name__}: {smiles!r}")
    with rdBase.BlockLogs():
        mol = Chem.MolFromSmiles(smiles)
        if mol is None:
            reason = _rejection_reason(smiles)
        elif mol.GetNumAtoms() == 0:
            mol, reason = None, "it has no atoms"
    if mol is None:
        raise InvalidSmilesError(
            f"RDKit rejects {_where(smiles, line)}: {reason}; fix the SMILES or drop the row (dataset "
            f"loaders skip and report such rows with skip_invalid=True)",
            smiles=smiles,
            line=line,
            reason=reason,
        )
    return mol


def _rejection_reason(smiles: str) -> str:
    """Why ``Chem.MolFromSmiles`` returned ``None``: a syntax error, or the sanitization error."""
    from rdkit import Chem

    if not smiles.strip():
        return "it is empty"
    raw = Chem.MolFromSmiles(smiles, sanitize=False)
    if raw is None:
        return "it is not valid SMILES syntax"
    try:
        Chem.SanitizeMol(raw)
    except Exception as error:  # RDKit raises several exception types (valence, kekulization)
        return " ".join(str(error).split())
    return "RDKit could not build the molecule"


def _as_mol(mol_or_smiles: MolOrSmiles, line: int | None = None) -> tuple["Mol", str | None]:
    from rdkit import Chem

    if isinstance(mol_or_smiles, str):
        return parse_smiles(mol_or_smiles, line=line), mol_or_smiles
    if isinstance(mol_or_smiles, Chem.Mol):
        if mol_or_smiles.GetNumAtoms() == 0:
            raise InvalidSmilesError(
                f"Expected a molecule with at least one atom, got an empty RDKit Mol{_on_line(line)}",
                line=line,
                reason="it has no atoms",
            )
        return mol_or_smiles, None
    raise TypeError(
        f"Expected a SMILES string or an RDKit Mol, got {type(mol_or_smiles).__name__}; "
        f"parse other formats with RDKit first (e.g. Chem.MolFromMolBlock)"
    )


def _on_line(line: int | None) -> str:
    return f" on line {line}" if line is not None else ""


# ----------------------------------------------------------------------------------------------
# OGB features
# ----------------------------------------------------------------------------------------------

_OGB_TABLES: dict[str, dict[Any, int]] | None = None


def _ogb_tables() -> dict[str, dict[Any, int]]:
    """Lookup tables from RDKit enum members (and ints) to OGB indices, built once."""
    global _OGB_TABLES
    if _OGB_TABLES is None:
        from rdkit import Chem

        def by_name(enum: Any, vocabulary: tuple[Any, ...], fallback: int) -> dict[Any, int]:
            names = {name: i for i, name in enumerate(vocabulary)}
            return {member: names.get(name, fallback) for name, member in enum.names.items()}

        stereo = OGB_BOND_VOCABULARIES["bond_stereo"]
        _OGB_TABLES = {
            "chirality": by_name(Chem.ChiralType, OGB_ATOM_VOCABULARIES["chirality"], 4),
            "hybridization": by_name(Chem.HybridizationType, OGB_ATOM_VOCABULARIES["hybridization"], 5),
            "bond_type": by_name(Chem.BondType, OGB_BOND_VOCABULARIES["bond_type"], 4),
            "bond_stereo": by_name(Chem.BondStereo, stereo, stereo.index("STEREOANY")),
        }
    return _OGB_TABLES


def _atoms(mol: "Mol") -> list[Any]:
    """``mol``'s atoms in index order (faster than iterating ``mol.GetAtoms()``)."""
    get = mol.GetAtomWithIdx
    return [get(i) for i in range(mol.GetNumAtoms())]


def _bonds(mol: "Mol") -> list[Any]:
    """``mol``'s bonds in index order (faster than iterating ``mol.GetBonds()``)."""
    get = mol.GetBondWithIdx
    return [get(i) for i in range(mol.GetNumBonds())]


def _bounded(value: int, low: int, high: int, misc: int) -> int:
    """Index of ``value`` in ``range(low, high + 1)``, or ``misc``."""
    return value - low if low <= value <= high else misc


def _ogb_arrays(mol: "Mol") -> tuple[list[list[int]], list[list[int]]]:
    """OGB atom rows ``[N][9]`` and bond rows ``[num_bonds][3]`` as Python lists."""
    tables = _ogb_tables()
    chirality, hybridization = tables["chirality"], tables["hybridization"]
    bond_type, bond_stereo = tables["bond_type"], tables["bond_stereo"]
    atoms = [
        [
            _bounded(atom.GetAtomicNum(), 1, 118, 118),
            chirality[atom.GetChiralTag()],
            _bounded(atom.GetTotalDegree(), 0, 10, 11),
            _bounded(atom.GetFormalCharge(), -5, 5, 11),
            _bounded(atom.GetTotalNumHs(), 0, 8, 9),
            _bounded(atom.GetNumRadicalElectrons(), 0, 4, 5),
            hybridization[atom.GetHybridization()],
            int(atom.GetIsAromatic()),
            int(atom.IsInRing()),
        ]
        for atom in _atoms(mol)
    ]
    bonds = [
        [bond_type[bond.GetBondType()], bond_stereo[bond.GetStereo()], int(bond.GetIsConjugated())]
        for bond in _bonds(mol)
    ]
    return atoms, bonds


# ----------------------------------------------------------------------------------------------
# ZINC features
# ----------------------------------------------------------------------------------------------


def _kekulized(mol: "Mol", smiles: str | None, line: int | None) -> "Mol":
    from rdkit import Chem

    kekule = Chem.Mol(mol)
    try:
        Chem.Kekulize(kekule, clearAromaticFlags=True)
    except Exception as error:
        reason = " ".join(str(error).split())
        raise UnsupportedMoleculeError(
            f"RDKit cannot kekulize {_where(smiles, line)} ({reason}); the ZINC featurizer needs a "
            f"Kekulé structure, use featurizer='ogb' for this molecule",
            smiles=smiles,
            line=line,
            reason=reason,
        ) from None
    return kekule


def _zinc_key(atom: Any) -> str:
    """The benchmarking-gnns type name of an atom of a kekulized molecule (see the module doc)."""
    key = atom.GetSymbol()
    hydrogens = atom.GetTotalNumHs()
    if hydrogens and atom.GetSmarts().startswith("["):  # the Kekulé SMILES writes it in brackets
        key += f" H{hydrogens}"
    charge = atom.GetFormalCharge()
    if charge:
        key += " " + ("+" if charge > 0 else "-") * abs(charge)
    return key


def zinc_atom_types(mol_or_smiles: MolOrSmiles) -> list[str]:
    """The benchmarking-gnns ZINC type name of every atom (whether in the dictionary or not).

    Args:
        mol_or_smiles: a SMILES string or an RDKit ``Mol``.

    Returns:
        One name per atom, in atom order, e.g. ``'C'``, ``'C H1'``, ``'N H3 +'``.

    Example:
        >>> zinc_atom_types("C[C@@H](N)c1cc[nH]c1")
        ['C', 'C H1', 'N', 'C', 'C', 'C', 'N', 'C']
        >>> zinc_atom_types("CC(=O)[O-]")
        ['C', 'C', 'O', 'O -']
    """
    mol, smiles = _as_mol(mol_or_smiles)
    return [_zinc_key(atom) for atom in _atoms(_kekulized(mol, smiles, None))]


_ZINC_BOND_TABLE: dict[Any, int] | None = None


def _zinc_bond_table() -> dict[Any, int]:
    """RDKit bond type -> ZINC bond index (SINGLE 1, DOUBLE 2, TRIPLE 3), built once."""
    global _ZINC_BOND_TABLE
    if _ZINC_BOND_TABLE is None:
        from rdkit import Chem

        _ZINC_BOND_TABLE = {getattr(Chem.BondType, name): i for i, name in enumerate(ZINC_BOND_TYPES) if i}
    return _ZINC_BOND_TABLE


def _zinc_arrays(mol: "Mol", smiles: str | None, line: int | None) -> tuple[list[list[int]], list[list[int]]]:
    kekule = _kekulized(mol, smiles, line)
    atoms = []
    for atom in _atoms(kekule):
        key = _zinc_key(atom)
        index = _ZINC_ATOM_INDEX.get(key)
        if index is None:
            reason = f"atom {atom.GetIdx()} has type {key!r}, which is not one of the 28 ZINC atom types"
            raise UnsupportedMoleculeError(
                f"Cannot featurize {_where(smiles, line)} with the ZINC dictionary: {reason} "
                f"({', '.join(ZINC_ATOM_TYPES)}); use featurizer='ogb' for molecules outside ZINC",
                smiles=smiles,
                line=line,
                reason=reason,
            )
        atoms.append([index])
    bond_table = _zinc_bond_table()
    bonds = []
    for bond in _bonds(kekule):
        kind = bond.GetBondType()
        index = bond_table.get(kind)
        if index is None:
            reason = f"bond {bond.GetIdx()} is {kind}, expected SINGLE, DOUBLE or TRIPLE"
            raise UnsupportedMoleculeError(
                f"Cannot featurize {_where(smiles, line)} with the ZINC dictionary: {reason}; "
                f"use featurizer='ogb'",
                smiles=smiles,
                line=line,
                reason=reason,
            )
        bonds.append([index])
    return atoms, bonds


# ----------------------------------------------------------------------------------------------
# graphs
# ----------------------------------------------------------------------------------------------


def _graph_tensors(
    mol: "Mol", featurizer: str, smiles: str | None = None, line: int | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """``(x [N, F], edge_index [2, 2B], edge_attr [2B, Fb])`` int64, the work of :func:`mol_to_graph`."""
    if featurizer == "ogb":
        atoms, bonds = _ogb_arrays(mol)
    else:
        atoms, bonds = _zinc_arrays(mol, smiles, line)
    num_bond_features = len(OGB_BOND_FEATURES) if featurizer == "ogb" else 1
    x = torch.tensor(atoms, dtype=torch.long)
    if bonds:
        ends = torch.tensor([(b.GetBeginAtomIdx(), b.GetEndAtomIdx()) for b in _bonds(mol)], dtype=torch.long)
        # bond b -> edges 2b = (u, v) and 2b + 1 = (v, u)
        edge_index = torch.stack([ends, ends.flip(1)], dim=1).reshape(-1, 2).t().contiguous()
        edge_attr = torch.tensor(bonds, dtype=torch.long).repeat_interleave(2, dim=0)
    else:
        edge_index = torch.empty(2, 0, dtype=torch.long)
        edge_attr = torch.empty(0, num_bond_features, dtype=torch.long)
    return x, edge_index, edge_attr


def mol_to_graph(
    mol: "Mol", *, featurizer: str = "ogb", smiles: str | None = None, line: int | None = None
) -> "Data":
    """An RDKit molecule as a PyG graph (one node per atom in RDKit's atom order, two directed
    edges per bond).

    Args:
        mol: an RDKit ``Mol`` with at least one atom (hydrogens that are atoms of ``mol`` become
            nodes; ``parse_smiles`` removes them, as OGB does).
        featurizer: ``"ogb"`` (9 atom, 3 bond features) or ``"zinc"`` (1 and 1); see the module
            docstring.
        smiles: stored as ``data.smiles`` and named in errors.
        line: 1-based line of the file the molecule came from, named in errors.

    Returns:
        ``Data(x [N, F] int64, edge_index [2, E] int64, edge_attr [E, Fb] int64, smiles)`` with
        ``E = 2 * num_bonds``; ``F, Fb = 9, 3`` for ``ogb`` and ``1, 1`` for ``zinc``.

    Raises:
        TypeError: ``mol`` is not an RDKit ``Mol``.
        InvalidSmilesError: ``mol`` has no atoms.
        UnsupportedMoleculeError: the ZINC featurizer meets an atom or bond outside its dictionary.

    Example:
        >>> from rdkit import Chem
        >>> g = mol_to_graph(Chem.MolFromSmiles("C=O"))
        >>> g.x.tolist(), g.edge_attr.tolist()
        ([[5, 0, 3, 5, 2, 0, 1, 0, 0], [7, 0, 1, 5, 0, 0, 1, 0, 0]], [[1, 0, 0], [1, 0, 0]])
    """
    from rdkit import Chem
    from torch_geometric.data import Data

    _check_featurizer(featurizer)
    if not isinstance(mol, Chem.Mol):
        raise TypeError(
            f"Expected an RDKit Mol, got {type(mol).__name__}; for a SMILES string use smiles_to_graph"
        )
    if mol.GetNumAtoms() == 0:
        raise InvalidSmilesError(
            f"Expected a molecule with at least one atom, got an empty {_where(smiles, line)}",
            smiles=smiles,
            line=line,
            reason="it has no atoms",
        )
    x, edge_index, edge_attr = _graph_tensors(mol, featurizer, smiles, line)
    data = Data(x=x, edge_index=edge_index, edge_attr=edge_attr, num_nodes=x.shape[0])
    if smiles is not None:
        data.smiles = smiles
    return data


def smiles_to_graph(smiles: str, *, featurizer: str = "ogb", line: int | None = None) -> "Data":
    """A SMILES string as a PyG graph: :func:`parse_smiles` then :func:`mol_to_graph`.

    With ``featurizer="ogb"`` the result equals OGB's ``smiles2graph(smiles)`` (``x`` =
    ``node_feat``, ``edge_attr`` = ``edge_feat``, same ``edge_index``).

    Args:
        smiles: the SMILES string.
        featurizer: ``"ogb"`` or ``"zinc"``.
        line: 1-based line of the file it came from, named in errors.

    Returns:
        ``Data(x [N, F], edge_index [2, E], edge_attr [E, Fb], smiles)``, all int64.

    Raises:
        InvalidSmilesError: RDKit rejects the SMILES, or it has no atoms.
        UnsupportedMoleculeError: see :func:`mol_to_graph`.

    Example:
        >>> g = smiles_to_graph("c1ccccc1", featurizer="zinc")
        >>> g.x.flatten().tolist(), g.edge_attr.flatten().tolist()[::2]  # kekulized: 1 = single, 2 = double
        ([0, 0, 0, 0, 0, 0], [1, 2, 1, 2, 1, 2])
        >>> smiles_to_graph("")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        graphattn.data.molecule.InvalidSmilesError: RDKit rejects SMILES '': it has no atoms; fix the SMILES or ...
    """
    _check_featurizer(featurizer)
    mol = parse_smiles(smiles, line=line)
    return mol_to_graph(mol, featurizer=featurizer, smiles=smiles, line=line)


# ----------------------------------------------------------------------------------------------
# per-atom targets
# ----------------------------------------------------------------------------------------------


def gasteiger_charges(
    mol_or_smiles: MolOrSmiles, *, include_hydrogens: bool = True, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Gasteiger partial charges from RDKit (``AllChem.ComputeGasteigerCharges``), one per atom
    (per node of :func:`mol_to_graph`), as a node-level target.

    Args:
        mol_or_smiles: a SMILES string or an RDKit ``Mol`` (not modified: RDKit works on a copy).
        include_hydrogens: add to each atom the charge of its implicit hydrogens (RDKit's
            ``_GasteigerHCharge``), so that the charges sum to the molecule's net formal charge;
            ``False`` gives RDKit's heavy-atom ``_GasteigerCharge`` alone.
        dtype: floating dtype of the result (RDKit computes in float64).

    Returns:
        ``[N]`` tensor of charges in units of the elementary charge.

    Raises:
        InvalidSmilesError: RDKit rejects the SMILES.
        UnsupportedMoleculeError: RDKit gives NaN or infinity for an atom (an element without
            Gasteiger parameters, e.g. Se); the message names the atom.

    Example:
        >>> q = gasteiger_charges("CC(=O)[O-]")
        >>> q.shape, round(float(q.sum()), 6)
        (torch.Size([4]), -1.0)
    """
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol, smiles = _as_mol(mol_or_smiles)
    mol = Chem.Mol(mol)
    AllChem.ComputeGasteigerCharges(mol)
    charges = []
    for atom in _atoms(mol):
        charge = atom.GetDoubleProp("_GasteigerCharge")
        if include_hydrogens:
            charge += atom.GetDoubleProp("_GasteigerHCharge")
        if not math.isfinite(charge):
            reason = (
                f"RDKit's Gasteiger charge of atom {atom.GetIdx()} ({atom.GetSymbol()}) is {charge}"
                f"{_gasteiger_failure(mol)}"
            )
            raise UnsupportedMoleculeError(
                f"Cannot compute Gasteiger charges for {_where(smiles, None)}: {reason}; drop the molecule "
                f"or use another per-atom target",
                smiles=smiles,
                reason=reason,
            )
        charges.append(charge)
    return torch.tensor(charges, dtype=torch.float64).to(dtype)


def _gasteiger_failure(mol: "Mol") -> str:
    """RDKit's own words on why Gasteiger charges fail (an atom without parameters), if it says."""
    from rdkit.Chem import AllChem

    try:
        AllChem.ComputeGasteigerCharges(mol, throwOnParamFailure=True)
    except Exception as error:
        return " (" + " ".join(str(error).replace("ERROR:", "").split()) + ")"
    return ""
