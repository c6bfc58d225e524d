"""DPO's per-token log-probabilities with the LM head on the answer tokens only.

TRL 1.16's DPOTrainer scores tokens through a fused, tiled LM head (`add_fused_lm_head`, which
replaces the model's forward). With Triton (CUDA) it projects the label positions only; elsewhere
every position, prompt and padding included, onto the whole vocabulary, and computes entropy,
mean logit and top-1 over it. On a banking77 pair (~58 tokens, a ~6-token intent) that is ten
times the projection needed, twice a step (the policy with its backward, where each tile is
recomputed, and the reference), and once more per validation pair. Profiled on the 2-core AMX
CPU (LOG.md): that head took 11.5 s of 24 s over four DPO steps and a validation pass.

`add_label_only_head` puts the label-only projection train/loss.py uses for SFT in its place:
the model's own forward with `logits_to_keep` as a mask, so scaling and soft-capping are the
model's, then a log-softmax over those rows alone. Same fields, same shapes, zero where the label
is -100 (tests/train/test_label_head.py compares them with TRL's). The cost is memory TRL's tiles
avoid: one fp32 row of vocabulary per answer token, as SFT already pays (plan/calibrate.py's m3).
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F

from tuneloop.train.loss import IGNORE


def add_label_only_head(model) -> None:
    """Replace the fused head TRL put on `model` (a PreTrainedModel, inside the PEFT wrapper). Calls
    without `fused_lm_head=True`, such as generation's, go to the forward it replaces, unchanged.
    Pre-shifted labels (context/sequence parallelism) and router logits (MoE) stay with TRL's head."""
    previous = model.forward

    def forward(self, *args, fused_lm_head=False, labels=None, num_items_in_batch=None, **kwargs):
        if not fused_lm_head or kwargs.get("shift_labels") is not None or kwargs.get("output_router_logits"):
            extra = {"labels": labels, "num_items_in_batch": num_items_in_batch}
            extra = {k: v for k, v in extra.items() if v is not None}
            if fused_lm_head:
                extra["fused_lm_head"] = True
            return previous(*args, **kwargs, **extra)
        return label_log_probs(previous, labels, num_items_in_batch, *args, **kwargs)

    model.forward = types.MethodType(forward, model)


def label_log_probs(forward, labels: torch.Tensor, num_items_in_batch, *args, **kwargs):
    """TRL's FusedCausalLMOutput from the logits of the label positions alone."""
    from trl.trainer.utils import FusedCausalLMOutput

    targets_all = labels[:, 1:]
    mask = targets_all != IGNORE  # (batch, seq_len - 1): position i predicts token i + 1
    keep = F.pad(mask, (0, 1), value=False)
    kwargs["use_cache"] = False
    logits = forward(*args, logits_to_keep=keep, **kwargs).logits  # (label tokens, vocab)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # bf16 up to fp32; fp64 stays fp64
    targets = targets_all[mask]
    log_softmax = logits.log_softmax(-1)
    token = log_softmax.gather(-1, targets[:, None]).squeeze(-1)
    with torch.no_grad():  # metrics and WPO's weights: no gradient, as in TRL's head
        entropy = -(log_softmax.exp() * log_softmax).sum(-1)
        log_sum_sq = torch.logsumexp(2 * log_softmax, dim=-1)
        mean_logits = logits.mean(-1)
        is_top1 = logits.argmax(-1) == targets

    def spread(values: torch.Tensor) -> torch.Tensor:  # back to (batch, seq_len - 1), zero where no label
        return values.new_zeros(mask.shape).masked_scatter(mask, values)

    log_probs = spread(token)
    count = num_items_in_batch if num_items_in_batch is not None else mask.sum().clamp(min=1)
    return FusedCausalLMOutput(
        loss=-token.sum() / count,
        log_probs=log_probs,
        entropy=spread(entropy),
        log_sum_sq_probs=spread(log_sum_sq),
        mean_logits=spread(mean_logits),
        is_top1=spread(is_top1),
        label_mask=mask,
    )
