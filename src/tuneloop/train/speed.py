"""The speed and memory choices that depend on the machine: QLoRA, fused CUDA kernels, attention
kernel, activation checkpointing. Each falls back on a machine that cannot use it, and says so:
the fallback is recorded in run.json (`speed_notes`) and the resolved values in config.yaml.
"""

from __future__ import annotations

import importlib.util

from tuneloop.train.auto import MEMORY_SHARE, activation_bytes_per_token


def installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def attention_for(device: str, fused_kernels: bool = True) -> str:
    """CUDA: FlashAttention-2 when installed (varlen kernels for padding-free batches), else SDPA.
    CPU: eager; its bf16 products run on AMX, where SDPA's backward measured 3x slower (LOG.md)."""
    if device != "cuda":
        return "eager"
    return "flash_attention_2" if fused_kernels and installed("flash_attn") else "sdpa"


def use_liger(device: str, fused_kernels: bool) -> bool:
    return fused_kernels and device == "cuda" and installed("liger_kernel")


def resolve_speed(train, device: str, model_config, batch_size: int, seq_len: int, free_bytes: float) -> list[str]:
    """Settle `quantize` and `gradient_checkpointing` for this machine (in place); returns notes."""
    notes = []
    if train.quantize == "4bit" and (device != "cuda" or not installed("bitsandbytes")):
        why = "no CUDA device" if device != "cuda" else "bitsandbytes is not installed"
        notes.append(f"quantize: 4bit needs CUDA and bitsandbytes ({why}); trained without quantization")
        train.quantize = "none"
    if train.gradient_checkpointing == "auto":
        needed = activation_bytes_per_token(model_config, seq_len) * seq_len * batch_size
        train.gradient_checkpointing = needed > MEMORY_SHARE * free_bytes
        if train.gradient_checkpointing:
            notes.append(f"gradient checkpointing on: a batch's activations (~{needed / 2**30:.1f} GiB) exceed a "
                         f"quarter of free memory ({free_bytes / 2**30:.1f} GiB)")
    return notes
