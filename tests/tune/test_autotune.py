"""Autotune: which configs the doctor's advice proposes, and the loop end to end on the tiny model."""

import json

import pytest
from rich.console import Console

from conftest import tiny_run_config, tuneloop, write_tickets
from tuneloop.doctor import Diagnosis, Recommendation
from tuneloop.tune.autotune import Attempt, Autotune, _proposals, autotune


def test_main_change_first_then_each_concrete_alternative_alone():
    diagnosis = Diagnosis(
        "overfitting",
        [],
        recommendations=[
            Recommendation("train.epochs", 10, 3, "why"),
            Recommendation("train.weight_decay", 0.0, 0.05, "why"),
            Recommendation("train.learning_rate", 2e-4, 1e-4, "why", applied=False),
            Recommendation("serve.adapter_scale", 1.0, 0.5, "why", applied=False),  # inference time: not retrainable
            Recommendation("data", None, "more data", "why", applied=False),
            Recommendation("train.gradient_accumulation", None, "x2", "why", applied=False),  # value unknown
        ],
    )
    proposals = _proposals(diagnosis, {"lora.r": 32}, "runs/a", None)
    assert [changes for changes, _, _, _ in proposals] == [
        {"lora.r": 32, "train.epochs": 3, "train.weight_decay": 0.05},
        {"lora.r": 32, "train.learning_rate": 1e-4},
    ]
    assert [s["param"] for s in proposals[0][1]] == ["train.epochs", "train.weight_decay"]
    assert all(parent == "runs/a" for _, _, parent, _ in proposals)


def test_best_attempt_by_validation_loss_or_by_metric():
    a = Attempt(0, "a", None, {}, [], best_val_loss=1.0, metric="exact_match", metric_value=0.5)
    b = Attempt(1, "b", "a", {}, [], best_val_loss=1.2, metric="exact_match", metric_value=0.7)
    assert Autotune(None, "val_loss", [a, b]).best is a
    assert Autotune(None, "metric", [a, b]).best is b  # higher accuracy wins...
    a.metric = b.metric = "loss"
    assert Autotune(None, "metric", [a, b]).best is a  # ...lower loss wins


@pytest.mark.parametrize(
    "limit, best",
    [
        (None, "b"),  # no limit: the better task metric, whatever it cost
        (50.0, "a"),  # b lost 80 points of general ability: over the limit, not kept
        (90.0, "b"),
        (5.0, None),  # neither kept the balance
    ],
)
def test_max_general_drop_keeps_only_runs_that_kept_the_balance(limit, best):
    a = Attempt(0, "a", None, {}, [], best_val_loss=1.0, metric="exact_match", metric_value=0.5, general_loss=20.0)
    b = Attempt(1, "b", "a", {}, [], best_val_loss=1.2, metric="exact_match", metric_value=0.7, general_loss=80.0)
    tune = Autotune(None, "metric", [a, b], max_general_drop=limit)
    assert (tune.best.run if tune.best else None) == best
    assert tune.to_dict()["max_general_drop"] == limit


def test_replay_is_a_change_autotune_can_try():
    diagnosis = Diagnosis(
        "healthy",
        [],
        recommendations=[
            Recommendation("train.epochs", 1, 2, "why"),
            Recommendation("data.replay", 0.0, 0.2, "why"),
            Recommendation("train.learning_rate", 8e-4, 4e-4, "why", applied=False),
        ],
    )
    [main, alternative] = _proposals(diagnosis, {}, "runs/a", None)
    assert main[0] == {"train.epochs": 2, "data.replay": 0.2} and alternative[0] == {"train.learning_rate": 4e-4}


def test_autotune_cli_follows_the_doctor_out_of_underfitting(tmp_path, tiny_model):
    write_tickets(tmp_path / "d.jsonl", 60)
    (tmp_path / "u.yaml").write_text(f"""
model: {tiny_model}
data: {{path: d.jsonl, max_seq_len: 256}}
train: {{epochs: 2, learning_rate: 1.0e-7, batch_size: 4, log_every: 1, warmup_ratio: 0.0}}
""")
    result = tuneloop("autotune", "u.yaml", "--max-runs", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    [home] = (tmp_path / "runs" / "autotune").iterdir()
    lineage = json.loads((home / "lineage.json").read_text())
    first, second = lineage["attempts"]
    assert first["verdict"] == "underfitting" and first["step"] == [] and first["parent"] is None
    assert second["parent"] == first["run"]
    changed = {s["param"]: (s["from"], s["to"]) for s in second["step"]}
    assert changed["train.learning_rate"] == (1e-7, 2e-4)  # jumped to the guides' usual LoRA value
    assert changed["train.epochs"] == (2.0, 4.0)
    assert second["best_val_loss"] < first["best_val_loss"]
    assert lineage["best_run"] == second["run"] and lineage["stopped_because"] == "run budget spent (2 runs)"
    info = json.loads((tmp_path / second["run"] / "run.json").read_text())
    assert info["lineage"]["parent"] == first["run"]
    assert "Lineage" in (tmp_path / second["run"] / "report.html").read_text()
    assert "train.learning_rate" in (home / "report.html").read_text()
    assert "best: " in result.stdout


def test_autotune_selects_by_the_validation_metric_and_tests_base_first_and_best(tmp_path, tiny_model):
    write_tickets(tmp_path / "d.jsonl", 40)
    (tmp_path / "m.yaml").write_text(
        f"model: {tiny_model}\ndata: {{path: d.jsonl, max_seq_len: 256}}\n"
        "train: {epochs: 1, batch_size: 8}\neval: {max_new_tokens: 4}\n"
    )
    result = tuneloop("autotune", "m.yaml", "--max-runs", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    [home] = (tmp_path / "runs" / "autotune").iterdir()
    lineage = json.loads((home / "lineage.json").read_text())
    assert lineage["select"] == "metric"  # auto: the task has a metric
    first, second = lineage["attempts"]  # a healthy first run does not end the loop: the budget does
    assert first["metric"] == "field_accuracy" and 0 <= first["metric_value"] <= 1
    assert second["parent"] == first["run"] and second["step"]
    assert all(not (tmp_path / a["run"] / "eval.json").exists() for a in lineage["attempts"])  # test split: once
    test = lineage["test"]
    assert test["metric"] == "json_fields" and test["n"] > 0
    assert {"base", "first", "best"} <= set(test) and test["first"]["run"] == first["run"]
    assert test["best"]["run"] == lineage["best_run"]
    assert all(0 <= test[k]["metrics"]["field_accuracy"] <= 1 for k in ("base", "first", "best"))
    # every attempt measured for what it cost the model; the base model, by definition, nothing
    assert all(a["general_loss"] >= 0 and 0 <= a["leakage"] <= 1 for a in lineage["attempts"])
    assert test["base"]["general_loss"] == 0.0 and test["first"]["general_loss"] == first["general_loss"]
    assert all(f"│ {label} " in result.stdout for label in ("base", "first", "best"))  # the test-split table
    assert "base model → first run → best run" in (home / "report.html").read_text()
    bad = tuneloop("autotune", "m.yaml", "--select", "vibes", cwd=tmp_path, timeout=120)
    assert bad.returncode == 2 and "val_loss or metric" in bad.stderr


def test_a_budget_the_first_run_cannot_fit_is_refused_before_anything_starts(tmp_path, tiny_model):
    from tuneloop.config import ConfigError

    config = tiny_run_config(tmp_path, tiny_model, epochs=1)
    with pytest.raises(ConfigError, match=r"first run alone is planned at ~[\d.]+ min"):
        autotune(config, max_minutes=1e-6, console=Console(quiet=True))
    assert not (tmp_path / "runs").exists()
