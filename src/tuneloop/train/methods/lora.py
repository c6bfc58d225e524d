"""lora: supervised fine-tuning of LoRA adapters on a frozen base model (TRL's SFTTrainer, train/sft.py)."""

from __future__ import annotations

from tuneloop.config import RunConfig
from tuneloop.train.methods.base import Method
from tuneloop.train.sft import build_trainer, to_training_rows


def build_sft(
    model,
    tokenizer,
    config: RunConfig,
    train_examples,
    validation_examples,
    *,
    precision,
    output_dir,
    callbacks=(),
    device: str = "cpu",
    task_eval=None,
    adapter: bool = True,
):
    """SFTTrainer over the examples' learned spans (data.train_on), continuous evaluation hooked in."""
    rows = [to_training_rows(part, tokenizer, config.data.train_on) for part in (train_examples, validation_examples)]
    return build_trainer(
        model,
        tokenizer,
        *rows,
        train=config.train,
        lora=config.lora,
        max_seq_len=config.data.max_seq_len,
        precision=precision,
        output_dir=output_dir,
        callbacks=callbacks,
        device=device,
        task_eval=task_eval,
        adapter=adapter,
    )


# The guides' range for LoRA, and their usual rate, which `train.learning_rate: auto` starts from. The
# usual rate is measured too: on banking77 from 1e-5 (bench/results/doctor_real.json, LOG.md) the
# range's floor, 1e-4, left validation accuracy at 0.01 after 2 epochs; 2e-4 reached 0.56 in the next run.
LORA = Method(
    name="lora",
    summary="supervised fine-tuning of LoRA adapters on the frozen base model",
    build_trainer=build_sft,
    lr_range=(1e-4, 1e-3),
    lr_usual=2e-4,
    search_space={
        "train.learning_rate": {"low": 5e-5, "high": 1e-3, "log": True},
        "lora.r": {"choices": [8, 16, 32]},
        "lora.dropout": {"choices": [0.0, 0.05, 0.1]},
        "train.weight_decay": {"choices": [0.0, 0.01, 0.1]},
    },
)
