"""Choosing a base model before fine-tuning: on the user's own data, for up to five candidates,
the zero-shot answer loss, answers to the user's prompts side by side, latency and memory."""

from __future__ import annotations

import gc
import time

from tuneloop.data import Example
from tuneloop.eval.loss import answer_loss
from tuneloop.models import choose_precision, load_model, load_tokenizer, resolve_model
from tuneloop.models.generate import generate_answers
from tuneloop.models.precision import default_device

MAX_MODELS = 5


def _rss_bytes() -> int:
    import os

    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def compare_models(
    specs: list[str],
    examples: list[Example],
    prompts: list[list[dict]],
    *,
    max_new_tokens: int = 64,
    batch_size: int = 8,
    device: str | None = None,
    on_model=None,
) -> list[dict]:
    if not 1 <= len(specs) <= MAX_MODELS:
        raise ValueError(f"compare 1 to {MAX_MODELS} models, not {len(specs)}")
    device = device or default_device()
    precision = choose_precision("auto", device)
    autocast = precision.autocast_dtype
    out = []
    for spec in specs:
        if on_model:
            on_model(spec)
        gc.collect()
        before = _rss_bytes()
        t = time.perf_counter()
        folder = resolve_model(spec)
        model, tokenizer = load_model(folder, precision, device, inference=True), load_tokenizer(folder)
        load_seconds = time.perf_counter() - t
        weights = sum(p.numel() * p.element_size() for p in model.parameters())
        loss = answer_loss(model, tokenizer, examples, batch_size=batch_size, autocast_dtype=autocast)
        # Latency as a user of one request sees it: one prompt at a time, greedy.
        t = time.perf_counter()
        answers = [
            generate_answers(
                model, tokenizer, [p], max_new_tokens=max_new_tokens, batch_size=1, autocast_dtype=autocast
            )[0]
            for p in prompts
        ]
        seconds = time.perf_counter() - t
        tokens = sum(len(tokenizer(a)["input_ids"]) for a in answers)
        out.append(
            {
                "model": spec,
                "parameters": sum(p.numel() for p in model.parameters()),
                "weights_mb": round(weights / 2**20, 1),
                "rss_increase_mb": round((_rss_bytes() - before) / 2**20, 1),
                "load_seconds": round(load_seconds, 2),
                "zero_shot_loss": loss["loss"],
                "zero_shot_perplexity": loss["perplexity"],
                "seconds_per_prompt": seconds / max(1, len(prompts)),
                "tokens_per_second": tokens / seconds if seconds else 0.0,
                "answers": answers,
            }
        )
        del model
        gc.collect()
    return out
