"""The label-only head must give what TRL's fused head gives: the same fields, values and gradients."""

import pytest
import torch
from trl.trainer.utils import add_fused_lm_head

from tuneloop.models import Precision, load_model
from tuneloop.train.label_head import add_label_only_head
from tuneloop.train.loss import IGNORE

FIELDS = ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1", "label_mask")


def _outputs(model, batch):
    model.zero_grad(set_to_none=True)
    out = model(**batch, fused_lm_head=True)
    out.log_probs.sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out, grads


@pytest.fixture
def batch():
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(10, 1000, (4, 12), generator=generator)
    attention = torch.ones_like(ids)
    attention[2:, 9:] = 0  # two padded rows
    labels = ids.masked_fill(attention == 0, IGNORE)
    labels[:, :5] = IGNORE  # the prompt
    labels[3] = IGNORE  # a row with no label at all
    return {"input_ids": ids, "attention_mask": attention, "labels": labels}


@pytest.mark.parametrize("num_items", [None, 7])
def test_label_only_head_matches_trl_fused_head(tiny_model, batch, num_items):
    models = [load_model(tiny_model, Precision.fp32) for _ in range(2)]
    outputs = ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1")
    for model in models:
        add_fused_lm_head(model, outputs=outputs)
    add_label_only_head(models[1])
    kwargs = {} if num_items is None else {"num_items_in_batch": num_items}
    (trl, trl_grads), (ours, our_grads) = (_outputs(m, {**batch, **kwargs}) for m in models)

    for field in FIELDS:
        torch.testing.assert_close(getattr(ours, field), getattr(trl, field), rtol=1e-5, atol=1e-5, msg=field)
    torch.testing.assert_close(ours.loss, trl.loss, rtol=1e-5, atol=1e-6)
    assert ours.log_probs[3].abs().sum() == 0 and ours.log_probs[0, :4].abs().sum() == 0  # no label: zero
    assert our_grads.keys() == trl_grads.keys()
    for name, grad in trl_grads.items():
        torch.testing.assert_close(our_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_calls_without_the_fused_head_are_the_models_own(tiny_model, batch):
    model = load_model(tiny_model, Precision.fp32)
    with torch.no_grad():
        plain = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
        add_fused_lm_head(model)
        add_label_only_head(model)
        again = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
    torch.testing.assert_close(again.logits, plain.logits)
    torch.testing.assert_close(again.loss, plain.loss)
