"""Build TRL's SFTTrainer from a RunConfig: LoRA adapters, loss on the learned turns, padding-free batches."""

from __future__ import annotations

import math
from pathlib import Path

from tuneloop.config import ConfigError, LoraConfig, TrainConfig
from tuneloop.data import Example
from tuneloop.data.conversation import tokenize_examples
from tuneloop.models.precision import Precision


def to_training_rows(examples: list[Example], tokenizer, train_on: str = "all_assistant"):
    """Token ids with labels: -100 everywhere but the learned assistant turns (data/conversation.py).

    Tokenized here rather than by TRL: TRL's per-turn masks need a chat template with
    `{% generation %}` markers, which few models ship, and its prompt/completion rows learn only
    the last turn. Plain-text rows learn all of their text.
    """
    from datasets import Dataset

    if any(e.kind == "text" for e in examples) and not all(e.kind == "text" for e in examples):
        raise ValueError("plain-text rows and chat rows cannot be mixed in one training set")
    rows = tokenize_examples(examples, tokenizer, train_on)
    return Dataset.from_dict({"input_ids": [r.input_ids for r in rows], "labels": [r.labels() for r in rows]})


def eval_steps_for(train: TrainConfig, n_train: int) -> int:
    """About 10 validation points per run unless the config says otherwise: enough to see a curve turn."""
    if train.eval_every:
        return train.eval_every
    steps_per_epoch = math.ceil(n_train / (train.batch_size * train.gradient_accumulation))
    return max(1, math.ceil(steps_per_epoch * train.epochs / 10))


def save_steps_for(train: TrainConfig, eval_steps: int) -> int:
    save = train.save_every or eval_steps
    if (train.early_stopping_patience or train.doctor == "stop") and save % eval_steps:
        # Restoring the best checkpoint needs one saved at every evaluation.
        raise ConfigError(
            f"train.save_every={save} must be a multiple of train.eval_every={eval_steps} "
            "when early stopping or doctor: stop may restore the best checkpoint"
        )
    return save


def trainer_arguments(train: TrainConfig, output_dir: Path, eval_steps: int, device: str, keep_best: bool) -> dict:
    """The Trainer arguments every tuneloop run shares, SFT or preference: schedule, evaluation,
    checkpoints and logging."""
    return {
        "output_dir": str(output_dir),
        "num_train_epochs": train.epochs,
        "learning_rate": train.learning_rate,
        "per_device_train_batch_size": train.batch_size,
        "per_device_eval_batch_size": train.batch_size,
        "gradient_accumulation_steps": train.gradient_accumulation,
        "lr_scheduler_type": train.scheduler,
        # warmup_steps takes a count, or a float in [0, 1) as a ratio of total steps.
        "warmup_steps": train.warmup_steps if train.warmup_steps is not None else train.warmup_ratio,
        "weight_decay": train.weight_decay,
        "max_grad_norm": train.max_grad_norm,
        "seed": train.seed,
        "data_seed": train.seed,
        "eval_strategy": "steps",
        "eval_steps": eval_steps,
        "logging_steps": train.log_every,
        "logging_first_step": True,
        # Checkpoints (adapter, optimizer, scheduler, RNG states) make `tuneloop resume` exact.
        "save_strategy": "steps",
        "save_steps": save_steps_for(train, eval_steps),
        "save_total_limit": 2,
        # Early stopping or the live doctor's stop may end a run past its best point: restore it.
        "load_best_model_at_end": keep_best,
        "metric_for_best_model": "eval_loss" if keep_best else None,
        "greater_is_better": False if keep_best else None,
        "report_to": list(train.report_to) or "none",
        # transformers replaces a NaN/inf training loss with the running average (0.0 at the start):
        # a diverged run must log NaN, which the doctor reads as diverging.
        "logging_nan_inf_filter": False,
        "disable_tqdm": True,  # TrainingProgress draws a rich bar instead
        "use_cpu": device == "cpu",
        # TRL turns activation checkpointing on by default; it recomputes the forward in every
        # backward (measured: backward 2.3x the forward, ~40% of all training time). tuneloop turns
        # it on only when the activations would not fit (train/speed.py).
        "gradient_checkpointing": train.gradient_checkpointing is True,
        "dataloader_num_workers": 0,
    }


def adapter_config(model, lora: LoraConfig, adapter: bool = True):
    """PEFT's LoRA config for a new adapter; None when the method trains every weight (`adapter`
    False), or when `model` already carries the adapter to continue (train.init_from)."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import PeftModel

    if not adapter or isinstance(model, PeftModel):
        return None
    return PeftLoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        use_rslora=lora.use_rslora,
        use_dora=lora.use_dora,
        task_type="CAUSAL_LM",
    )


def build_trainer(
    model,
    tokenizer,
    train_rows,
    val_rows,
    *,
    train: TrainConfig,
    lora: LoraConfig,
    max_seq_len: int,
    precision: Precision,
    output_dir: Path,
    callbacks=(),
    device: str = "cpu",
    task_eval=None,
    adapter: bool = True,
):
    """`adapter`: train LoRA weights (False: every weight). `task_eval`: a TaskEvaluator (continuous
    evaluation). With it, `train.select_best` auto or metric keeps the weights of the best validation
    metric instead of the best validation loss; balance, those of the best balance of the metric and
    behaviour leakage (task_eval.balance_keeps)."""
    from transformers import EarlyStoppingCallback, PrinterCallback
    from trl import SFTConfig

    from tuneloop.models.kernels import use_liger
    from tuneloop.train.loss import CompletionLossTrainer
    from tuneloop.train.task_eval import KeepBestByMetric

    # Padding-free (one concatenated row per batch) pays off only with varlen attention kernels
    # (flash-attention on CUDA). On CPU, SDPA evaluates the dense block-diagonal mask and was
    # slower than padded batches grouped by length (LOG.md), so there we group by length instead.
    # Packing, when asked for, is honoured everywhere.
    padding_free = train.packing or (train.padding_free and device == "cuda")
    eval_steps = eval_steps_for(train, len(train_rows))
    early_stopping = train.early_stopping_patience > 0
    by_metric = task_eval is not None and train.select_best != "loss"
    # Either may end a run past its best point. By metric, KeepBestByMetric keeps the best weights
    # itself: the Trainer's own selection would need the metric at every evaluation, and
    # continuous evaluation skips some to stay within its time budget.
    keep_best = (early_stopping or train.doctor == "stop") and not by_metric

    args = SFTConfig(
        **trainer_arguments(train, output_dir, eval_steps, device, keep_best),
        neftune_noise_alpha=train.neftune_noise_alpha,
        bf16=False,  # CompletionLossTrainer applies bf16 autocast itself (see its docstring)
        # Lengths were checked against max_seq_len when the data was loaded: nothing is truncated.
        # Padding-free without packing requires max_length=None; packing fills rows up to it.
        max_length=max_seq_len if train.packing or not padding_free else None,
        packing=train.packing,
        padding_free=padding_free,
        train_sampling_strategy="random" if padding_free else "group_by_length",
        prediction_loss_only=True,
        use_liger_kernel=use_liger(device, train.fused_kernels, compiled=train.compile is True),
        include_num_input_tokens_seen="no",
        # Every trainable parameter gets a gradient in every step; looking for unused ones
        # costs DDP an extra pass over the autograd graph.
        ddp_find_unused_parameters=False,
    )
    peft_config = adapter_config(model, lora, adapter)
    if task_eval is not None:
        callbacks = [*callbacks, task_eval]
    if by_metric:
        callbacks = [
            *callbacks,
            KeepBestByMetric(
                task_eval,
                train.early_stopping_patience,
                train.early_stopping_min_delta,
                balance=train.select_best == "balance",
            ),
        ]
    elif early_stopping:
        callbacks = [*callbacks, EarlyStoppingCallback(train.early_stopping_patience, train.early_stopping_min_delta)]
    trainer = CompletionLossTrainer(
        model=model,
        autocast_dtype=precision.autocast_dtype,
        l1=train.adapter_l1,
        l2=train.adapter_l2,
        task_eval=task_eval,
        args=args,
        train_dataset=train_rows,
        eval_dataset=val_rows,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=list(callbacks),
    )
    # With disable_tqdm the Trainer prints every log dict to stdout; metrics.jsonl and the
    # progress bar already carry them.
    trainer.remove_callback(PrinterCallback)
    return trainer
