"""How much memory a training batch needs, and how much the device has free."""

from __future__ import annotations

import ctypes
import functools

# auto batch size and gradient checkpointing keep a batch's activations within this share of the
# free memory: the rest holds weights, optimizer state, the allocator's slack and other programs.
MEMORY_SHARE = 0.25


def activation_bytes_per_token(model_config, seq_len: int) -> float:
    """Training activations per token (Korthikanti et al. 2022, 16-bit, no recomputation):
    per layer about hidden x (34 + 5 x heads x seq / hidden) bytes."""
    hidden = model_config.hidden_size
    heads = model_config.num_attention_heads
    return model_config.num_hidden_layers * hidden * (34 + 5 * heads * seq_len / hidden)


def batch_activation_bytes(model_config, rows: int, width: int) -> float:
    return activation_bytes_per_token(model_config, width) * rows * width


def free_memory_bytes(device: str) -> float:
    if device == "cuda":
        import torch

        return float(torch.cuda.mem_get_info()[0])
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) * 1024
    import os

    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))


# glibc's malloc keeps what a step frees in its heap for reuse. With batches of changing shapes
# little of it fits the next step's requests, so the heap grows and the process holds the rest:
# the quickstart in bf16 on CPU (LOG.md) ended at 3.8 GB resident between steps, 2.1 GB of it free
# heap, and peaked at 4.2 GB. Handing the free pages back after each step (malloc_trim) kept it at
# 1.2-1.8 GB between steps and a 3.2 GB peak, at the same step time (183 vs 186 s for 45 steps):
# the pages are faulted in again when the next step needs them.


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


@functools.cache
def _glibc():
    """The C library, where it is glibc 2.33 or later (mallinfo2, malloc_trim); None elsewhere."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):
        return None
    return libc


def heap_bytes_in_use() -> float | None:
    """Bytes malloc has handed out and not had back (mapped blocks included); None without glibc."""
    libc = _glibc()
    if libc is None:
        return None
    info = libc.mallinfo2()
    return float(info.uordblks + info.hblkhd)


def return_free_memory() -> None:
    """Give the heap's free pages back to the system (glibc; nothing elsewhere)."""
    if (libc := _glibc()) is not None:
        libc.malloc_trim(0)
