"""Preference tuning with TRL: DPO (against a frozen reference) and ORPO (reference-free).

A preference row is an Example whose last assistant turn is the chosen answer and whose
`rejected` holds the other one. DPO on top of an SFT run (`train.init_from`) starts from that
run's adapter; TRL keeps a frozen copy of it as the reference ("ref" adapter), so the implicit
rewards measure how far the preference run moved from its SFT parent.
"""

from __future__ import annotations

from pathlib import Path

from tuneloop.config import LoraConfig, TrainConfig
from tuneloop.data import Example
from tuneloop.models.precision import Precision

PREFERENCE_METHODS = ("dpo", "orpo")


def to_preference_rows(examples: list[Example]):
    """TRL's conversational preference rows: the prompt's messages, then one answer on each side."""
    from datasets import Dataset

    missing = [e.row for e in examples if e.rejected is None]
    if missing:
        raise ValueError(
            f"train.method dpo / orpo needs preference rows (prompt, chosen, rejected); rows {missing[:5]} have "
            "no rejected answer"
        )
    return Dataset.from_list(
        [
            {
                "prompt": [{"role": m["role"], "content": m["content"]} for m in e.prompt],
                "chosen": [{"role": "assistant", "content": e.answer}],
                "rejected": [{"role": "assistant", "content": e.rejected}],
            }
            for e in examples
        ]
    )


def build_preference_trainer(
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
    eval_steps: int,
    save_steps: int,
    callbacks=(),
    device: str = "cpu",
):
    """DPOTrainer or ORPOTrainer with the run's schedule, precision and checkpoints. `model` is the
    base model, or a PeftModel carrying the init_from adapter (then no new adapter is made)."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import PeftModel
    from transformers import EarlyStoppingCallback, PrinterCallback

    # As in SFT: early stopping, or the live doctor's stop, restores the best validation loss.
    early_stopping = train.early_stopping_patience > 0
    keep_best = early_stopping or train.doctor == "stop"
    common = {
        "output_dir": str(output_dir),
        "num_train_epochs": train.epochs,
        "learning_rate": train.learning_rate,
        "per_device_train_batch_size": train.batch_size,
        "per_device_eval_batch_size": train.batch_size,
        "gradient_accumulation_steps": train.gradient_accumulation,
        "lr_scheduler_type": train.scheduler,
        "warmup_steps": train.warmup_steps if train.warmup_steps is not None else train.warmup_ratio,
        "weight_decay": train.weight_decay,
        "max_grad_norm": train.max_grad_norm,
        "seed": train.seed,
        "data_seed": train.seed,
        "beta": train.beta,
        "eval_strategy": "steps",
        "eval_steps": eval_steps,
        "logging_steps": train.log_every,
        "logging_first_step": True,
        "save_strategy": "steps",
        "save_steps": save_steps,
        "save_total_limit": 2,
        "load_best_model_at_end": keep_best,
        "metric_for_best_model": "eval_loss" if keep_best else None,
        "greater_is_better": False if keep_best else None,
        "report_to": list(train.report_to) or "none",
        "logging_nan_inf_filter": False,
        "disable_tqdm": True,
        "use_cpu": device == "cpu",
        # bf16 weights (precision bf16) compute in bf16; the adapter stays fp32 under autocast.
        "bf16": precision.autocast_dtype is not None,
        "max_length": max_seq_len,
        "gradient_checkpointing": train.gradient_checkpointing is True,
        "dataloader_num_workers": 0,
    }
    if train.method == "dpo":
        from trl import DPOConfig, DPOTrainer

        args, trainer_class = DPOConfig(**common), DPOTrainer
    else:
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

        args, trainer_class = ORPOConfig(**common), ORPOTrainer
    peft_config = (
        None
        if isinstance(model, PeftModel)
        else PeftLoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=lora.target_modules,
            use_rslora=lora.use_rslora,
            use_dora=lora.use_dora,
            task_type="CAUSAL_LM",
        )
    )
    if early_stopping:
        callbacks = [
            *callbacks,
            EarlyStoppingCallback(train.early_stopping_patience, train.early_stopping_min_delta),
        ]
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=train_rows,
        eval_dataset=val_rows,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=list(callbacks),
    )
    trainer.remove_callback(PrinterCallback)
    return trainer
