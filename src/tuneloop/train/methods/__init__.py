"""Training methods as plug-ins: one module per method, found through this registry.

    lora   supervised fine-tuning of LoRA adapters            (lora.py)
    full   supervised fine-tuning of every weight             (full.py)
    dpo    preference tuning against a frozen reference       (dpo.py)
    orpo   preference tuning without a reference              (orpo.py)
    grpo   reinforcement fine-tuning rewarded by graders      (grpo.py)

A method is a `Method` (base.py): its trainer, what it learns from, its learning-rate range, its
sweep space, its hooks around training and what the plan prices per step. Adding one is a module
here and an entry below; tests/train/test_methods.py runs the common contract over every entry.
"""

from __future__ import annotations

from tuneloop.config import ConfigError, RunConfig
from tuneloop.train.methods.base import Job, Method
from tuneloop.train.methods.dpo import DPO
from tuneloop.train.methods.full import FULL
from tuneloop.train.methods.grpo import GRPO
from tuneloop.train.methods.lora import LORA
from tuneloop.train.methods.orpo import ORPO

METHODS: dict[str, Method] = {m.name: m for m in (LORA, FULL, DPO, ORPO, GRPO)}


def method_of(config: RunConfig | str) -> Method:
    """The Method of a config (or of a train.method name)."""
    name = config if isinstance(config, str) else config.train.method
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(f"train.method {name!r}: one of {', '.join(METHODS)}") from None


def check_method_settings(config: RunConfig) -> RunConfig:
    """The config's train settings that its method cannot take, refused (ConfigError naming them)."""
    method_of(config).check(config)
    return config


__all__ = ["METHODS", "Job", "Method", "check_method_settings", "method_of"]
