"""`tuneloop serve`: an OpenAI-compatible server for one base model and many LoRA adapters."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from tuneloop.cli import console, quiet_libraries


def parse_adapter(spec: str):
    """NAME=RUN_OR_PATH[@SCALE] -> AdapterSpec."""
    from tuneloop.serve.engine import resolve_adapter

    name, sep, target = spec.partition("=")
    if not sep or not name or not target:
        raise ValueError(f"--adapter {spec!r}: expected NAME=RUN_DIR or NAME=RUN_DIR@SCALE")
    scale = 1.0
    if "@" in target:
        target, _, raw = target.rpartition("@")
        try:
            scale = float(raw)
        except ValueError:
            raise ValueError(f"--adapter {spec!r}: scale {raw!r} is not a number") from None
    return resolve_adapter(name, target, scale)


def base_model_for(model: str | None, adapters) -> str:
    """--model, else the model the adapters' runs trained on (they must agree)."""
    from tuneloop.config import DEFAULT_MODEL

    trained_on = {a.base_model for a in adapters if a.base_model}
    if model is None and len(trained_on) > 1:
        raise ValueError(f"the adapters were trained on different models ({', '.join(sorted(trained_on))}); "
                         "one server serves one base model: pass --model")
    chosen = model or (trained_on.pop() if trained_on else DEFAULT_MODEL)
    for a in adapters:
        if a.base_model and a.base_model != chosen:
            raise ValueError(f"adapter {a.name!r} was trained on {a.base_model}, not {chosen}")
    return chosen


def serve(
    model: Annotated[str | None, typer.Option("--model", help="Base model (default: the adapters' runs' model).")]
    = None,
    adapter: Annotated[list[str], typer.Option("--adapter", help="NAME=RUN_DIR[@SCALE], repeatable; SCALE is the "
                                               "adapter's default strength (e.g. 0.5 softens an over-fitted "
                                               "adapter).")] = [],
    host: Annotated[str, typer.Option("--host", help="127.0.0.1: this machine only.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port")] = 8000,
    api_key: Annotated[str | None, typer.Option("--api-key", envvar="TUNELOOP_API_KEY",
                                                help="Require 'Authorization: Bearer KEY'.")] = None,
    precision: Annotated[str, typer.Option("--precision", help="auto, bf16 or fp32.")] = "auto",
    max_batch: Annotated[int, typer.Option("--max-batch", min=1)] = 16,
) -> None:
    """Serve a base model and LoRA adapters behind an OpenAI-compatible API (chat, completions, streaming)."""
    import uvicorn

    from tuneloop.models import ModelNotFound
    from tuneloop.serve import Batcher, Engine, create_app

    quiet_libraries()
    try:
        adapters = [parse_adapter(s) for s in adapter]
        engine = Engine(base_model_for(model, adapters), adapters, precision=precision)
    except (ValueError, FileNotFoundError, ModelNotFound) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    batcher = Batcher(engine, max_batch=max_batch)
    console.print(f"serving {', '.join(engine.model_names())} ({engine.precision.value} on {engine.device}) at "
                  f"http://{host}:{port}/v1" + ("  ·  API key required" if api_key else ""), soft_wrap=True)
    if host not in ("127.0.0.1", "localhost") and not api_key:
        console.print("[yellow]warning: listening beyond this machine without --api-key[/yellow]")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        uvicorn.run(create_app(engine, batcher, api_key), host=host, port=port, log_level="warning")
    finally:
        batcher.close()
