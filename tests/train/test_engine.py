"""The training engine's knobs, on the tiny model: each one must reach the Trainer/model and act."""

import json

import pytest
import torch
from conftest import chat, write_jsonl
from rich.console import Console
from transformers import TrainerCallback

from tuneloop.config import ConfigError, LoraConfig, TrainConfig, config_from_dict
from tuneloop.data import Example, load_examples_strict
from tuneloop.models import Precision, load_model
from tuneloop.models.trainable import freeze, set_model_dropout
from tuneloop.pipeline import resume_loop, run_loop
from tuneloop.runs import RunDir
from tuneloop.train import build_trainer, to_prompt_completion

QUIET = Console(quiet=True)


@pytest.fixture
def rows(tmp_path):
    data = [chat(f"question number {i} " + "pad " * (i % 7), json.dumps({"answer": i % 5})) for i in range(16)]
    examples = load_examples_strict(write_jsonl(tmp_path / "d.jsonl", data)).examples
    return to_prompt_completion(examples[:12]), to_prompt_completion(examples[12:])


def _trainer(tmp_path, tiny_model, tokenizer, rows, train: TrainConfig, lora: LoraConfig = LoraConfig(r=4, alpha=8)):
    train_rows, val_rows = rows
    model = load_model(tiny_model, Precision.fp32)
    return build_trainer(model, tokenizer, train_rows, val_rows, train=train, lora=lora, max_seq_len=256,
                         precision=Precision.fp32, output_dir=tmp_path / "out")


@pytest.mark.parametrize("lora, attribute", [(LoraConfig(r=4, use_rslora=True), "use_rslora"),
                                             (LoraConfig(r=4, use_dora=True), "use_dora")])
def test_lora_variants_reach_peft(tmp_path, tiny_model, tokenizer, rows, lora, attribute):
    trainer = _trainer(tmp_path, tiny_model, tokenizer, rows, TrainConfig(batch_size=4, epochs=1), lora)
    assert getattr(trainer.model.peft_config["default"], attribute) is True


def test_schedule_warmup_neftune_and_packing_reach_the_trainer(tmp_path, tiny_model, tokenizer, rows):
    train = TrainConfig(batch_size=4, epochs=1, scheduler="linear", warmup_steps=2, neftune_noise_alpha=5.0,
                        packing=True, weight_decay=0.05)
    trainer = _trainer(tmp_path, tiny_model, tokenizer, rows, train)
    a = trainer.args
    assert (a.lr_scheduler_type, a.warmup_steps, a.neftune_noise_alpha, a.weight_decay) == ("linear", 2, 5.0, 0.05)
    batch = next(iter(trainer.get_train_dataloader()))
    assert batch["input_ids"].shape[0] == 1 and "position_ids" in batch  # packed into one row


def test_weight_penalty_is_added_and_logged(tmp_path, tiny_model, tokenizer, rows):
    plain = _trainer(tmp_path, tiny_model, tokenizer, rows, TrainConfig(batch_size=4, epochs=1))
    penalised = _trainer(tmp_path, tiny_model, tokenizer, rows, TrainConfig(batch_size=4, epochs=1, adapter_l2=0.5))
    batch = next(iter(plain.get_train_dataloader()))
    penalised.model.load_state_dict(plain.model.state_dict())
    plain.model.train(), penalised.model.train()
    with torch.no_grad():
        expected = 0.5 * sum(p.pow(2).sum() for p in penalised.model.parameters() if p.requires_grad)
        difference = penalised.compute_loss(penalised.model, dict(batch)) - plain.compute_loss(plain.model, dict(batch))
    torch.testing.assert_close(difference, expected, rtol=1e-4, atol=1e-5)
    assert penalised._metrics["train"]["weight_penalty"]


def test_freeze_first_layers_and_named_modules(tiny_model):
    model = load_model(tiny_model, Precision.fp32)
    counts = freeze(model, first_layers=1, modules=["layers.1.mlp"])
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert any("layers.0." in n for n in frozen) and any("layers.1.mlp" in n for n in frozen)
    assert any("embed_tokens" in n for n in frozen) and not any("layers.1.self_attn" in n for n in frozen)
    assert counts["trainable"] == sum(p.numel() for n, p in model.named_parameters()
                                      if ("layers.1." in n and "mlp" not in n) or n == "model.norm.weight")
    with pytest.raises(ConfigError, match="has 2 layers"):
        freeze(load_model(tiny_model, Precision.fp32), first_layers=3)
    with pytest.raises(ConfigError, match="no parameter name contains"):
        freeze(load_model(tiny_model, Precision.fp32), modules=["nonexistent"])


def test_model_dropout_is_set_where_the_model_has_it(tiny_model):
    model = load_model(tiny_model, Precision.fp32)
    assert "attention_dropout" in set_model_dropout(model, 0.2)
    assert model.model.layers[0].self_attn.attention_dropout == 0.2


def _config(tmp_path, tiny_model, **train):
    rows = [chat(f"question number {i} " + "pad " * (i % 7), json.dumps({"answer": i % 5})) for i in range(40)]
    tmp_path.mkdir(parents=True, exist_ok=True)
    write_jsonl(tmp_path / "d.jsonl", rows)
    return config_from_dict({
        "model": str(tiny_model), "runs_dir": str(tmp_path / "runs"), "run_name": "t",
        "data": {"path": str(tmp_path / "d.jsonl"), "max_seq_len": 256, "dedup": "none", "test_size": 4},
        "lora": {"r": 4, "alpha": 8},
        "train": {"batch_size": 4, "learning_rate": 1e-2, "log_every": 1, "eval_every": 2, **train},
        "eval": {"max_new_tokens": 4},
    })


def test_auto_values_are_resolved(tmp_path, tiny_model, tokenizer):
    from tuneloop.data import Splits
    from tuneloop.train.auto import resolve_auto

    config = _config(tmp_path, tiny_model, epochs="auto", batch_size="auto", eval_every=0)
    config.eval.max_new_tokens = "auto"
    answers = ["a", "a longer answer of several words"]
    train = [Example([{"role": "user", "content": "q"}, {"role": "assistant", "content": answers[i % 2]}], i + 1)
             for i in range(32)]
    resolved = resolve_auto(config, Splits(train, [], []), {"tokens": {"p95": 60}}, tiny_model, "cpu", tokenizer)[0]
    # 32 rows: ceil(100 / 32) epochs; batch at most 1/20 of the rows; ~10 evaluations over 128 steps
    assert (resolved.train.epochs, resolved.train.batch_size, resolved.train.eval_every) == (4, 1, 13)
    assert resolved.train.precision in ("bf16", "fp32") and config.train.epochs == "auto"  # the input is not changed
    # the longest answer in tokens x 1.25 + 8: a label task does not generate 128 tokens
    longest = len(tokenizer(answers[1], add_special_tokens=False)["input_ids"])
    assert resolved.eval.max_new_tokens == -(-5 * longest // 4) + 8 < 128


def test_early_stopping_restores_the_best_checkpoint(tmp_path, tiny_model):
    # min_delta far above any real change: the second evaluation cannot "improve", so training
    # stops there and the first evaluation's weights are restored.
    config = _config(tmp_path, tiny_model, epochs=3, early_stopping_patience=1, early_stopping_min_delta=100.0,
                     select_best="loss")
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
    config = _config(tmp_path, tiny_model, epochs=3, early_stopping_patience=1, select_best="metric",
                     metric_budget=1.0)
    config.eval.metric = f"{__name__}:shrinking"
    result = run_loop(config, QUIET)
    info = json.loads(result.run.info_file.read_text())
    evals = [r for r in result.run.read_metrics() if "eval_loss" in r]
    assert [r["step"] for r in evals] == [2, 4] and info["stopped_early"] is True
    assert [r["eval_quality"] for r in evals] == [1.0, 0.5] and all("eval_loss_se" in r for r in evals)
    assert info["selected_by"] == "eval_quality" and info["best_checkpoint_step"] == 2
    ce = info["continuous_evaluation"]
    assert ce["scored_steps"] == [2, 4] and ce["skipped_steps"] == [] and ce["key"] == "quality"
    # the saved adapter is step 2's: its validation loss is step 2's, not step 4's
    from tuneloop.eval.loss import answer_loss
    from tuneloop.runs.sides import load_side

    side = load_side(str(result.run.path), config)
    loss = answer_loss(side.model, side.tokenizer, result.run.read_split("validation"), batch_size=4)["loss"]
    assert abs(loss - evals[0]["eval_loss"]) < abs(loss - evals[1]["eval_loss"])


class StopAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt  # as if Ctrl-C (or a kill) hit the run here


def test_resume_reaches_the_same_result_as_an_uninterrupted_run(tmp_path, tiny_model):
    straight = run_loop(_config(tmp_path / "a", tiny_model, epochs=2), QUIET)
    config = _config(tmp_path / "b", tiny_model, epochs=2)
    with pytest.raises(KeyboardInterrupt):
        run_loop(config, QUIET, callbacks=[StopAt(7)])
    [run_path] = (tmp_path / "b" / "runs").iterdir()
    run = RunDir(run_path)
    assert json.loads(run.info_file.read_text())["status"] == "stopped"
    assert run.last_checkpoint().name == "checkpoint-6"
    resumed = resume_loop(run_path, QUIET)
    assert json.loads(run.info_file.read_text())["resumed_from_step"] == 6
    a, b = straight.run.read_metrics(), resumed.run.read_metrics()
    assert [r["step"] for r in a] == [r["step"] for r in b]  # nothing logged twice or lost
    for key in ("train_loss", "eval_loss"):
        torch.testing.assert_close(torch.tensor([r[key] for r in a if key in r]),
                                   torch.tensor([r[key] for r in b if key in r]), rtol=1e-4, atol=1e-5)
    assert straight.evaluation["finetuned"]["metrics"]["loss"] == pytest.approx(
        resumed.evaluation["finetuned"]["metrics"]["loss"], rel=1e-4)


def test_full_fine_tuning_saves_the_model_and_measures_the_base_first(tmp_path, tiny_model):
    result = run_loop(_config(tmp_path, tiny_model, epochs=1, method="full", freeze_layers=1, learning_rate=1e-3),
                      QUIET)
    assert (result.run.path / "model" / "config.json").exists() and not (result.run.path / "adapter").exists()
    ev = result.evaluation
    assert ev["finetuned"]["metrics"]["loss"] < ev["base"]["metrics"]["loss"]


def test_config_errors_for_engine_knobs():
    with pytest.raises(ConfigError, match="apply to method: full"):
        config_from_dict({"data": {"path": "x"}, "train": {"freeze_layers": 2}})
    with pytest.raises(ConfigError, match="report_to"):
        config_from_dict({"data": {"path": "x"}, "train": {"report_to": ["neptune"]}})


def test_two_runs_in_one_process_log_tensorboard_into_their_own_run(tmp_path, tiny_model, monkeypatch):
    """Autotune, a sweep and a notebook run several runs in one process: each one's trackers
    write into its own run directory, and the environment is left as it was."""
    import os

    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    runs = [run_loop(_config(tmp_path, tiny_model, epochs=1, report_to=["tensorboard"]), QUIET).run for _ in range(2)]
    assert runs[0].path != runs[1].path
    for run in runs:
        assert list((run.path / "tensorboard").glob("events.out.tfevents.*")), run.path
    assert "TENSORBOARD_LOGGING_DIR" not in os.environ


def test_the_users_own_tracker_directory_wins(tmp_path, tiny_model, monkeypatch):
    mine = tmp_path / "my-tensorboard"
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(mine))
    run = run_loop(_config(tmp_path, tiny_model, epochs=1, report_to=["tensorboard"]), QUIET).run
    assert list(mine.glob("events.out.tfevents.*")) and not (run.path / "tensorboard").exists()


def test_a_tracker_that_is_not_installed_is_a_clear_error(tmp_path, tiny_model):
    import importlib.util

    assert importlib.util.find_spec("mlflow") is None  # deliberately not a test dependency
    with pytest.raises(ConfigError, match=r"\['mlflow'\] not installed; pip install mlflow"):
        run_loop(_config(tmp_path, tiny_model, epochs=1, report_to=["mlflow"]), QUIET)
    assert not (tmp_path / "runs").exists()  # refused before a run directory was made


@pytest.mark.parametrize("doctor, stops", [("stop", True), ("watch", False)])
def test_live_doctor_stops_a_diverging_run_only_when_asked(tmp_path, tiny_model, doctor, stops):
    config = _config(tmp_path, tiny_model, method="full", epochs=3, learning_rate=5.0, max_grad_norm=1e6,
                     warmup_ratio=0.0, doctor=doctor)
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
