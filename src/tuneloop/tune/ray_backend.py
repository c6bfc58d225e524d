"""`tuneloop sweep --backend ray`: the same search on a Ray cluster, through Ray Tune.

Optuna's TPE proposes the trials (Ray's OptunaSearch) and ASHA stops weak ones early from the
same intermediate validation losses. Ray places each trial on a free worker of the cluster
(`ray start --head` on one machine, `ray start --address HEAD:6379` on the others, then
`--ray-address auto`). Without an address, Ray starts a local one-machine cluster. Each trial
writes an ordinary run directory under the config's runs_dir, so runs_dir must be on a
filesystem every worker sees.
"""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from transformers import TrainerCallback

from tuneloop.config import RunConfig, SearchRange, config_with


class ReportToRay(TrainerCallback):
    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if metrics and "eval_loss" in metrics:
            from ray import tune

            tune.report({"eval_loss": metrics["eval_loss"], "step": state.global_step})


def ray_space(space: dict[str, SearchRange]) -> dict:
    from ray import tune

    out = {}
    for key, r in space.items():
        if r.choices is not None:
            out[key] = tune.choice(r.choices)
        elif isinstance(r.low, int) and isinstance(r.high, int):
            out[key] = tune.lograndint(r.low, r.high + 1) if r.log else tune.randint(r.low, r.high + 1)
        else:
            out[key] = tune.loguniform(r.low, r.high) if r.log else tune.uniform(r.low, r.high)
    return out


def ray_sweep(
    config: RunConfig,
    space: dict[str, SearchRange],
    *,
    trials: int,
    name: str,
    address: str | None = None,
    cpus_per_trial: float = 1.0,
    console: Console | None = None,
) -> list[dict]:
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    console = console or Console()
    original = config.model_dump(mode="json")
    original["runs_dir"] = str(Path(config.runs_dir).resolve())  # workers run in their own directories
    folder = Path(original["runs_dir"]) / "sweeps" / name

    def trainable(params: dict) -> None:
        import optuna

        from tuneloop.pipeline import run_loop
        from tuneloop.tune.sweep import sample

        values = sample(optuna.trial.FixedTrial(params), space)  # adds the derived values (alpha = 2 x r)
        trial_config = config_with(original, values, run_name=f"{name}-{tune.get_context().get_trial_id()}")
        run_loop(
            trial_config,
            Console(quiet=True),
            callbacks=[ReportToRay()],
            evaluate=False,
            info={
                "sweep": {"study": name, "backend": "ray", "trial": tune.get_context().get_trial_id(), "params": values}
            },
        )

    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": cpus_per_trial}),
        param_space=ray_space(space),
        tune_config=tune.TuneConfig(
            metric="eval_loss",
            mode="min",
            num_samples=trials,
            search_alg=OptunaSearch(seed=config.sweep.seed),
            scheduler=ASHAScheduler(grace_period=2, reduction_factor=2),
        ),
        run_config=tune.RunConfig(name=name, storage_path=str((folder / "ray").resolve()), verbose=0),
    )
    results = tuner.fit()
    rows = []
    for result in results:
        history = result.metrics_dataframe
        rows.append(
            {
                "trial": result.metrics.get("trial_id"),
                "params": result.config,
                "best_val_loss": float(history["eval_loss"].min()) if history is not None and len(history) else None,
                "evaluations": 0 if history is None else len(history),
                "error": str(result.error) if result.error else None,
            }
        )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ray_trials.json").write_text(json.dumps(rows, indent=2, default=str) + "\n")
    return rows
