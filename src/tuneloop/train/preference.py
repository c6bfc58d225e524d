"""Preference tuning with TRL: DPO (against a frozen reference) and ORPO (reference-free).

A preference row is an Example whose last assistant turn is the chosen answer and whose
`rejected` holds the other one. DPO on top of an SFT run (`train.init_from`) starts from that
run's adapter; TRL keeps a frozen copy of it as the reference ("ref" adapter), so the implicit
rewards measure how far the preference run moved from its SFT parent.
"""

from __future__ import annotations

from pathlib import Path

from tuneloop.config import RunConfig
from tuneloop.data import Example
from tuneloop.models.precision import Precision
from tuneloop.train.sft import adapter_config, eval_steps_for, trainer_arguments


def to_preference_rows(examples: list[Example]):
    """TRL's conversational preference rows: the prompt's messages, then one answer on each side."""
    from datasets import Dataset

    missing = [e.row for e in examples if e.rejected is None]
    if missing:
        raise ValueError(
            f"preference tuning needs preference rows (prompt, chosen, rejected); rows {missing[:5]} have "
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
    config: RunConfig,
    train_examples: list[Example],
    validation_examples: list[Example],
    *,
    config_class,
    trainer_class,
    method_arguments: dict,
    precision: Precision,
    output_dir: Path,
    callbacks=(),
    device: str = "cpu",
    task_eval=None,
):
    """A TRL preference trainer (`trainer_class`, configured by `config_class` with the method's own
    `method_arguments` over the shared ones) with the run's schedule, precision, checkpoints and early
    stopping. `model` is the base model, or a PeftModel carrying the init_from adapter (no new adapter then).
    The task metric is measured at the end (eval.json), not during training: `task_eval` is not used."""
    from transformers import EarlyStoppingCallback, PrinterCallback

    train, lora, max_seq_len = config.train, config.lora, config.data.max_seq_len
    train_rows, val_rows = (to_preference_rows(part) for part in (train_examples, validation_examples))
    early_stopping = train.early_stopping_patience > 0
    arguments = {
        **trainer_arguments(
            train,
            output_dir,
            eval_steps_for(train, len(train_rows)),
            device,
            keep_best=early_stopping or train.doctor == "stop",
        ),
        "beta": train.beta,
        # bf16 weights (precision bf16) compute under bf16 autocast; the adapter stays fp32.
        "bf16": precision.autocast_dtype is not None,
        "max_length": max_seq_len,  # lengths were checked with the longer answer: nothing is cut
        **method_arguments,
    }
    if early_stopping:
        callbacks = [
            *callbacks,
            EarlyStoppingCallback(train.early_stopping_patience, train.early_stopping_min_delta),
        ]
    trainer = trainer_class(
        model=model,
        args=config_class(**arguments),
        train_dataset=train_rows,
        eval_dataset=val_rows,
        processing_class=tokenizer,
        peft_config=adapter_config(model, lora),
        callbacks=list(callbacks),
    )
    trainer.remove_callback(PrinterCallback)
    return trainer


def before_preference_training(job, trainer, console, main: bool) -> None:
    """Before training: how often the model (the base, or the init_from run) prefers the chosen answer."""
    if main and not job.resume_from:
        precision = Precision(job.config.train.precision)
        record_preference_accuracy(job.run, trainer.model, job.tokenizer, job.splits.validation, precision, "before")


def after_preference_training(job, trainer, console, main: bool) -> None:
    """After: the reference adapter dropped (the run keeps its own), and the preference accuracy again."""
    drop_reference_adapter(trainer.model)
    if main:
        precision = Precision(job.config.train.precision)
        record_preference_accuracy(job.run, trainer.model, job.tokenizer, job.splits.validation, precision, "after")


def drop_reference_adapter(model) -> None:
    """DPO on an init_from adapter trains against a frozen copy of it ("ref"); the run keeps only its own."""
    if "ref" in getattr(model, "peft_config", {}):
        model.set_adapter("default")
        model.delete_adapter("ref")


def record_preference_accuracy(run, model, tokenizer, validation, precision: Precision, when: str) -> None:
    """run.json's preference_accuracy[`when`]: on the validation pairs, how often the model finds the
    chosen answer more likely than the rejected one (before training, and after)."""
    from tuneloop.eval.loss import preference_accuracy

    accuracy = preference_accuracy(model, tokenizer, validation, autocast_dtype=precision.autocast_dtype)
    record = {**run.info().get("preference_accuracy", {}), when: accuracy, "pairs": len(validation)}
    run.update_info(preference_accuracy=record)
