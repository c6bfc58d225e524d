"""Pick the dtype for frozen base weights.

On a CPU with AMX-BF16 a bf16 matmul runs ~8x faster than fp32 (2048^2: 8.4 ms vs 67 ms on
these 2-core Xeons, see LOG.md). LoRA weights stay fp32 either way: PEFT keeps adapters in
fp32 (autocast_adapter_dtype), so optimizer updates are not lost to bf16 rounding.
"""

from __future__ import annotations

from enum import Enum
from functools import lru_cache

import torch


class Precision(str, Enum):
    bf16 = "bf16"
    fp32 = "fp32"

    @property
    def dtype(self) -> torch.dtype:
        return torch.bfloat16 if self is Precision.bf16 else torch.float32

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """bf16 base weights compute under bf16 autocast (fp32 LoRA weights are cast per matmul);
        fp32 needs none."""
        return self.dtype if self is Precision.bf16 else None


def choose_precision(requested: str = "auto", device: str | None = None) -> Precision:
    if requested != "auto":
        return Precision(requested)
    device = device or default_device()
    if device == "cuda":
        return Precision.bf16 if torch.cuda.is_bf16_supported() else Precision.fp32
    return Precision.bf16 if cpu_has_fast_bf16() else Precision.fp32


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


@lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """True when the CPU multiplies bf16 in hardware (AMX-BF16 or AVX512-BF16).

    Without it PyTorch emulates bf16 matmuls, which is slower than fp32, so a wrong "yes"
    costs far more than a wrong "no".
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags
