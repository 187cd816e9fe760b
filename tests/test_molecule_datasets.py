"""graphattn.data.molecule_datasets: CSV loading (labels, invalid rows, cache), named loaders, the
NCI set shipped with RDKit, and the splits (OGB's scaffold split reproduced exactly)."""
from __future__ import annotations

import csv
import gzip
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("rdkit")
pytest.importorskip("torch_geometric")

from rdkit import Chem, RDConfig  # noqa: E402
from rdkit.Chem import rdMolDescriptors  # noqa: E402
from rdkit.Chem.Scaffolds import MurckoScaffold  # noqa: E402

from graphattn.data import molecule_datasets as md  # noqa: E402
from graphattn.data.molecule import InvalidSmilesError, UnsupportedMoleculeError, smiles_to_graph  # noqa: E402
from graphattn.data.molecule_datasets import (  # noqa: E402
    DATASETS,
    MoleculeDataset,
    SkippedRow,
    Split,
    index_split,
    load_molecule_csv,
    murcko_scaffold,
    random_split,
    scaffold_split,
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


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def truncated_copy(source: Path, target: Path, rows: int) -> Path:
    """The header and the first ``rows`` data rows of a CSV (or .csv.gz)."""
    opener = gzip.open if source.suffix == ".gz" else open
    with opener(source, "rt", newline="") as handle:
        lines = [next(handle) for _ in range(rows + 1)]
    with opener(target, "wt", newline="") as handle:
        handle.writelines(lines)
    return target


# ----------------------------------------------------------------------------------------------
# scaffold split
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["molesol", "molfreesolv", "molbace", "molbbbp"])
def test_scaffold_split_reproduces_ogb_split_files(name):
    folder = molecules_dir() / "ogb_scaffold_splits" / f"ogbg_{name}"
    with gzip.open(folder / "mapping" / "mol.csv.gz", "rt") as handle:
        smiles = [row["smiles"] for row in csv.DictReader(handle)]
    expected = index_split(folder / "split" / "scaffold", num_rows=len(smiles))
    split = scaffold_split(smiles)
    for ours, theirs in zip(split, expected):
        assert torch.equal(ours, theirs)


def test_scaffold_split_hiv_gives_ogb_counts():
    path = molecules_dir() / "hiv.csv.gz"
    with gzip.open(path, "rt") as handle:
        smiles = [row["smiles"] for row in csv.DictReader(handle)]
    assert len(smiles) == 41127
    split = scaffold_split(smiles, on_invalid="own_group")
    assert split.sizes() == (32901, 4113, 4113)
    assert torch.equal(torch.cat(list(split)).sort().values, torch.arange(41127))
    with pytest.raises(InvalidSmilesError, match=r"at index 137 .*on_invalid='own_group'"):
        scaffold_split(smiles[:200])


def test_scaffold_split_hand_computed_order_and_ties():
    smiles = [
        "c1ccccc1O",  # 0 benzene
        "C1CC1C",  # 1 cyclopropane
        "c1ccccc1N",  # 2 benzene
        "CCO",  # 3 '' (acyclic)
        "C1CCCCC1",  # 4 cyclohexane
        "CCN",  # 5 ''
        "C1CC1O",  # 6 cyclopropane
        "c1ccncc1",  # 7 pyridine
    ]
    # groups sorted by (size, first index), descending, so equal sizes go later-first-index first:
    # '' (2, 3), cyclopropane (2, 1), benzene (2, 0), pyridine (1, 7), cyclohexane (1, 4).
    # Cutoffs: train <= 0.5 * 8 = 4, train + valid <= 0.75 * 8 = 6.
    split = scaffold_split(smiles, (0.5, 0.25, 0.25))
    assert split.train.tolist() == [1, 3, 5, 6]  # '' group (3, 5), then cyclopropane (1, 6)
    assert split.valid.tolist() == [0, 2]  # benzene: 4 + 2 <= 6
    assert split.test.tolist() == [4, 7]
    groups = {murcko_scaffold(s) for s in smiles}
    assert groups == {"c1ccccc1", "C1CC1", "", "C1CCCCC1", "c1ccncc1"}


def test_murcko_scaffold_matches_rdkit_and_keeps_chirality():
    smiles = "CCc1ccccc1[C@H](C2CC2)C3CCC3"  # the chiral linker carbon stays in the scaffold
    assert murcko_scaffold(smiles) == MurckoScaffold.MurckoScaffoldSmiles(smiles=smiles, includeChirality=True)
    assert murcko_scaffold(smiles) == "c1ccc([C@@H](C2CCC2)C2CC2)cc1"
    assert murcko_scaffold(smiles, include_chirality=False) == "c1ccc(C(C2CCC2)C2CC2)cc1"
    with pytest.raises(InvalidSmilesError):
        murcko_scaffold("C1CC")


def test_split_argument_errors():
    with pytest.raises(ValueError, match=r"sum to 1, got \(0.8, 0.1, 0.2\)"):
        random_split(10, (0.8, 0.1, 0.2))
    with pytest.raises(ValueError, match="three numbers"):
        scaffold_split(["C"], (0.9, 0.1))
    with pytest.raises(ValueError, match="on_invalid='error' or 'own_group'"):
        scaffold_split(["C"], on_invalid="skip")
    with pytest.raises(ValueError, match="non-negative int"):
        random_split(-1)


# ----------------------------------------------------------------------------------------------
# random and index splits
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 7, 10, 1128, 4200])
def test_random_split_sizes_cover_and_determinism(n):
    split = random_split(n, seed=3)
    n_train, n_train_valid = int(0.8 * n), int(0.9 * n)  # chemprop's rule
    assert split.sizes() == (n_train, n_train_valid - n_train, n - n_train_valid)
    assert torch.equal(torch.cat(list(split)).sort().values, torch.arange(n))
    again = random_split(n, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(split, again))
    assert all(torch.equal(part, part.sort().values) for part in split)


def test_random_split_seeds_differ_and_follow_randperm():
    a, b = random_split(100, seed=0), random_split(100, seed=1)
    assert not torch.equal(a.train, b.train)
    order = torch.randperm(100, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.test, order[90:].sort().values)
    assert random_split(10, (0.5, 0.5, 0.0)).sizes() == (5, 5, 0)


def test_index_split_reads_zinc_file():
    split = index_split(molecules_dir() / "zinc12k" / "indexes_train_val_test.csv", num_rows=12000)
    assert split.sizes() == (10000, 1000, 1000)
    assert torch.equal(split.train, torch.arange(10000))
    assert torch.equal(split.valid, torch.arange(10000, 11000))
    assert torch.equal(split.test, torch.arange(11000, 12000))
    same = md.zinc12k_split(molecules_dir() / "zinc12k")
    assert all(torch.equal(x, y) for x, y in zip(split, same))


def test_index_split_errors(tmp_path):
    assert index_split(write(tmp_path / "ok.csv", "valid,train,test\n1,0,3\n,2,\n")).sizes() == (2, 1, 1)
    with pytest.raises(ValueError, match=r"column 'valid' / 'val' / 'validation'.*got columns \['train', 'test'\]"):
        index_split(write(tmp_path / "a.csv", "train,test\n0,1\n"))
    with pytest.raises(ValueError, match="Index 1 is in both train and test"):
        index_split(write(tmp_path / "b.csv", "train,val,test\n0,2,1\n1,,\n"))
    with pytest.raises(ValueError, match="integer row index on line 2 .*got 'x'"):
        index_split(write(tmp_path / "c.csv", "train,val,test\nx,1,2\n"))
    with pytest.raises(ValueError, match=r"test indices in .* to be \[0, 3\), got 5"):
        index_split(write(tmp_path / "d.csv", "train,val,test\n0,1,5\n"), num_rows=3)
    (tmp_path / "folder").mkdir()
    write(tmp_path / "folder" / "train.csv", "0\n1\n")
    with pytest.raises(FileNotFoundError, match="valid.csv or valid.csv.gz"):
        index_split(tmp_path / "folder")


def test_split_restrict_maps_file_rows_to_dataset_positions():
    split = Split(torch.tensor([0, 3, 5]), torch.tensor([1, 4]), torch.tensor([2, 6]))
    kept_rows = torch.tensor([0, 1, 2, 4, 5, 6])  # file row 3 was skipped
    restricted = split.restrict(kept_rows)
    assert restricted.train.tolist() == [0, 4]
    assert restricted.valid.tolist() == [1, 3]
    assert restricted.test.tolist() == [2, 5]


# ----------------------------------------------------------------------------------------------
# load_molecule_csv
# ----------------------------------------------------------------------------------------------

MULTITASK = """name,smiles,tox_a,tox_b
ethanol,CCO,0,1
benzene,c1ccccc1,,0
"acetic acid, glacial",CC(=O)O,1,
"""


def test_load_csv_multitask_missing_labels_and_items(tmp_path):
    path = write(tmp_path / "m.csv", MULTITASK)
    data = load_molecule_csv(path, "smiles", ["tox_a", "tox_b"], task="classification")
    assert len(data) == 3 and data.num_tasks == 2 and data.task == "classification"
    assert data.target_names == ("tox_a", "tox_b")
    expected = torch.tensor([[0.0, 1.0], [float("nan"), 0.0], [1.0, float("nan")]])
    torch.testing.assert_close(data.y, expected, equal_nan=True)
    assert data.y.dtype == torch.float32
    assert data.smiles == ["CCO", "c1ccccc1", "CC(=O)O"]
    assert data.lines.tolist() == [2, 3, 4] and data.rows.tolist() == [0, 1, 2]
    for i, text in enumerate(data.smiles):
        item, reference = data[i], smiles_to_graph(text)
        assert torch.equal(item.x, reference.x) and torch.equal(item.edge_index, reference.edge_index)
        assert torch.equal(item.edge_attr, reference.edge_attr)
        assert item.y.shape == (1, 2) and item.smiles == text
    assert data[-1].smiles == "CC(=O)O"
    assert data[np.int64(1)].smiles == data[torch.tensor(1)].smiles == "c1ccccc1"
    with pytest.raises(IndexError, match="out of range"):
        data[3]


def test_load_csv_subsets_and_pyg_dataloader(tmp_path):
    from torch_geometric.loader import DataLoader

    data = load_molecule_csv(write(tmp_path / "m.csv", MULTITASK), "smiles", ["tox_a", "tox_b"])
    sub = data[torch.tensor([2, 0])]
    assert isinstance(sub, MoleculeDataset) and sub.smiles == ["CC(=O)O", "CCO"]
    assert sub.rows.tolist() == [2, 0] and sub[0].smiles == "CC(=O)O"
    assert data[1:].smiles == ["c1ccccc1", "CC(=O)O"]
    assert data[torch.tensor([True, False, True])].smiles == ["CCO", "CC(=O)O"]
    empty = torch.tensor([], dtype=torch.long)
    train, valid, test = data.split(Split(torch.tensor([0, 1]), torch.tensor([2]), empty))
    assert (len(train), len(valid), len(test)) == (2, 1, 0)
    batch = next(iter(DataLoader(data, batch_size=3)))
    assert batch.num_graphs == 3 and batch.y.shape == (3, 2) and batch.x.shape == (3 + 6 + 4, 9)
    assert batch.edge_index.max() < batch.num_nodes
    with pytest.raises(TypeError, match="1-d integer/boolean"):
        data[torch.tensor([0.5])]
    assert "m.csv: 3 molecules, targets ['tox_a', 'tox_b'] (regression)" in repr(data)


def test_load_csv_label_and_column_errors(tmp_path):
    path = write(tmp_path / "bad.csv", "smiles,y\nCCO,1\nCCN,2\n")
    message = r"Expected 0 or 1 in the classification target column 'y' on line 3 .*got '2'"
    with pytest.raises(ValueError, match=message):
        load_molecule_csv(path, "smiles", "y", task="classification")
    assert load_molecule_csv(path, "smiles", "y").y.flatten().tolist() == [1.0, 2.0]
    path = write(tmp_path / "text.csv", "smiles,y\nCCO,high\n")
    with pytest.raises(ValueError, match=r"Expected a number .* column 'y' on line 2 .*got 'high'"):
        load_molecule_csv(path, "smiles", "y")
    with pytest.raises(ValueError, match=r"Expected column\(s\) \['SMILES'\] .*its columns are \['smiles', 'y'\]"):
        load_molecule_csv(path, "SMILES", "y")
    with pytest.raises(ValueError, match="task to be one of"):
        load_molecule_csv(write(tmp_path / "ok.csv", "smiles,y\nC,1\n"), "smiles", "y", task="ranking")
    with pytest.raises(FileNotFoundError, match="No CSV file"):
        load_molecule_csv(tmp_path / "missing.csv", "smiles", "y")


INVALID = "smiles,y\nCCO,1.0\nC1CC,2.0\nc1ccccc1,3.0\nN(C)(C)(C)(C)C,4.0\n,5.0\n"


def test_invalid_smiles_raise_with_line_or_are_skipped_and_reported(tmp_path):
    path = write(tmp_path / "inv.csv", INVALID)
    with pytest.raises(InvalidSmilesError, match=r"inv.csv: RDKit rejects SMILES 'C1CC' on line 3") as info:
        load_molecule_csv(path, "smiles", "y")
    assert info.value.line == 3 and info.value.smiles == "C1CC"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load_molecule_csv(path, "smiles", "y", skip_invalid=True)
    assert len(caught) == 1 and "Skipped 3 of 5 rows" in str(caught[0].message)
    assert "lines 3, 5, 6" in str(caught[0].message) and caught[0].filename == __file__
    assert data.smiles == ["CCO", "c1ccccc1"] and data.y.flatten().tolist() == [1.0, 3.0]
    assert data.rows.tolist() == [0, 2] and data.lines.tolist() == [2, 4]
    assert [(row.line, row.smiles) for row in data.skipped] == [(3, "C1CC"), (5, "N(C)(C)(C)(C)C"), (6, "")]
    assert all(isinstance(row, SkippedRow) and row.reason for row in data.skipped)
    assert "valence" in data.skipped[1].reason
    with pytest.raises(ValueError, match="No molecule left"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        load_molecule_csv(write(tmp_path / "none.csv", "smiles,y\nC1CC,1\n"), "smiles", "y", skip_invalid=True)


def test_zinc_featurizer_rows_outside_dictionary_are_skippable(tmp_path):
    path = write(tmp_path / "z.csv", "smiles,y\nCCO,1\nC[Si](C)(C)C,2\n")
    with pytest.raises(UnsupportedMoleculeError, match="line 3.*'Si'"):
        load_molecule_csv(path, "smiles", "y", featurizer="zinc")
    with pytest.warns(UserWarning, match="Skipped 1 of 2 rows"):
        data = load_molecule_csv(path, "smiles", "y", featurizer="zinc", skip_invalid=True)
    assert data[0].x.shape == (3, 1) and data.skipped[0].line == 3


def test_gzip_csv(tmp_path):
    path = tmp_path / "g.csv.gz"
    with gzip.open(path, "wt") as handle:
        handle.write("smiles,y\nCCO,1\nCCC,0\n")
    data = load_molecule_csv(path, "smiles", "y", task="classification")
    assert data.smiles == ["CCO", "CCC"] and data.y.flatten().tolist() == [1.0, 0.0]


def test_cache_is_reused_weights_only_and_invalidated(tmp_path, monkeypatch):
    path = write(tmp_path / "inv.csv", INVALID)
    cache = tmp_path / "cache"
    with pytest.warns(UserWarning):
        first = load_molecule_csv(path, "smiles", "y", skip_invalid=True, cache_dir=cache)
    files = list(cache.glob("*.pt"))
    assert len(files) == 1
    store = torch.load(files[0], weights_only=True)
    assert set(store) >= {"x", "edge_index", "edge_attr", "node_ptr", "edge_ptr", "y", "smiles", "skipped"}

    def no_featurizing(*args, **kwargs):
        raise AssertionError("featurized again instead of reading the cache")

    monkeypatch.setattr(md, "_build_store", no_featurizing)
    with pytest.warns(UserWarning, match="Skipped 3 of 5 rows"):  # skipped rows reported again
        second = load_molecule_csv(path, "smiles", "y", skip_invalid=True, cache_dir=cache)
    assert second.smiles == first.smiles and second.skipped == first.skipped
    assert torch.equal(second[1].x, first[1].x) and torch.equal(second.y, first.y)
    monkeypatch.undo()

    write(path, INVALID.replace("3.0", "3.5"))  # new content -> new key
    with pytest.warns(UserWarning):
        third = load_molecule_csv(path, "smiles", "y", skip_invalid=True, cache_dir=cache)
    assert third.y.flatten().tolist() == [1.0, 3.5] and len(list(cache.glob("*.pt"))) == 2
    with pytest.warns(UserWarning):
        load_molecule_csv(path, "smiles", "y", skip_invalid=True, featurizer="zinc", cache_dir=cache)
    assert len(list(cache.glob("*.pt"))) == 3


# ----------------------------------------------------------------------------------------------
# named data sets
# ----------------------------------------------------------------------------------------------


def test_named_loaders_on_the_shared_files():
    root = molecules_dir()
    esol = md.load_esol(root)
    assert len(esol) == 1128 and esol.target_names == ("measured log solubility in mols per litre",)
    assert esol.y[1].item() == pytest.approx(-3.3) and esol.smiles[1] == "Cc1occc1C(=O)Nc2ccccc2"
    freesolv = md.load_freesolv(root / "SAMPL.csv")
    assert len(freesolv) == 642 and freesolv.y[0].item() == pytest.approx(-11.01)
    bace = md.load_bace(root)
    assert len(bace) == 1513 and bace.task == "classification" and set(bace.y.flatten().tolist()) == {0.0, 1.0}
    bace_regression = md.load_bace(root, target="pIC50")
    assert bace_regression.task == "regression" and bace_regression.y[0].item() == pytest.approx(9.1549015)
    with pytest.raises(ValueError, match="target='Class'"):
        md.load_bace(root, target="MW")


def test_bbbp_invalid_rows_and_ogb_molecules():
    root = molecules_dir()
    with pytest.raises(InvalidSmilesError, match="on line 61"):
        md.load_bbbp(root)
    with pytest.warns(UserWarning, match="Skipped 11 of 2050 rows"):
        bbbp = md.load_bbbp(root, skip_invalid=True)
    assert bbbp.target_names == ("BBBP",) and len(bbbp) == 2039
    with gzip.open(root / "ogb_scaffold_splits" / "ogbg_molbbbp" / "mapping" / "mol.csv.gz", "rt") as handle:
        ogb = list(csv.DictReader(handle))
    assert bbbp.smiles == [row["smiles"].strip() for row in ogb]  # the same 2039 molecules as OGB
    assert bbbp.y.flatten().tolist() == [float(row["p_np"]) for row in ogb]


def test_named_loaders_on_truncated_copies(tmp_path):
    root = molecules_dir()
    lipo = md.load_lipophilicity(truncated_copy(root / "Lipophilicity.csv", tmp_path / "Lipophilicity.csv", 20))
    assert len(lipo) == 20 and lipo.y[0].item() == pytest.approx(3.54)
    truncated_copy(root / "hiv.csv.gz", tmp_path / "hiv.csv.gz", 200)
    with pytest.raises(InvalidSmilesError, match="on line 139"):
        md.load_hiv(tmp_path)
    with pytest.warns(UserWarning, match="Skipped 1 of 200"):
        hiv = md.load_hiv(tmp_path, skip_invalid=True)
    assert hiv.task == "classification" and len(hiv) == 199 and 137 not in hiv.rows.tolist()
    zinc_dir = tmp_path / "zinc"
    zinc_dir.mkdir()
    truncated_copy(root / "zinc12k" / "smiles_score.csv", zinc_dir / "smiles_score.csv", 30)
    zinc = md.load_zinc12k(zinc_dir)
    assert zinc.featurizer == "zinc" and zinc.target_names == ("score",) and zinc[0].x.shape[1] == 1
    assert zinc.y[0].item() == pytest.approx(3.019768801)


def test_named_loader_missing_file_names_the_url(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"Expected delaney-processed.csv in .*https://deepchemdata"):
        md.load_esol(tmp_path)
    with pytest.raises(ValueError, match="Unknown data set 'qm9'"):
        md.download("qm9", tmp_path)
    assert set(DATASETS) == {"esol", "freesolv", "lipophilicity", "bace", "bbbp", "hiv", "zinc12k"}
    assert all(spec.url.startswith("https://") for spec in DATASETS.values())


def test_nci_tpsa_ships_with_rdkit_and_caches(tmp_path):
    with pytest.warns(UserWarning, match="Skipped 8 of 4999 rows"):
        data = md.nci_tpsa(cache_dir=tmp_path)
    assert len(data) == 4991 and data.target_names == ("TPSA",) and data.task == "regression"
    assert data.smiles[0] == "CC1=CC(=O)C=CC1=O" and data.lines[0].item() == 2
    for text, tpsa in zip(data.smiles[:100], data.y[:100, 0].tolist()):
        assert tpsa == pytest.approx(rdMolDescriptors.CalcTPSA(Chem.MolFromSmiles(text)), abs=0.01)
    with pytest.warns(UserWarning, match="Skipped 8"):
        again = md.nci_tpsa(cache_dir=tmp_path)
    assert again.smiles == data.smiles and torch.equal(again.y, data.y)
    copy = shutil.copy(Path(RDConfig.RDDataDir) / "NCI" / "first_200.tpsa.csv", tmp_path / "first_5k.tpsa.csv")
    assert len(md.nci_tpsa(tmp_path)) == len(md.nci_tpsa(copy)) == 200
    with pytest.raises(FileNotFoundError, match="ships with RDKit"):
        md.nci_tpsa(tmp_path / "nowhere")
