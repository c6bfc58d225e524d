"""Which kernels a machine can run: the attention implementation and Liger's fused kernels.
Chosen from the device and what is installed; train/speed.py records each fallback."""

from __future__ import annotations

import importlib.util


def installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def attention_for(device: str, fused_kernels: bool = True, inference: bool = False) -> str:
    """Training: on CUDA, FlashAttention-2 when installed (varlen kernels for padding-free batches),
    else SDPA; on CPU, eager: its bf16 products run on AMX, where SDPA's backward measured 3x slower
    (LOG.md). Inference (no backward): SDPA, which decodes fastest on CPU and CUDA."""
    if inference:
        return "sdpa"
    if device != "cuda":
        return "eager"
    return "flash_attention_2" if fused_kernels and installed("flash_attn") else "sdpa"


def use_liger(device: str, fused_kernels: bool) -> bool:
    return fused_kernels and device == "cuda" and installed("liger_kernel")
