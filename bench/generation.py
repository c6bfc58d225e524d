"""Batched generation against one prompt at a time with `model.generate`, on CPU.

    .venv/bin/python bench/generation.py [--prompts 48] [--max-new-tokens 32]   # bench/results/generation.json

Same model (SmolLM2-135M-Instruct), same banking77 questions as chat prompts, greedy decoding,
same token budget. Sides, in one invocation:
  - plain: the loop a user writes first — fp32 weights, `model.generate` per prompt;
  - one-by-one: tuneloop's model settings (bf16 weights on AMX, SDPA) but one prompt at a time,
    which isolates what batching itself buys;
  - batched: tuneloop's `generate_answers` (length-sorted batches of 16, left padding).
Tokens/s counts answer tokens up to the end-of-sequence token, the same way for every side.
Agreement: share of prompts whose batched answer equals the one-by-one answer. In bf16 the batch
shape changes the rounding and greedy answers can diverge; the fp32 check (batched fp32 against
the plain fp32 loop) shows whether batching itself, left padding included, changes anything.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from environment import save

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def main() -> None:
    import torch

    from tuneloop.models import Precision, load_model, load_tokenizer, resolve_model
    from tuneloop.models.generate import generate_answers

    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=48)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    with open(SHARED / "banking77" / "train.csv", newline="", encoding="utf-8") as f:
        texts = [r["text"] for r in csv.DictReader(f)][: args.prompts]
    prompts = [[{"role": "user", "content": t}] for t in texts]
    folder = resolve_model("smollm2-135m-instruct")
    tokenizer = load_tokenizer(folder)

    def count(answers):
        return sum(len(tokenizer(a)["input_ids"]) for a in answers)

    def one_by_one(model, autocast):
        return [
            generate_answers(
                model, tokenizer, [p], max_new_tokens=args.max_new_tokens, batch_size=1, autocast_dtype=autocast
            )[0]
            for p in prompts
        ]

    sides = {}
    plain = load_model(folder, Precision.fp32)
    plain.set_attn_implementation("sdpa")
    fast = load_model(folder, Precision.bf16)
    fast.set_attn_implementation("sdpa")
    runs = {
        "plain": lambda: one_by_one(plain, None),
        "one_by_one": lambda: one_by_one(fast, torch.bfloat16),
        "batched": lambda: generate_answers(
            fast,
            tokenizer,
            prompts,
            max_new_tokens=args.max_new_tokens,
            batch_size=args.batch_size,
            autocast_dtype=torch.bfloat16,
        ),
        "batched_fp32": lambda: generate_answers(
            plain, tokenizer, prompts, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size
        ),
    }
    for model, autocast in ((plain, None), (fast, torch.bfloat16)):  # first-call costs are not throughput
        generate_answers(model, tokenizer, prompts[:2], max_new_tokens=4, batch_size=2, autocast_dtype=autocast)
    answers = {}
    for name, run in runs.items():
        t = time.perf_counter()
        answers[name] = run()
        seconds = time.perf_counter() - t
        sides[name] = {
            "seconds": round(seconds, 2),
            "answer_tokens": count(answers[name]),
            "tokens_per_second": round(count(answers[name]) / seconds, 1),
        }
        print(name, sides[name], flush=True)
    agreement = sum(a == b for a, b in zip(answers["batched"], answers["one_by_one"])) / len(prompts)
    agreement_fp32 = sum(a == b for a, b in zip(answers["batched_fp32"], answers["plain"])) / len(prompts)
    result = {
        "model": "smollm2-135m-instruct",
        "prompts": len(prompts),
        "max_new_tokens": args.max_new_tokens,
        "batch_size": args.batch_size,
        "sides": sides,
        "speedup_vs_plain": round(sides["batched"]["tokens_per_second"] / sides["plain"]["tokens_per_second"], 2),
        "speedup_vs_one_by_one": round(
            sides["batched"]["tokens_per_second"] / sides["one_by_one"]["tokens_per_second"], 2
        ),
        "target_speedup": 5.0,
        "agreement_with_one_by_one": agreement,
        "agreement_fp32": agreement_fp32,
    }
    print(
        f"batched: {result['speedup_vs_plain']}x plain, {result['speedup_vs_one_by_one']}x one-by-one; "
        f"agreement bf16 {agreement:.2f}, fp32 {agreement_fp32:.2f}"
    )
    print(save("generation", result))


if __name__ == "__main__":
    main()
