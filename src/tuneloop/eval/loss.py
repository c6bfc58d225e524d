"""Loss on the answer tokens of held-out examples, without a Trainer (eval, models compare).

The same tokens as training's completion-only loss: the chat-formatted prompt is context, the
final assistant turn is scored. Plain-text rows are scored whole.
"""

from __future__ import annotations

import math

import torch

from tuneloop.data import Example


def _ids(tokenizer, e: Example) -> tuple[list[int], int]:
    """Token ids of the whole example, and where the scored answer starts."""
    if e.kind == "text":
        ids = tokenizer(e.answer)["input_ids"]
        return ids, 0
    prompt = tokenizer.apply_chat_template(e.prompt, add_generation_prompt=True, tokenize=True, return_dict=False)
    full = tokenizer.apply_chat_template(e.messages, tokenize=True, return_dict=False)
    return full, len(prompt)


@torch.inference_mode()
def answer_loss(
    model, tokenizer, examples: list[Example], *, batch_size: int = 8, autocast_dtype: torch.dtype | None = None
) -> dict[str, float]:
    """Mean negative log-likelihood per answer token (nats), and its perplexity."""
    device = next(model.parameters()).device
    encoded = sorted((_ids(tokenizer, e) for e in examples), key=lambda x: len(x[0]))
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
            for row, (ids, answer_start) in enumerate(batch):
                input_ids[row, : len(ids)] = torch.tensor(ids)
                labels[row, answer_start : len(ids)] = torch.tensor(ids[answer_start:])
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
