"""Loss on the learned tokens of held-out examples, without a Trainer (eval, models compare).

The same tokens as training's loss (data/conversation.py): by default every assistant turn is
scored and the rest of the conversation is context. Plain-text rows are scored whole.
"""

from __future__ import annotations

import math

import torch

from tuneloop.data import Example
from tuneloop.data.conversation import tokenize_examples


@torch.inference_mode()
def answer_loss(
    model,
    tokenizer,
    examples: list[Example],
    *,
    batch_size: int = 8,
    autocast_dtype: torch.dtype | None = None,
    train_on: str = "all_assistant",
) -> dict[str, float]:
    """Mean negative log-likelihood per learned token (nats), and its perplexity."""
    device = next(model.parameters()).device
    encoded = sorted(
        ((t.input_ids, t.labels()) for t in tokenize_examples(examples, tokenizer, train_on)), key=lambda x: len(x[0])
    )
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(encoded), batch_size):
            batch = encoded[start : start + batch_size]
            width = max(len(ids) for ids, _ in batch)
            input_ids = torch.full((len(batch), width), tokenizer.pad_token_id, dtype=torch.long)
            labels = torch.full((len(batch), width), -100, dtype=torch.long)
            attention = torch.zeros((len(batch), width), dtype=torch.long)
            for row, (ids, row_labels) in enumerate(batch):
                input_ids[row, : len(ids)] = torch.tensor(ids)
                labels[row, : len(ids)] = torch.tensor(row_labels)
                attention[row, : len(ids)] = 1
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                logits = model(input_ids=input_ids.to(device), attention_mask=attention.to(device)).logits
            shifted = labels[:, 1:].to(device)
            nll = torch.nn.functional.cross_entropy(
                logits[:, :-1].float().transpose(1, 2), shifted, ignore_index=-100, reduction="sum"
            )
            total += nll.item()
            count += int((shifted != -100).sum())
    finally:
        model.train(was_training)
    loss = total / max(1, count)
    return {"loss": loss, "perplexity": math.exp(min(loss, 50))}
