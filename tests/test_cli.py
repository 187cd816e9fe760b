"""The `graphattn` command: --version, `demo` end to end (in-process), argument errors."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import graphattn
from graphattn import cli, patterns
from graphattn.demo import demo_patterns
from graphattn.ops import BACKENDS

ROOT = Path(__file__).resolve().parents[1]
DEMO_PATTERNS = [
    "full", "causal", "local", "strided", "block", "global_tokens", "longformer", "random",
    "bigbird", "per_head",
]


def test_version_prints_package_and_torch_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"graphattn {graphattn.__version__} (torch {torch.__version__}")


def test_python_dash_m_runs_the_cli():
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    result = subprocess.run(
        [sys.executable, "-m", "graphattn", "--version"], capture_output=True, text=True, env=env, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"graphattn {graphattn.__version__}")


def test_demo_patterns_are_the_documented_families():
    built = demo_patterns(256, heads=3, seed=0)
    assert list(built) == DEMO_PATTERNS
    graphs = {name: graph for name, (graph, _) in built.items()}
    assert graphs["full"].num_edges == 256 * 256
    assert graphs["causal"].num_edges == 256 * 257 // 2
    assert graphs["local"].equals(patterns.local(256, 8))  # window n/32
    assert graphs["strided"].equals(patterns.strided(256, 16))  # stride sqrt(n)
    assert graphs["per_head"].num_heads == 3
    assert graphs["per_head"].head(1).equals(graphs["strided"])  # heads cycle local, strided, ...


def test_demo_quick_writes_table_json_and_plot(tmp_path, capsys):
    out = tmp_path / "demo"
    status = cli.main(["demo", "--quick", "--repeats", "1", "--no-progress", "--device", "cpu", "--no-inputs", "--out", str(out)])
    assert status == 0

    table = capsys.readouterr().out
    for name in DEMO_PATTERNS:
        assert f"\n{name} " in table

    report = json.loads((out / "demo.json").read_text())
    assert report["config"]["n"] == 256 and report["config"]["heads"] == 4
    results = {row["name"]: row for row in report["results"]}
    assert list(results) == DEMO_PATTERNS
    expected = {name: graph for name, (graph, _) in demo_patterns(256, 4, seed=0).items()}
    for name, row in results.items():
        assert row["edges"] == expected[name].num_edges, name
        assert row["density"] == pytest.approx(expected[name].density), name
        assert row["backend"] in BACKENDS and row["forward_backend"] in BACKENDS, name
        assert row["max_abs_diff"] < 1e-4, name
        assert row["max_abs_grad_diff"] < 1e-4, name
        assert row["forward_ms"] > 0 and row["forward_backward_ms"] > 0, name
        assert row["dense_forward_ms"] > 0 and row["dense_forward_backward_ms"] > 0, name
        assert row["memory_bytes"] >= 0 and row["memory_kind"] == "estimated", name
    assert results["full"]["density"] == 1.0

    png = out / "patterns.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = pytest.importorskip("matplotlib.image").imread(png)
    assert image.shape[0] > 300 and image.shape[1] > 300


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "required: COMMAND"),
        (["nonsense"], "invalid choice: 'nonsense'"),
        (["demo", "--n", "0"], "expected a positive integer, got 0"),
        (["demo", "--n", "abc"], "expected a positive integer, got 'abc'"),
        (["demo", "--n", "4"], "expected at least 8, got 4"),
        (["demo", "--heads", "-2"], "expected a positive integer, got -2"),
        (["demo", "--head-dim", "1.5"], "expected a positive integer, got '1.5'"),
        (["demo", "--device", "no-such-device"], "expected a torch device"),
        (["demo", "--unknown-flag"], "unrecognized arguments: --unknown-flag"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv + ["--out", str(tmp_path)] if argv[:1] == ["demo"] else argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "demo.json").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_demo_on_cuda_without_cuda_is_an_argument_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["demo", "--device", "cuda"])
    assert exit_info.value.code == 2
    assert "CUDA is not available" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- graphattn molecules
MOLECULES = (
    "CCO c1ccccc1 CC(=O)O CCN CCCC c1ccncc1 CC(C)O OCCO c1ccc(O)cc1 CC(=O)N CCCl CCBr c1ccc2ccccc2c1 "
    "C1CCCCC1 CC#N COC CCOC(=O)C c1ccccc1N CC(C)(C)O NCCN"
).split()
TINY_FLAGS = ["--epochs", "2", "--batch-size", "8", "--hidden", "8", "--layers", "1", "--heads", "2", "--no-progress", "--device", "cpu"]


def _heavy_atom_csv(path: Path, extra_rows=()) -> Path:
    """SMILES with their heavy-atom count as the target (computed by RDKit)."""
    from rdkit import Chem

    rows = [f"{s},{Chem.MolFromSmiles(s).GetNumHeavyAtoms()}" for s in MOLECULES]
    path.write_text("\n".join(["smiles,heavy_atoms", *rows, *extra_rows]) + "\n")
    return path


def test_molecules_train_then_predict(tmp_path, capsys):
    pytest.importorskip("rdkit")
    data = _heavy_atom_csv(tmp_path / "atoms.csv")
    out = tmp_path / "run"
    status = cli.main(["molecules", "train", "--csv", str(data), "--smiles-col", "smiles", "--target-col", "heavy_atoms",
                       "--split", "scaffold", "--seed", "1", "--out", str(out), *TINY_FLAGS])
    assert status == 0
    printed = capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert f"test RMSE {metrics['test']['rmse']:.4f}  MAE {metrics['test']['mae']:.4f}" in printed
    assert "validation RMSE" in printed and str(out / "metrics.json") in printed
    assert metrics["split"]["kind"] == "scaffold" and metrics["seed"] == 1
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["settings"]["hidden_dim"] == 8 and config["model"]["settings"]["num_layers"] == 1
    assert config["data"]["descriptors"] is None and config["training"]["schedule"] == "constant"

    predictions = tmp_path / "predictions.csv"
    assert cli.main(["molecules", "predict", "--model", str(out), "--csv", str(data), "--out", str(predictions)]) == 0
    assert f"wrote predictions for {len(MOLECULES)} of {len(MOLECULES)} molecules" in capsys.readouterr().out
    lines = predictions.read_text().splitlines()
    assert lines[0] == "smiles,heavy_atoms" and len(lines) == len(MOLECULES) + 1
    from graphattn.property import load_property_model

    expected = load_property_model(out).predict(MOLECULES)
    assert torch.equal(torch.tensor([[float(line.split(",")[1])] for line in lines[1:]]), expected)


def test_molecules_train_with_descriptors_and_a_schedule(tmp_path, capsys):
    pytest.importorskip("rdkit")
    data = _heavy_atom_csv(tmp_path / "atoms.csv")
    out = tmp_path / "run"
    assert cli.main(["molecules", "train", "--csv", str(data), "--target-col", "heavy_atoms", "--out", str(out),
                     "--descriptors", "rdkit2d", "--schedule", "cosine", "--warmup-epochs", "1", "--weight-decay", "0.01",
                     *TINY_FLAGS]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["data"]["descriptors"] == "rdkit2d" and config["model"]["settings"]["graph_feature_dim"] > 200
    assert config["training"]["schedule"] == "cosine" and config["training"]["weight_decay"] == 0.01
    assert config["training"]["warmup_steps"] == 2  # 16 training molecules in batches of 8
    predictions = tmp_path / "predictions.csv"
    assert cli.main(["molecules", "predict", "--model", str(out), "--csv", str(data), "--out", str(predictions)]) == 0


def test_molecules_train_without_csv_uses_rdkits_nci_tpsa_set(tmp_path, capsys, monkeypatch):
    pytest.importorskip("rdkit")
    from rdkit import RDConfig

    from graphattn.data import molecule_datasets

    # the first 30 molecules of the bundled file keep the test fast; the command reads it the same way
    bundled = Path(RDConfig.RDDataDir) / "NCI" / "first_5k.tpsa.csv"
    head = tmp_path / "first_5k.tpsa.csv"
    head.write_text("".join(bundled.read_text().splitlines(keepends=True)[:40]))
    real = molecule_datasets.nci_tpsa
    monkeypatch.setattr(molecule_datasets, "nci_tpsa", lambda root=None, **kwargs: real(head if root is None else root, **kwargs))
    out = tmp_path / "nci"
    assert cli.main(["molecules", "train", "--out", str(out), *TINY_FLAGS]) == 0
    assert "test RMSE" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["targets"] == ["TPSA"] and metrics["task"] == "regression"
    assert json.loads((out / "config.json").read_text())["data"]["csv"].startswith("rdkit:")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["molecules"], "required: COMMAND"),
        (["molecules", "train", "--csv", "{csv}"], "--target-col is required with --csv"),
        (["molecules", "train", "--target-col", "x"], "--smiles-col / --target-col need --csv"),
        (["molecules", "train", "--csv", "{csv}", "--target-col", "logS"], "but its columns are ['smiles', 'heavy_atoms']"),
        (["molecules", "train", "--csv", "{csv}", "--smiles-col", "SMILES", "--target-col", "heavy_atoms"], "Expected column(s) ['SMILES']"),
        (["molecules", "train", "--csv", "{bad}", "--target-col", "heavy_atoms"], "RDKit rejects SMILES 'C1CC(' on line 22"),
        (["molecules", "train", "--csv", "{csv}", "--target-col", "heavy_atoms", "--split", "nonsense"], "Expected split 'random', 'scaffold'"),
        (["molecules", "train", "--csv", "{csv}", "--target-col", "heavy_atoms", "--task", "ranking"], "invalid choice: 'ranking'"),
        (["molecules", "train", "--csv", "{csv}", "--target-col", "heavy_atoms", "--epochs", "0"], "expected a positive integer, got 0"),
        (["molecules", "train", "--csv", "{csv}", "--target-col", "heavy_atoms", "--lr", "-1"], "expected a positive number, got '-1'"),
        (["molecules", "train", "--csv", "{csv}", "--target-col", "heavy_atoms", "--hidden", "7"], "got hidden_dim=7, num_heads=2"),
        (["molecules", "train", "--csv", "{csv}", "--target-col", "heavy_atoms", "--weight-decay", "-0.1"], "expected a non-negative number, got '-0.1'"),
        (["molecules", "train", "--csv", "{csv}", "--target-col", "heavy_atoms", "--schedule", "step"], "invalid choice: 'step'"),
        (["molecules", "train", "--csv", "{csv}", "--target-col", "heavy_atoms", "--descriptors", "morgan"], "invalid choice: 'morgan'"),
        (["molecules", "train", "--csv", "missing.csv", "--target-col", "heavy_atoms"], "No CSV file at missing.csv"),
        (["molecules", "predict", "--model", "{tmp}", "--csv", "{csv}", "--out", "p.csv"], "No model.pt at"),
        (["molecules", "predict", "--csv", "{csv}", "--out", "p.csv"], "required: --model"),
    ],
)
def test_molecules_bad_arguments_exit_2_with_a_message(argv, message, tmp_path, capsys):
    pytest.importorskip("rdkit")
    csv = _heavy_atom_csv(tmp_path / "atoms.csv")
    bad = _heavy_atom_csv(tmp_path / "bad.csv", extra_rows=["C1CC(,3"])
    argv = [arg.format(csv=csv, bad=bad, tmp=tmp_path) for arg in argv]
    if argv[:2] == ["molecules", "train"]:  # the case's own flags come last, so they win
        argv = argv[:2] + ["--out", str(tmp_path / "out"), *TINY_FLAGS] + argv[2:]
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_molecules_predict_skip_invalid_leaves_the_row_empty(tmp_path, capsys):
    pytest.importorskip("rdkit")
    data = _heavy_atom_csv(tmp_path / "atoms.csv")
    out = tmp_path / "run"
    assert cli.main(["molecules", "train", "--csv", str(data), "--target-col", "heavy_atoms", "--out", str(out), *TINY_FLAGS]) == 0
    bad = _heavy_atom_csv(tmp_path / "bad.csv", extra_rows=["C1CC(,3"])
    predictions = tmp_path / "p.csv"
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["molecules", "predict", "--model", str(out), "--csv", str(bad), "--out", str(predictions)])
    assert exit_info.value.code == 2
    assert "'C1CC(' on line 22" in capsys.readouterr().err and not predictions.exists()
    with pytest.warns(UserWarning, match="1 of 21 SMILES"):
        status = cli.main(["molecules", "predict", "--model", str(out), "--csv", str(bad), "--out", str(predictions), "--skip-invalid"])
    assert status == 0
    printed = capsys.readouterr().out
    assert "wrote predictions for 20 of 21 molecules" in printed and "invalid SMILES on line 22: 'C1CC('" in printed
    assert predictions.read_text().splitlines()[-1] == "C1CC(,"
