"""What a training method is to the rest of tuneloop: one small record of plain values and functions.

The pipeline, the plan, the doctor, the sweep and serving read a method's properties (does it train
an adapter, what rows does it learn from, what does a step run) instead of its name, so a method is
added by writing one module in this folder and one entry in the registry (methods/__init__.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from tuneloop.config import ConfigError, RunConfig
from tuneloop.data import Splits
from tuneloop.runs import RunDir


@dataclass
class Job:
    """What training and evaluation work on: a created run directory and its resolved config."""

    run: RunDir
    config: RunConfig
    splits: Splits
    folder: Path  # the base model
    tokenizer: object
    device: str
    evaluate: bool = True  # False: `tuneloop train`, no base-vs-fine-tuned test
    resume_from: Path | None = None  # a checkpoint to continue from
    general: object = None  # eval.general's Suite: what the fine-tune costs the model, measured with the test


def _nothing(job: Job, trainer, console, main: bool) -> dict | None:
    return None


def _always(config: RunConfig) -> bool:
    return True


def adapter_settings(config: RunConfig) -> None:
    """What a method that trains an adapter cannot take."""
    train = config.train
    if train.freeze_layers or train.freeze_modules:
        raise ConfigError(
            f"train.freeze_layers / freeze_modules apply to method: full; {train.method} trains an adapter on a "
            "frozen base already"
        )


@dataclass(frozen=True)
class Method:
    name: str
    summary: str  # one line, for `--help` and the docs
    # The trainer: (model, tokenizer, config, train examples, validation examples, *, precision,
    # output_dir, callbacks, device, task_eval) -> a transformers Trainer.
    build_trainer: Callable
    adapter: bool = True  # trains LoRA weights on a frozen base (False: every weight)
    learns_from: Literal["answers", "pairs", "prompts"] = "answers"  # reference answers; chosen/rejected; rewards
    lr_range: tuple[float, float] = (1e-4, 1e-3)  # the guides' range (the doctor stays in it, a sweep searches it)
    lr_usual: float = 2e-4  # what `train.learning_rate: auto` starts from, for an effective batch of 8
    search_space: dict = field(default_factory=dict)  # the sweep's default space: config key -> SearchRange fields
    knobs: frozenset[str] = frozenset()  # the method's own config keys (train.beta, train.sft_weight, grpo.*)
    continuous_evaluation: bool = True  # the task metric scored during training (train/task_eval.py)
    # Hooks around trainer.train(): before returns what the evaluation needs later (full fine-tuning:
    # the base model's test side, measured before the weights change); after finishes the weights.
    before_training: Callable[..., dict | None] = _nothing
    after_training: Callable[..., dict | None] = _nothing
    # The plan's price of a step: rows per example (a pair is two), and a frozen reference's forward.
    sides: int = 1
    # Training samples each data row makes in an epoch (grpo: num_generations answers per prompt);
    # the optimizer steps, and so the evaluations' spacing, count them.
    samples_per_row: Callable[[RunConfig], int] = lambda config: 1
    validation_loss: bool = True  # a validation loss at each evaluation (grpo scores the task metric only)
    compiles: bool = True  # train.compile: auto may compile the decoder layers (train/speed.py)
    reference_forward: Callable[[RunConfig], bool] = lambda config: False
    # Whether the trained model learns where its answers end (DPO from the base model does not): the
    # plan prices its test answers as running to max_new_tokens otherwise.
    learns_answer_ends: Callable[[RunConfig], bool] = _always
    # The settings the method cannot take, refused (ConfigError) before the run starts (auto values
    # settled: train/auto.py calls it).
    check: Callable[[RunConfig], None] = adapter_settings
