"""How much memory a training batch needs, and how much the device has free."""

from __future__ import annotations

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
