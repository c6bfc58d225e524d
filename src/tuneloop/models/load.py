"""Load a resolved model folder for training or inference."""

from __future__ import annotations

from pathlib import Path

from tuneloop.models.precision import Precision


def load_tokenizer(folder: Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.chat_template is None:
        raise ValueError(f"{folder}: the tokenizer has no chat template; tuneloop trains on chat messages")
    return tokenizer


def load_model(folder: Path, precision: Precision, device: str = "cpu"):
    from transformers import AutoModelForCausalLM

    # CUDA: SDPA (flash kernels; honours the block-diagonal mask of padding-free batches).
    # CPU: eager attention, whose bf16 bmm products run on AMX; the CPU SDPA backward with a
    # padding mask took 24 ms per layer against ~8 ms (LOG.md).
    attention = "sdpa" if device == "cuda" else "eager"
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=precision.dtype, attn_implementation=attention)
    return model.to(device)
