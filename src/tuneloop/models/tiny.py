"""A tiny Llama built from a config, with a real tokenizer: for tests that must run in seconds."""

from __future__ import annotations

from pathlib import Path


def build_tiny_model(
    target: Path, tokenizer_folder: Path, *, layers: int = 2, hidden: int = 64, heads: int = 4, seed: int = 0
) -> Path:
    """Write a randomly initialised 2-layer Llama with `tokenizer_folder`'s tokenizer to `target`.
    vLLM's CPU attention needs a head size of at least 32: `heads=2` at hidden 64."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        # Logits are h . e_v with frozen embeddings: at the usual 0.02 init they span only about +-1.3
        # and the loss cannot fall far below ln(vocab), whatever LoRA learns.
        initializer_range=0.1,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target
