"""The label-only head must give what TRL's fused head gives: the same fields, values and gradients.

Gradients are compared with the definition computed in float64 (the model's plain logits, a
log-softmax, the labels' entries), not with each other: the two heads sum in different orders, and
the order of fp32 sums depends on the CPU's kernels. On an AMD EPYC (Zen 5, AVX512) the heads'
embedding gradients differed by 3.8e-6 (max |gradient| 6.7), beyond the rtol 1e-4 / atol 1e-6 that
an Intel Xeon passed; each head was within 5.1e-6 of the float64 definition. Our head computes in
the model's dtype (fp32 at least), so in float64 it must match the definition exactly (to 1e-10);
TRL's kernel is fp32 inside, so in fp32 both heads must be within FP32_BOUND of it.
"""

import pytest
import torch
from trl.trainer.utils import add_fused_lm_head

from tuneloop.models import Precision, load_model
from tuneloop.train.label_head import add_label_only_head
from tuneloop.train.loss import IGNORE

FIELDS = ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1", "label_mask")
OUTPUTS = ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1")
# fp32 error bound, relative to the largest gradient of the tensor: 64 ulps of fp32 (7.6e-6). Measured:
# at most 7.6e-7 (TRL's head, 5.1e-6 on a max of 6.7) on the AMD EPYC; 10x margin for other kernels.
FP32_BOUND = 64 * torch.finfo(torch.float32).eps


def _grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.double().clone() for n, p in model.named_parameters() if p.grad is not None}


def _head(tiny_model, batch, dtype, *, ours: bool):
    model = load_model(tiny_model, Precision.fp32).to(dtype)
    add_fused_lm_head(model, outputs=OUTPUTS)
    if ours:
        add_label_only_head(model)
    out = model(**batch, fused_lm_head=True)
    out.log_probs.sum().backward()
    return out, _grads(model)


def _definition(tiny_model, batch):
    """Per-token log-probabilities of the labels and their gradients, in float64 from the plain logits."""
    model = load_model(tiny_model, Precision.fp32).to(torch.float64)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    targets = batch["labels"][:, 1:]
    mask = targets != IGNORE
    log_probs = logits.log_softmax(-1).gather(-1, targets.clamp(min=0)[..., None]).squeeze(-1) * mask
    log_probs.sum().backward()
    return log_probs.detach(), _grads(model)


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
    batch = {**batch, **({} if num_items is None else {"num_items_in_batch": num_items})}
    trl, trl_grads = _head(tiny_model, batch, torch.float32, ours=False)
    ours, our_grads = _head(tiny_model, batch, torch.float32, ours=True)

    for field in FIELDS:
        torch.testing.assert_close(getattr(ours, field), getattr(trl, field), rtol=1e-5, atol=1e-5, msg=field)
    torch.testing.assert_close(ours.loss, trl.loss, rtol=1e-5, atol=1e-6)
    assert ours.log_probs[3].abs().sum() == 0 and ours.log_probs[0, :4].abs().sum() == 0  # no label: zero
    assert our_grads.keys() == trl_grads.keys()

    _, exact_grads = _definition(tiny_model, batch)
    assert exact_grads.keys() == our_grads.keys()
    for name, grad in exact_grads.items():
        bound = FP32_BOUND * grad.abs().max().item()
        for head, grads in (("trl", trl_grads), ("ours", our_grads)):
            error = (grads[name] - grad).abs().max().item()
            assert error <= bound, f"{head}: {name} off the float64 definition by {error:.2e} (bound {bound:.2e})"


def test_label_only_head_is_the_definition_in_float64(tiny_model, batch):
    """Same reduction order cannot be had from two implementations; float64 makes ours exact instead."""
    ours, our_grads = _head(tiny_model, batch, torch.float64, ours=True)
    exact, exact_grads = _definition(tiny_model, batch)
    torch.testing.assert_close(ours.log_probs, exact, rtol=1e-10, atol=1e-12)
    for name, grad in exact_grads.items():
        torch.testing.assert_close(our_grads[name], grad, rtol=1e-10, atol=1e-12, msg=name)


def test_calls_without_the_fused_head_are_the_models_own(tiny_model, batch):
    model = load_model(tiny_model, Precision.fp32)
    with torch.no_grad():
        plain = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
        add_fused_lm_head(model)
        add_label_only_head(model)
        again = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
    torch.testing.assert_close(again.logits, plain.logits)
    torch.testing.assert_close(again.loss, plain.loss)
