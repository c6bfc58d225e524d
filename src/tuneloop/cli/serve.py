"""`tuneloop serve`: an OpenAI-compatible server for one base model and many LoRA adapters."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from tuneloop.cli import console, quiet_libraries, reported


def serve(
    model: Annotated[
        str | None, typer.Option("--model", help="Base model (default: the adapters' runs' model).")
    ] = None,
    adapter: Annotated[
        list[str],
        typer.Option(
            "--adapter",
            help="NAME=RUN_DIR[@SCALE], repeatable; SCALE is the "
            "adapter's default strength (e.g. 0.5 softens an over-fitted "
            "adapter; auto: the scale the run measured to keep its task gain with the least general loss).",
        ),
    ] = [],
    host: Annotated[str, typer.Option("--host", help="127.0.0.1: this machine only.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port")] = 8000,
    api_key: Annotated[
        str | None, typer.Option("--api-key", envvar="TUNELOOP_API_KEY", help="Require 'Authorization: Bearer KEY'.")
    ] = None,
    precision: Annotated[str, typer.Option("--precision", help="auto, bf16 or fp32.")] = "auto",
    max_batch: Annotated[int, typer.Option("--max-batch", min=1, help="Largest batch (transformers backend).")] = 16,
    backend: Annotated[
        str,
        typer.Option("--backend", help="auto (vLLM on CUDA when installed, else transformers), transformers or vllm."),
    ] = "auto",
    deterministic: Annotated[
        bool,
        typer.Option(
            "--deterministic",
            help="Decode each request alone, so a greedy (temperature 0) answer does not depend on which other "
            "requests share its batch. Without it, batched bf16 decoding can change a greedy answer (rounding "
            "differs with the batch's padding); fp32 (--precision fp32) does not. Costs throughput under load.",
        ),
    ] = False,
    max_body_mb: Annotated[float, typer.Option("--max-body-mb", min=0.001, help="Largest request body.")] = 1.0,
    fine_tuning: Annotated[
        Path | None,
        typer.Option(
            "--fine-tuning",
            help="A data directory: also serve OpenAI's Files and Fine-tuning APIs (jobs train in worker processes; "
            "their ft: models are served as they finish). Scripts written for OpenAI run with only base_url changed.",
        ),
    ] = None,
    job_config: Annotated[
        Path | None,
        typer.Option(
            "--job-config", help="A tuneloop config whose settings every job starts from (data.path ignored)."
        ),
    ] = None,
    max_jobs: Annotated[int, typer.Option("--max-jobs", min=1, help="Jobs training at once.")] = 1,
    api_keys_file: Annotated[
        Path | None,
        typer.Option(
            "--api-keys-file",
            help="API keys, one per line (also TUNELOOP_API_KEYS, comma-separated); each key sees only its own "
            "fine-tuning jobs, files and models.",
        ),
    ] = None,
) -> None:
    """Serve a base model and LoRA adapters behind an OpenAI-compatible API (chat, completions, streaming).
    A client that disconnects cancels its generation."""
    from tuneloop import api
    from tuneloop.models import ModelNotFound

    quiet_libraries()
    with reported(ValueError, FileNotFoundError, ModelNotFound):
        server = api.server(
            adapter,
            model=model,
            host=host,
            port=port,
            api_key=api_key,
            api_keys_file=api_keys_file,
            fine_tuning=fine_tuning,
            job_config=job_config,
            max_jobs=max_jobs,
            precision=precision,
            max_batch=max_batch,
            backend=backend,
            deterministic=deterministic,
            max_body_bytes=int(max_body_mb * 2**20),
        )
    engine = server.engine
    console.print(
        f"serving {', '.join(engine.model_names())} ({engine.backend}: {server.why}; "
        f"{engine.precision.value} on {engine.device}) at {server.url}"
        + ("  ·  API key required" if server.keyed else ""),
        soft_wrap=True,
    )
    if fine_tuning is not None:
        console.print(
            f"fine-tuning API: jobs and files in {fine_tuning} (runs in {fine_tuning / 'runs'})", soft_wrap=True
        )
    if host not in ("127.0.0.1", "localhost") and not server.keyed:
        console.print("[yellow]warning: listening beyond this machine without --api-key[/yellow]")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    server.run()  # closes the batcher on shutdown


def export(
    run: Annotated[Path, typer.Argument(help="A finished run directory.")],
    out: Annotated[Path | None, typer.Option("--out", help="Folder to write (default: RUN/export).")] = None,
    scale: Annotated[
        str,
        typer.Option(
            "--scale",
            help="Bake in an adapter strength, e.g. 0.5 to soften an over-fitted adapter (alpha x 0.5); auto: "
            "the scale the run measured to keep its task gain with the least general loss.",
        ),
    ] = "1.0",
    gguf: Annotated[bool, typer.Option("--gguf", help="Also write model.gguf (Llama-family models).")] = False,
    gguf_type: Annotated[str, typer.Option("--gguf-type", help="f16 or f32 weights in the GGUF file.")] = "f16",
) -> None:
    """Export a run: the PEFT adapter, the merged model (plain transformers), optionally GGUF; each checked."""
    from tuneloop import api

    quiet_libraries()
    with reported(ValueError, FileNotFoundError):
        result = api.open_run(run).export(out, scale=scale, gguf=gguf, gguf_type=gguf_type, console=console)
    if result.adapter:
        shown = f" (alpha x {result.scale:g})" if result.scale != 1 else ""
        console.print(f"adapter: {result.adapter}{shown}", soft_wrap=True)
    console.print(
        f"merged model: {result.merged} (logits match the adapter's within {result.merged_logit_difference:.1e})",
        soft_wrap=True,
    )
    if result.gguf:
        console.print(
            f"GGUF ({gguf_type}): {result.gguf} (loads back; logits within {result.gguf_logit_difference:.3f})",
            soft_wrap=True,
        )


def chat(
    run: Annotated[str, typer.Argument(help="A run directory, or `base`.")],
    compare: Annotated[
        str | None, typer.Option("--compare", help="`base` or another run: answer side by side.")
    ] = None,
    system: Annotated[str | None, typer.Option("--system", help="A system prompt.")] = None,
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=1)] = 256,
    temperature: Annotated[float, typer.Option("--temperature", min=0.0)] = 0.0,
    scale: Annotated[float, typer.Option("--scale", min=0.0, help="Adapter strength.")] = 1.0,
) -> None:
    """Chat with a fine-tuned model in the terminal; --compare base shows the base model's answer beside it.
    /reset starts over, /quit (or end of input) leaves."""
    from rich.columns import Columns
    from rich.panel import Panel

    from tuneloop.models import ModelNotFound
    from tuneloop.serve.engine import Request

    quiet_libraries()
    sides = [run] + ([compare] if compare else [])
    with reported(ValueError, FileNotFoundError, ModelNotFound):
        engine, names = _chat_engine(sides, scale)
    start = [{"role": "system", "content": system}] if system else []
    histories = {name: list(start) for name in names}
    console.print(f"chatting with {' | '.join(names)} · /reset, /quit")
    while True:
        try:
            text = console.input("[bold]you>[/bold] ").strip()
        except EOFError:
            break
        if text in ("/quit", "/exit"):
            break
        if text == "/reset":
            histories = {name: list(start) for name in names}
            continue
        if not text:
            continue
        requests = []
        for name in names:
            histories[name].append({"role": "user", "content": text})
            requests.append(Request(name, engine.chat_ids(histories[name]), max_tokens, temperature))
        longest = max(len(r.prompt_ids) for r in requests)
        if engine.max_positions and longest + max_tokens > engine.max_positions:
            console.print(
                f"[yellow]the conversation ({longest} tokens) + --max-tokens {max_tokens} is over the model's "
                f"context of {engine.max_positions} tokens; not sent. /reset starts over.[/yellow]"
            )
            for name in names:
                histories[name].pop()
            continue
        results = engine.generate(requests) if requests[0].greedy else [engine.generate([r])[0] for r in requests]
        for name, result in zip(names, results):
            histories[name].append({"role": "assistant", "content": result.text})
        console.print(
            Columns([Panel(r.text, title=n, expand=True) for n, r in zip(names, results)], equal=True, expand=True)
        )


def _chat_engine(sides: list[str], scale: float):
    """One engine for both sides: a run is an adapter on the shared base model (or its own full model)."""
    from tuneloop.serve.engine import Engine, base_model_for, resolve_adapter

    adapters = [resolve_adapter(Path(s).name, s, scale) for s in sides if s != "base"]
    model = base_model_for(None, adapters)
    engine = Engine(model, adapters)
    return engine, [Path(s).name if s != "base" else model for s in sides]
