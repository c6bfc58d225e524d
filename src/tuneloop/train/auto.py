"""Resolve `auto` hyperparameters from the dataset and the model, as hosted fine-tuning APIs do.

Epochs: 3 by default; more for a small training set (so a run sees at least ~100 examples),
fewer for a large one (at most ~25,000). Batch size: the largest power of two up to 16 whose
activation memory fits a quarter of the free memory, and at most 1/20 of the training set so
an epoch still has ~20 optimizer steps to learn from.
"""

from __future__ import annotations

import math

MIN_TARGET_EXAMPLES = 100
MAX_TARGET_EXAMPLES = 25_000
DEFAULT_EPOCHS = 3
MAX_EPOCHS = 25
MAX_AUTO_BATCH = 16
MEMORY_SHARE = 0.25


def auto_epochs(n_train: int) -> int:
    if n_train * DEFAULT_EPOCHS < MIN_TARGET_EXAMPLES:
        return min(MAX_EPOCHS, math.ceil(MIN_TARGET_EXAMPLES / n_train))
    if n_train * DEFAULT_EPOCHS > MAX_TARGET_EXAMPLES:
        return max(1, MAX_TARGET_EXAMPLES // n_train)
    return DEFAULT_EPOCHS


def activation_bytes_per_token(model_config, seq_len: int) -> float:
    """Training activations per token (Korthikanti et al. 2022, 16-bit, no recomputation):
    per layer about hidden x (34 + 5 x heads x seq / hidden) bytes."""
    hidden = model_config.hidden_size
    heads = model_config.num_attention_heads
    return model_config.num_hidden_layers * hidden * (34 + 5 * heads * seq_len / hidden)


def auto_batch_size(n_train: int, seq_len: int, model_config, free_bytes: float) -> int:
    per_example = activation_bytes_per_token(model_config, seq_len) * seq_len
    by_memory = max(1, int(MEMORY_SHARE * free_bytes // per_example))
    by_data = max(1, n_train // 20)
    limit = min(MAX_AUTO_BATCH, by_memory, by_data)
    return 2 ** int(math.log2(limit))


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
