"""`tuneloop plan`: tokens, steps, minutes and memory of a run, before it starts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from tuneloop.cli import config_job, console, reported


def plan(
    config: Annotated[Path, typer.Argument(help="Run config YAML.")],
    set_: Annotated[list[str], typer.Option("--set", help="Override a config value, e.g. --set train.epochs=3")] = [],
    gpu: Annotated[
        str | None,
        typer.Option(
            "--gpu",
            help="Also estimate for this GPU (H200, H100, A100, L40S, A10, L4): published peak, "
            "assumed utilisation; labelled as an estimate.",
        ),
    ] = None,
    recalibrate: Annotated[
        bool, typer.Option("--recalibrate", help="Measure this machine again instead of using the cached numbers.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
) -> None:
    """What a run of CONFIG will take on this machine: training tokens and steps, minutes for training and
    for evaluation, peak memory and whether it fits. The first plan for a model measures this machine for
    a few seconds; later ones reuse the numbers."""
    from tuneloop.plan import gpu_estimate, gpu_named, plan_config

    if gpu:
        with reported(ValueError):  # an unknown name fails before the data is loaded and the machine measured
            gpu_named(gpu)
    with console.status("planning: loading the data and measuring this machine (first time only)"):
        result = config_job(config, set_, lambda cfg: (plan_config(cfg, refresh=recalibrate), cfg))
    the_plan, cfg = result
    on_gpu = None
    if gpu:
        on_gpu = gpu_estimate(the_plan, gpu, *_parameters(cfg))
    if as_json:
        typer.echo(json.dumps({**the_plan.to_dict(), **({"gpu": on_gpu} if on_gpu else {})}, indent=1))
        return
    for line in the_plan.lines():
        console.print(line, highlight=False)
    if on_gpu:
        fit = "fits" if on_gpu["fits"] else "does NOT fit"
        console.print(
            f"estimate for one {on_gpu['gpu']} (assumed, not measured: {on_gpu['assumed']}): "
            f"~{on_gpu['minutes']:.1f} min, ~{on_gpu['memory_gib']:.1f} GiB of {on_gpu['gpu_memory_gib']} GiB: {fit}",
            highlight=False,
        )


def _parameters(cfg) -> tuple[int, int]:
    """The model's parameter count and the run's trainable count, from the config alone (no weights)."""
    from tuneloop.models import resolve_model
    from tuneloop.plan.gpus import parameter_counts

    return parameter_counts(resolve_model(cfg.model), cfg)
