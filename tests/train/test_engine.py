"""The training engine's knobs, on the tiny model: each one must reach the Trainer/model and act."""

import json

import pytest
import torch
from rich.console import Console

from conftest import chat, write_jsonl
from tuneloop.config import ConfigError, LoraConfig, TrainConfig, config_from_dict
from tuneloop.data import load_examples_strict
from tuneloop.models import Precision, load_model
from tuneloop.train import build_trainer, to_training_rows

QUIET = Console(quiet=True)


@pytest.fixture
def rows(tmp_path, tokenizer):
    data = [chat(f"question number {i} " + "pad " * (i % 7), json.dumps({"answer": i % 5})) for i in range(16)]
    examples = load_examples_strict(write_jsonl(tmp_path / "d.jsonl", data)).examples
    return to_training_rows(examples[:12], tokenizer), to_training_rows(examples[12:], tokenizer)


def _trainer(tmp_path, tiny_model, tokenizer, rows, train: TrainConfig, lora: LoraConfig = LoraConfig(r=4, alpha=8)):
    train_rows, val_rows = rows
    model = load_model(tiny_model, Precision.fp32)
    return build_trainer(
        model,
        tokenizer,
        train_rows,
        val_rows,
        train=train,
        lora=lora,
        max_seq_len=256,
        precision=Precision.fp32,
        output_dir=tmp_path / "out",
    )


@pytest.mark.parametrize(
    "lora, attribute", [(LoraConfig(r=4, use_rslora=True), "use_rslora"), (LoraConfig(r=4, use_dora=True), "use_dora")]
)
def test_lora_variants_reach_peft(tmp_path, tiny_model, tokenizer, rows, lora, attribute):
    trainer = _trainer(tmp_path, tiny_model, tokenizer, rows, TrainConfig(batch_size=4, epochs=1), lora)
    assert getattr(trainer.model.peft_config["default"], attribute) is True


def test_schedule_warmup_neftune_and_packing_reach_the_trainer(tmp_path, tiny_model, tokenizer, rows):
    train = TrainConfig(
        batch_size=4,
        epochs=1,
        scheduler="linear",
        warmup_steps=2,
        neftune_noise_alpha=5.0,
        packing=True,
        weight_decay=0.05,
    )
    trainer = _trainer(tmp_path, tiny_model, tokenizer, rows, train)
    a = trainer.args
    assert (a.lr_scheduler_type, a.warmup_steps, a.neftune_noise_alpha, a.weight_decay) == ("linear", 2, 5.0, 0.05)
    batch = next(iter(trainer.get_train_dataloader()))
    assert batch["input_ids"].shape[0] == 1 and "position_ids" in batch  # packed into one row


def test_weight_penalty_is_added_and_logged(tmp_path, tiny_model, tokenizer, rows):
    plain = _trainer(tmp_path, tiny_model, tokenizer, rows, TrainConfig(batch_size=4, epochs=1))
    penalised = _trainer(tmp_path, tiny_model, tokenizer, rows, TrainConfig(batch_size=4, epochs=1, adapter_l2=0.5))
    batch = next(iter(plain.get_train_dataloader()))
    penalised.model.load_state_dict(plain.model.state_dict())
    plain.model.train(), penalised.model.train()
    with torch.no_grad():
        expected = 0.5 * sum(p.pow(2).sum() for p in penalised.model.parameters() if p.requires_grad)
        difference = penalised.compute_loss(penalised.model, dict(batch)) - plain.compute_loss(plain.model, dict(batch))
    torch.testing.assert_close(difference, expected, rtol=1e-4, atol=1e-5)
    assert penalised._metrics["train"]["weight_penalty"]


def test_config_errors_for_engine_knobs():
    from tuneloop.train.methods import check_method_settings

    with pytest.raises(ConfigError, match="apply to method: full"):
        check_method_settings(config_from_dict({"data": {"path": "x"}, "train": {"freeze_layers": 2}}))
    with pytest.raises(ConfigError, match="a quantized base cannot be fully fine-tuned"):
        check_method_settings(
            config_from_dict({"data": {"path": "x"}, "train": {"method": "full", "quantize": "4bit"}})
        )
    with pytest.raises(ConfigError, match="report_to"):
        config_from_dict({"data": {"path": "x"}, "train": {"report_to": ["neptune"]}})
