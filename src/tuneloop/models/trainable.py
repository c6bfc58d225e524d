"""A base model made ready for training: what full fine-tuning trains (freeze the embeddings and the
first N layers, or named modules), the model's own dropout, QLoRA's preparation."""

from __future__ import annotations

import re

import torch

from tuneloop.config import ConfigError, TrainConfig
from tuneloop.models.load import load_model
from tuneloop.models.precision import Precision

_LAYER = re.compile(r"\.layers\.(\d+)\.")


def freeze(model, first_layers: int = 0, modules: list[str] = ()) -> dict[str, int]:
    """Freeze in place. With `first_layers`, the embeddings are frozen too: they sit below layer 0.

    Returns parameter counts {"trainable", "frozen"}.
    """
    n_layers = model.config.num_hidden_layers
    if first_layers > n_layers:
        raise ConfigError(f"train.freeze_layers={first_layers}, but the model has {n_layers} layers")
    unmatched = [m for m in modules if not any(m in name for name, _ in model.named_parameters())]
    if unmatched:
        raise ConfigError(f"train.freeze_modules: no parameter name contains {unmatched}")
    for name, param in model.named_parameters():
        layer = _LAYER.search(name)
        below = first_layers and ((layer is None and "embed" in name) or (layer and int(layer.group(1)) < first_layers))
        if below or any(m in name for m in modules):
            param.requires_grad_(False)
    counts = {"trainable": 0, "frozen": 0}
    for p in model.parameters():
        counts["trainable" if p.requires_grad else "frozen"] += p.numel()
    return counts


DROPOUT_FIELDS = (
    "attention_dropout",
    "hidden_dropout",
    "resid_pdrop",
    "embd_pdrop",
    "attn_pdrop",
    "dropout",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
)


def set_model_dropout(model, p: float) -> list[str]:
    """Set every dropout the architecture has (config fields, modules' float attributes and
    nn.Dropout layers). Raises when there is none: silently ignoring a knob misleads."""
    changed = [f for f in DROPOUT_FIELDS if isinstance(getattr(model.config, f, None), float)]
    for field in changed:
        setattr(model.config, field, p)
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = p
            changed.append(type(module).__name__)
        for field in DROPOUT_FIELDS:  # e.g. LlamaAttention.attention_dropout, read at every forward
            if isinstance(getattr(module, field, None), float):
                setattr(module, field, p)
    if not changed:
        raise ConfigError(f"train.model_dropout: {type(model).__name__} has no dropout to set")
    return sorted(set(changed))


def load_for_training(
    folder, train: TrainConfig, precision: Precision, device: str, adapter=None, every_weight: bool = False
):
    """The base model ready for training: QLoRA's preparation, the dropout asked for, and (when
    `every_weight` trains: full fine-tuning) the frozen layers; with `adapter` (a PEFT folder,
    train.init_from's) that adapter on top, trainable. Returns (model, parameter counts when every
    weight trains, else None)."""
    full = every_weight
    # Full fine-tuning keeps fp32 master weights (AdamW on bf16 weights loses small updates);
    # the matmuls still run in bf16 under autocast.
    model = load_model(folder, Precision.fp32 if full else precision, device, train.quantize, train.fused_kernels)
    if train.quantize == "4bit":  # QLoRA: norms in fp32, inputs that require grad
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, bool(train.gradient_checkpointing))
    if train.model_dropout is not None:
        set_model_dropout(model, train.model_dropout)
    counts = freeze(model, train.freeze_layers, train.freeze_modules) if full else None
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter), is_trainable=True)
    return model, counts
