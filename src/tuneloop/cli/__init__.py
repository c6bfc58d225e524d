"""The `tuneloop` command line."""

from __future__ import annotations

import os
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Fine-tune an LLM on your data: prepare, train, diagnose, evaluate, serve.",
)
console = Console()


# Commands whose work is torch compute: their threads follow the free cores (tuneloop/cpu.py).
COMPUTE = {
    *("plan", "run", "train", "resume", "autotune", "sweep"),
    *("eval", "compare", "serve", "chat", "export", "models"),
}


@app.callback()
def main(
    ctx: typer.Context,
    threads: int | None = typer.Option(
        None,
        "--threads",
        min=1,
        help="CPU threads for training, evaluation and serving (also TUNELOOP_THREADS); default: the cores "
        "other processes leave free, re-checked while training.",
    ),
) -> None:
    """Subcommands below; `tuneloop COMMAND --help` for each."""
    from tuneloop.cpu import configure_threads

    if ctx.invoked_subcommand in COMPUTE:
        with reported(ValueError):
            decided = configure_threads(threads)
        if decided:
            Console(stderr=True).print(f"[dim]cpu: {decided}[/dim]")


def _register_subcommands() -> None:
    from tuneloop.cli.data import data_app
    from tuneloop.cli.doctor import diagnose
    from tuneloop.cli.eval import compare, eval_, rate, ratings_app
    from tuneloop.cli.models import models_app
    from tuneloop.cli.plan import plan
    from tuneloop.cli.serve import chat, export, serve
    from tuneloop.cli.tune import autotune, sweep
    from tuneloop.cli.ui import ui

    app.add_typer(data_app, name="data")
    app.add_typer(models_app, name="models")
    app.command()(plan)
    app.command()(diagnose)
    app.command("eval")(eval_)
    app.command()(compare)
    app.command()(rate)
    app.add_typer(ratings_app, name="ratings")
    app.command()(serve)
    app.command()(chat)
    app.command()(export)
    app.command()(ui)
    app.command()(autotune)
    app.command()(sweep)


def quiet_libraries() -> None:
    """HF libraries print progress bars and advisories per dataset map; ours say what matters."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Deprecation notices about the libraries' own internals (e.g. gradient_checkpointing's
    # rename) are for their developers, not for someone running a fine-tune.
    warnings.filterwarnings("ignore", category=FutureWarning)
    from datasets.utils.logging import disable_progress_bar
    from transformers.utils import logging as hf_logging

    disable_progress_bar()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def fail(error: Exception) -> NoReturn:
    """A user's mistake (bad config, data, path or option): one plain line and exit status 2.
    Plain text, never wrapped: `file:line: field` must stay greppable and clickable."""
    typer.echo(f"error: {error}", err=True)
    raise typer.Exit(2)


@contextmanager
def reported(*kinds: type[Exception]):
    """Inside it, an exception of these kinds ends the command through fail(), never a traceback."""
    try:
        yield
    except kinds as e:
        fail(e)


def config_job(config: Path, overrides: list[str], job):
    """Load a run config and call job(config); bad config or data is one plain error line, exit 2."""
    from tuneloop.config import ConfigError, load_config
    from tuneloop.data import DataError
    from tuneloop.models import ModelNotFound

    # OSError: a full disk, an unreadable file; the run directory has recorded the failure.
    with reported(ConfigError, DataError, ModelNotFound, OSError):
        cfg = load_config(config, overrides)
        quiet_libraries()
        return job(cfg)


@app.command()
def run(
    config: Path = typer.Argument(..., help="Run config YAML (see examples/quickstart/quickstart.yaml)."),
    set_: list[str] = typer.Option([], "--set", help="Override a config value, e.g. --set train.epochs=3"),
) -> None:
    """Run the whole loop: validate data, LoRA fine-tune, evaluate base vs fine-tuned, write the report."""
    from tuneloop import api

    _print_summary(config_job(config, set_, lambda cfg: api.run(cfg, console=console)))


@app.command()
def train(
    config: Path = typer.Argument(..., help="Run config YAML."),
    set_: list[str] = typer.Option([], "--set", help="Override a config value, e.g. --set train.epochs=3"),
) -> None:
    """Data and training only (no base-vs-fine-tuned generation); runs under `accelerate launch` on many
    GPUs or machines: see configs/accelerate/."""
    from tuneloop import api

    result = config_job(config, set_, lambda cfg: api.run(cfg, evaluate=False, console=console))
    if "total" in result.timings:  # the other processes of a distributed run have nothing to report
        from tuneloop.doctor.curves import Curves

        evals = [v for _, v in Curves.from_metrics(result.metrics).val]
        console.print(
            f"trained: best validation loss {min(evals):.4f} (last {evals[-1]:.4f}); "
            f"weights in {result.path}; report {result.dir.report_file}"
        )
        print_verdict(result)


@app.command()
def resume(run_dir: Path = typer.Argument(..., help="A run directory under runs/ that was killed or stopped.")) -> None:
    """Continue a killed run from its last checkpoint: same data, config and seed, same result."""
    from tuneloop.config import ConfigError
    from tuneloop.models import ModelNotFound

    with reported(ConfigError, ModelNotFound, ValueError, OSError):
        quiet_libraries()
        from tuneloop import api

        result = api.resume(run_dir, console=console)
    _print_summary(result)


def _print_summary(run) -> None:
    ev = run.evaluation
    if ev is None:  # a resumed `tuneloop train` run
        console.print(f"trained; report: {run.dir.report_file}")
        return
    table = Table(title=f"test split · {ev['n_test']} examples · metric {ev['metric']}")
    table.add_column("metric")
    table.add_column("base", justify="right")
    table.add_column("fine-tuned", justify="right")
    for key, tuned in ev["finetuned"]["metrics"].items():
        if "/" in key:  # per-field breakdown lives in eval.json and the report
            continue
        table.add_row(key, f"{ev['base']['metrics'][key]:.4f}", f"{tuned:.4f}")
    console.print(table)
    if ev.get("general"):
        print_general(ev["general"])
    console.print("time: " + " · ".join(f"{stage} {seconds}s" for stage, seconds in run.timings.items()))
    console.print(f"report: {run.dir.report_file}")
    print_verdict(run)


def print_general(general: dict) -> None:
    from tuneloop.api import general_rows

    seconds = general["seconds"]
    cached = " (base cached)" if seconds["base_cached"] else f", base {seconds['base']}s"
    table = Table(title=f"what the fine-tune cost the model · {seconds['finetuned']}s{cached}")
    for column in ("measure", "base", "fine-tuned", "difference [95%]"):
        table.add_column(column, justify="left" if column == "measure" else "right")
    for r in general_rows(general):
        style = "red" if r["worse"] else None
        table.add_row(r["what"], r["base"], r["finetuned"], r["difference"], style=style)
    console.print(table)


def print_verdict(run, top: int = 3) -> None:
    """The doctor's verdict, its top recommendations with their cost, and the next command."""
    diagnosis = run.diagnose()
    colour = {"healthy": "green", "undertrained": "yellow"}.get(diagnosis.verdict, "red")
    headline = next((f.message for f in diagnosis.findings if f.kind == diagnosis.verdict), "")
    console.print(f"doctor: [bold {colour}]{diagnosis.verdict}[/bold {colour}] · {headline}")
    s = diagnosis.summary
    if s.get("objective") == "reinforcement" and s.get("last_reward") is not None:
        console.print(
            f"  reward {s['first_reward']:.3f} → {s['last_reward']:.3f} · groups without signal "
            f"{s['flat_groups'] or 0:.0%} · answers ~{s['completion_length'] or 0:.0f} tokens",
            highlight=False,
        )
    for f in diagnosis.findings:
        if f.kind in (
            "still_improving",
            "loss_rising_metric_improving",
            "checkpoint",
            "forgetting",
            "adapter_scale",
            "balance_checkpoint",
        ):
            console.print(f"  • {f.message}", highlight=False)
        elif f.kind == "balance_kept":
            console.print(f"  • [green]{f.message}[/green]", highlight=False)
    for r in diagnosis.recommendations[:top]:
        cost = f" (~{r.minutes:g} min of training)" if r.minutes is not None else ""
        console.print(f"  → {r.param}: {r.from_} → {r.to}{cost}: {r.why}")
    if run.dir.next_config_file.exists():
        console.print(f"next: tuneloop run {run.dir.next_config_file}", soft_wrap=True)


_register_subcommands()
