"""The label-position-only loss must equal the plain full-logits cross-entropy."""

import contextlib
import gc
import json

import pytest
import torch
import torch.nn.functional as F

from conftest import chat, write_jsonl
from tuneloop.config import LoraConfig, TrainConfig
from tuneloop.data import load_examples_strict
from tuneloop.models import Precision, load_model
from tuneloop.train import build_trainer, to_training_rows


@pytest.fixture
def trainer(tmp_path, tiny_model, tokenizer):
    rows = [chat(f"question number {i} " + "pad " * (i % 7), json.dumps({"answer": i})) for i in range(16)]
    examples = load_examples_strict(write_jsonl(tmp_path / "d.jsonl", rows)).examples
    model = load_model(tiny_model, Precision.fp32)
    return build_trainer(
        model,
        tokenizer,
        to_training_rows(examples[:12], tokenizer),
        to_training_rows(examples[12:], tokenizer),
        train=TrainConfig(batch_size=4, epochs=1),
        lora=LoraConfig(r=4, alpha=8),
        max_seq_len=256,
        precision=Precision.fp32,
        output_dir=tmp_path / "out",
    )


def test_loss_matches_reference_cross_entropy(trainer):
    batch = next(iter(trainer.get_train_dataloader()))
    assert "attention_mask" in batch and batch["input_ids"].shape[0] == 4  # padded batches on CPU
    model = trainer.model
    model.eval()
    with torch.no_grad():
        ours = trainer.compute_loss(model, dict(batch))
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        reference = F.cross_entropy(
            logits[:, :-1].flatten(0, 1).float(), batch["labels"][:, 1:].flatten(), ignore_index=-100
        )
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)


def test_only_completion_tokens_are_labelled(trainer, tokenizer):
    batch = next(iter(trainer.get_train_dataloader()))
    for ids, labels in zip(batch["input_ids"], batch["labels"]):
        text = tokenizer.decode(ids[labels != -100])
        assert text.startswith('{"answer":') and "question number" not in text


def test_packed_rows_match_padded_rows(tiny_model, tokenizer):
    """Padding-free batches (used on CUDA) rely on transformers deriving a block-diagonal mask from
    position_ids; pin that the packed loss equals the padded loss."""
    model = load_model(tiny_model, Precision.fp32)
    seqs = [tokenizer(t)["input_ids"] for t in ["first short one", "a second, somewhat longer sequence here"]]
    width = max(map(len, seqs))
    padded = torch.full((2, width), tokenizer.pad_token_id)
    mask = torch.zeros((2, width), dtype=torch.long)
    for i, s in enumerate(seqs):
        padded[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    packed = torch.tensor([seqs[0] + seqs[1]])
    positions = torch.tensor([list(range(len(seqs[0]))) + list(range(len(seqs[1])))])
    with torch.no_grad():
        a = model(input_ids=padded, attention_mask=mask, use_cache=False).logits
        b = model(input_ids=packed, position_ids=positions, use_cache=False).logits
    torch.testing.assert_close(b[0, : len(seqs[0])], a[0, : len(seqs[0])], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(b[0, len(seqs[0]) :], a[1, : len(seqs[1])], rtol=1e-4, atol=1e-4)


def test_trl_private_state_is_checked_loudly(trainer):
    """The private TRL state compute_loss feeds is checked when the trainer is built; a TRL that
    renames it must fail with a message naming TRL, not quietly lose token accuracy and counts."""
    from tuneloop.train.loss import check_trl_internals

    check_trl_internals(trainer)  # the installed TRL has it
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.train()
    trainer.compute_loss(trainer.model, {k: v.to(trainer.args.device) for k, v in batch.items()})
    assert trainer._metrics["train"]["mean_token_accuracy"] and trainer._metrics["train"]["num_tokens"][0] > 0
    del trainer._total_train_tokens
    with pytest.raises(RuntimeError, match="TRL .* changed SFTTrainer's private"):
        check_trl_internals(trainer)


def test_flop_count_matches_the_trainers_own(trainer):
    """total_flos keeps the Trainer's formula; only the parameter count is cached."""
    batch = next(iter(trainer.get_train_dataloader()))
    expected = 6 * batch["input_ids"].numel() * trainer.model.num_parameters(exclude_embeddings=True)
    assert trainer.floating_point_ops(batch) == expected > 0


@pytest.mark.parametrize("fails", [False, True])
def test_adapter_input_casting_is_off_inside_and_restored_after(trainer, fails):
    from peft.tuners.tuners_utils import BaseTunerLayer

    trainer.autocast_dtype = torch.bfloat16  # the context acts only under autocast
    layers = [m for m in trainer.model.modules() if isinstance(m, BaseTunerLayer)]
    layers[0].cast_input_dtype_enabled = False  # a value set by someone else survives the context
    expect = pytest.raises(RuntimeError) if fails else contextlib.nullcontext()
    with expect, trainer._adapter_input_casting_off(trainer.model):
        assert layers and not any(layer.cast_input_dtype_enabled for layer in layers)
        if fails:
            raise RuntimeError("the forward failed")
    assert [layer.cast_input_dtype_enabled for layer in layers] == [False] + [True] * (len(layers) - 1)


def test_training_hides_long_lived_objects_from_the_collector(trainer):
    from transformers import TrainerCallback

    frozen = []

    class Record(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            frozen.append(gc.get_freeze_count())

    trainer.add_callback(Record())
    trainer.args.eval_strategy, trainer.args.learning_rate = "no", 1e-4  # the fixture's rate is still "auto"
    trainer.train()
    assert frozen and min(frozen) > 0 and gc.get_freeze_count() == 0
