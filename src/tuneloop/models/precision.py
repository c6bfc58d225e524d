"""Pick the dtype for frozen base weights.

On a CPU with AMX-BF16 a bf16 matmul runs ~8x faster than fp32 (2048^2: 8.4 ms vs 67 ms on
2-core Xeons with AMX, see LOG.md); where bf16 instructions do not pay, fp32 (measured, below).
LoRA weights stay fp32 either way: PEFT keeps adapters in fp32 (autocast_adapter_dtype), so
optimizer updates are not lost to bf16 rounding.
"""

from __future__ import annotations

import json
import time
from enum import Enum
from functools import lru_cache

import torch

from tuneloop.machine import machine, measurement_file, save_measurement


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


# fp32 wins only when it multiplies this much faster than bf16: bf16 also halves the frozen
# weights' memory, so near a tie bf16 is the better choice.
FP32_MARGIN = 1.1
# A LoRA step's kind of product (rows x hidden by hidden x hidden), ~1 GFLOP: ~1-10 ms a product.
PROBE_SHAPE = (512, 1024, 1024)


@lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """True when bf16 matrix products run about as fast as fp32 or faster on this CPU.

    Without bf16 instructions (AMX-BF16, AVX512-BF16 in /proc/cpuinfo) PyTorch emulates bf16,
    slower than fp32: no. With them, the flags do not say whether they pay: AMX Xeons multiplied
    bf16 ~8x faster than fp32, but a Xeon VM exposing AVX512-BF16 without AMX at 0.58x fp32's
    rate, where a bf16 LoRA step took 1.5x as long (LOG.md). So it is measured:
    ~0.1 s the first time, cached per machine (`bf16_speedup`).
    """
    return cpu_has_bf16_instructions() and bf16_speedup() * FP32_MARGIN >= 1


def fp32_note(requested: str, device: str, chosen: Precision) -> str | None:
    """Why `auto` took fp32 on a CPU that has bf16 instructions (for the run's speed notes);
    None where there is nothing to explain."""
    if requested != "auto" or device != "cpu" or chosen is not Precision.fp32 or not cpu_has_bf16_instructions():
        return None
    return f"fp32: bf16 products run at {bf16_speedup():.2f}x fp32's speed on this CPU (measured, cached)"


def cpu_has_bf16_instructions() -> bool:
    flags = cpu_flags()
    return "amx_bf16" in flags or "avx512_bf16" in flags


def cpu_flags() -> list[str]:
    """The CPU's feature flags from /proc/cpuinfo (none where there is no such file)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return []


def bf16_speedup() -> float:
    """How many times faster a bf16 matrix product runs than an fp32 one on this CPU; measured
    once per machine (processor, cores, torch) and kept under TUNELOOP_HOME, so every run on the
    machine makes the same choice."""
    key = machine()
    path = measurement_file(key, "bf16")
    try:
        return float(json.loads(path.read_text())["speedup"])
    except (OSError, ValueError, KeyError, TypeError):  # none yet, or damaged: measure
        pass
    seconds = _product_seconds()
    result = {"speedup": seconds["fp32"] / seconds["bf16"], "shape": PROBE_SHAPE, "seconds": seconds, "machine": key}
    save_measurement(path, result)
    return result["speedup"]


def _product_seconds(repeats: int = 5) -> dict[str, float]:
    """The fastest of `repeats` products in each dtype, the dtypes taking turns so that a busy
    spell of the machine slows both alike."""
    m, k, n = PROBE_SHAPE
    generator = torch.Generator().manual_seed(0)
    pairs = {
        dtype: (torch.randn(m, k, generator=generator).to(dtype), torch.randn(k, n, generator=generator).to(dtype))
        for dtype in (torch.bfloat16, torch.float32)
    }
    best = {dtype: float("inf") for dtype in pairs}
    for _ in range(repeats):  # the first round is the slowest (oneDNN builds its kernels); min skips it
        for dtype, (a, b) in pairs.items():
            t = time.perf_counter()
            a @ b
            best[dtype] = min(best[dtype], time.perf_counter() - t)
    return {"bf16": best[torch.bfloat16], "fp32": best[torch.float32]}
