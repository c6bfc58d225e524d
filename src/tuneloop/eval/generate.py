"""Batched generation with left padding, greedy or sampled with a seed.

Prompts are sorted by length so each batch pads little; results come back in input order.
"""

from __future__ import annotations

import torch


@torch.inference_mode()
def generate_answers(model, tokenizer, prompts: list[list[dict]], *, max_new_tokens: int, batch_size: int,
                     autocast_dtype: torch.dtype | None = None, on_batch=None, sample: bool = False,
                     temperature: float = 1.0, top_p: float = 1.0, seed: int = 0) -> list[str]:
    encoded = [tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=True, return_dict=False)
               for p in prompts]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    answers: list[str] = [""] * len(encoded)
    pad = tokenizer.pad_token_id
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} if sample else {"do_sample": False}
    torch.manual_seed(seed)  # sampled answers repeat with the same seed
    try:
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            width = max(len(encoded[i]) for i in idx)
            input_ids = torch.full((len(idx), width), pad, dtype=torch.long)
            attention = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):  # left padding: every prompt ends where generation starts
                input_ids[row, width - len(encoded[i]):] = torch.tensor(encoded[i])
                attention[row, width - len(encoded[i]):] = 1
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                out = model.generate(input_ids=input_ids.to(device), attention_mask=attention.to(device),
                                     max_new_tokens=max_new_tokens, pad_token_id=pad, **sampling,
                                     eos_token_id=tokenizer.eos_token_id)
            for row, i in enumerate(idx):
                answers[i] = tokenizer.decode(out[row, width:], skip_special_tokens=True).strip()
            if on_batch:
                on_batch(len(idx))
    finally:
        model.train(was_training)
    return answers
