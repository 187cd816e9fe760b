"""graphattn.property: masked loss, ROC-AUC, target standardization, training end to end on tiny
CSVs (files, metrics in original units, determinism, best checkpoint), prediction round trips,
errors."""
import csv
import json
import math
import statistics
import warnings
from pathlib import Path

import pytest
import torch

from graphattn.data.molecule import InvalidSmilesError, smiles_to_graph
from graphattn.data.molecule_datasets import index_split
from graphattn.property import (
    TargetScaler,
    evaluate_predictions,
    load_property_model,
    masked_loss,
    predict_csv,
    roc_auc,
    train_property_model,
)

pytest.importorskip("rdkit")
pytest.importorskip("torch_geometric")

SMILES = (
    "CCO c1ccccc1 CC(=O)O CCN CCCC c1ccncc1 CC(C)O OCCO c1ccc(O)cc1 CC(=O)N CCCl CCBr c1ccc2ccccc2c1 "
    "C1CCCCC1 CC#N COC CCOC(=O)C c1ccccc1N CC(C)(C)O NCCN c1ccoc1 c1ccsc1 CCCCO CC=O OC(=O)c1ccccc1 CCS "
    "C1CCOC1 CN(C)C ClCCl FC(F)F"
).split()
TINY_MODEL = {"hidden_dim": 16, "num_heads": 2, "num_layers": 1, "pe_size": 4}
FAST = dict(epochs=2, batch_size=8, model_config=TINY_MODEL, progress=False, device="cpu")
NAN = float("nan")


def logp(smiles: str) -> float:
    from rdkit import Chem
    from rdkit.Chem import Crippen

    return round(Crippen.MolLogP(Chem.MolFromSmiles(smiles)), 4)


def write_csv(path: Path, header, rows) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def regression_csv(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("regression")
    return write_csv(folder / "logp.csv", ["name", "smiles", "logp"], [[f"m{i}", s, logp(s)] for i, s in enumerate(SMILES)])


@pytest.fixture(scope="module")
def regression_run(regression_csv, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "seed0"
    return train_property_model(regression_csv, "smiles", "logp", seed=0, out_dir=out, epochs=3, **{k: v for k, v in FAST.items() if k != "epochs"})


def classification_rows():
    """Two tasks: 'ring' (has a ring) and 'nitrogen' (has N), the second missing on every third row."""
    from rdkit import Chem

    rows = []
    for i, s in enumerate(SMILES):
        mol = Chem.MolFromSmiles(s)
        ring = int(mol.GetRingInfo().NumRings() > 0)
        nitrogen = "" if i % 3 == 0 else int(any(a.GetSymbol() == "N" for a in mol.GetAtoms()))
        rows.append([s, ring, nitrogen])
    return rows


@pytest.fixture(scope="module")
def classification_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("classification")
    rows = classification_rows()
    path = write_csv(folder / "tox.csv", ["smiles", "ring", "nitrogen"], rows)
    rings = [i for i, row in enumerate(rows) if row[1] == 1]
    chains = [i for i, row in enumerate(rows) if row[1] == 0]
    valid, test = rings[:2] + chains[:2], rings[2:4] + chains[2:4]
    train = [i for i in range(len(rows)) if i not in valid + test]
    split = folder / "split.csv"
    write_csv(split, ["train", "val", "test"], [[train[i], *(part[i] if i < len(part) else "" for part in (valid, test))] for i in range(len(train))])
    return path, split


# ---------------------------------------------------------------------------------------------- ROC-AUC
def pairwise_auc(scores, labels) -> float:
    """The definition: the fraction of (positive, negative) pairs ranked right, ties one half."""
    positives = [s for s, y in zip(scores, labels) if y == 1]
    negatives = [s for s, y in zip(scores, labels) if y == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


def test_roc_auc_hand_computed_with_ties():
    # positives 0.35, 0.8, 0.4 against negatives 0.1, 0.4, 0.1:
    # 0.35 beats two (2), 0.8 beats three (3), 0.4 beats two and ties one (2.5) -> 7.5 / 9
    scores = torch.tensor([0.1, 0.4, 0.35, 0.8, 0.4, 0.1])
    labels = torch.tensor([0, 0, 1, 1, 1, 0])
    assert roc_auc(scores, labels) == pytest.approx(7.5 / 9, abs=1e-15)
    assert roc_auc(torch.tensor([3.0, 2.0, 1.0]), torch.tensor([0, 0, 1])) == 0.0
    assert roc_auc(torch.full((4,), 0.3), torch.tensor([0, 1, 0, 1])) == 0.5  # all tied
    assert math.isnan(roc_auc(torch.tensor([0.2, 0.7]), torch.tensor([1, 1])))  # one class


@pytest.mark.parametrize("seed", range(4))
def test_roc_auc_equals_pairwise_definition_on_many_ties(seed):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, 5, (40,), generator=g).double() / 4  # five distinct values: many ties
    labels = torch.randint(0, 2, (40,), generator=g)
    assert roc_auc(scores, labels) == pytest.approx(pairwise_auc(scores.tolist(), labels.tolist()), abs=1e-12)
    # a strictly increasing transform (probabilities -> logits) keeps the ranking
    assert roc_auc(torch.logit(scores.clamp(0.01, 0.99)), labels) == pytest.approx(roc_auc(scores, labels), abs=1e-12)


def test_roc_auc_rejects_bad_input():
    with pytest.raises(ValueError, match=r"same shape \[N\]"):
        roc_auc(torch.rand(3), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="Expected labels 0 or 1"):
        roc_auc(torch.rand(3), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="Expected finite scores"):
        roc_auc(torch.tensor([0.1, NAN]), torch.tensor([0, 1]))


# ---------------------------------------------------------------------------------------------- loss, scaling, metrics
def test_masked_loss_regression_is_the_mean_over_present_labels():
    prediction = torch.tensor([[1.0, 2.0, -1.0], [0.5, 5.0, 3.0]], dtype=torch.float64, requires_grad=True)
    target = torch.tensor([[2.0, NAN, -1.5], [NAN, 3.0, NAN]], dtype=torch.float64)
    expected = ((1 - 2) ** 2 + (-1 + 1.5) ** 2 + (5 - 3) ** 2) / 3
    loss = masked_loss(prediction, target, "regression")
    assert loss.item() == pytest.approx(expected, abs=1e-15)
    loss.backward()
    missing = target.isnan()
    assert (prediction.grad[missing] == 0).all()
    assert prediction.grad[0, 0].item() == pytest.approx(2 * (1 - 2) / 3)


def test_masked_loss_classification_is_bce_with_logits_over_present_labels():
    logits = torch.tensor([[0.3, -2.0], [1.5, 0.0], [-0.7, 4.0]], dtype=torch.float64, requires_grad=True)
    target = torch.tensor([[1.0, NAN], [0.0, 1.0], [NAN, 0.0]], dtype=torch.float64)

    def bce(x, y):
        p = 1 / (1 + math.exp(-x))
        return -(y * math.log(p) + (1 - y) * math.log(1 - p))

    expected = (bce(0.3, 1) + bce(1.5, 0) + bce(0.0, 1) + bce(4.0, 0)) / 4
    loss = masked_loss(logits, target, "classification")
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    loss.backward()
    assert (logits.grad[target.isnan()] == 0).all()
    # no label at all: zero, still differentiable
    empty = masked_loss(logits, torch.full_like(target, NAN), "classification")
    assert empty.item() == 0.0 and empty.requires_grad


def test_masked_loss_rejects_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        masked_loss(torch.zeros(2, 1), torch.zeros(2, 2), "regression")
    with pytest.raises(ValueError, match="Expected task to be one of"):
        masked_loss(torch.zeros(2, 1), torch.zeros(2, 1), "ranking")


def test_target_scaler_uses_present_labels_and_inverts():
    y = torch.tensor([[1.0, 10.0, 3.0], [2.0, NAN, 3.0], [4.0, 14.0, 3.0], [NAN, 12.0, 3.0]])
    scaler = TargetScaler.fit(y)
    assert scaler.mean == pytest.approx((7 / 3, 12.0, 3.0))
    assert scaler.std == pytest.approx((statistics.pstdev([1, 2, 4]), statistics.pstdev([10, 14, 12]), 1.0))  # constant -> 1
    z = scaler.transform(y)
    assert torch.allclose(torch.nanmean(z, 0), torch.zeros(3), atol=1e-6)
    assert torch.allclose(scaler.inverse(z), y, equal_nan=True, atol=1e-6)
    with pytest.raises(ValueError, match="no label|got none in column 1"):
        TargetScaler.fit(torch.tensor([[1.0, NAN], [2.0, NAN]]))
    with pytest.raises(ValueError, match=r"Expected a tensor \[N, 3\]"):
        scaler.transform(torch.zeros(2, 2))


def test_evaluate_predictions_per_task_and_mean():
    prediction = torch.tensor([[1.0, 0.0], [2.0, 1.0], [4.0, 2.0]])
    target = torch.tensor([[1.5, NAN], [2.0, 3.0], [3.0, 2.0]])
    metrics = evaluate_predictions(prediction, target, "regression", ["a", "b"])
    rmse_a, rmse_b = math.sqrt((0.25 + 0 + 1) / 3), math.sqrt((4 + 0) / 2)
    assert metrics.per_task["a"]["rmse"] == pytest.approx(rmse_a)
    assert metrics.per_task["b"]["mae"] == pytest.approx(1.0)
    assert metrics.mean["rmse"] == pytest.approx((rmse_a + rmse_b) / 2)
    assert metrics.counts == {"a": 3, "b": 2}
    # classification: the task without both classes is None and out of the mean (OGB)
    metrics = evaluate_predictions(
        torch.tensor([[0.9, 0.5], [0.2, 0.5], [0.6, 0.1]]), torch.tensor([[1.0, 1.0], [0.0, 1.0], [0.0, NAN]]), "classification"
    )
    assert metrics.per_task == {"task0": {"roc_auc": 1.0}, "task1": {"roc_auc": None}}
    assert metrics.mean == {"roc_auc": 1.0}


# ---------------------------------------------------------------------------------------------- training end to end
def test_training_writes_model_config_metrics_and_split(regression_run):
    out = regression_run.out_dir
    for name in ("model.pt", "config.json", "metrics.json", "split.csv", "train/best.pt", "train/metrics.jsonl"):
        assert (out / name).is_file(), name
    assert list((out / "cache").glob("*.pt"))
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) >= {
        "task", "targets", "model", "seed", "test", "validation", "epochs_run", "best_epoch", "stopped_early",
        "num_parameters", "split", "skipped_rows", "time",
    }
    assert set(metrics["test"]) == {"rmse", "mae", "per_task", "labels"}
    assert metrics["test"]["per_task"]["logp"]["rmse"] == metrics["test"]["rmse"]
    assert metrics["validation"]["metric"] == "rmse" and metrics["validation"]["mode"] == "min"
    assert metrics["validation"]["best"] == pytest.approx(metrics["validation"]["rmse"])
    assert metrics["split"] == {"kind": "random", "train": 24, "valid": 3, "test": 3}
    assert metrics["epochs_run"] == 3 and metrics["skipped_rows"] == []
    assert metrics["num_parameters"] == regression_run.model.num_parameters > 0
    assert metrics["time"]["wall_s"] > 0
    config = json.loads((out / "config.json").read_text())
    assert config["data"]["target_cols"] == ["logp"] and config["model"]["settings"]["hidden_dim"] == 16
    payload = torch.load(out / "model.pt", weights_only=True)
    assert payload["task"] == "regression" and payload["target_names"] == ["logp"] and payload["featurizer"] == "ogb"
    assert len(payload["target_mean"]) == len(payload["target_std"]) == 1


def test_saved_model_is_the_best_checkpoint(regression_run):
    out = regression_run.out_dir
    best = torch.load(out / "train" / "best.pt", weights_only=True)
    saved = torch.load(out / "model.pt", weights_only=True)["state_dict"]
    assert saved.keys() == best["model"].keys()
    assert all(torch.equal(saved[k], best["model"][k]) for k in saved)
    events = [json.loads(line) for line in (out / "train" / "metrics.jsonl").read_text().splitlines()]
    validations = [e for e in events if e["event"] == "validation"]
    best_event = min(validations, key=lambda e: e["val_rmse"])
    assert regression_run.best_epoch == best_event["epoch"]
    assert regression_run.best_validation == best_event["val_rmse"]


def test_interrupted_run_resumes_to_the_uninterrupted_result(regression_csv, regression_run, tmp_path, monkeypatch):
    """An exception in the third epoch's training leaves a checkpoint; resume=True then finishes
    the run with the weights, validation history and test metrics of the uninterrupted run."""
    import graphattn.property as property_module

    settings = dict(seed=0, epochs=3, **{k: v for k, v in FAST.items() if k != "epochs"})
    real_loss, calls = property_module.masked_loss, {"n": 0}

    def failing_loss(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 9:  # 3 training steps + 1 validation loss per epoch: the 1st step of epoch 3
            raise KeyboardInterrupt
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(property_module, "masked_loss", failing_loss)
    with pytest.raises(KeyboardInterrupt):
        train_property_model(regression_csv, "smiles", "logp", out_dir=tmp_path, **settings)
    assert (tmp_path / "train" / "checkpoint.pt").is_file() and not (tmp_path / "metrics.json").exists()
    monkeypatch.setattr(property_module, "masked_loss", real_loss)
    resumed = train_property_model(regression_csv, "smiles", "logp", out_dir=tmp_path, resume=True, **settings)
    assert resumed.test.mean == regression_run.test.mean
    assert resumed.best_validation == regression_run.best_validation and resumed.best_epoch == regression_run.best_epoch
    first = torch.load(regression_run.out_dir / "model.pt", weights_only=True)["state_dict"]
    second = torch.load(tmp_path / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_resume_refuses_other_settings_and_starts_fresh_without_a_checkpoint(regression_csv, regression_run, tmp_path):
    out = regression_run.out_dir
    with pytest.raises(ValueError, match=r"other settings \(training.lr: 0.001 -> 0.002\)"):
        train_property_model(regression_csv, "smiles", "logp", seed=0, out_dir=out, epochs=3, resume=True, lr=2e-3,
                             **{k: v for k, v in FAST.items() if k != "epochs"})
    fresh = train_property_model(regression_csv, "smiles", "logp", seed=0, out_dir=tmp_path, epochs=3, resume=True,
                                 **{k: v for k, v in FAST.items() if k != "epochs"})
    assert fresh.test.mean == regression_run.test.mean
    assert json.loads((tmp_path / "train" / "run.json").read_text())["training"]["lr"] == 1e-3


def test_targets_standardized_with_train_statistics_and_metrics_in_original_units(regression_run, regression_csv):
    from torch_geometric.data import Batch

    from graphattn.models import AddGraphPositionalEncoding

    out = regression_run.out_dir
    rows = list(csv.DictReader(open(regression_csv)))
    split = index_split(out / "split.csv", num_rows=len(rows))
    train_targets = [float(rows[i]["logp"]) for i in split.train.tolist()]
    model = load_property_model(out)
    assert model.scaler.mean[0] == pytest.approx(statistics.fmean(train_targets), abs=1e-6)
    assert model.scaler.std[0] == pytest.approx(statistics.pstdev(train_targets), abs=1e-6)

    test_smiles = [rows[i]["smiles"] for i in split.test.tolist()]
    test_targets = torch.tensor([[float(rows[i]["logp"])] for i in split.test.tolist()], dtype=torch.float64)
    pe = AddGraphPositionalEncoding("random_walk", TINY_MODEL["pe_size"])
    with torch.no_grad():
        raw = model.module.eval()(Batch.from_data_list([pe(smiles_to_graph(s)) for s in test_smiles]))
    expected = raw.double() * model.scaler.std[0] + model.scaler.mean[0]  # inverse standardization by hand
    predicted = model.predict(test_smiles)
    assert torch.allclose(predicted.double(), expected, atol=1e-5)
    rmse = float(((predicted.double() - test_targets) ** 2).mean().sqrt())
    mae = float((predicted.double() - test_targets).abs().mean())
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["rmse"] == pytest.approx(rmse, rel=1e-5)
    assert metrics["test"]["mae"] == pytest.approx(mae, rel=1e-5)


def test_same_seed_gives_identical_metrics(regression_run, regression_csv, tmp_path):
    again = train_property_model(regression_csv, "smiles", "logp", seed=0, out_dir=tmp_path / "again", epochs=3,
                                 **{k: v for k, v in FAST.items() if k != "epochs"})
    first = json.loads((regression_run.out_dir / "metrics.json").read_text())
    second = json.loads((again.out_dir / "metrics.json").read_text())
    first.pop("time"), second.pop("time")
    assert first == second
    assert (regression_run.out_dir / "split.csv").read_text() == (again.out_dir / "split.csv").read_text()


def test_predict_csv_round_trip_equals_in_memory_predictions(regression_run, regression_csv, tmp_path):
    out_csv = tmp_path / "predictions" / "logp.csv"
    written = predict_csv(regression_run.out_dir, regression_csv, None, out_csv)
    assert written.num_rows == len(SMILES) and written.invalid == []
    rows = list(csv.DictReader(open(out_csv)))
    assert list(rows[0]) == ["smiles", "logp"]
    assert [row["smiles"] for row in rows] == SMILES
    from_file = torch.tensor([[float(row["logp"])] for row in rows], dtype=torch.float32)
    in_memory = regression_run.model.predict(SMILES)
    assert torch.equal(from_file, in_memory)
    assert torch.equal(load_property_model(regression_run.out_dir).predict(SMILES), in_memory)


def test_split_file_of_a_run_reproduces_its_split(regression_run, regression_csv, tmp_path):
    result = train_property_model(regression_csv, "smiles", "logp", split=regression_run.out_dir / "split.csv",
                                  seed=3, out_dir=tmp_path / "file-split", **FAST)
    assert result.metrics["split"] == {"kind": "file", "train": 24, "valid": 3, "test": 3}
    assert (tmp_path / "file-split" / "split.csv").read_text() == (regression_run.out_dir / "split.csv").read_text()


def test_multitask_classification_with_missing_labels(classification_files, tmp_path):
    path, split = classification_files
    result = train_property_model(path, "smiles", ["ring", "nitrogen"], task="classification", split=split,
                                  out_dir=tmp_path / "cls", **FAST)
    metrics = json.loads((tmp_path / "cls" / "metrics.json").read_text())
    assert metrics["split"] == {"kind": "file", "train": 22, "valid": 4, "test": 4}
    assert metrics["validation"]["metric"] == "roc_auc" and metrics["validation"]["mode"] == "max"
    assert set(metrics["test"]) == {"roc_auc", "per_task", "labels"}
    assert result.model.scaler is None
    assert torch.load(tmp_path / "cls" / "model.pt", weights_only=True)["target_mean"] is None

    rows = classification_rows()
    test_rows = index_split(split).test.tolist()
    probabilities = result.model.predict([rows[i][0] for i in test_rows])
    assert ((probabilities > 0) & (probabilities < 1)).all()
    labels = torch.tensor([[NAN if c == "" else float(c) for c in rows[i][1:]] for i in test_rows])
    expected = {}
    for column, name in enumerate(["ring", "nitrogen"]):
        present = ~labels[:, column].isnan()
        y = labels[present, column]
        both = bool((y == 0).any() and (y == 1).any())
        expected[name] = pairwise_auc(probabilities[present, column].tolist(), y.tolist()) if both else None
        assert metrics["test"]["labels"][name] == int(present.sum())
    for name, value in expected.items():
        assert metrics["test"]["per_task"][name]["roc_auc"] == (pytest.approx(value) if value is not None else None)
    defined = [v for v in expected.values() if v is not None]
    assert metrics["test"]["roc_auc"] == pytest.approx(sum(defined) / len(defined))


def test_a_pyg_baseline_trains_in_the_same_harness(regression_csv, tmp_path):
    result = train_property_model(regression_csv, "smiles", "logp", model="gin", out_dir=tmp_path / "gin",
                                  **{**FAST, "model_config": {"hidden": 8, "layers": 1}})
    model = load_property_model(tmp_path / "gin")
    assert model.kind == "gin" and model.settings["hidden"] == 8
    assert torch.equal(model.predict(SMILES[:5]), result.model.predict(SMILES[:5]))
    assert math.isfinite(result.metrics["test"]["rmse"])


# ---------------------------------------------------------------------------------------------- errors
def test_missing_column_lists_the_available_columns(regression_csv, tmp_path):
    with pytest.raises(ValueError, match=r"Expected column\(s\) \['logS'\].*columns are \['name', 'smiles', 'logp'\]"):
        train_property_model(regression_csv, "smiles", "logS", out_dir=tmp_path, **FAST)
    with pytest.raises(ValueError, match=r"Unknown model_config keys \['width'\]"):
        train_property_model(regression_csv, "smiles", "logp", out_dir=tmp_path, **{**FAST, "model_config": {"width": 3}})
    with pytest.raises(ValueError, match="Expected split 'random', 'scaffold' or the path"):
        train_property_model(regression_csv, "smiles", "logp", split="scaffolds", out_dir=tmp_path, **FAST)
    with pytest.raises(ValueError, match="Unknown model 'mpnn'"):
        train_property_model(regression_csv, "smiles", "logp", model="mpnn", out_dir=tmp_path, **FAST)
    with pytest.raises(ValueError, match="Expected no smiles_col / target_cols without a CSV"):
        train_property_model(None, "smiles", "logp", out_dir=tmp_path, **FAST)


def test_invalid_smiles_raises_naming_the_line_or_is_skipped_and_reported(tmp_path):
    rows = [[s, logp(s)] for s in SMILES[:20]]
    rows.insert(3, ["C1CC(", 1.0])  # data row 3 -> line 5 (after the header)
    path = write_csv(tmp_path / "bad.csv", ["smiles", "logp"], rows)
    with pytest.raises(InvalidSmilesError, match=r"'C1CC\(' on line 5"):
        train_property_model(path, "smiles", "logp", out_dir=tmp_path / "strict", **FAST)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = train_property_model(path, "smiles", "logp", skip_invalid=True, out_dir=tmp_path / "lenient", **FAST)
    metrics = json.loads((tmp_path / "lenient" / "metrics.json").read_text())
    assert [(row["line"], row["smiles"]) for row in metrics["skipped_rows"]] == [(5, "C1CC(")]
    assert sum(result.split_sizes) == 20

    # prediction: an error naming the line, or an empty prediction listed in the result
    with pytest.raises(InvalidSmilesError, match=r"'C1CC\(' on line 5.*skip_invalid=True"):
        predict_csv(tmp_path / "lenient", path, "smiles", tmp_path / "p.csv")
    with pytest.warns(UserWarning, match="1 of 21 SMILES"):
        written = predict_csv(tmp_path / "lenient", path, "smiles", tmp_path / "p.csv", skip_invalid=True)
    assert [(row.line, row.smiles) for row in written.invalid] == [(5, "C1CC(")]
    predicted = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert predicted[3] == {"smiles": "C1CC(", "logp": ""} and predicted[4]["logp"] != ""
    with pytest.raises(ValueError, match=r"Expected a SMILES column 'SMILES'.*columns are \['smiles', 'logp'\]"):
        predict_csv(tmp_path / "lenient", path, "SMILES", tmp_path / "p.csv")
    with pytest.raises(InvalidSmilesError, match=r"smiles\[1\]"):
        result.model.predict(["CCO", "C1CC("])


def test_loading_a_missing_model_says_what_to_pass(tmp_path):
    with pytest.raises(FileNotFoundError, match="No model.pt at"):
        load_property_model(tmp_path)


def test_classification_falls_back_to_the_validation_loss_without_both_classes(classification_files, tmp_path):
    path, _ = classification_files
    rows = classification_rows()
    chains = [i for i, row in enumerate(rows) if row[1] == 0]
    rings = [i for i, row in enumerate(rows) if row[1] == 1]
    valid, test = chains[:2], rings[:2] + chains[2:4]  # validation: one class only
    train = [i for i in range(len(rows)) if i not in valid + test]
    split = write_csv(tmp_path / "one-class.csv", ["train", "val", "test"],
                      [[train[i], *(part[i] if i < len(part) else "" for part in (valid, test))] for i in range(len(train))])
    with pytest.warns(UserWarning, match="early stopping watches the validation loss"):
        result = train_property_model(path, "smiles", ["ring"], task="classification", split=split, out_dir=tmp_path / "out", **FAST)
    assert result.monitor == "loss" and result.metrics["validation"]["metric"] == "loss"
    assert result.metrics["validation"]["roc_auc"] is None and result.metrics["test"]["roc_auc"] is not None


# ---------------------------------------------------------------------------------------------- descriptors, schedule
def test_descriptors_join_the_model_and_travel_with_it(regression_csv, tmp_path):
    from graphattn.data.descriptors import DescriptorScaler, descriptor_matrix, descriptor_names

    result = train_property_model(regression_csv, "smiles", "logp", out_dir=tmp_path / "desc", descriptors="rdkit2d",
                                  weight_decay=1e-4, schedule="cosine", warmup_epochs=1, **FAST)
    model = result.model
    width = len(descriptor_names())
    assert model.settings["graph_feature_dim"] == width
    assert model.module.head[0].in_features == TINY_MODEL["hidden_dim"] + width
    # the scaler was fitted on the training molecules only
    train_rows = [int(row["train"]) for row in csv.DictReader(open(tmp_path / "desc" / "split.csv")) if row["train"]]
    expected = DescriptorScaler.fit(descriptor_matrix([SMILES[i] for i in train_rows]))
    assert torch.allclose(model.descriptor_scaler.quantiles, expected.quantiles, equal_nan=True)
    config = json.loads((tmp_path / "desc" / "config.json").read_text())
    assert config["data"]["descriptors"] == "rdkit2d"
    assert config["training"]["schedule"] == "cosine" and config["training"]["weight_decay"] == 1e-4
    assert config["training"]["warmup_steps"] == 3  # 24 training molecules, batch 8
    loaded = load_property_model(tmp_path / "desc")
    assert torch.equal(loaded.predict(SMILES[:6]), model.predict(SMILES[:6]))
    # the descriptors matter: other molecule-level inputs change the prediction
    graphs = [smiles_to_graph(s) for s in SMILES[:2]]
    for graph in graphs:
        graph.graph_features = torch.zeros(1, width)
    assert not torch.equal(model.predict_graphs(graphs), model.predict(SMILES[:2]))


def test_descriptors_need_smiles_or_features_on_graphs(regression_csv, tmp_path):
    result = train_property_model(regression_csv, "smiles", "logp", out_dir=tmp_path / "d", descriptors="rdkit2d",
                                  **{**FAST, "epochs": 1})
    anonymous = smiles_to_graph("CCO")
    del anonymous.smiles
    with pytest.raises(ValueError, match="'smiles' attribute"):
        result.model.predict_graphs([anonymous])
    with pytest.raises(ValueError, match="Unknown descriptors 'morgan'"):
        train_property_model(regression_csv, "smiles", "logp", out_dir=tmp_path / "e", descriptors="morgan", **FAST)
    with pytest.raises(ValueError, match="may not set.*graph_feature_dim"):
        train_property_model(regression_csv, "smiles", "logp", out_dir=tmp_path / "f",
                             **{**FAST, "model_config": {**TINY_MODEL, "graph_feature_dim": 3}})


def test_a_baseline_takes_descriptors_too(regression_csv, tmp_path):
    result = train_property_model(regression_csv, "smiles", "logp", model="gin", out_dir=tmp_path / "gin",
                                  descriptors="rdkit2d", **{**FAST, "model_config": {"hidden": 8, "layers": 1}})
    assert result.model.module.head[0].in_features == 8 + result.model.descriptor_scaler.num_features
    assert torch.equal(load_property_model(tmp_path / "gin").predict(SMILES[:3]), result.model.predict(SMILES[:3]))
