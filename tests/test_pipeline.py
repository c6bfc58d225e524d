"""The loop end to end in one process (tuneloop.pipeline): selection of the kept weights, resume,
full fine-tuning, trackers, the live doctor. The CLI's end-to-end tests are in tests/cli/."""

import json

import pytest
import torch
from rich.console import Console
from transformers import TrainerCallback

from conftest import stop_at, tiny_run_config, write_jsonl
from tuneloop.config import ConfigError
from tuneloop.pipeline import resume_loop, run_loop
from tuneloop.runs import RunDir

QUIET = Console(quiet=True)


def test_early_stopping_restores_the_best_checkpoint(tmp_path, tiny_model):
    # min_delta far above any real change: the second evaluation cannot "improve", so training
    # stops there and the first evaluation's weights are restored.
    config = tiny_run_config(
        tmp_path, tiny_model, epochs=3, early_stopping_patience=1, early_stopping_min_delta=100.0, select_best="loss"
    )
    result = run_loop(config, QUIET)
    info = json.loads(result.run.info_file.read_text())
    evals = [r for r in result.run.read_metrics() if "eval_loss" in r]
    assert [r["step"] for r in evals] == [2, 4] and info["stopped_early"] is True
    assert info["best_checkpoint_step"] == min(evals, key=lambda r: r["eval_loss"])["step"]
    assert info["selected_by"] == "loss"
    assert not result.run.checkpoints_dir.exists()  # cleaned up once finished


SHRINKING_CALLS = []


def shrinking(predictions, references):
    """A custom metric that gets worse at every scoring: the first evaluation is the best."""
    SHRINKING_CALLS.append(1)
    return {"quality": 1.0 / len(SHRINKING_CALLS)}


def test_select_best_by_metric_stops_early_and_restores_the_best_scored_weights(tmp_path, tiny_model):
    # Every evaluation scored (budget 1). The metric falls at the second evaluation: patience 1
    # stops the run there, and the first evaluation's weights are the ones saved.
    SHRINKING_CALLS.clear()
    config = tiny_run_config(
        tmp_path, tiny_model, epochs=3, early_stopping_patience=1, select_best="metric", metric_budget=1.0
    )
    config.eval.metric = f"{__name__}:shrinking"
    result = run_loop(config, QUIET)
    info = json.loads(result.run.info_file.read_text())
    evals = [r for r in result.run.read_metrics() if "eval_loss" in r]
    assert [r["step"] for r in evals] == [2, 4] and info["stopped_early"] is True
    assert [r["eval_quality"] for r in evals] == [1.0, 0.5] and all("eval_loss_se" in r for r in evals)
    assert info["selected_by"] == "eval_quality" and info["best_checkpoint_step"] == 2
    ce = info["continuous_evaluation"]
    assert ce["scored_steps"] == [2, 4] and ce["skipped_steps"] == [] and ce["key"] == "quality"
    # where training's time went: the parts the plan prices, within training's own time; the
    # scorings ran inside the validation passes
    parts = info["train_parts"]
    assert all(parts[k] > 0 for k in ("steps", "evaluation", "checkpoints")), parts
    assert sum(parts.values()) <= info["timings"]["train"] and sum(ce["scoring_seconds"]) <= parts["evaluation"]
    # the saved adapter is step 2's: its validation loss is step 2's, not step 4's
    from tuneloop.eval.loss import answer_loss
    from tuneloop.runs.sides import load_side

    side = load_side(str(result.run.path), config)
    loss = answer_loss(side.model, side.tokenizer, result.run.read_split("validation"), batch_size=4)["loss"]
    assert abs(loss - evals[0]["eval_loss"]) < abs(loss - evals[1]["eval_loss"])


@pytest.fixture(scope="module")
def straight(tmp_path_factory, tiny_model):
    """The uninterrupted run every resumed one must match: 2 epochs of 8 steps, a checkpoint every 2."""
    return run_loop(tiny_run_config(tmp_path_factory.mktemp("straight"), tiny_model, epochs=2), QUIET)


@pytest.mark.parametrize(
    "stops, checkpoints",
    [
        ([7], [6]),  # in epoch 1
        ([9], [8]),  # just past the epoch boundary (step 8 ends epoch 1)
        ([13], [12]),  # in the middle of epoch 2: the batch order is drawn again for the epoch
        ([5, 13], [4, 12]),  # resumed, killed again, resumed again
    ],
    ids=["epoch-1", "epoch-boundary", "mid-epoch-2", "twice"],
)
def test_resume_reaches_the_same_result_as_an_uninterrupted_run(tmp_path, tiny_model, straight, stops, checkpoints):
    config = tiny_run_config(tmp_path, tiny_model, epochs=2)
    with pytest.raises(KeyboardInterrupt):
        run_loop(config, QUIET, callbacks=[stop_at(stops[0])])
    [run_path] = (tmp_path / "runs").iterdir()
    run = RunDir(run_path)
    for stop, checkpoint in zip(stops[1:], checkpoints, strict=False):
        assert run.status() == "interrupted" and run.last_checkpoint().name == f"checkpoint-{checkpoint}"
        with pytest.raises(KeyboardInterrupt):
            resume_loop(run_path, QUIET, callbacks=[stop_at(stop)])
    assert run.status() == "interrupted" and run.info()["resumable"] is True
    assert run.last_checkpoint().name == f"checkpoint-{checkpoints[-1]}"
    resumed = resume_loop(run_path, QUIET)
    assert run.info()["resumed_from_step"] == checkpoints[-1]
    a, b = straight.run.read_metrics(), resumed.run.read_metrics()
    assert [r["step"] for r in a] == [r["step"] for r in b]  # nothing logged twice or lost
    for key in ("train_loss", "eval_loss"):
        torch.testing.assert_close(
            torch.tensor([r[key] for r in a if key in r]),
            torch.tensor([r[key] for r in b if key in r]),
            rtol=0,
            atol=1e-4,
        )
    assert straight.evaluation["finetuned"]["metrics"]["loss"] == pytest.approx(
        resumed.evaluation["finetuned"]["metrics"]["loss"], abs=1e-4
    )


def test_full_fine_tuning_saves_the_model_and_measures_the_base_first(tmp_path, tiny_model):
    result = run_loop(
        tiny_run_config(tmp_path, tiny_model, epochs=1, method="full", freeze_layers=1, learning_rate=1e-3), QUIET
    )
    assert (result.run.path / "model" / "config.json").exists() and not (result.run.path / "adapter").exists()
    ev = result.evaluation
    assert ev["finetuned"]["metrics"]["loss"] < ev["base"]["metrics"]["loss"]
    assert all(
        ev[side]["seconds"]["loss"] > 0 and ev[side]["seconds"]["generate"] > 0 for side in ("base", "finetuned")
    )


def test_two_runs_in_one_process_log_tensorboard_into_their_own_run(tmp_path, tiny_model, monkeypatch):
    """Autotune, a sweep and a notebook run several runs in one process: each one's trackers
    write into its own run directory, and the environment is left as it was."""
    import os

    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    runs = [
        run_loop(tiny_run_config(tmp_path, tiny_model, epochs=1, report_to=["tensorboard"]), QUIET).run
        for _ in range(2)
    ]
    assert runs[0].path != runs[1].path
    for run in runs:
        assert list((run.path / "tensorboard").glob("events.out.tfevents.*")), run.path
    assert "TENSORBOARD_LOGGING_DIR" not in os.environ


def test_the_users_own_tracker_directory_wins(tmp_path, tiny_model, monkeypatch):
    mine = tmp_path / "my-tensorboard"
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(mine))
    run = run_loop(tiny_run_config(tmp_path, tiny_model, epochs=1, report_to=["tensorboard"]), QUIET).run
    assert list(mine.glob("events.out.tfevents.*")) and not (run.path / "tensorboard").exists()


def test_a_tracker_that_is_not_installed_is_a_clear_error(tmp_path, tiny_model):
    import importlib.util

    assert importlib.util.find_spec("mlflow") is None  # deliberately not a test dependency
    with pytest.raises(ConfigError, match=r"\['mlflow'\] not installed; pip install mlflow"):
        run_loop(tiny_run_config(tmp_path, tiny_model, epochs=1, report_to=["mlflow"]), QUIET)
    assert not (tmp_path / "runs").exists()  # refused before a run directory was made


@pytest.mark.parametrize("doctor, stops", [("stop", True), ("watch", False)])
def test_live_doctor_stops_a_diverging_run_only_when_asked(tmp_path, tiny_model, doctor, stops):
    config = tiny_run_config(
        tmp_path,
        tiny_model,
        method="full",
        epochs=3,
        learning_rate=5.0,
        max_grad_norm=1e6,
        warmup_ratio=0.0,
        doctor=doctor,
    )
    result = run_loop(config, QUIET)
    info = json.loads(result.run.info_file.read_text())
    steps = max(r["step"] for r in result.run.read_metrics())
    if stops:
        assert info["doctor_stopped"]["verdict"] == "diverging" and steps < 24  # 32 rows / 4 x 3 epochs
        evals = [r for r in result.run.read_metrics() if "eval_loss" in r]
        # the best checkpoint, not the diverged last one, is what the run keeps
        assert info["best_checkpoint_step"] == min(evals, key=lambda r: r["eval_loss"])["step"]
    else:
        assert "doctor_stopped" not in info and steps == 24


class PoisonAt(TrainerCallback):
    """Turns the adapter's weights to NaN after `step`: the loss goes NaN, as a diverged run's does."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step == self.step:
            with torch.no_grad():
                for name, p in model.named_parameters():
                    if "lora_" in name:
                        p.fill_(float("nan"))


def test_a_nan_loss_is_logged_as_nan_and_the_doctor_says_diverging(tmp_path, tiny_model):
    config = tiny_run_config(tmp_path, tiny_model, epochs=1, doctor="watch")
    result = run_loop(config, QUIET, callbacks=[PoisonAt(3)], evaluate=False)
    losses = [r["train_loss"] for r in result.run.read_metrics() if "train_loss" in r]
    assert "nan" in losses[3:] and 0.0 not in losses  # transformers' filter logged NaN as the running mean
    assert result.diagnosis.verdict == "diverging"


def test_the_run_measures_what_the_fine_tune_cost_and_the_scale_that_keeps_it(tmp_path, tiny_model):
    """The tiny model at learning rate 1e-2 answers every generic prompt with JSON: the run sees it,
    measures the scale curve, and the doctor names it with the measured cures."""
    quiz = [{"question": f"{i} plus 1?", "choices": ["one", "two", "three"], "answer": i % 3} for i in range(6)]
    config = tiny_run_config(tmp_path, tiny_model, epochs=3)
    config.eval.general = [write_jsonl(tmp_path / "quiz.jsonl", quiz)]
    config.eval.scale_curve = [0.5]
    result = run_loop(config, QUIET)
    ev = result.run.evaluation()
    general = ev["general"]
    assert general["sets"]["quiz"]["acc_norm"]["n"] == 6 and general["score"]["n"] == 6
    assert general["leakage"]["base"] == 0.0 and general["leakage"]["low"] > 0  # beyond noise
    assert general["drift"]["n"] == 40 and general["drift"]["low"] > 0
    curve = ev["scale_curve"]
    assert [p["scale"] for p in curve["points"]] == [0.0, 0.5, 1.0] and curve["points"][0]["general_loss"] == 0.0
    timings = result.run.info()["timings"]
    assert timings["scale_curve"] == curve["seconds"] and timings["evaluate"] > 0
    # the leakage probe at every scored evaluation: 20 of the instructions, answered in training
    scored = [r for r in result.run.read_metrics() if "eval_leakage" in r]
    assert scored and all(0 <= r["eval_leakage"] <= 1 and "eval_leakage_se" in r for r in scored)
    assert result.run.info()["continuous_evaluation"]["leakage_rows"] == 20
    d = result.diagnosis
    assert d.has("behaviour_leakage") and d.has("adapter_scale")
    [replay] = [r for r in d.recommendations if r.param == "data.replay"]
    assert replay.applied and replay.to == 0.2 and replay.minutes is not None
    assert "replay: 0.2" in result.run.next_config_file.read_text()
    report = result.run.report_file.read_text()
    assert "What the fine-tune cost the model" in report and "Adapter scale, measured" in report


def test_select_best_balance_keeps_the_evaluation_its_rule_names(tmp_path, tiny_model):
    from tuneloop.train.task_eval import balance_choice

    config = tiny_run_config(tmp_path, tiny_model, epochs=2, select_best="balance", metric_budget=1.0)
    config.eval.general = "default"
    result = run_loop(config, QUIET, evaluate=False)
    evals = [r for r in result.run.read_metrics() if "eval_leakage" in r]
    # the rule replayed over the logged curve names the step the run kept
    kept = balance_choice([(r["step"], r["eval_field_accuracy"], r["eval_leakage"]) for r in evals], 1)
    info = result.run.info()
    assert len(evals) == 8 and info["selected_by"] == "balance" and info["best_checkpoint_step"] == kept[0]


def test_select_best_balance_needs_the_leakage_probe(tmp_path, tiny_model):
    config = tiny_run_config(tmp_path, tiny_model, epochs=1, select_best="balance")  # eval.general: none
    with pytest.raises(ConfigError, match="select_best: balance needs the leakage probe"):
        run_loop(config, QUIET, evaluate=False)


def test_replay_adds_the_base_models_answers_to_train_only(tmp_path, tiny_model):
    config = tiny_run_config(tmp_path, tiny_model, epochs=1)
    config.data.replay = 0.25
    result = run_loop(config, QUIET)
    train = result.run.read_split("train")
    replayed = [e for e in train if (e.augmented or {}).get("method") == "replay"]
    assert len(replayed) == 8 and len(train) == 40  # 32 task rows + a quarter of them
    assert all(e.messages[0]["role"] == "user" and e.answer for e in replayed)
    assert not any((e.augmented or {}).get("method") == "replay" for e in result.run.read_split("validation"))
    assert result.run.data_report()["replay"]["rows"] == 8
    # the task's form is read from the task's own rows, not the replayed prose
    assert result.run.evaluation()["general"]["leakage"]["form"] == "JSON (an object or a quoted string)"


def test_a_general_file_that_cannot_be_read_fails_before_the_run_exists(tmp_path, tiny_model):
    config = tiny_run_config(tmp_path, tiny_model, epochs=1)
    (tmp_path / "bad.jsonl").write_text('{"question": "q", "choices": ["a"], "answer": 0}\n')
    config.eval.general = [tmp_path / "bad.jsonl"]
    with pytest.raises(ConfigError, match="eval.general: .*bad.jsonl:1: choices"):
        run_loop(config, QUIET)
    assert not (tmp_path / "runs").exists()
