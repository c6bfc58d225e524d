"""`tuneloop plan --gpu NAME`: an estimate for a GPU this machine does not have.

Not a measurement. Training time is the plan's FLOPs over the GPU's published dense bf16 peak at an
ASSUMED model FLOP utilisation; decoding is the weights read once per new token at an assumed share
of the published memory bandwidth. Small models on large GPUs are limited by kernel launches
instead, which neither number captures: read the result as a lower bound there.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Gpu:
    name: str
    bf16_tflops: float  # dense, published
    memory_gib: float
    bandwidth_tbs: float


GPUS = {
    g.name.lower(): g
    for g in [
        Gpu("H200", 989.0, 141, 4.8),
        Gpu("H100", 989.0, 80, 3.35),
        Gpu("A100", 312.0, 80, 2.0),
        Gpu("L40S", 362.0, 48, 0.864),
        Gpu("A10", 125.0, 24, 0.6),
        Gpu("L4", 121.0, 24, 0.3),
    ]
}
ASSUMED_MFU = 0.35
ASSUMED_BANDWIDTH_SHARE = 0.6
CUDA_CONTEXT_GIB = 1.0


def gpu_named(name: str) -> Gpu:
    gpu = GPUS.get(name.lower())
    if gpu is None:
        raise ValueError(f"--gpu {name}: not in tuneloop's table; known: {', '.join(g.name for g in GPUS.values())}")
    return gpu


def gpu_estimate(plan, name: str, n_params: int, trainable: int) -> dict:
    """Minutes and memory of `plan`'s run on GPU `name`, from published numbers and assumptions.
    `trainable` equal to `n_params`: every weight trains (full fine-tuning)."""
    gpu = gpu_named(name)
    flops = gpu.bf16_tflops * 1e12 * ASSUMED_MFU
    # 2N FLOPs per token forward, 2N for the backward to the activations, 2N more for the weight
    # gradients when every weight trains.
    train_seconds = plan.padded_tokens * (6 if trainable >= n_params else 4) * n_params / flops
    forward_seconds = plan.forward_tokens * 2 * n_params / flops
    # Each decoding step reads every weight once (bf16); a batch shares the read.
    decode_seconds = plan.decode_steps * 2 * n_params / (gpu.bandwidth_tbs * 1e12 * ASSUMED_BANDWIDTH_SHARE)
    memory = 2 * n_params + trainable * 16 + CUDA_CONTEXT_GIB * 2**30 + plan.activation_bytes
    return {
        "gpu": gpu.name,
        "assumed": f"{ASSUMED_MFU:.0%} of {gpu.bf16_tflops:g} TFLOP/s (bf16, dense) and "
        f"{ASSUMED_BANDWIDTH_SHARE:.0%} of {gpu.bandwidth_tbs:g} TB/s; not measured",
        "minutes": round((train_seconds + forward_seconds + decode_seconds) / 60, 2),
        "train_minutes": round(train_seconds / 60, 2),
        "eval_minutes": round((forward_seconds + decode_seconds) / 60, 2),
        "memory_gib": round(memory / 2**30, 2),
        "gpu_memory_gib": gpu.memory_gib,
        "fits": memory / 2**30 <= gpu.memory_gib,
    }


def parameter_counts(folder, config) -> tuple[int, int]:
    """(all parameters, trainable ones) of a run of `config` on the model in `folder`, on the meta
    device: no weights are read. Trainable: every parameter for full fine-tuning, else LoRA's r x
    (in + out) for each adapted linear layer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from tuneloop.train.methods import method_of

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder))
    total = sum(p.numel() for p in model.parameters())
    if not method_of(config).adapter:
        return total, total
    from peft import get_peft_model

    from tuneloop.train.sft import adapter_config

    with torch.device("meta"):
        peft_model = get_peft_model(model, adapter_config(model, config.lora))
    return total, sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
