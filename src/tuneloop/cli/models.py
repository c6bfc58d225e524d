"""`tuneloop models compare`: pick a base model on your own data before fine-tuning."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from tuneloop.cli import console, quiet_libraries, reported

models_app = typer.Typer(no_args_is_help=True, help="Base models: compare candidates on your data.")


@models_app.command("compare")
def compare_models_command(
    models: Annotated[list[str], typer.Argument(help="Up to 5: built-in names, local folders or hub ids.")],
    data: Annotated[Path, typer.Option("--data", help="Your data (any supported format): zero-shot loss on it.")],
    prompts: Annotated[
        Path | None,
        typer.Option(
            "--prompts",
            help="Prompts to answer side by side: a text file, "
            "one per line (default: the first --show prompts of --data).",
        ),
    ] = None,
    max_examples: Annotated[int, typer.Option("--max-examples", min=1, help="Rows of --data for the loss.")] = 100,
    show: Annotated[int, typer.Option("--show", min=1)] = 3,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", min=1)] = 64,
    out: Annotated[
        Path | None, typer.Option("--out", help="JSON result (default: runs/models-compare-<time>.json).")
    ] = None,
) -> None:
    """Zero-shot loss on your data, answers side by side, latency and memory for each candidate base model."""
    from tuneloop.data import DataError
    from tuneloop.data.load import load_examples_strict
    from tuneloop.eval.select import compare_models
    from tuneloop.models import ModelNotFound

    quiet_libraries()
    with reported(DataError, ModelNotFound, ValueError, OSError):
        examples = load_examples_strict(data).examples[:max_examples]
        if prompts is not None:
            asks = [[{"role": "user", "content": line}] for line in prompts.read_text().splitlines() if line.strip()]
        else:
            asks = [e.prompt for e in examples if e.kind != "text"][:show]
        with console.status("comparing models") as status:
            results = compare_models(
                models,
                examples,
                asks,
                max_new_tokens=max_new_tokens,
                on_model=lambda m: status.update(f"measuring {m}"),
            )
    table = Table(
        "model",
        "parameters",
        "weights MB",
        "zero-shot loss",
        "s / prompt",
        "tokens/s",
        title=f"{len(examples)} examples of {data}",
    )
    for r in sorted(results, key=lambda r: r["zero_shot_loss"]):
        table.add_row(
            r["model"],
            f"{r['parameters'] / 1e6:.1f}M",
            f"{r['weights_mb']:.0f}",
            f"{r['zero_shot_loss']:.3f}",
            f"{r['seconds_per_prompt']:.2f}",
            f"{r['tokens_per_second']:.1f}",
        )
    console.print(table)
    for i, ask in enumerate(asks):
        console.rule(f"prompt {i + 1}")
        console.print(ask[-1]["content"])
        for r in results:
            console.print(f"[bold]{r['model']}[/bold]: {r['answers'][i]}")
    out = out or Path("runs") / f"models-compare-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"data": str(data), "prompts": [a[-1]["content"] for a in asks], "models": results}, indent=2) + "\n"
    )
    console.print(f"written: {out}", soft_wrap=True)
