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
    status = cli.main(["demo", "--quick", "--repeats", "1", "--no-progress", "--device", "cpu", "--out", str(out)])
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
