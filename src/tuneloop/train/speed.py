"""The speed and memory choices that depend on the machine: QLoRA, fused CUDA kernels, attention
kernel, activation checkpointing. Each falls back on a machine that cannot use it, and says so:
the fallback is recorded in run.json (`speed_notes`) and the resolved values in config.yaml.
"""

from __future__ import annotations

from tuneloop.models.kernels import installed, use_liger
from tuneloop.train.memory import MEMORY_SHARE, activation_bytes_per_token

# Regional compilation: ~1.55x the tokens/s of a LoRA step on CPU after a ~27 s compile. On 480
# banking77 rows (23k training tokens) the compiled run already finished sooner (LOG.md).
COMPILE_MIN_TOKENS = 20_000


def resolve_speed(
    train, device: str, model_config, batch_size: int, seq_len: int, free_bytes: float, train_tokens: float = 0
) -> list[str]:
    """Settle `quantize`, `gradient_checkpointing` and `compile` for this machine and run (in place);
    returns notes. `train_tokens`: tokens the whole run trains on (all epochs)."""
    notes = []
    if train.compile == "auto":
        train.compile = train_tokens >= COMPILE_MIN_TOKENS
        if train.compile:
            notes.append(f"compiling the decoder layers: {train_tokens:,.0f} training tokens repay the compile")
    if train.compile is True and use_liger(device, train.fused_kernels):
        notes.append("Liger's fused kernels off: the compiled decoder layers fuse the same operations")
    if train.quantize == "4bit" and (device != "cuda" or not installed("bitsandbytes")):
        why = "no CUDA device" if device != "cuda" else "bitsandbytes is not installed"
        notes.append(f"quantize: 4bit needs CUDA and bitsandbytes ({why}); trained without quantization")
        train.quantize = "none"
    if train.gradient_checkpointing == "auto":
        needed = activation_bytes_per_token(model_config, seq_len) * seq_len * batch_size
        train.gradient_checkpointing = needed > MEMORY_SHARE * free_bytes
        if train.gradient_checkpointing:
            notes.append(
                f"gradient checkpointing on: a batch's activations (~{needed / 2**30:.1f} GiB) exceed a "
                f"quarter of free memory ({free_bytes / 2**30:.1f} GiB)"
            )
    return notes


def compile_layers(model) -> int:
    """torch.compile each decoder layer in place (regional compilation: one layer's graph is
    compiled once and reused by all of them, which keeps the compile time low). Parameter names
    do not change, so checkpoints and adapters save as usual. Returns the number compiled."""
    import torch

    layers = [m for m in model.modules() if type(m).__name__.endswith("DecoderLayer")]
    # One graph for all the layers: the first layer's input (the frozen embeddings' output) would
    # not require grad while the others' do, and that guard alone compiled a second graph.
    model.enable_input_require_grads()
    # With dynamic=True Dynamo also traces Python floats (RMSNorm's epsilon, LoRA's scaling) as
    # symbols, fails to turn them into tensors and restarts the whole analysis; specialising
    # floats from the start halves the first step (7.6 s -> 3.7 s with warm caches, LOG.md).
    torch._dynamo.config.specialize_float = True
    for layer in layers:
        layer.compile(dynamic=True)
    if layers and next(model.parameters()).device.type == "cpu":
        _probe_vector_isa_in_background()
    return len(layers)


def _probe_vector_isa_in_background() -> None:
    """Inductor picks the SIMD instruction set of its C++ kernels by building a test library and
    loading it in a child Python, once per process for each candidate set: ~0.8 s spent waiting on
    those children inside the first compiled step, even when every kernel is cached (LOG.md). Made
    here in a thread, the wait overlaps the model's first forward and Dynamo's tracing of the
    layer; Inductor caches the answer for the process (functools.cache), so its compile finds it
    made. Were the compile to ask first, it would probe too, as it does without this thread."""
    import threading

    from torch._inductor.cpu_vec_isa import pick_vec_isa

    threading.Thread(target=pick_vec_isa, name="tuneloop-inductor-isa-probe", daemon=True).start()
