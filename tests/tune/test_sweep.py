"""Sweep: sampling from the space, pruning from intermediate validation loss, and a resumable study."""

import json

import optuna
import pytest
from transformers import TrainerControl, TrainerState

from conftest import tuneloop, write_tickets
from tuneloop.config import ConfigError, SearchRange, config_from_dict
from tuneloop.tune.sweep import PruneOnValidationLoss, _baseline, sample


@pytest.mark.parametrize(
    "space, params, expected",
    [
        (
            {"train.learning_rate": SearchRange(low=1e-5, high=1e-3, log=True)},
            {"train.learning_rate": 3e-4},
            {"train.learning_rate": 3e-4},
        ),
        ({"lora.r": SearchRange(choices=[8, 16])}, {"lora.r": 16}, {"lora.r": 16, "lora.alpha": 32}),  # alpha follows
        (
            {"lora.r": SearchRange(choices=[8, 16]), "lora.alpha": SearchRange(choices=[8])},
            {"lora.r": 16, "lora.alpha": 8},
            {"lora.r": 16, "lora.alpha": 8},
        ),  # ...unless it is searched itself
        (
            {"train.gradient_accumulation": SearchRange(low=1, high=4)},
            {"train.gradient_accumulation": 2},
            {"train.gradient_accumulation": 2},
        ),
    ],
)
def test_sample(space, params, expected):
    assert sample(optuna.trial.FixedTrial(params), space) == expected


def test_integer_range_is_sampled_as_integers():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    values = [sample(study.ask(), {"lora.r": SearchRange(low=4, high=64, log=True)})["lora.r"] for _ in range(10)]
    assert all(isinstance(v, int) and 4 <= v <= 64 for v in values)


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"choices": [1], "low": 1, "high": 2}, "either choices"),
        ({"low": 1e-3}, "either choices"),
        ({"low": 1e-3, "high": 1e-4}, "must be below"),
    ],
)
def test_bad_search_range(raw, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict({"data": {"path": "x.jsonl"}, "sweep": {"space": {"train.learning_rate": raw}}})


def test_baseline_is_the_configs_own_values_when_inside_the_space():
    config = {"train": {"learning_rate": 2e-4}, "lora": {"r": 16}}
    space = {"train.learning_rate": SearchRange(low=1e-4, high=1e-3), "lora.r": SearchRange(choices=[8, 16])}
    assert _baseline(config, space) == {"train.learning_rate": 2e-4, "lora.r": 16}
    assert _baseline(config, {"lora.r": SearchRange(choices=[4, 8])}) is None
    # the default learning rate is `auto`, settled per run: no baseline trial (it used to raise TypeError)
    assert _baseline({"train": {"learning_rate": "auto"}, "lora": {"r": 16}}, space) is None
    assert _baseline({"lora": {"r": 16}}, space) is None  # a key the config lacks


def test_a_trial_behind_the_median_is_stopped():
    study = optuna.create_study(pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0))
    for losses in ([2.0, 1.5], [2.1, 1.4]):
        study.add_trial(
            optuna.trial.create_trial(
                value=losses[-1], intermediate_values=dict(zip((5, 10), losses)), params={}, distributions={}
            )
        )
    state, control = TrainerState(), TrainerControl()
    callback = PruneOnValidationLoss(study.ask())
    state.global_step = 5
    callback.on_evaluate(None, state, control, metrics={"eval_loss": 1.9})  # ahead of the median: keep going
    assert not control.should_training_stop and callback.pruned_at is None
    state.global_step = 10
    callback.on_evaluate(None, state, control, metrics={"eval_loss": 3.0})  # far behind: stop
    assert control.should_training_stop and callback.pruned_at == 10


def test_sweep_cli_runs_resumes_and_writes_the_best_config(tmp_path, tiny_model):
    write_tickets(tmp_path / "d.jsonl", 50)
    (tmp_path / "s.yaml").write_text(f"""
model: {tiny_model}
data: {{path: d.jsonl, max_seq_len: 256}}
train: {{epochs: 1, batch_size: 8, learning_rate: 1.0e-2, eval_every: 2}}
sweep:
  space:
    train.learning_rate: {{low: 1.0e-4, high: 3.0e-2, log: true}}
""")

    def sweep(trials):
        result = tuneloop("sweep", "s.yaml", "--trials", trials, cwd=tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    sweep(2)
    out = sweep(3)  # the same command with a larger budget resumes the study
    assert "resuming study 's': 2 of 3 trials done" in out and "optuna-dashboard sqlite:///" in out
    summary = json.loads((tmp_path / "runs" / "sweeps" / "s" / "trials.json").read_text())
    assert [t["number"] for t in summary["trials"]] == [0, 1, 2]
    assert summary["trials"][0]["params"] == {"train.learning_rate": 1e-2}  # trial 0: the config as given
    assert len([p for p in (tmp_path / "runs").iterdir() if p.name.startswith("s-trial")]) == 3
    best = summary["best"]
    assert best["value"] == min(t["value"] for t in summary["trials"] if t["state"] == "complete")
    best_config = (tmp_path / "runs" / "sweeps" / "s" / "best.yaml").read_text()
    assert f"learning_rate: {best['params']['train.learning_rate']}" in best_config
    [trial1] = (tmp_path / "runs").glob("s-trial1-*")
    info = json.loads((trial1 / "run.json").read_text())
    assert info["sweep"]["trial"] == 1 and info["sweep"]["study"] == "s"


def test_a_typo_in_the_space_fails_before_any_trial(tmp_path, tiny_model):
    write_tickets(tmp_path / "d.jsonl", 20)
    (tmp_path / "s.yaml").write_text(
        f"model: {tiny_model}\ndata: {{path: d.jsonl}}\n"
        "sweep: {space: {train.learning_rte: {low: 1.0e-4, high: 1.0e-3}}}\n"
    )
    result = tuneloop("sweep", "s.yaml", cwd=tmp_path, timeout=120)
    assert result.returncode == 2 and "learning_rte" in result.stderr and "did you mean" in result.stderr
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").glob("s-trial*"))


def test_ray_backend_on_a_local_cluster(tmp_path, tiny_model):
    """The Ray Tune path on one machine (Ray's local cluster): Optuna's sampler, ASHA, run directories."""
    write_tickets(tmp_path / "d.jsonl", 40)
    (tmp_path / "r.yaml").write_text(f"""
model: {tiny_model}
data: {{path: d.jsonl, max_seq_len: 256}}
train: {{epochs: 1, batch_size: 8, eval_every: 2}}
sweep:
  space:
    train.learning_rate: {{low: 1.0e-3, high: 3.0e-2, log: true}}
    lora.r: {{choices: [4, 8]}}
""")
    result = tuneloop("sweep", "r.yaml", "--backend", "ray", "--trials", 2, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = json.loads((tmp_path / "runs" / "sweeps" / "r" / "ray_trials.json").read_text())
    assert len(rows) == 2 and all(r["error"] is None and r["best_val_loss"] > 0 for r in rows)
    runs = [p for p in (tmp_path / "runs").iterdir() if p.name.startswith("r-")]
    assert len(runs) == 2
    info = json.loads((runs[0] / "run.json").read_text())
    assert (
        info["sweep"]["backend"] == "ray"
        and info["sweep"]["params"]["lora.alpha"] == 2 * info["sweep"]["params"]["lora.r"]
    )
