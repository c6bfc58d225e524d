"""The planner: its arithmetic, its cache, the steps it counts, and `tuneloop plan` end to end."""

import itertools
import json
import math
import sys
from dataclasses import replace

import pytest

from conftest import chat, tiny_run_config, tuneloop
from tuneloop import cpu
from tuneloop.plan import Calibration, calibrate, calibration
from tuneloop.plan.estimate import (
    CLOSED_ANSWER_RUNAWAY,
    RUNAWAY_ROW,
    _generation,
    continuous_scorings,
    likely_longest,
    train_batches,
)
from tuneloop.plan.gpus import gpu_estimate, parameter_counts

CALIB = Calibration(
    train=[0.1, 1e-3, 1e-6],
    validation=[0.05, 4e-4, 4e-7],
    evaluation=[0.04, 3e-4, 5e-7],
    generate=[0.03, 0.002, 1e-6],
    generate_base=[0.02, 0.001, 1e-6],
    kappa=0.25,
    load_seconds=0.5,
    disk_bytes_per_second=1e9,
    checkpoint_bytes_per_parameter=12.0,
    trainable_parameters=5_000_000,
    memory=[1e9, 2e6, 1e3, 5e5],
    shape_bytes=16e6,
    probe_median_seconds=0.05,
    measured_with={},
)


@pytest.mark.parametrize(
    "rows, width, learned, seconds",
    [
        (8, 48, 32, 0.1 + 1e-3 * (384 + 8) + 1e-6 * 8 * 48**2),
        (1, 1, 0, 0.1 + 1e-3 + 1e-6),
        (16, 512, 0, 0.1 + 1e-3 * 8192 + 1e-6 * 16 * 512**2),
    ],
)
def test_step_seconds(rows, width, learned, seconds):
    assert CALIB.step_seconds(rows, width, learned) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "rows, width, learned, peak",
    [
        (8, 48, 32, 1e9 + 2e6 * 384 + 1e3 * 8 * 48**2 + 5e5 * 32),
        (1, 1, 0, 1e9 + 2e6 + 1e3),
        (4, 512, 0, 1e9 + 2e6 * 2048 + 1e3 * 4 * 512**2),  # long rows: the attention scores' share grows
    ],
)
def test_peak_bytes(rows, width, learned, peak):
    assert CALIB.peak_bytes(rows, width, learned) == pytest.approx(peak)


def test_generation_is_a_prompt_forward_plus_each_new_token_at_its_context():
    prompt = CALIB.evaluation_seconds(4, 100)
    context = sum(100 + i + 0.5 for i in range(10))  # each new token attends to what is before it
    expected = prompt + 10 * (0.03 + 0.002 * 4) + 1e-6 * 4 * context
    assert CALIB.generate_seconds(4, 100, 10) == pytest.approx(expected)
    # the base model (adapter off) decodes at its own measured rate
    base = prompt + 10 * (0.02 + 0.001 * 4) + 1e-6 * 4 * context
    assert CALIB.generate_seconds(4, 100, 10, base=True) == pytest.approx(base)


@pytest.mark.parametrize(
    "lengths, rows, longest",
    [
        ([], 20, 0),
        ([3], 20, 3),
        (list(range(1, 101)), 1, 51),  # one row: the median
        (list(range(1, 101)), 20, 96),  # 20 rows: about the 95th percentile
        (list(range(1, 101)), 1000, 100),  # more rows than answers: the longest
    ],
)
def test_likely_longest_answer_of_a_batch(lengths, rows, longest):
    assert likely_longest(lengths, rows) == longest


@pytest.mark.parametrize(
    "batch, learned, closed, limit, stops",
    [
        # (rows, prompt width, longest reference): a fine-tuned batch that ends by itself gets what
        # max_new_tokens: auto allows its likely longest answer (x 1.25 + 8); training answers
        # 1..100, 20 rows: 96
        ((20, 50, 10), True, None, 500, math.ceil(1.25 * 96) + 8),
        ((20, 50, 110), True, None, 500, math.ceil(1.25 * 110) + 8),  # a longer reference in the batch
        ((2, 50, 10), True, None, 500, math.ceil(1.25 * 67) + 8),  # 2 rows: the longest of 2 draws
        ((20, 50, 10), True, None, 60, 60),  # never past max_new_tokens
        ((20, 50, 10), False, None, 60, 60),  # the base model: all of them
        # answers whose length the training answers fix (JSON, labels): the likely longest itself, no slack
        ((20, 50, 10), True, "json_fields", 500, 96),
        ((20, 50, 110), True, "json_fields", 500, 110),
        ((20, 50, 10), True, "json_fields", 60, 60),
        ((20, 50, 10), False, "json_fields", 60, 60),  # the base model has not learned the structure
        ((20, 50, 10), True, "classification", 500, 96),
        ((20, 50, 10), False, "classification", 60, 60),
    ],
)
def test_where_a_generation_batch_is_priced_to_stop(batch, learned, closed, limit, stops):
    """Priced as an expectation: unless one of its rows runs away (RUNAWAY_ROW each, or the
    metric's rate for answers of fixed length), a fine-tuned batch stops at `stops`; otherwise at
    the limit, as the base model's always does."""

    class Eval:
        max_new_tokens = limit

    rows, width, _ = batch
    runaway = CLOSED_ANSWER_RUNAWAY.get(closed)
    ends = (1 - (RUNAWAY_ROW if runaway is None else runaway)) ** rows if learned else 1.0
    seconds, steps, prompt_tokens = _generation(CALIB, [batch], Eval, list(range(1, 101)), learned, closed=runaway)
    assert steps == round(ends * stops + (1 - ends) * limit) and prompt_tokens == rows * width
    assert seconds == pytest.approx(
        ends * CALIB.generate_seconds(rows, width, stops) + (1 - ends) * CALIB.generate_seconds(rows, width, limit)
    )
    if learned and stops < limit:  # more rows, more chances that one does not end
        assert (0.8 < ends < 0.99) if closed == "json_fields" else (0.3 < ends < 0.95)


@pytest.mark.parametrize(
    "passes, training, first, one, budget, train_share, scorings",
    [
        (10, 100.0, 1.0, 1.0, 1.0, 0.5, (1, 9.5)),  # a budget of 1 scores every evaluation and the training sample
        (10, 100.0, 50.0, 50.0, 0.15, 0.5, (1, 1)),  # dear scorings: the first and the last only
        # 15 s of budget over 100 s, 1 s a scoring: each between scores while spent + 2 fits 15% so far
        (10, 100.0, 1.0, 1.0, 0.15, 0.5, (1, 9.5)),
        # 3 s a scoring: evaluations 1, 6 (3 + 6 <= 9), 8 (6 + 6 <= 12) and the last, with the training sample
        (10, 100.0, 3.0, 3.0, 0.15, 0.5, (1, 3.5)),
        # a dear first scoring (the early model writes to the limit) holds back the ones between:
        # 6 + 2 x 6 never fits; the last, and the training sample (6 + 0.5 <= 15)
        (10, 100.0, 6.0, 1.0, 0.15, 0.5, (1, 1.5)),
        (1, 100.0, 6.0, 1.0, 0.15, 0.5, (0, 1.5)),  # one evaluation: it is the last, priced as a trained model
        (0, 100.0, 1.0, 1.0, 0.15, 0.5, (0, 0)),
    ],
)
def test_continuous_scorings_replay_the_budget_rule(passes, training, first, one, budget, train_share, scorings):
    early, later = continuous_scorings(passes, training, first, one, budget, train_share)
    assert (early, later) == (scorings[0], pytest.approx(scorings[1]))


def test_checkpoint_seconds():
    assert CALIB.checkpoint_seconds() == pytest.approx(5_000_000 * 12 / 1e9)


@pytest.mark.parametrize(
    "n, batch, accumulation, epochs, steps",
    [(100, 8, 1, 1, 13), (100, 8, 2, 1, 7), (100, 8, 1, 2.5, 33), (7, 16, 1, 3, 3), (64, 4, 4, 1, 4)],
)
def test_train_batches_count_the_trainers_steps(n, batch, accumulation, epochs, steps):
    lengths = [10 + i % 13 for i in range(n)]
    batches, counted = train_batches(lengths, batch, accumulation, seed=0, epochs=epochs)
    assert counted == steps
    assert len(batches) == min(steps * accumulation, math.ceil(n / batch) * math.ceil(epochs))
    assert all(len(b) <= batch for b in batches)


@pytest.mark.parametrize(
    "shapes, cached", [(0, 0.0), (1, 16e6), (10, 160e6), (36, 576e6), (39, 590 * 2**20), (500, 590 * 2**20)]
)
def test_kernels_cached_per_batch_shape_up_to_the_caches_capacity(shapes, cached):
    assert CALIB.shape_cache_bytes(shapes) == pytest.approx(cached)


def test_the_planned_peak_counts_the_kernels_of_every_batch_shape_so_far(tmp_path, tiny_model, monkeypatch):
    config = tiny_run_config(tmp_path, tiny_model)
    with_cache, _ = _estimate(config, tiny_model)
    monkeypatch.setattr(sys.modules[__name__], "CALIB", replace(CALIB, shape_bytes=0.0))
    without, _ = _estimate(config, tiny_model)
    assert with_cache.steps > 3  # several batches, of more than one shape
    added = (with_cache.peak_memory_gib - without.peak_memory_gib) * 2**30
    # at least the first batch's kernels, at most one shape per batch (the peaks are rounded to 0.01 GiB)
    assert 16e6 - 2**30 / 200 <= added <= with_cache.steps * 16e6 + 2**30 / 200


def test_at_speed_scales_the_seconds_not_the_memory():
    slower = CALIB.at_speed(1.5)
    assert slower.speed == 1.5 and slower.at_speed(2).speed == 3
    assert slower.step_seconds(8, 48, 32) == pytest.approx(1.5 * CALIB.step_seconds(8, 48, 32))
    assert slower.generate_seconds(4, 100, 10, base=True) == pytest.approx(
        1.5 * CALIB.generate_seconds(4, 100, 10, True)
    )
    assert slower.evaluation_seconds(16, 64) == pytest.approx(1.5 * CALIB.evaluation_seconds(16, 64))
    assert slower.validation_seconds(16, 64) == pytest.approx(1.5 * CALIB.validation_seconds(16, 64))
    assert slower.load_seconds == pytest.approx(0.75)
    assert slower.peak_bytes(8, 48, 32) == CALIB.peak_bytes(8, 48, 32)
    assert slower.checkpoint_seconds() == CALIB.checkpoint_seconds()  # a disk write: not the CPU's pace


def test_speed_probe_is_a_real_measurement():
    seconds = calibrate.speed_probe("cpu")
    assert 0 < seconds < 5


def test_calibration_is_measured_once_per_setup(tmp_path, tiny_model, monkeypatch):
    monkeypatch.setenv("TUNELOOP_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(cpu.LoadMeter, "others", lambda self: 0.0)
    monkeypatch.setattr(calibrate, "speed_probe", lambda device, autocast=None: 0.05)
    config = tiny_run_config(tmp_path, tiny_model)
    first, how = calibration(tiny_model, config, "cpu")
    # Each fit has a positive term; which one depends on the machine: on the tiny model a per-token
    # cost can fit below the noise and be dropped (_least_squares), as it was in fp32 on one CPU.
    assert how == "measured" and all(max(fit) > 0 for fit in (first.train, first.validation, first.evaluation))
    assert first.generate[0] > 0 and first.disk_bytes_per_second > 0 and first.trainable_parameters > 0
    # the process's peak: at least its weights, and no smaller for a wider step
    assert (
        first.peak_bytes(16, 256, 64)
        >= first.peak_bytes(2, 32, 4)
        > sum(f.stat().st_size for f in tiny_model.glob("*.safetensors"))
    )
    again, how = calibration(tiny_model, config, "cpu")
    assert how == "cached" and again == first and first.probe_median_seconds == 0.05
    # the yardstick reads half the speed on an idle machine: a passing moment, the calibration stands;
    # beside a busy process every cost in seconds doubles
    monkeypatch.setattr(calibrate, "speed_probe", lambda device, autocast=None: 0.1)
    assert calibration(tiny_model, config, "cpu") == (first, "cached")
    monkeypatch.setattr(cpu.LoadMeter, "others", lambda self: 1.0)
    slower, how = calibration(tiny_model, config, "cpu")
    assert how == "cached" and slower == first.at_speed(2.0)
    monkeypatch.setattr(cpu.LoadMeter, "others", lambda self: 0.0)
    assert first.generate_base[0] > 0  # decoding with the adapter switched off, measured on its own
    (cached,) = (tmp_path / "home" / "calibration").glob("*.json")
    older = json.loads(cached.read_text())
    del older["generate_base"]  # a calibration from before a field existed is measured again
    cached.write_text(json.dumps(older))
    assert calibration(tiny_model, config, "cpu")[1] == "measured"
    config.lora.r = 8  # another adapter shape: measured again
    assert calibration(tiny_model, config, "cpu")[1] == "measured"


def test_each_shape_is_timed_once_a_round_after_other_shapes_and_fitted_at_its_mean(tmp_path, tiny_model, monkeypatch):
    # A run's steps follow batches of other widths, at the machine's pace over minutes, and its time
    # is their sum: a shape timed again at once, or three times within seconds, reads neither.
    from transformers import AutoConfig

    kappa = calibrate._head_share(AutoConfig.from_pretrained(tiny_model))
    order = []

    def fake_seconds(step, device, ids, keep):
        rows, width = ids.shape
        order.append((step.__name__, rows, width))
        round_ = order.count(order[-1])  # 1, 2, 3: each round slower than the last
        return round_ * (0.01 + 1e-5 * (rows * width + kappa * int(keep.sum())))

    monkeypatch.setattr(calibrate, "_seconds", fake_seconds)
    monkeypatch.setattr(calibrate, "speed_probe", lambda device, autocast=None: 0.05)
    config = tiny_run_config(tmp_path, tiny_model)
    config.train.precision = "fp32"  # as calibration() resolves "auto" on a CPU without bf16
    measured = calibrate.measure(tiny_model, config, "cpu", {})
    shapes = {
        "train_step": calibrate.TRAIN_SHAPES,
        "no_grad_step": calibrate.VALIDATION_SHAPES,
        "padded_step": calibrate.EVAL_SHAPES,
    }
    for step, kind_shapes in shapes.items():
        timed = sorted((rows, width) for name, rows, width in order if name == step)
        assert timed == sorted([shape[:2] for shape in kind_shapes] * calibrate.TIMINGS)
    assert all(a != b for a, b in itertools.pairwise(order))  # never timed right after itself
    for fit in (measured.train, measured.validation, measured.evaluation):  # the mean of rounds 1, 2 and 3
        assert fit == pytest.approx([0.02, 2e-5, 0.0], abs=1e-9)


def test_a_calibration_measured_beside_busy_processes_is_measured_again_when_idle(tmp_path, tiny_model, monkeypatch):
    monkeypatch.setenv("TUNELOOP_HOME", str(tmp_path / "home"))
    load = {"others": 1.0}  # another process holds a core
    monkeypatch.setattr(cpu.LoadMeter, "others", lambda self: load["others"])
    monkeypatch.setattr(calibrate, "speed_probe", lambda device, autocast=None: 0.05)
    config = tiny_run_config(tmp_path, tiny_model)
    first, how = calibration(tiny_model, config, "cpu")
    assert how == "busy" and first.busy
    again, how = calibration(tiny_model, config, "cpu")  # still busy: kept, not measured again
    assert how == "busy" and again == first
    load["others"] = 0.0
    fresh, how = calibration(tiny_model, config, "cpu")  # idle now: measured again, and cached as good
    assert how == "measured" and not fresh.busy
    assert calibration(tiny_model, config, "cpu")[1] == "cached"


def test_gpu_estimate_from_published_numbers():
    class Plan:
        padded_tokens, forward_tokens, decode_steps, activation_bytes = 1_000_000, 100_000, 1_000, 0.0

    out = gpu_estimate(Plan, "h100", n_params=1_000_000_000, trainable=10_000_000)
    seconds = 1_000_000 * 4e9 / (989e12 * 0.35) + 100_000 * 2e9 / (989e12 * 0.35) + 1_000 * 2e9 / (3.35e12 * 0.6)
    assert out["minutes"] == pytest.approx(seconds / 60, abs=0.01)
    assert out["fits"] and "not measured" in out["assumed"]
    with pytest.raises(ValueError, match="known: H200, H100"):
        gpu_estimate(Plan, "toaster", 1, 1)


def test_parameter_counts_without_weights(tiny_model, tmp_path):
    config = tiny_run_config(tmp_path, tiny_model)
    total, trainable = parameter_counts(tiny_model, config)
    config.train.method = "full"
    assert parameter_counts(tiny_model, config) == (total, total)
    assert 0 < trainable < total


def test_run_prints_and_records_the_plan_and_counts_its_steps(tmp_path, tiny_model):
    from rich.console import Console

    from tuneloop.pipeline import run_loop

    config = tiny_run_config(tmp_path, tiny_model, epochs=2)
    console = Console(record=True, width=200)
    result = run_loop(config, console)
    plan = json.loads(result.run.info_file.read_text())["plan"]
    metrics = result.run.read_metrics()
    assert plan["steps"] == max(m["step"] for m in metrics)
    # the real tokens of every epoch, as the trainer counted them (num_tokens: unpadded, cumulative)
    assert plan["train_tokens"] == max(m.get("num_tokens", 0) for m in metrics)
    assert plan["train_minutes"] > 0 and plan["peak_memory_gib"] > 0
    assert plan["parts"]["steps"] > 0 and plan["parts"]["test_loss"] > 0 and plan["parts"]["generate_tuned"] > 0
    printed = console.export_text()
    assert "plan: " in printed and "min training" in printed


def test_plan_command(tmp_path, tiny_model):
    config = tiny_run_config(tmp_path, tiny_model)
    path = tmp_path / "c.json"  # YAML is a superset of JSON
    path.write_text(json.dumps(config.model_dump(mode="json")))
    done = tuneloop("plan", path, "--gpu", "A100", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "min training" in done.stdout and "GiB free" in done.stdout
    assert "estimate for one A100 (assumed, not measured" in done.stdout
    as_json = json.loads(tuneloop("plan", path, "--json", cwd=tmp_path).stdout)
    assert as_json["steps"] > 0 and as_json["fits"] is True
    assert not (tmp_path / "runs").exists()  # planning starts nothing
    bad = tuneloop("plan", path, "--gpu", "toaster", cwd=tmp_path)
    assert bad.returncode == 2 and "known: H200" in bad.stderr


@pytest.mark.parametrize(
    "metric_rows, max_new_tokens, warned",
    [
        (64, 400, True),  # the first scoring alone writes 400 tokens for every validation row: over budget
        (64, 4, False),  # short answers: the scorings fit
        (0, 400, False),  # no continuous evaluation
    ],
)
def test_plan_warns_when_continuous_evaluation_outgrows_its_budget(
    tmp_path, tiny_model, metric_rows, max_new_tokens, warned
):
    config = tiny_run_config(tmp_path, tiny_model, metric_rows=metric_rows)
    config.eval.max_new_tokens = max_new_tokens
    plan, prepared = _estimate(config, tiny_model)
    notes = [n for n in plan.notes if n.startswith("continuous evaluation")]
    assert bool(notes) is warned
    if warned:
        validation = len(prepared.splits.validation)
        assert f"Fewer than its {min(metric_rows, validation)} rows" in notes[0] and f"({max_new_tokens})" in notes[0]
        assert plan.parts["metric"] > 2 * config.train.metric_budget * (plan.parts["steps"])


def test_the_leakage_probe_is_priced_in_each_scoring(tmp_path, tiny_model):
    from tuneloop.models import load_tokenizer
    from tuneloop.plan.estimate import leakage_probe_price

    config = tiny_run_config(tmp_path, tiny_model, metric_rows=8, metric_budget=1.0)
    without, _ = _estimate(config, tiny_model)  # eval.general: none, so no probe
    config.eval.general = "default"
    with_probe, _ = _estimate(config, tiny_model)
    probe, steps = leakage_probe_price(config, CALIB, load_tokenizer(tiny_model))
    scorings = len(range(2, without.steps + 1, 2)) + (without.steps % 2 != 0)
    assert probe > 0 and steps == 32
    assert with_probe.parts["metric"] - without.parts["metric"] == pytest.approx(scorings * probe, abs=0.01)
    config.train.leakage_rows = 0
    assert _estimate(config, tiny_model)[0].parts["metric"] == without.parts["metric"]


def _estimate(config, tiny_model):
    """The plan of `config` (its auto values resolved) priced by CALIB, and its prepared data."""
    from transformers import AutoConfig

    from tuneloop.data.prepare import prepare_data
    from tuneloop.models import load_tokenizer
    from tuneloop.plan.estimate import estimate
    from tuneloop.train.auto import resolve_auto

    tokenizer = load_tokenizer(tiny_model)
    prepared = prepare_data(config.data, tokenizer)
    config, _ = resolve_auto(config, prepared.splits, prepared.report, tiny_model, "cpu", tokenizer)
    plan = estimate(config, prepared.splits, tokenizer, CALIB, AutoConfig.from_pretrained(tiny_model), "cpu", 8e9)
    return plan, prepared


@pytest.mark.parametrize(
    "answer, closed",
    [
        (lambda i: json.dumps({"answer": i % 5, "note": "pad " * (i % 4)}), True),  # a JSON object ends with "}"
        (lambda i: ["card_arrival", "lost_or_stolen_card", "exchange_rate", "top_up_failed"][i % 4], True),  # labels
        (lambda i: "the answer is " + "pad " * (i % 4) + str(i % 5), False),  # free text: the slack stays
    ],
)
def test_answers_of_fixed_length_are_priced_without_the_slack(tmp_path, tiny_model, monkeypatch, answer, closed):
    import importlib

    estimate_module = importlib.import_module("tuneloop.plan.estimate")  # the module, not its function
    rows = [chat(f"question number {i} " + "pad " * (i % 7), answer(i)) for i in range(40)]
    config = tiny_run_config(tmp_path, tiny_model, rows=rows, metric_rows=8)
    config.eval.max_new_tokens = 64
    plan, _ = _estimate(config, tiny_model)
    monkeypatch.setattr(estimate_module, "CLOSED_ANSWER_RUNAWAY", {})
    open_plan, _ = _estimate(config, tiny_model)
    for part in ("generate_tuned", "metric"):
        assert (plan.parts[part] < open_plan.parts[part]) is closed, part
        assert plan.parts[part] <= open_plan.parts[part]
    assert plan.parts["generate_base"] == open_plan.parts["generate_base"]  # the base model writes to the limit


@pytest.mark.parametrize(
    "probe_now, note", [(0.05, None), (0.052, None), (0.075, "1.50x as slow"), (0.04, "1.25x as fast")]
)
def test_a_plan_beside_busy_processes_is_scaled_to_the_machines_speed_now(
    tmp_path, tiny_model, monkeypatch, probe_now, note
):
    from tuneloop.data.prepare import prepare_data
    from tuneloop.models import load_tokenizer
    from tuneloop.plan import plan_resolved
    from tuneloop.train.auto import resolve_auto

    monkeypatch.setenv("TUNELOOP_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(cpu.LoadMeter, "others", lambda self: 0.0)
    monkeypatch.setattr(calibrate, "speed_probe", lambda device, autocast=None: 0.05)
    config = tiny_run_config(tmp_path, tiny_model)
    tokenizer = load_tokenizer(tiny_model)
    prepared = prepare_data(config.data, tokenizer)
    config, _ = resolve_auto(config, prepared.splits, prepared.report, tiny_model, "cpu", tokenizer)
    then = plan_resolved(config, prepared.splits, tokenizer, tiny_model, "cpu")  # measures, at speed 1
    monkeypatch.setattr(calibrate, "speed_probe", lambda device, autocast=None: probe_now)
    monkeypatch.setattr(cpu.LoadMeter, "others", lambda self: 1.0)  # a process busy since calibration
    now = plan_resolved(config, prepared.splits, tokenizer, tiny_model, "cpu")
    ratio = probe_now / 0.05
    # parts are rounded to the millisecond: then's rounding is scaled by ratio, now's is added
    rounding = 5e-4 * (ratio + 1)
    assert now.parts["steps"] == pytest.approx(then.parts["steps"] * ratio, rel=1e-3, abs=rounding)
    assert now.parts["generate_base"] == pytest.approx(then.parts["generate_base"] * ratio, rel=1e-3, abs=rounding)
    assert now.peak_memory_gib == then.peak_memory_gib and now.speed == pytest.approx(ratio, abs=1e-3)
    speed_notes = [n for n in now.notes if "when calibrated" in n]
    assert speed_notes == (
        []
        if note is None
        else [
            f"other processes are busy: this machine runs {note} now as when calibrated; the minutes are scaled to now"
        ]
    )


def test_a_preference_validation_pass_is_priced_as_its_forwards(tmp_path, tiny_model):
    """A pair is two rows (chosen, rejected); DPO also runs them through its reference: a DPO pass is
    twice an ORPO pass. Both price the preference accuracy measured before and after training."""
    rows = [{"prompt": f"Ticket {i}: " + "pad " * (i % 5), "chosen": "refund", "rejected": "top_up"} for i in range(40)]
    plans = {
        m: _estimate(tiny_run_config(tmp_path / m, tiny_model, rows=rows, method=m), tiny_model)[0]
        for m in ("dpo", "orpo")
    }
    assert plans["dpo"].parts["validation"] == pytest.approx(2 * plans["orpo"].parts["validation"], rel=1e-3)
    for plan in plans.values():
        assert plan.parts["preference_accuracy"] > 0 and "metric" not in plan.parts
    sft = _estimate(
        tiny_run_config(tmp_path / "sft", tiny_model, rows=[chat(r["prompt"], r["chosen"]) for r in rows]), tiny_model
    )[0]
    # the same prompts and answers as one row each: an ORPO pass computes twice the rows
    assert plans["orpo"].parts["validation"] > 1.5 * sft.parts["validation"]


@pytest.mark.parametrize("train, learned", [({}, False), ({"sft_weight": 1.0}, True), ({"method": "orpo"}, True)])
def test_dpo_from_the_base_model_is_priced_as_writing_to_the_limit(tmp_path, tiny_model, train, learned):
    """DPO's loss does not teach where an answer ends; RPO's NLL term and ORPO's do (init_from: the
    SFT parent did)."""
    rows = [{"prompt": f"Ticket {i}: " + "pad " * (i % 5), "chosen": "refund", "rejected": "top_up"} for i in range(40)]
    config = tiny_run_config(tmp_path, tiny_model, rows=rows, **{"method": "dpo", **train})
    config.eval.max_new_tokens = 64
    plan = _estimate(config, tiny_model)[0]
    assert (plan.parts["generate_tuned"] < 0.8 * plan.parts["generate_base"]) is learned
