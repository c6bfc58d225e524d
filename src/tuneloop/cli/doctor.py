"""`tuneloop diagnose`: the doctor's verdict on a run, in words, a terminal curve, and JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

console = Console()
BLOCKS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float], width: int = 60) -> str:
    if not values:
        return ""
    if len(values) > width:  # keep the shape: sample evenly, always including the last point
        values = [values[round(i * (len(values) - 1) / (width - 1))] for i in range(width)]
    lo, hi = min(values), max(values)
    return "".join(BLOCKS[0 if hi == lo else round((v - lo) / (hi - lo) * (len(BLOCKS) - 1))] for v in values)


def diagnose(
    path: Annotated[Path, typer.Argument(help="A run directory, or a metrics.jsonl in the run-directory format.")],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print verdict, findings, recommendations, next_config as JSON.")
    ] = False,
    plot: Annotated[Path | None, typer.Option("--plot", help="Also write the loss curves (PNG).")] = None,
    next_config: Annotated[
        Path | None,
        typer.Option("--next-config", help="Write the recommended config (YAML), ready for `tuneloop run`."),
    ] = None,
) -> None:
    """Read the loss curves and the task metric: overfitting, underfitting, divergence, undertraining or healthy;
    which checkpoint to keep; and what to change next, with its cost."""
    from tuneloop.cli import reported
    from tuneloop.doctor import diagnose_path, recommend
    from tuneloop.doctor.curves import Curves
    from tuneloop.doctor.diagnose import read_metrics_file
    from tuneloop.doctor.recommend import next_config_yaml
    from tuneloop.runs import RunDir

    with reported(FileNotFoundError, ValueError, json.JSONDecodeError):
        records = read_metrics_file(path)
        diagnosis, config = diagnose_path(path, records)
        status = RunDir(path).status() if path.is_dir() else None
    recommend(diagnosis, config)
    if plot:
        from tuneloop.report.plots import loss_curve_png

        plot.write_bytes(loss_curve_png(records))
    next_yaml = next_config_yaml(diagnosis) if next_config else None
    if next_yaml is not None:
        next_config.write_text(next_yaml)
    if as_json:
        typer.echo(json.dumps(diagnosis.to_dict(), indent=2))
        return
    colour = {"healthy": "green", "undertrained": "yellow"}.get(diagnosis.verdict, "red")
    console.print(f"[bold {colour}]{diagnosis.verdict}[/bold {colour}]  ({path})")
    if status in ("interrupted", "failed", "stopped"):
        how = f"`tuneloop resume {path}` continues it" if RunDir(path).resumable() else "no checkpoint to resume from"
        console.print(f"  [yellow]the run is {status} (its curves end early): {how}[/yellow]")
    curves = Curves.from_metrics(records)
    s = diagnosis.summary
    reward = [r["train_reward"] for r in records if "train_reward" in r]
    if reward:  # a reinforcement run: its reward is its training curve
        console.print(f"  reward {sparkline(reward)}  {s.get('first_reward'):.3f} → {s.get('last_reward'):.3f}")
    console.print(
        f"  train {sparkline([v for _, v in curves.train])}  {s.get('first_train_loss')} → {s.get('last_train_loss')}"
    )
    console.print(
        f"  val   {sparkline([v for _, v in curves.val])}  best {s.get('best_val_loss')} at step "
        f"{s.get('best_step')}, last {s.get('last_val_loss')}"
    )
    if curves.metric:
        console.print(
            f"  val {curves.metric_key} {sparkline([v for _, v in curves.metric])}  best {s.get('best_metric')} "
            f"at step {s.get('best_metric_step')}, last {s.get('last_metric')}"
            + (f"; on a training sample {s['train_sample_metric']}" if "train_sample_metric" in s else "")
        )
    for f in diagnosis.findings:
        console.print(f"  • {f.message} [dim]({f.kind}, confidence {f.confidence:.1f})[/dim]")
    if diagnosis.recommendations:
        table = Table(
            "change",
            "from",
            "to",
            "why",
            "est. min",
            title="recommended next run"
            + (f" (~{s['next_run_minutes']:g} min of training)" if s.get("next_run_minutes") else ""),
        )
        for r in diagnosis.recommendations:
            table.add_row(
                r.param,
                "?" if r.from_ is None else str(r.from_),
                str(r.to),
                r.why,
                "" if r.minutes is None else f"{r.minutes:g}",
            )
        console.print(table)
    if next_yaml is not None:
        console.print(f"next config: {next_config}  →  tuneloop run {next_config}")
    if plot:
        console.print(f"curves: {plot}")
