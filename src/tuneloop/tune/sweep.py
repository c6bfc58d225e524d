"""`tuneloop sweep`: hyperparameter search with Optuna.

TPE proposes each trial's values from the trials so far; a trial whose validation loss is worse
than the median of earlier trials at the same step is pruned (stopped early), which is where a
sweep saves most of its time. The study lives in an Optuna storage — SQLite beside the runs by
default — so a killed sweep resumes by running the same command again, `optuna-dashboard URL`
watches it, and workers on several hosts share one study through a PostgreSQL/MySQL URL.
Each trial is an ordinary run directory; its run.json names the study and trial.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from transformers import TrainerCallback

from tuneloop.config import RunConfig, SearchRange, config_with, dump_config, get_key
from tuneloop.doctor.curves import Curves
from tuneloop.train.methods import method_of


@dataclass
class SweepResult:
    study_name: str
    storage: str
    folder: Path  # runs/sweeps/<name>/: study.db (default storage), trials.json, best.yaml
    trials: list[dict]
    best: dict | None


class PruneOnValidationLoss(TrainerCallback):
    """Report each validation loss to the trial; stop training when Optuna says prune."""

    def __init__(self, trial):
        self.trial = trial
        self.pruned_at: int | None = None
        self.last: float | None = None  # the last validation loss reported

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if not metrics or "eval_loss" not in metrics:
            return
        self.last = metrics["eval_loss"]
        self.trial.report(self.last, state.global_step)
        if self.trial.should_prune():
            self.pruned_at = state.global_step
            control.should_training_stop = True


def search_space(config: RunConfig) -> dict[str, SearchRange]:
    """The config's sweep.space, or the guides' default one for its training method."""
    # What the guides say to tune first for the method, in their recommended ranges (methods/).
    return config.sweep.space or {k: SearchRange(**v) for k, v in method_of(config).search_space.items()}


def sample(trial, space: dict[str, SearchRange]) -> dict:
    values = {}
    for key, r in space.items():
        if r.choices is not None:
            values[key] = trial.suggest_categorical(key, r.choices)
        elif isinstance(r.low, int) and isinstance(r.high, int):
            values[key] = trial.suggest_int(key, int(r.low), int(r.high), log=r.log)
        else:
            values[key] = trial.suggest_float(key, r.low, r.high, log=r.log)
    if "lora.r" in values and "lora.alpha" not in space:
        values["lora.alpha"] = 2 * values["lora.r"]  # keep the adapter's update scale (alpha / r) constant
    return values


def sweep(
    config: RunConfig,
    *,
    trials: int | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    timeout_minutes: float | None = None,
    console: Console | None = None,
) -> SweepResult:
    import optuna

    from tuneloop.pipeline import run_loop

    console = console or Console()
    s = config.sweep
    trials = trials or s.trials
    space = search_space(config)
    name = study_name or config.run_name or "sweep"
    folder = Path(config.runs_dir) / "sweeps" / name
    folder.mkdir(parents=True, exist_ok=True)
    url = storage or s.storage or f"sqlite:///{(folder / 'study.db').resolve()}"
    original = config.model_dump(mode="json")
    for key, r in space.items():  # a typo in the space fails now, not after the first trial
        config_with(original, {key: r.choices[0] if r.choices is not None else r.low}, f"sweep.space[{key!r}]")

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # A heartbeat lets a resumed sweep mark the trials of a killed process as failed instead of
    # leaving them "running" forever.
    rdb = optuna.storages.RDBStorage(url, heartbeat_interval=s.heartbeat_seconds, grace_period=3 * s.heartbeat_seconds)
    worker = f"{socket.gethostname()}:{os.getpid()}"  # which worker ran which trial, in a shared study
    study = optuna.create_study(
        study_name=name,
        storage=rdb,
        load_if_exists=True,
        direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=s.seed, n_startup_trials=min(5, max(2, trials // 3))),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
        if s.pruning
        else optuna.pruners.NopPruner(),
    )
    counted = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    if not study.get_trials(deepcopy=False):
        baseline = _baseline(original, space)
        if baseline:  # trial 0 is the user's own config: the sweep must beat it to matter
            study.enqueue_trial(baseline)
    done = len(study.get_trials(deepcopy=False, states=counted))
    if done:
        console.print(f"resuming study {name!r}: {done} of {trials} trials done")

    def objective(trial) -> float:
        values = sample(trial, space)
        trial.set_user_attr("values", values)  # with the derived ones (alpha = 2 x r), for best.yaml
        trial.set_user_attr("worker", worker)
        console.rule(f"trial {trial.number}: " + ", ".join(f"{k}={_short(v)}" for k, v in values.items()))
        pruning = PruneOnValidationLoss(trial)
        result = run_loop(
            config_with(original, values, run_name=f"{name}-trial{trial.number}"),
            console,
            callbacks=[pruning],
            evaluate=False,
            info={
                "sweep": {
                    "study": name,
                    "storage": _hide_password(url),
                    "trial": trial.number,
                    "params": values,
                    "worker": worker,
                }
            },
        )
        trial.set_user_attr("run", str(result.run.path))
        evals = [v for _, v in Curves.from_metrics(result.run.read_metrics()).val]  # finite values only
        if pruning.pruned_at is not None:
            result.run.update_info(sweep_pruned_at_step=pruning.pruned_at)
            console.print(
                f"pruned at step {pruning.pruned_at}: validation loss {pruning.last:.4f} is behind the median"
            )
            raise optuna.TrialPruned()
        # A run that diverged to NaN everywhere: Optuna records a NaN objective as a failed trial.
        return min(evals, default=float("nan"))

    study.optimize(
        objective,
        n_trials=max(0, trials - done),
        timeout=timeout_minutes * 60 if timeout_minutes else None,
        callbacks=[optuna.study.MaxTrialsCallback(trials, states=counted)],
    )
    return _summarise(study, url, folder, original)


def _baseline(original: dict, space: dict[str, SearchRange]) -> dict | None:
    """The config's own values for the searched keys, when every one lies inside the space (an
    `auto` value is settled only when a run starts: no baseline)."""
    values = {key: get_key(original, key) for key in space}
    inside = all(
        v in r.choices if r.choices is not None else isinstance(v, int | float) and r.low <= v <= r.high
        for v, r in zip(values.values(), space.values())
    )
    return values if inside else None


def _summarise(study, url: str, folder: Path, original: dict) -> SweepResult:
    import optuna

    rows = []
    for t in study.get_trials(deepcopy=False):
        rows.append(
            {
                "number": t.number,
                "state": t.state.name.lower(),
                "params": t.params,
                "value": t.value,
                "last_reported": max(t.intermediate_values.items())[1] if t.intermediate_values else None,
                "run": t.user_attrs.get("run"),
                "worker": t.user_attrs.get("worker"),
            }
        )
    best = None
    if study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        b = study.best_trial
        best = {"number": b.number, "value": b.value, "params": b.params, "run": b.user_attrs.get("run")}
        best_config = config_with(original, b.user_attrs["values"], run_name=None)
        (folder / "best.yaml").write_text(dump_config(best_config))
    (folder / "trials.json").write_text(
        json.dumps({"study": study.study_name, "storage": _hide_password(url), "best": best, "trials": rows}, indent=2)
        + "\n"
    )
    return SweepResult(study.study_name, url, folder, rows, best)


def _hide_password(url: str) -> str:
    """A storage URL for run.json and trials.json: user and host, never the password."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _short(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)
