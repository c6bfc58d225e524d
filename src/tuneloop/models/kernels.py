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


def use_liger(device: str, fused_kernels: bool, compiled: bool = False) -> bool:
    """Liger's Triton kernels (RMSNorm, SwiGLU, RoPE) on CUDA where installed, but not in compiled
    layers: Dynamo fails on Liger's autograd functions inside a decoder layer (an assertion under
    torch 2.11 on an H200, bench/results/cuda_paths.json), and Inductor fuses the same operations
    itself. Liger's fused linear cross-entropy never applies: tuneloop computes the loss from the
    answer tokens' logits itself (train/loss.py)."""
    return fused_kernels and device == "cuda" and installed("liger_kernel") and not compiled
