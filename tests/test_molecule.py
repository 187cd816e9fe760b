"""graphattn.data.molecule: OGB features (checked against every molecule OGB ships for four data
sets), the benchmarking-gnns ZINC dictionary, errors, and Gasteiger charges."""
from __future__ import annotations

import csv
import gzip
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("rdkit")
pytest.importorskip("torch_geometric")

from rdkit import Chem  # noqa: E402
from rdkit.Chem import AllChem  # noqa: E402

from graphattn.data.molecule import (  # noqa: E402
    OGB_ATOM_VOCABULARIES,
    ZINC_ATOM_TYPES,
    InvalidSmilesError,
    MoleculeError,
    UnsupportedMoleculeError,
    atom_feature_dims,
    bond_feature_dims,
    gasteiger_charges,
    mol_to_graph,
    parse_smiles,
    smiles_to_graph,
    zinc_atom_types,
)


def shared_data() -> Path | None:
    """The shared data folder (../shared/data next to the repository, or $GRAPHATTN_SHARED_DATA)."""
    for candidate in (os.environ.get("GRAPHATTN_SHARED_DATA"), Path(__file__).parents[2] / "shared" / "data"):
        if candidate and (Path(candidate) / "molecules").is_dir():
            return Path(candidate)
    return None


def molecules_dir() -> Path:
    root = shared_data()
    if root is None:
        pytest.skip("the shared data folder (../shared/data or $GRAPHATTN_SHARED_DATA) is absent")
    return root / "molecules"


def read_int_csv(path: Path) -> np.ndarray:
    return np.loadtxt(gzip.open(path, "rt"), delimiter=",", dtype=np.int64, ndmin=2)


# ----------------------------------------------------------------------------------------------
# OGB features
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["molesol", "molfreesolv", "molbace", "molbbbp"])
def test_ogb_features_match_ogb_raw_files_for_every_molecule(name):
    folder = molecules_dir() / "ogb_scaffold_splits" / f"ogbg_{name}"
    with gzip.open(folder / "mapping" / "mol.csv.gz", "rt") as handle:
        smiles = [row["smiles"] for row in csv.DictReader(handle)]
    node_feat = read_int_csv(folder / "raw" / "node-feat.csv.gz")
    edge_feat = read_int_csv(folder / "raw" / "edge-feat.csv.gz")
    edges = read_int_csv(folder / "raw" / "edge.csv.gz")  # one row per bond: (u, v), local ids
    num_nodes = read_int_csv(folder / "raw" / "num-node-list.csv.gz").ravel()
    num_edges = read_int_csv(folder / "raw" / "num-edge-list.csv.gz").ravel()
    assert len(smiles) == len(num_nodes) == len(num_edges)

    xs, forward, backward, attrs, reverse_attrs = [], [], [], [], []
    for text in smiles:
        graph = smiles_to_graph(text)
        xs.append(graph.x)
        forward.append(graph.edge_index[:, 0::2])
        backward.append(graph.edge_index[:, 1::2])
        attrs.append(graph.edge_attr[0::2])
        reverse_attrs.append(graph.edge_attr[1::2])
    assert [len(x) for x in xs] == num_nodes.tolist()
    assert [e.shape[1] for e in forward] == num_edges.tolist()
    np.testing.assert_array_equal(torch.cat(xs).numpy(), node_feat)
    np.testing.assert_array_equal(torch.cat(forward, dim=1).t().numpy(), edges)
    np.testing.assert_array_equal(torch.cat(backward, dim=1).numpy(), torch.cat(forward, dim=1).flip(0).numpy())
    np.testing.assert_array_equal(torch.cat(attrs).numpy(), edge_feat)
    np.testing.assert_array_equal(torch.cat(reverse_attrs).numpy(), edge_feat)


def test_ogb_published_example():
    # the worked example in the comments of ogb/utils/features.py
    graph = smiles_to_graph("Cl[C@H](/C=C/C)Br")
    assert graph.x[1].tolist() == [5, 2, 4, 5, 1, 0, 2, 0, 0]  # the chiral carbon
    assert graph.edge_attr[2 * 2].tolist() == [1, 2, 0]  # bond 2: the E double bond
    assert graph.x.dtype == graph.edge_attr.dtype == graph.edge_index.dtype == torch.long


def test_ogb_hand_checked_values_and_misc_fallbacks():
    methane = smiles_to_graph("C").x[0].tolist()
    assert methane == [5, 0, 4, 5, 4, 0, 2, 0, 0]  # C, no chirality, degree 4 (with H), 4 H, sp3
    benzene = smiles_to_graph("c1ccccc1")
    assert benzene.x[0].tolist() == [5, 0, 3, 5, 1, 0, 1, 1, 1]
    assert benzene.edge_attr[0].tolist() == [3, 0, 1]  # aromatic, no stereo, conjugated
    assert smiles_to_graph("[CH3]").x[0].tolist()[5] == 1  # one radical electron
    assert smiles_to_graph("[O-]C").x[0].tolist()[3] == 4  # charge -1 -> index 4
    sodium = smiles_to_graph("[Na+].[Cl-]")
    assert sodium.x[0].tolist() == [10, 0, 0, 6, 0, 0, 5, 0, 0]  # hybridization S -> misc (5)
    assert sodium.edge_index.shape == (2, 0) and sodium.edge_attr.shape == (0, 3)
    dummy = smiles_to_graph("*C")
    assert dummy.x[0, 0] == len(OGB_ATOM_VOCABULARIES["atomic_num"]) - 1  # atomic number 0 -> misc
    square_planar = smiles_to_graph("[Pt@SP1](Cl)(Cl)(N)N")
    assert square_planar.x[0, 1] == 4  # CHI_SQUAREPLANAR is not in OGB's list -> misc


def test_edges_are_both_directions_of_each_bond_in_ogb_order():
    mol = Chem.MolFromSmiles("OCC=C")
    graph = mol_to_graph(mol)
    expected = []
    for bond in mol.GetBonds():
        u, v = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
        expected += [(u, v), (v, u)]
    assert [tuple(edge) for edge in graph.edge_index.t().tolist()] == expected
    assert torch.equal(graph.edge_attr[0::2], graph.edge_attr[1::2])
    assert graph.num_nodes == 4 and "smiles" not in graph


def test_mol_with_explicit_hydrogens_keeps_them_as_nodes():
    graph = mol_to_graph(Chem.AddHs(Chem.MolFromSmiles("C")), smiles="C")
    assert graph.num_nodes == 5 and graph.edge_index.shape == (2, 8)
    assert graph.smiles == "C"


def test_feature_dims():
    assert atom_feature_dims() == [119, 5, 12, 12, 10, 6, 6, 2, 2]
    assert bond_feature_dims() == [5, 6, 2]
    assert atom_feature_dims("zinc") == [28] and bond_feature_dims("zinc") == [4]
    graph = smiles_to_graph("CC(=O)Nc1ccc(O)cc1")
    assert (graph.x < torch.tensor(atom_feature_dims())).all()
    assert (graph.edge_attr < torch.tensor(bond_feature_dims())).all()
    with pytest.raises(ValueError, match="Unknown featurizer 'morgan'.*expected one of 'ogb', 'zinc'"):
        atom_feature_dims("morgan")
    with pytest.raises(ValueError, match="Unknown featurizer"):
        smiles_to_graph("C", featurizer="morgan")


# ----------------------------------------------------------------------------------------------
# errors
# ----------------------------------------------------------------------------------------------


def test_invalid_smiles_raises_with_line_string_and_reason():
    message = r"RDKit rejects SMILES 'c1cccc1' on line 12: Can't kekulize"
    with pytest.raises(InvalidSmilesError, match=message) as info:
        smiles_to_graph("c1cccc1", line=12)
    assert isinstance(info.value, ValueError) and isinstance(info.value, MoleculeError)
    assert info.value.smiles == "c1cccc1" and info.value.line == 12
    assert info.value.reason.startswith("Can't kekulize")
    with pytest.raises(InvalidSmilesError, match=r"'N\(C\)\(C\)\(C\)\(C\)C'.*Explicit valence"):
        parse_smiles("N(C)(C)(C)(C)C")
    with pytest.raises(InvalidSmilesError, match="not valid SMILES syntax"):
        smiles_to_graph("C1CC")
    with pytest.raises(InvalidSmilesError, match="no atoms"):
        smiles_to_graph("")
    with pytest.raises(InvalidSmilesError, match="empty"):
        smiles_to_graph("   ")
    with pytest.raises(TypeError, match="Expected a SMILES string, got int"):
        smiles_to_graph(42)
    with pytest.raises(InvalidSmilesError, match="at least one atom"):
        mol_to_graph(Chem.Mol())
    with pytest.raises(TypeError, match="Expected an RDKit Mol, got str; for a SMILES string use smiles_to_graph"):
        mol_to_graph("CCO")


# ----------------------------------------------------------------------------------------------
# ZINC dictionary
# ----------------------------------------------------------------------------------------------

HAND_CHECKED_ZINC = [
    ("[NH3+]CC(=O)[O-]", ["N H3 +", "C", "C", "O", "O -"]),
    ("c1cc[nH]c1", ["C", "C", "C", "N", "C"]),  # pyrrole N-H is written 'N' in a Kekule SMILES
    ("C[C@@H](O)CC", ["C", "C H1", "O", "C", "C"]),
    ("c1cc[nH+]cc1", ["C", "C", "C", "N H1 +", "C", "C"]),
    ("C[NH2+]C", ["C", "N H2 +", "C"]),
    ("C[N+](C)(C)C", ["C", "N +", "C", "C", "C"]),
    ("[O-][N+](=O)c1ccccc1", ["O -", "N +", "O", "C", "C", "C", "C", "C", "C"]),
    ("CS(=O)(=O)[N-]C", ["C", "S", "O", "O", "N -", "C"]),
    ("CC[NH-]", ["C", "C", "N H1 -"]),
    ("C[S-]", ["C", "S -"]),
    ("C[S+](C)C", ["C", "S +", "C", "C"]),
    ("C[SH+]C", ["C", "S H1 +", "C"]),
    ("c1cc[o+]cc1", ["C", "C", "C", "O +", "C", "C"]),
    ("C[OH+]C", ["C", "O H1 +", "C"]),
    ("CP(C)C", ["C", "P", "C", "C"]),
    ("C[PH](C)=O", ["C", "P H1", "C", "O"]),
    ("C[PH2]=O", ["C", "P H2", "O"]),
    ("C[P+](C)(C)C", ["C", "P +", "C", "C", "C"]),
    ("C[PH+](C)C", ["C", "P H1 +", "C", "C"]),
    ("[CH2-]C", ["C H2 -", "C"]),
    ("C[CH-]C", ["C", "C H1 -", "C"]),
    ("FC(Cl)(Br)I", ["F", "C", "Cl", "Br", "I"]),
]


@pytest.mark.parametrize("smiles, expected", HAND_CHECKED_ZINC)
def test_zinc_atom_types_hand_checked(smiles, expected):
    assert zinc_atom_types(smiles) == expected
    graph = smiles_to_graph(smiles, featurizer="zinc")
    assert graph.x.shape == (len(expected), 1) and graph.x.dtype == torch.long
    assert graph.x.flatten().tolist() == [ZINC_ATOM_TYPES.index(name) for name in expected]


def test_zinc_atom_types_cover_the_whole_dictionary():
    assert len(ZINC_ATOM_TYPES) == 28 and len(set(ZINC_ATOM_TYPES)) == 28
    seen = {name for _, names in HAND_CHECKED_ZINC for name in names}
    assert seen == set(ZINC_ATOM_TYPES)
    assert ZINC_ATOM_TYPES[:5] == ("C", "O", "N", "F", "C H1") and ZINC_ATOM_TYPES[-1] == "P H1 +"


def test_zinc_bonds_are_kekulized_single_double_triple():
    graph = smiles_to_graph("C=CC#N", featurizer="zinc")
    assert graph.edge_attr.shape == (6, 1)
    assert graph.edge_attr.flatten().tolist() == [2, 2, 1, 1, 3, 3]
    benzene = smiles_to_graph("c1ccccc1", featurizer="zinc").edge_attr[0::2].flatten()
    assert sorted(benzene.tolist()) == [1, 1, 1, 2, 2, 2]


def test_zinc_unknown_atom_raises():
    message = r"atom 0 has type 'Na \+', which is not one of the 28 ZINC atom types.*featurizer='ogb'"
    with pytest.raises(UnsupportedMoleculeError, match=message):
        smiles_to_graph("[Na+].[Cl-]", featurizer="zinc", line=3)
    with pytest.raises(UnsupportedMoleculeError, match="'Si'") as info:
        smiles_to_graph("C[Si](C)(C)C", featurizer="zinc", line=3)
    assert info.value.line == 3 and "on line 3" in str(info.value)


def _zinc_types_by_smiles_round_trip(smiles: str) -> list[str]:
    """Independent reference: write a Kekule SMILES, read it back unsanitized, and take each atom's
    bracket hydrogens and charge as written."""
    mol = Chem.MolFromSmiles(smiles)
    Chem.Kekulize(mol, clearAromaticFlags=True)
    text = Chem.MolToSmiles(mol, kekuleSmiles=True, canonical=False)
    order = [int(v) for v in re.findall(r"\d+", mol.GetProp("_smilesAtomOutputOrder"))]
    written = Chem.MolFromSmiles(text, sanitize=False)
    names = [""] * mol.GetNumAtoms()
    for position, atom in enumerate(written.GetAtoms()):
        hydrogens, charge = atom.GetNumExplicitHs(), atom.GetFormalCharge()
        name = atom.GetSymbol() + (f" H{hydrogens}" if hydrogens else "")
        names[order[position]] = name + ({1: " +", -1: " -"}[charge] if charge else "")
    return names


def test_zinc12k_every_molecule_has_known_types():
    path = molecules_dir() / "zinc12k" / "smiles_score.csv"
    with open(path) as handle:
        smiles = [row["SMILES"] for row in csv.DictReader(handle)]
    assert len(smiles) == 12000
    counts = torch.zeros(28, dtype=torch.long)
    num_nodes = num_edges = 0
    for line, text in enumerate(smiles, 2):
        graph = smiles_to_graph(text, featurizer="zinc", line=line)  # raises on an unknown type
        counts += torch.bincount(graph.x.flatten(), minlength=28)
        num_nodes += graph.num_nodes
        num_edges += graph.edge_index.shape[1]
        assert graph.edge_attr.min() >= 1 and graph.edge_attr.max() <= 3
    # benchmarking-gnns reports 23.2 nodes and 49.8 directed edges per ZINC molecule
    assert num_nodes / 12000 == pytest.approx(23.2, abs=0.05)
    assert num_edges / 12000 == pytest.approx(49.8, abs=0.1)
    assert counts[ZINC_ATOM_TYPES.index("C")] > counts[ZINC_ATOM_TYPES.index("O")] > 0
    for text in smiles[::40]:  # 300 molecules against the round-trip reference
        assert zinc_atom_types(text) == _zinc_types_by_smiles_round_trip(text), text


# ----------------------------------------------------------------------------------------------
# Gasteiger charges
# ----------------------------------------------------------------------------------------------


def _rdkit_gasteiger(smiles: str) -> tuple[list[float], list[float]]:
    mol = Chem.MolFromSmiles(smiles)
    AllChem.ComputeGasteigerCharges(mol)
    heavy = [atom.GetDoubleProp("_GasteigerCharge") for atom in mol.GetAtoms()]
    hydrogens = [atom.GetDoubleProp("_GasteigerHCharge") for atom in mol.GetAtoms()]
    return heavy, hydrogens


@pytest.mark.parametrize(
    "smiles, net_charge",
    [
        ("CCO", 0),
        ("CC(=O)[O-]", -1),
        ("C[NH3+]", 1),
        ("c1ccccc1O", 0),
        ("[O-][N+](=O)c1ccccc1", 0),
        ("CC[B-](F)(F)F", -1),
    ],
)
def test_gasteiger_charges_equal_rdkit_and_sum_to_net_charge(smiles, net_charge):
    heavy, hydrogens = _rdkit_gasteiger(smiles)
    charges = gasteiger_charges(smiles, dtype=torch.float64)
    assert charges.shape == (smiles_to_graph(smiles).num_nodes,)
    heavy, hydrogens = torch.tensor(heavy, dtype=torch.float64), torch.tensor(hydrogens, dtype=torch.float64)
    torch.testing.assert_close(charges, heavy + hydrogens, rtol=0, atol=1e-12)
    heavy_only = gasteiger_charges(smiles, include_hydrogens=False, dtype=torch.float64)
    torch.testing.assert_close(heavy_only, heavy, rtol=0, atol=0)
    assert float(charges.sum()) == pytest.approx(net_charge, abs=1e-6)
    assert gasteiger_charges(smiles).dtype == torch.float32


def test_gasteiger_charges_leave_the_input_mol_untouched_and_reject_nan():
    mol = Chem.MolFromSmiles("CC(=O)O")
    gasteiger_charges(mol)
    assert not mol.GetAtomWithIdx(0).HasProp("_GasteigerCharge")
    message = r"'C\[Se\]C'.* is nan \(No Gasteiger Partial Charge parameters for Element: Se"
    with pytest.raises(UnsupportedMoleculeError, match=message):
        gasteiger_charges("C[Se]C")
    with pytest.raises(InvalidSmilesError, match="'C1CC'"):
        gasteiger_charges("C1CC")
    with pytest.raises(TypeError, match="SMILES string or an RDKit Mol, got list"):
        gasteiger_charges(["C"])
