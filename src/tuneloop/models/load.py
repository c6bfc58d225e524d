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


def load_model(
    folder: Path,
    precision: Precision,
    device: str = "cpu",
    quantize: str = "none",
    fused_kernels: bool = True,
    inference: bool = False,
):
    """`quantize="4bit"`: QLoRA's NF4 base with double quantization and bf16 compute (bitsandbytes,
    CUDA; train/speed.py falls back before this is reached elsewhere). `inference`: a model that
    only evaluates and generates gets the attention kernel that decodes fastest."""
    from transformers import AutoModelForCausalLM

    from tuneloop.models.kernels import attention_for

    kwargs = {"dtype": precision.dtype, "attn_implementation": attention_for(device, fused_kernels, inference)}
    if quantize == "4bit":
        import torch
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
        kwargs["device_map"] = {"": device}
        return AutoModelForCausalLM.from_pretrained(folder, **kwargs)
    return AutoModelForCausalLM.from_pretrained(folder, **kwargs).to(device)
