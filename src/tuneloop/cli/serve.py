"""`tuneloop serve`: an OpenAI-compatible server for one base model and many LoRA adapters."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from tuneloop.cli import console, quiet_libraries, reported


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
    max_batch: Annotated[int, typer.Option("--max-batch", min=1, help="Largest batch (transformers backend).")]
    = 16,
    backend: Annotated[str, typer.Option("--backend", help="auto (vLLM on CUDA when installed, else transformers), "
                                         "transformers or vllm.")] = "auto",
) -> None:
    """Serve a base model and LoRA adapters behind an OpenAI-compatible API (chat, completions, streaming)."""
    import uvicorn

    from tuneloop.models import ModelNotFound
    from tuneloop.serve import create_app
    from tuneloop.serve.backends import open_engine

    quiet_libraries()
    with reported(ValueError, FileNotFoundError, ModelNotFound):
        adapters = [parse_adapter(s) for s in adapter]
        engine, batcher, why = open_engine(base_model_for(model, adapters), adapters, backend=backend,
                                           precision=precision, max_batch=max_batch)
    console.print(f"serving {', '.join(engine.model_names())} ({engine.backend}: {why}; {engine.precision.value} on "
                  f"{engine.device}) at http://{host}:{port}/v1" + ("  ·  API key required" if api_key else ""),
                  soft_wrap=True)
    if host not in ("127.0.0.1", "localhost") and not api_key:
        console.print("[yellow]warning: listening beyond this machine without --api-key[/yellow]")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    uvicorn.run(create_app(engine, batcher, api_key), host=host, port=port, log_level="warning")  # closes batcher


def export(
    run: Annotated[Path, typer.Argument(help="A finished run directory.")],
    out: Annotated[Path | None, typer.Option("--out", help="Folder to write (default: RUN/export).")] = None,
    scale: Annotated[float, typer.Option("--scale", min=0.0, help="Bake in an adapter strength, e.g. 0.5 to "
                                         "soften an over-fitted adapter (alpha x 0.5).")] = 1.0,
    gguf: Annotated[bool, typer.Option("--gguf", help="Also write model.gguf (Llama-family models).")] = False,
    gguf_type: Annotated[str, typer.Option("--gguf-type", help="f16 or f32 weights in the GGUF file.")] = "f16",
) -> None:
    """Export a run: the PEFT adapter, the merged model (plain transformers), optionally GGUF; each checked."""
    from tuneloop.runs import RunDir
    from tuneloop.serve.export import export_adapter, export_gguf, export_merged

    quiet_libraries()
    run_dir = RunDir(run)
    out = out or run_dir.path / "export"
    with reported(ValueError, FileNotFoundError):
        if gguf_type not in ("f16", "f32"):
            raise ValueError(f"--gguf-type {gguf_type!r}: use f16 or f32")
        adapter = None
        if run_dir.adapter_dir.is_dir():
            adapter = export_adapter(run_dir, out / "adapter", scale)
            console.print(f"adapter: {adapter}" + (f" (alpha x {scale:g})" if scale != 1 else ""), soft_wrap=True)
        elif scale != 1.0:
            raise ValueError("--scale applies to LoRA adapters; this run fine-tuned the whole model")
        with console.status("merging the adapter into the base weights"):
            merged = export_merged(run_dir, out / "merged", adapter)
        if merged["max_logit_difference"] > 1e-3:
            raise ValueError(f"the merged model's logits differ from the adapter's by {merged['max_logit_difference']}")
        console.print(f"merged model: {merged['path']} (logits match the adapter's within "
                      f"{merged['max_logit_difference']:.1e})", soft_wrap=True)
        if gguf:
            with console.status("writing GGUF and loading it back"):
                written = export_gguf(out / "merged", out / "model.gguf", gguf_type)
            if written["max_logit_difference"] > 0.5:  # f16 rounding moves logits by ~0.03; a layout bug by far more
                raise ValueError(f"model.gguf loads back with logits off by {written['max_logit_difference']:.3f}")
            console.print(f"GGUF ({gguf_type}): {written['path']} (loads back; logits within "
                          f"{written['max_logit_difference']:.3f})", soft_wrap=True)


def chat(
    run: Annotated[str, typer.Argument(help="A run directory, or `base`.")],
    compare: Annotated[str | None, typer.Option("--compare", help="`base` or another run: answer side by side.")]
    = None,
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
        results = engine.generate(requests) if temperature == 0 else [engine.generate([r])[0] for r in requests]
        for name, result in zip(names, results):
            histories[name].append({"role": "assistant", "content": result.text})
        console.print(Columns([Panel(r.text, title=n, expand=True) for n, r in zip(names, results)], equal=True,
                              expand=True))


def _chat_engine(sides: list[str], scale: float):
    """One engine for both sides: a run is an adapter on the shared base model (or its own full model)."""
    from tuneloop.serve.engine import Engine, resolve_adapter

    adapters = [resolve_adapter(Path(s).name, s, scale) for s in sides if s != "base"]
    model = base_model_for(None, adapters)
    engine = Engine(model, adapters)
    return engine, [Path(s).name if s != "base" else model for s in sides]
