"""graphattn.data.descriptors: RDKit descriptor values, NaN for failures, and the empirical-CDF
scaler (checked against a direct rank computation)."""
import math

import pytest
import torch

from graphattn.data.descriptors import DescriptorScaler, descriptor_matrix, descriptor_names, molecule_descriptors
from graphattn.data.molecule import InvalidSmilesError

pytest.importorskip("rdkit")


def test_values_are_rdkits_own():
    from rdkit import Chem
    from rdkit.Chem import Crippen, Descriptors, rdMolDescriptors

    names = descriptor_names()
    values = molecule_descriptors("c1ccccc1O")
    assert values.dtype == torch.float64 and values.shape == (len(names),)
    mol = Chem.MolFromSmiles("c1ccccc1O")
    assert values[names.index("MolLogP")] == pytest.approx(Crippen.MolLogP(mol))
    assert values[names.index("TPSA")] == pytest.approx(rdMolDescriptors.CalcTPSA(mol))
    assert values[names.index("MolWt")] == pytest.approx(Descriptors.MolWt(mol))
    assert torch.equal(descriptor_matrix([mol, "c1ccccc1O"])[0], values)


def test_failures_are_nan_not_zero(monkeypatch):
    import graphattn.data.descriptors as module

    def broken(mol):
        raise RuntimeError("no parameters")

    monkeypatch.setattr(module, "_descriptor_functions", lambda: [("ok", lambda m: 1.5), ("broken", broken),
                                                                  ("huge", lambda m: float("inf"))])
    assert descriptor_matrix(["CCO"]).tolist()[0][0] == 1.5
    assert all(math.isnan(v) for v in descriptor_matrix(["CCO"]).tolist()[0][1:])


def test_invalid_smiles_names_its_position():
    with pytest.raises(InvalidSmilesError, match=r"molecules\[1\]"):
        descriptor_matrix(["CCO", "C1CC"])


def reference_cdf(train: list[float], value: float) -> float:
    """Mid-rank empirical CDF under the linearly interpolated percentile grid, the slow way."""
    grid = torch.quantile(torch.tensor(train, dtype=torch.float64), torch.linspace(0, 1, 101, dtype=torch.float64)).tolist()
    equal = [i for i, q in enumerate(grid) if q == value]
    if equal:
        return (equal[0] + equal[-1]) / 2 / 100
    if value < grid[0]:
        return 0.0
    if value > grid[-1]:
        return 1.0
    i = max(j for j, q in enumerate(grid) if q < value)
    return (i + (value - grid[i]) / (grid[i + 1] - grid[i])) / 100


def test_scaler_maps_through_the_training_cdf():
    generator = torch.Generator().manual_seed(0)
    train = torch.randn(200, 2, generator=generator, dtype=torch.float64)
    train[:, 1] = torch.exp(3 * train[:, 1])  # heavy tail: the CDF does not care
    train[5, 0] = math.nan  # ignored in the fit
    scaler = DescriptorScaler.fit(train, names=["a", "b"])
    probes = torch.tensor([[-10.0, 0.0], [0.3, 1.0], [10.0, 1e9], [math.nan, float(train[7, 1])]], dtype=torch.float64)
    out = scaler.transform(probes)
    assert out.dtype == torch.float32 and out.shape == (4, 2)
    finite_a = [v for v in train[:, 0].tolist() if not math.isnan(v)]
    for row in range(4):
        for column, values in ((0, finite_a), (1, train[:, 1].tolist())):
            value = float(probes[row, column])
            expected = 0.0 if math.isnan(value) else 2 * reference_cdf(values, value) - 1
            assert float(out[row, column]) == pytest.approx(expected, abs=1e-6)
    assert out[0, 0] == -1 and out[2, 0] == 1 and out[2, 1] == 1


def test_constant_and_empty_columns_map_to_zero_and_state_round_trips():
    train = torch.tensor([[1.0, math.nan, 0.0], [1.0, math.nan, 2.0], [1.0, math.nan, 4.0]], dtype=torch.float64)
    scaler = DescriptorScaler.fit(train, names=["constant", "empty", "spread"])
    out = scaler.transform(torch.tensor([[5.0, 3.0, 2.0]], dtype=torch.float64))
    assert out.tolist() == [[0.0, 0.0, 0.0]]  # 2.0 is the training median of 'spread'
    again = DescriptorScaler.from_state(scaler.state())
    assert again.names == scaler.names and torch.equal(again.quantiles.isnan(), scaler.quantiles.isnan())
    with pytest.raises(ValueError, match="Expected 3 descriptor columns"):
        scaler.transform(torch.zeros(1, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="at least one training molecule"):
        DescriptorScaler.fit(torch.zeros(0, 3, dtype=torch.float64), names=["a", "b", "c"])


def test_a_scaler_from_another_rdkit_is_refused():
    scaler = DescriptorScaler.fit(torch.zeros(2, 2, dtype=torch.float64), names=["MolLogP", "NotADescriptor"])
    with pytest.raises(ValueError, match="NotADescriptor"):
        scaler.check_names()
