"""`tuneloop autotune` and `tuneloop sweep`: let the doctor, or Optuna, run the loop."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from tuneloop.cli import config_job, console

Overrides = Annotated[list[str], typer.Option("--set", help="Override a config value, e.g. --set train.epochs=3")]


def autotune(
    config: Annotated[Path, typer.Argument(help="Run config YAML to start from.")],
    max_runs: Annotated[
        int | None,
        typer.Option(
            "--max-runs", min=1, help="Budget: at most this many runs (default 4, or no limit with --max-minutes)."
        ),
    ] = None,
    max_minutes: Annotated[
        float | None,
        typer.Option(
            "--max-minutes",
            help="Budget: no run starts whose estimated "
            "time (the doctor's, from the runs so far) would end past "
            "this; the final test evaluation is kept within it.",
        ),
    ] = None,
    select: Annotated[
        str,
        typer.Option(
            "--select",
            help="Keep the best run by the validation task metric "
            "(metric), by validation loss (val_loss), or auto: metric where the task "
            "has one. Never by the test split.",
        ),
    ] = "auto",
    max_general_drop: Annotated[
        float | None,
        typer.Option(
            "--max-general-drop",
            min=0.0,
            help="Keep the balance: a run that cost the model more than this many points of general loss "
            "(generic prompts answered in the task's form, plus the general score's drop, against the base "
            "model) is not kept as the best.",
        ),
    ] = None,
    set_: Overrides = [],
) -> None:
    """Run, diagnose, apply the doctor's recommendation, rerun — past "healthy" while the budget lasts — then
    evaluate base, first and best run on the test split."""
    from tuneloop import api

    if select not in ("auto", "val_loss", "metric"):
        raise typer.BadParameter("use auto, val_loss or metric", param_hint="--select")
    tune = config_job(
        config,
        set_,
        lambda cfg: api.autotune(
            cfg,
            max_runs=max_runs,
            max_minutes=max_minutes,
            select=select,
            max_general_drop=max_general_drop,
            console=console,
        ),
    )
    by_metric = tune.select == "metric"
    table = Table(
        "#",
        "run",
        "change",
        "verdict",
        "best val loss",
        *(["val metric"] if by_metric else []),
        "general loss",
        "min",
        title=f"autotune · selected by {tune.select} · stopped: {tune.stopped_because}",
    )
    best = tune.best
    for a in tune.attempts:
        change = ", ".join(f"{s['param'].split('.')[-1]} {s['from']}→{s['to']}" for s in a.step) or "as given"
        table.add_row(
            str(a.index + 1) + (" *" if a is best else ""),
            Path(a.run).name,
            change,
            a.verdict,
            f"{a.best_val_loss:.4f}" if a.best_val_loss is not None else "-",
            *([f"{a.metric} {a.metric_value:.4f}" if a.metric else "-"] if by_metric else []),
            ("-" if a.general_loss is None else f"{a.general_loss:g}") + ("" if tune.eligible(a) else " (over)"),
            f"{a.seconds / 60:.1f}",
        )
    console.print(table)
    for s in tune.skipped:
        console.print(
            f"skipped (would not fit the time left): {s['changes']} ~{s['estimated_minutes']} min, "
            f"{s['minutes_left']} min left"
        )
    if tune.test:
        t = tune.test
        keys = [k for k in t["best"]["metrics"] if k in ("loss", t["key"])]
        result = Table("test split", *keys, "general loss", title=f"test split ({t['n']}): base → first → best")
        for label in ("base", "first", "best"):
            general = t[label].get("general_loss")
            result.add_row(
                label, *(f"{t[label]['metrics'][k]:.4f}" for k in keys), "-" if general is None else f"{general:g}"
            )
        console.print(result)
    if best:
        console.print(f"best: {best.run}  ·  lineage: {tune.path / 'report.html'}", soft_wrap=True)


def sweep(
    config: Annotated[Path, typer.Argument(help="Run config YAML; its sweep: section sets the search space.")],
    trials: Annotated[
        int | None,
        typer.Option(
            "--trials", min=1, help="Trials in the study (default: sweep.trials). Rerun the command to resume."
        ),
    ] = None,
    storage: Annotated[
        str | None,
        typer.Option(
            "--storage", help="Optuna storage URL, e.g. postgresql://host/db for workers on several machines."
        ),
    ] = None,
    study: Annotated[str | None, typer.Option("--study", help="Study name (default: the config's name).")] = None,
    timeout_minutes: Annotated[float | None, typer.Option("--timeout-minutes")] = None,
    backend: Annotated[
        str,
        typer.Option(
            "--backend", help="optuna (this machine, or many via --storage) or ray (Ray Tune on a Ray cluster)."
        ),
    ] = "optuna",
    ray_address: Annotated[
        str | None, typer.Option("--ray-address", help="A running Ray cluster ('auto'); default: a local one.")
    ] = None,
    set_: Overrides = [],
) -> None:
    """Hyperparameter search with Optuna (TPE, pruning of weak trials, resumable SQLite storage), or on Ray Tune."""
    from tuneloop import api

    if backend not in ("optuna", "ray"):
        raise typer.BadParameter("use optuna or ray", param_hint="--backend")
    if backend == "ray":
        _ray_sweep(config, set_, trials, study, ray_address)
        return
    result = config_job(
        config,
        set_,
        lambda cfg: api.sweep(
            cfg, trials=trials, storage=storage, study=study, timeout_minutes=timeout_minutes, console=console
        ),
    )
    table = Table("trial", "state", "params", "best val loss", "run", title=f"sweep {result.study_name}")
    for t in result.trials:
        params = ", ".join(
            f"{k.split('.')[-1]}={v:.3g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}"
            for k, v in t["params"].items()
        )
        value = t["value"] if t["value"] is not None else t["last_reported"]
        mark = " *" if result.best and t["number"] == result.best["number"] else ""
        table.add_row(
            f"{t['number']}{mark}",
            t["state"],
            params,
            "-" if value is None else f"{value:.4f}",
            Path(t["run"]).name if t["run"] else "-",
        )
    console.print(table)
    if result.best:
        console.print(
            f"best config: {result.folder / 'best.yaml'}  →  tuneloop run {result.folder / 'best.yaml'}", soft_wrap=True
        )
    console.print(f"watch: optuna-dashboard {result.storage}", soft_wrap=True)


def _ray_sweep(config: Path, overrides: list[str], trials: int | None, study: str | None, address: str | None) -> None:
    from tuneloop.tune.ray_backend import ray_sweep
    from tuneloop.tune.sweep import search_space

    def job(cfg):
        name = study or cfg.run_name or "sweep"
        return name, ray_sweep(
            cfg, search_space(cfg), trials=trials or cfg.sweep.trials, name=name, address=address, console=console
        )

    name, rows = config_job(config, overrides, job)
    table = Table("trial", "params", "best val loss", "evaluations", title=f"ray sweep {name}")
    for r in sorted(rows, key=lambda r: r["best_val_loss"] if r["best_val_loss"] is not None else float("inf")):
        params = ", ".join(
            f"{k.split('.')[-1]}={v:.3g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}"
            for k, v in r["params"].items()
        )
        table.add_row(
            str(r["trial"]),
            params,
            "-" if r["best_val_loss"] is None else f"{r['best_val_loss']:.4f}",
            str(r["evaluations"]),
        )
    console.print(table)
