"""A setup's finished runs correct its next plan: what is recorded, what is not, and the factors."""

import json

import pytest

from conftest import tiny_run_config
from tuneloop import cpu
from tuneloop.plan import history
from tuneloop.plan.estimate import Plan

LORA_PARTS = {
    "load": 3.0,
    "steps": 100.0,
    "validation": 40.0,
    "metric": 20.0,
    "checkpoints": 1.0,
    "test_loss": 8.0,
    "generate_base": 20.0,
    "generate_tuned": 30.0,
}
EVALUATION = {
    "base": {"seconds": {"loss": 4.0, "generate": 25.0}},
    "finetuned": {"seconds": {"loss": 5.0, "generate": 30.0}},
}


def write_run(folder, parts=LORA_PARTS, evaluation=EVALUATION, **info):
    folder.mkdir(parents=True)
    plan = {"parts": parts, "speed": 1.0, "calibration": {"file": "abc", "measured_at": 7.0}, "corrections": {}}
    plan.update(info.pop("plan", {}))
    took = {"steps": 120.0, "evaluation": 66.0}
    record = {"id": folder.name, "status": "finished", "plan": plan, "train_parts": took}
    (folder / "run.json").write_text(json.dumps(record | info))
    if evaluation is not None:
        (folder / "eval.json").write_text(json.dumps(evaluation))
    return folder


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNELOOP_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def recorded(file="abc"):
    return [json.loads(line) for line in history.history_file(file).read_text().splitlines()]


def test_a_finished_run_records_each_part_priced_and_real(home, tmp_path):
    assert history.record_run(write_run(tmp_path / "r"))
    (line,) = recorded()
    assert line["measured_at"] == 7.0
    assert line["parts"] == {
        "steps": [100.0, 120.0],
        "validation": [60.0, 66.0],  # validation passes and their scorings: train_parts' evaluation
        "test_loss": [8.0, 9.0],  # both sides
        "generation": [50.0, 55.0],
    }


def test_the_price_recorded_is_the_calibrations_not_the_corrected_one(home, tmp_path):
    corrected = LORA_PARTS | {"steps": 150.0}
    applied = {"steps": {"factor": 1.5, "runs": 2}}
    history.record_run(write_run(tmp_path / "r", corrected, plan={"corrections": applied}))
    assert recorded()[0]["parts"]["steps"] == [100.0, 120.0]


def test_full_fine_tuning_counts_only_the_fine_tuned_side_of_the_test_evaluation(home, tmp_path):
    # its base model is evaluated before training, and planned there (base_evaluation)
    parts = {k: v for k, v in LORA_PARTS.items() if k != "generate_base"} | {"base_evaluation": 24.0}
    history.record_run(write_run(tmp_path / "r", parts))
    assert recorded()[0]["parts"]["generation"] == [30.0, 30.0]
    assert recorded()[0]["parts"]["test_loss"] == [8.0, 5.0]


@pytest.mark.parametrize(
    "info",
    [
        {"status": "failed"},
        {"resumed_from_step": 4},  # its train_parts hold only the part after the resume
        {"thread_changes": [{"seconds": 30.0, "threads": 1}]},  # another process set its pace
        {"plan": {"speed": 1.4}},  # planned beside busy processes
        {"plan": {"calibration": None}},
    ],
    ids=["failed", "resumed", "threads-changed", "busy-at-plan", "no-calibration"],
)
def test_runs_that_say_nothing_about_the_calibration_are_not_recorded(home, tmp_path, info):
    assert not history.record_run(write_run(tmp_path / "r", **info))
    assert not history.history_file("abc").exists()


def test_a_part_priced_under_a_few_seconds_is_not_recorded(home, tmp_path):
    history.record_run(write_run(tmp_path / "r", LORA_PARTS | {"test_loss": 2.0}))
    assert sorted(recorded()[0]["parts"]) == ["generation", "steps", "validation"]


def lines(*records):
    return "".join(json.dumps(r) + "\n" for r in records)


def steps(priced, real, measured_at=7.0):
    return {"measured_at": measured_at, "parts": {"steps": [priced, real]}}


@pytest.mark.parametrize(
    "text, expected",
    [
        (None, {}),
        (lines(steps(100, 120)), {"steps": {"factor": 1.2, "runs": 1}}),
        # the sum of real seconds over the sum of priced ones: a long run weighs more than a short one
        (lines(steps(100, 120), steps(10, 20)), {"steps": {"factor": 1.273, "runs": 2}}),
        (lines(steps(100, 500, measured_at=3.0), steps(100, 80)), {"steps": {"factor": 0.8, "runs": 1}}),
        # the latest RUNS runs only
        (lines(*[steps(100, 300)] * 3, *[steps(100, 110)] * history.RUNS), {"steps": {"factor": 1.1, "runs": 5}}),
        (lines(steps(10, 100)), {"steps": {"factor": 2.0, "runs": 1}}),  # bounded
        (lines(steps(100, 90)) + '{"measured_at": 7.0, "par\n', {"steps": {"factor": 0.9, "runs": 1}}),
        (
            lines({"measured_at": 7.0, "parts": {"validation": [60, 30], "generation": [50, 55]}}),
            {"validation": {"factor": 0.5, "runs": 1}, "generation": {"factor": 1.1, "runs": 1}},
        ),
    ],
    ids=["none", "one", "weighted", "other-calibration", "latest", "bounded", "cut-line", "groups"],
)
def test_corrections_from_the_runs_of_this_calibration(home, text, expected):
    if text is not None:
        history.history_file("abc").parent.mkdir(parents=True)
        history.history_file("abc").write_text(text)
    assert history.corrections("abc", 7.0) == expected


def test_a_scaled_plan_sums_its_minutes_again():
    plan = Plan(1, 1, 1, 1.0, 1, 1, 0.0, 0.0, 1.0, 8.0, "cpu", parts=dict(LORA_PARTS))
    factors = history.part_factors({"steps": {"factor": 1.2, "runs": 1}, "generation": {"factor": 0.5, "runs": 1}})
    assert factors == {"steps": 1.2, "compile": 1.2, "generate_base": 0.5, "generate_tuned": 0.5}
    scaled = plan.scaled(factors)
    assert scaled.parts["steps"] == 120.0 and scaled.parts["generate_tuned"] == 15.0 and scaled.parts["load"] == 3.0
    assert scaled.train_minutes == pytest.approx((3 + 120 + 40 + 20 + 1) / 60, abs=1e-3)
    assert scaled.eval_minutes == pytest.approx((8 + 10 + 15) / 60, abs=1e-3)


def test_the_next_run_of_a_setup_is_planned_with_its_last_runs_real_seconds(home, tmp_path, tiny_model, monkeypatch):
    from rich.console import Console

    from tuneloop.pipeline import run_loop

    monkeypatch.setattr(history, "MIN_PRICED_SECONDS", 0.0)  # the tiny model's parts take fractions of a second
    # an idle machine, as far as tuneloop can tell: no plan scaled to a busy pace, no thread count changed
    monkeypatch.setattr(cpu.LoadMeter, "others", lambda self: 0.0)
    first = run_loop(tiny_run_config(tmp_path / "a", tiny_model), Console(width=200))
    info = json.loads(first.run.info_file.read_text())
    assert info["plan"]["corrections"] == {} and info["plan"]["calibration"]["measured_at"] > 0
    (line,) = recorded(info["plan"]["calibration"]["file"])
    took = info["train_parts"]["steps"]
    assert line["parts"]["steps"] == [round(info["plan"]["parts"]["steps"], 2), round(took, 2)]
    console = Console(record=True, width=300)
    second = run_loop(tiny_run_config(tmp_path / "b", tiny_model), console)
    plan = json.loads(second.run.info_file.read_text())["plan"]
    factor = min(max(took / line["parts"]["steps"][0], history.BOUNDS[0]), history.BOUNDS[1])
    assert plan["corrections"]["steps"] == {"factor": round(factor, 3), "runs": 1}
    assert plan["parts"]["steps"] == pytest.approx(info["plan"]["parts"]["steps"] * round(factor, 3), rel=0.01)
    assert "corrected by the last 1 run(s) of this setup on this machine" in console.export_text()
    assert len(recorded(plan["calibration"]["file"])) == 2
