"""full: supervised fine-tuning of every weight (the same SFTTrainer as lora, without an adapter).

There is no adapter to switch off after training, so the base model's side of the evaluation is
measured before the first step changes the weights."""

from __future__ import annotations

from functools import partial

from tuneloop.config import ConfigError, RunConfig
from tuneloop.train.methods.base import Job, Method
from tuneloop.train.methods.lora import build_sft


def evaluate_base_first(job: Job, trainer, console, main: bool) -> dict | None:
    """The base model's test side (and its general side), while the weights are still the base's."""
    from tuneloop.eval.base_vs_tuned import base_general_side, evaluate_side
    from tuneloop.models.precision import Precision

    if not job.evaluate:
        return None
    config, precision = job.config, Precision(job.config.train.precision)
    base = evaluate_side(
        trainer.model, job.tokenizer, job.splits.test, config.eval, precision, console.status, config.data.train_on
    )
    if job.general is not None:
        with console.status("base model: general ability, leakage and drift"):
            base["general"] = base_general_side(trainer.model, job.tokenizer, job.general, precision, job.folder)
    return base


def every_weight_settings(config: RunConfig) -> None:
    train = config.train
    if train.init_from is not None:
        raise ConfigError("train.init_from continues a LoRA adapter; method: full trains the weights themselves")
    if train.quantize != "none":
        raise ConfigError("train.quantize: 4bit is QLoRA; a quantized base cannot be fully fine-tuned")


FULL = Method(
    name="full",
    summary="supervised fine-tuning of every weight (the frozen layers aside: train.freeze_layers)",
    build_trainer=partial(build_sft, adapter=False),
    adapter=False,
    lr_range=(1e-5, 5e-5),
    lr_usual=2e-5,
    search_space={
        "train.learning_rate": {"low": 2e-6, "high": 1e-4, "log": True},
        "train.weight_decay": {"choices": [0.0, 0.01, 0.1]},
    },
    before_training=evaluate_base_first,
    check=every_weight_settings,
)
