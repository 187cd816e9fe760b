"""graphattn.compare: the variant table, speed / memory measurement, budgeted training, the bubble
chart, the tables, and `graphattn patterns compare --quick` end to end. Tiny sizes throughout."""
from __future__ import annotations

import json
import math

import pytest
import torch

from graphattn import cli
from graphattn.compare import (
    TASK_LENGTHS,
    TASKS,
    VARIANT_NAMES,
    VARIANTS,
    BubblePoint,
    Comparison,
    ModelSettings,
    TaskData,
    TensorMemoryTracker,
    TrainingBudget,
    accuracy_table,
    bubble_points,
    build_classifier,
    compare,
    load_task,
    measure_step,
    measure_steps,
    plot_bubbles,
    speed_table,
    train_and_evaluate,
    variant_settings,
)
from graphattn.models import TransformerConfig
from graphattn.train import TrainConfig, fit

TINY = ModelSettings(d_model=8, num_heads=2, num_layers=1, ff_dim=16, dropout=0.0)
ISSUE_NAMES = ("full", "local", "strided", "longformer", "bigbird", "lsh", "routing", "sinkhorn", "linformer",
               "linear", "performer", "synthesizer")


# ---------------------------------------------------------------------- variants
def test_variant_table_has_every_name_of_the_issue_in_order() -> None:
    # the issue's names, with graphattn's fused full attention right after the vanilla baseline
    assert VARIANT_NAMES == (ISSUE_NAMES[0], "full_sdpa", *ISSUE_NAMES[1:])
    assert list(VARIANTS) == list(VARIANT_NAMES)
    assert VARIANTS["full"].published_name == "Transformer"
    assert variant_settings("full", 64).encoder_attention == "materialized_softmax"
    assert variant_settings("full_sdpa", 64) == ("full", "softmax")
    assert VARIANTS["routing"].published_name is None


@pytest.mark.parametrize("length", [16, 1024, 2000, 4096])
def test_every_variant_gives_a_valid_config(length: int) -> None:
    for name in VARIANT_NAMES:
        settings = variant_settings(name, length)
        config = TransformerConfig(vocab_size=10, d_model=8, num_heads=2, max_positions=length,
                                   encoder_pattern=settings.encoder_pattern, encoder_attention=settings.encoder_attention)
        assert str(config.encoder_pattern).split("(")[0] == settings.encoder_pattern.split("(")[0]


def test_length_dependent_hyper_parameters() -> None:
    assert variant_settings("local", 4096).encoder_pattern == "local(window=128)"
    assert variant_settings("strided", 4096).encoder_pattern == "union(local(window=64), strided(stride=64))"
    assert variant_settings("routing", 1024).encoder_attention == "routing(num_clusters=32, window=32)"
    assert variant_settings("sinkhorn", 1024).encoder_attention == "sinkhorn(bucket_size=64)"
    assert variant_settings("sinkhorn", 2000).encoder_attention == "sinkhorn(bucket_size=50)"  # divides the length
    assert variant_settings("sinkhorn", 97).encoder_attention == "sinkhorn(bucket_size=64)"  # a prime: no divisor
    assert variant_settings("linformer", 4096).encoder_attention == "linformer(projected_length=256)"
    assert variant_settings("linformer", 100).encoder_attention == "linformer(projected_length=100)"
    assert variant_settings("lsh", 4096).encoder_attention == "lsh(chunk_size=64, num_rounds=2)"
    assert variant_settings("performer", 4096).encoder_attention == "performer(num_features=256)"


def test_every_variant_gives_a_sequence_the_same_logits_alone_and_padded_in_a_batch(generator) -> None:
    short = torch.randint(1, 20, (1, 9), generator=generator)
    batch = torch.zeros(2, 30, dtype=torch.long)
    batch[0] = torch.randint(1, 20, (30,), generator=generator)
    batch[1, :9] = short
    for name in VARIANT_NAMES:
        torch.manual_seed(0)
        model = build_classifier(name, 32, 20, 3, TINY).double().eval()
        with torch.no_grad():
            torch.testing.assert_close(model(batch)[1:], model(short), rtol=1e-9, atol=1e-9, msg=name)


def test_unknown_variants_and_bad_sizes_raise() -> None:
    with pytest.raises(ValueError, match="Unknown attention variant 'reformer'; expected one of full, full_sdpa, local, strided"):
        variant_settings("reformer", 1024)
    with pytest.raises(ValueError, match="max_length"):
        variant_settings("local", 0)
    with pytest.raises(ValueError, match="Unknown attention variant"):
        measure_steps(["full", "nope"], 16, model=TINY)
    with pytest.raises(ValueError, match="non-empty list"):
        measure_steps("full", 16, model=TINY)
    with pytest.raises(ValueError, match="length"):
        measure_step("full", 0, model=TINY)
    with pytest.raises(ValueError, match="Unknown task 'cifar'; expected one of listops, text, pathfinder, image"):
        load_task("cifar")
    with pytest.raises(ValueError, match="side \\* side"):
        load_task("image", max_length=1000)
    with pytest.raises(ValueError, match="ewt_path"):
        load_task("text", max_length=1000)
    with pytest.raises(ValueError, match="pooling"):
        ModelSettings(pooling="sum")


# ---------------------------------------------------------------------- speed and memory
def test_every_variant_builds_and_trains_one_step() -> None:
    results = measure_steps(list(VARIANT_NAMES), 32, batch_size=2, model=TINY, steps=1, warmup=1)
    assert [m.variant for m in results] == list(VARIANT_NAMES)
    for m in results:
        assert m.steps_per_second > 0 and m.step_seconds > 0 and m.first_step_seconds > 0
        assert m.forward_seconds is not None and m.forward_seconds > 0
        assert m.peak_memory_bytes >= m.resident_bytes > 0
        assert m.memory_method == "TensorMemoryTracker" and m.length == 32 and m.parameters > 0
        assert (m.attention_backend is not None) == (m.encoder_attention == "softmax")


def test_measure_step_returns_positive_numbers() -> None:
    m = measure_step("local", 48, batch_size=2, d_model=8, num_heads=2, num_layers=1, steps=3, warmup=1)
    assert m.variant == "local" and m.encoder_pattern == "local(window=128)" and m.batch_size == 2
    assert m.step_seconds_min <= m.step_seconds <= m.step_seconds_max
    assert math.isclose(m.steps_per_second, 1 / m.step_seconds)
    assert m.timed_steps == 3 and m.threads == torch.get_num_threads() and m.device == "cpu"
    assert m.peak_memory_bytes > m.resident_bytes


def test_a_full_length_training_step_peaks_above_its_activations() -> None:
    """The tracked peak is at least what autograd must keep: the input embeddings of every token."""
    m = measure_step("full", 64, batch_size=4, model=TINY, steps=1, warmup=1, measure_forward=False)
    assert m.peak_memory_bytes - m.resident_bytes >= 4 * 64 * 8 * 4  # [B, L, E] float32


def test_memory_tracker_counts_a_known_allocation() -> None:
    with TensorMemoryTracker() as tracker:
        x = torch.empty(1000, 250)  # 1,000,000 bytes
        view = x[10:]  # a view shares the storage: nothing more
        assert tracker.current_bytes == 1_000_000
        del x
        assert tracker.current_bytes == 1_000_000  # the view keeps the storage alive
        del view
        assert tracker.current_bytes == 0
        y = torch.ones(100, 100, dtype=torch.float64)  # 80,000 bytes
        z = y @ y  # another 80,000
    assert tracker.peak_bytes == 1_000_000
    assert tracker.current_bytes == 160_000
    del y, z


def test_memory_tracker_counts_resident_tensors_and_saved_activations() -> None:
    weight = torch.randn(256, 256, requires_grad=True)  # 262,144 bytes, made before
    with TensorMemoryTracker([weight]) as tracker:
        assert tracker.resident_bytes == 262_144
        hidden = torch.tanh(torch.randn(64, 256) @ weight)  # the tanh output is saved for backward
        loss = hidden.sum()
        del hidden
        loss.backward()
    # When the weight's gradient (x^T @ g) is made, the weight, the input x (saved by the matmul),
    # the incoming gradient g and the new gradient are alive: 2 x 262,144 + 2 x 65,536 bytes (plus
    # a few scalars); never more than the three [64, 256] activations on top.
    activation = 64 * 256 * 4
    assert 2 * 262_144 + 2 * activation <= tracker.peak_bytes <= 2 * 262_144 + 3 * activation + 64
    assert weight.grad is not None


# ---------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def tiny_image_task() -> TaskData:
    return load_task("image", max_length=256, train_size=16, valid_size=8, test_size=8)


def test_load_task_sizes_and_lengths(tiny_image_task: TaskData) -> None:
    assert (len(tiny_image_task.train), len(tiny_image_task.valid), len(tiny_image_task.test)) == (16, 8, 8)
    assert tiny_image_task.max_length == 256 and tiny_image_task.num_classes == 10
    listops = load_task("listops", max_length=40, train_size=4, valid_size=2, test_size=2)
    assert int(listops.train.lengths().max()) < 40 and int(listops.train.lengths().min()) > 10
    assert set(TASK_LENGTHS) == set(TASKS)


def test_train_and_evaluate_reports_the_run(tiny_image_task: TaskData) -> None:
    result = train_and_evaluate(tiny_image_task, "linear", budget_minutes=1.0, model=TINY, batch_size=4,
                                max_steps=3, evaluations=2)
    assert result.task == "image" and result.variant == "linear" and result.encoder_attention == "linear"
    assert result.steps == 3 and result.stopped_by == "max_steps" and result.examples_seen == 12
    assert 0.0 <= result.test_accuracy <= 1.0 and result.test_examples == 8
    assert result.validations and result.validations[-1][0] == 3
    assert result.best_step in [step for step, _, _ in result.validations]
    assert result.valid_accuracy == max(score for _, _, score in result.validations)
    assert result.parameters > 0 and result.wall_seconds >= result.train_seconds


def test_training_budget_stops_and_keeps_the_best_state() -> None:
    model = torch.nn.Linear(2, 1)
    scores = iter([0.1, 0.7, 0.3, 0.2, 0.2, 0.2])
    snapshots = {}

    def validate(m):
        snapshots[len(snapshots)] = m.weight.detach().clone()
        return next(scores)

    budget = TrainingBudget(3600, model, validate, evaluations=1, max_steps=100)
    data = [(torch.randn(2), torch.randn(1)) for _ in range(8)]

    def loss_fn(m, batch, state):
        x, y = batch
        return torch.nn.functional.mse_loss(m(x), y)

    def validate_every_step(state):  # a plain callback: validate after steps 1, 2, 3
        if state.step <= 3:
            budget._validate(state.step)

    config = TrainConfig(epochs=100, batch_size=2, lr=0.1, progress=False, device="cpu")
    fit(model, data, loss_fn=loss_fn, config=config, callbacks=[budget, validate_every_step])
    assert budget.stopped_by == "max_steps" and budget.steps == 100
    assert budget.best_step == 2 and budget.best_score == 0.7
    torch.testing.assert_close(budget.best_state["weight"], snapshots[1])
    with pytest.raises(ValueError, match="seconds"):
        TrainingBudget(0, model)


def test_training_budget_stops_on_time() -> None:
    model = torch.nn.Linear(2, 1)
    budget = TrainingBudget(1e-6, model)
    data = [(torch.randn(2), torch.randn(1)) for _ in range(8)]
    config = TrainConfig(epochs=5, batch_size=2, progress=False, device="cpu")
    fit(model, data, loss_fn=lambda m, b, s: torch.nn.functional.mse_loss(m(b[0]), b[1]), config=config,
        callbacks=[budget])
    assert budget.stopped_by == "budget" and budget.steps == 1
    multiplier = budget.lr_multiplier(10)
    assert multiplier(0) == pytest.approx(0.0, abs=1e-9)  # the budget is used up: the cosine is at 0


def _budgeted_fit(out_dir, stop_at: int | None, seconds: float = 3600.0):
    """A budgeted fit of a small model (max_steps 12, validation at the end), interrupted after
    step ``stop_at`` like a killed session, or run to the end."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    scores = []

    def validate(m):
        scores.append(float(m[0].weight.sum()))
        return -len(scores)  # the first validation stays the best: best_state must survive a resume

    budget = TrainingBudget(seconds, model, validate, evaluations=1, max_steps=12)
    generator = torch.Generator().manual_seed(1)
    data = [(torch.randn(2, generator=generator), torch.randn(1, generator=generator)) for _ in range(16)]

    def interrupt(state):
        if stop_at is not None and state.step == stop_at:
            raise KeyboardInterrupt

    def validate_once(state):  # one early validation (the best), at step 2
        if state.step == 2:
            budget._validate(state.step)

    config = TrainConfig(epochs=100, batch_size=4, lr=0.05, progress=False, device="cpu", checkpoint_every=5)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.05)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, budget.lr_multiplier(2))
    fit(model, data, loss_fn=lambda m, b, s: torch.nn.functional.mse_loss(m(b[0]), b[1]), config=config,
        optimizer=optimizer, scheduler=scheduler, callbacks=[budget, validate_once, interrupt], out_dir=out_dir,
        resume=True)
    return model, budget


def test_an_interrupted_budgeted_run_resumes_with_its_budget_and_best_state(tmp_path) -> None:
    straight_model, straight = _budgeted_fit(tmp_path / "straight", None)
    with pytest.raises(KeyboardInterrupt):
        _budgeted_fit(tmp_path / "resumed", 7)  # a checkpoint of step 7 is written on the way out
    saved = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)
    assert saved["step"] == 7 and saved["callbacks"][0]["best_step"] == 2 and saved["callbacks"][1] is None
    model, budget = _budgeted_fit(tmp_path / "resumed", None)
    assert budget.steps == 12 and budget.stopped_by == "max_steps"
    assert [step for step, _, _ in budget.history] == [step for step, _, _ in straight.history] == [2, 12]
    assert budget.best_step == 2 and budget.seconds_before > 0 and budget.training_seconds >= budget.seconds_before
    for name, value in straight.best_state.items():
        torch.testing.assert_close(budget.best_state[name], value, rtol=0, atol=0)
    for mine, theirs in zip(model.parameters(), straight_model.parameters()):  # an exact continuation
        torch.testing.assert_close(mine, theirs, rtol=0, atol=0)


def test_a_resumed_run_whose_budget_is_used_up_takes_no_step(tmp_path) -> None:
    _budgeted_fit(tmp_path, None, seconds=1e-6)  # stops on time after one step
    model, budget = _budgeted_fit(tmp_path, None, seconds=1e-6)
    assert budget.steps == 1 and budget.stopped_by == "budget"


def test_train_and_evaluate_continues_a_run_from_its_folder(tiny_image_task: TaskData, tmp_path) -> None:
    first = train_and_evaluate(tiny_image_task, "linear", budget_minutes=1.0, model=TINY, batch_size=4,
                               max_steps=3, evaluations=2, out_dir=tmp_path, checkpoint_every=1)
    assert first.resumed_from_step is None and (tmp_path / "checkpoint.pt").is_file()
    again = train_and_evaluate(tiny_image_task, "linear", budget_minutes=1.0, model=TINY, batch_size=4,
                               max_steps=5, evaluations=2, out_dir=tmp_path, checkpoint_every=1)
    assert again.resumed_from_step == 3 and again.steps == 5
    assert [step for step, _, _ in again.validations][: len(first.validations)] == [step for step, _, _ in first.validations]


# ---------------------------------------------------------------------- results
def _rows():
    speed = [
        {"variant": "full", "length": 64, "steps_per_second": 10.0, "peak_memory_bytes": 1000},
        {"variant": "local", "length": 64, "steps_per_second": 50.0, "peak_memory_bytes": 200},
        {"variant": "linear", "length": 64, "steps_per_second": 40.0, "peak_memory_bytes": None},
        {"variant": "full", "length": 32, "steps_per_second": 30.0, "peak_memory_bytes": 300},
    ]
    accuracy = [
        {"variant": "full", "task": "listops", "test_accuracy": 0.4},
        {"variant": "full", "task": "image", "test_accuracy": 0.6},
        {"variant": "local", "task": "listops", "test_accuracy": 0.2},
        {"variant": "linear", "task": "listops", "test_accuracy": 0.3},
    ]
    return accuracy, speed


def test_bubble_points_are_relative_to_full_at_the_longest_length() -> None:
    accuracy, speed = _rows()
    points = bubble_points(accuracy, speed)
    assert points == [
        BubblePoint("full", 1.0, 0.5, 1.0, 2),
        BubblePoint("local", 5.0, 0.2, 0.2, 1),
        BubblePoint("linear", 4.0, 0.3, None, 1),
    ]
    with pytest.raises(ValueError, match="'full' at 32 tokens"):
        bubble_points(accuracy, [r for r in speed if r["variant"] != "full" or r["length"] != 32], length=32)


def test_plot_bubbles_writes_a_png(tmp_path) -> None:
    pytest.importorskip("matplotlib")
    accuracy, speed = _rows()
    path = plot_bubbles(bubble_points(accuracy, speed), tmp_path / "plots" / "bubbles.png", title="test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="Nothing to plot"):
        plot_bubbles([], tmp_path / "empty.png")
    with pytest.raises(ValueError, match="speed measurements"):
        plot_bubbles(Comparison(), tmp_path / "empty.png")


def test_tables() -> None:
    accuracy, speed = _rows()
    table = accuracy_table(accuracy)
    assert table.splitlines()[0] == "| variant | listops | image | mean |"
    assert "| full | 40.00 | 60.00 | 50.00 |" in table and "| local | 20.00 | - | 20.00 |" in table
    table = speed_table(speed)
    assert "| local | - | 50 (5.0x) | - | 0.0 (0.20) |" in table


def test_compare_calls_back_with_every_result(tiny_image_task: TaskData) -> None:
    seen = []
    result = compare([tiny_image_task], ["local"], budget_minutes=1.0, model=TINY,
                     train_options={"batch_size": 4, "max_steps": 1, "evaluations": 1},
                     speed_lengths=[16], speed_options={"steps": 1, "warmup": 1, "batch_size": 1},
                     on_result=seen.append, progress=False)
    assert [m.variant for m in result.speed] == ["full", "local"]  # full added: the baseline
    assert [r.variant for r in result.accuracy] == ["local"]
    assert seen[0] == result.speed and seen[1] is result.accuracy[0]
    with pytest.raises(ValueError, match="Unknown attention variant"):
        compare([tiny_image_task], ["nope"], budget_minutes=1.0)


def test_build_classifier_sizes_mechanisms_by_the_length() -> None:
    model = build_classifier("linformer", 100, 20, 3, TINY)
    assert model.config.max_positions == 100 and model.config.vocab_size == 20 and model.num_classes == 3


# ---------------------------------------------------------------------- command line
def test_cli_quick_runs_end_to_end(tmp_path, capsys) -> None:
    out = tmp_path / "lra"
    status = cli.main(["patterns", "compare", "--task", "listops", "--patterns", "full", "local", "linear",
                       "--quick", "--out", str(out), "--no-progress", "--device", "cpu"])
    assert status == 0
    payload = json.loads((out / "compare.json").read_text())
    assert [r["variant"] for r in payload["accuracy"]] == ["full", "local", "linear"]
    assert [r["variant"] for r in payload["speed"]] == ["full", "local", "linear"]
    assert payload["settings"]["quick"] and payload["settings"]["data"]["listops"]["max_length"] == 64
    assert payload["command"].startswith("graphattn patterns compare --task listops --patterns full local linear")
    markdown = (out / "compare.md").read_text()
    assert "## Test accuracy (%)" in markdown and "## Training speed and peak memory" in markdown
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        pass
    else:
        assert (out / "bubbles.png").is_file()
    assert "wrote" in capsys.readouterr().out


def test_cli_errors(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["patterns", "compare", "--task", "listops", "--patterns", "reformer", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "invalid choice: 'reformer'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["patterns", "compare", "--task", "text", "--quick", "--data", str(tmp_path / "missing"),
                  "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "UD English-EWT" in error and "pass --data DIR" in error
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["patterns", "compare", "--task", "image", "--length", "1000", "--quick", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "side * side" in capsys.readouterr().err


def test_compare_continues_its_runs_from_the_checkpoint_folder(tiny_image_task: TaskData, tmp_path) -> None:
    options = {"batch_size": 4, "max_steps": 2, "evaluations": 1, "checkpoint_every": 1}
    first = compare([tiny_image_task], ["linear"], budget_minutes=1.0, model=TINY, train_options=options,
                    checkpoint_dir=tmp_path, progress=False)
    folders = list(tmp_path.iterdir())
    assert len(folders) == 1 and folders[0].name.startswith("image-L") and "-linear-" in folders[0].name
    assert first.accuracy[0].resumed_from_step is None
    longer = compare([tiny_image_task], ["linear"], budget_minutes=1.0, model=TINY,
                     train_options={**options, "max_steps": 3}, checkpoint_dir=tmp_path, progress=False)
    assert longer.accuracy[0].steps == 3 and len(list(tmp_path.iterdir())) == 2  # other settings: another folder
    again = compare([tiny_image_task], ["linear"], budget_minutes=1.0, model=TINY, train_options=options,
                    checkpoint_dir=tmp_path, progress=False)
    assert again.accuracy[0].resumed_from_step == 2 and again.accuracy[0].steps == 2  # finished: no more steps
