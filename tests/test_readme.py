"""The README's Python example runs as written and prints what its comments say."""
from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs_and_matches_its_comments():
    text = README.read_text()
    match = re.search(r"## Example\n\n```python\n(.*?)```", text, re.S)
    assert match, "README.md lost its '## Example' python block"
    code = match.group(1)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "README.md example", "exec"), {})
    lines = printed.getvalue().splitlines()
    assert lines[0].startswith("AttentionGraph(num_queries=1024") and "density=0.124" in lines[0]
    assert lines[1].startswith("csr.")  # explain() names a backend and its reason
    assert float(re.search(r"tensor\(([^)]+)\)", lines[2]).group(1)) < 1e-4  # sparse core == dense oracle
    assert lines[3] == "torch.Size([8, 1024, 128])"


def test_readme_sequence_model_example_runs_and_matches_its_comments():
    text = README.read_text()
    match = re.search(r"## Sequence models\n\n```python\n(.*?)```", text, re.S)
    assert match, "README.md lost its '## Sequence models' python block"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(match.group(1), "README.md sequence example", "exec"), {})
    assert printed.getvalue().splitlines() == ["64", "4"]


def test_readme_molecule_example_runs_and_matches_its_comments():
    text = README.read_text()
    match = re.search(r"## Molecules\n\n```python\n(.*?)```", text, re.S)
    assert match, "README.md lost its '## Molecules' python block"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(match.group(1), "README.md molecule example", "exec"), {})
    assert printed.getvalue().splitlines() == ["torch.Size([21, 9]) torch.Size([40, 3])", "torch.Size([3, 1])"]


def test_readme_vector_inputs_example_runs_and_matches_its_comments():
    text = README.read_text()
    match = re.search(r"## Text, speech and images\n\n.*?```python\n(.*?)```", text, re.S)
    assert match, "README.md lost its '## Text, speech and images' python block"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(match.group(1), "README.md vector example", "exec"), {})
    assert printed.getvalue().splitlines() == ["torch.Size([8, 10])", "torch.Size([2, 10])"]
