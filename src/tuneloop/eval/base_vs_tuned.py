"""The run's own test: the base model and the fine-tuned one on the test split, answer loss and the
task metric, per example side by side (eval.json)."""

from __future__ import annotations

import math
import time
from contextlib import nullcontext

import torch

from tuneloop.config import EvalConfig
from tuneloop.data import Example
from tuneloop.eval.compare import compare_outputs
from tuneloop.eval.evaluate import example_record, generate_and_score, generation_set, points_summary, side_record
from tuneloop.eval.loss import answer_loss
from tuneloop.models.precision import Precision


def evaluate_side(
    model,
    tokenizer,
    test: list[Example],
    config: EvalConfig,
    precision: Precision,
    status=lambda message: nullcontext(),
    train_on: str = "all_assistant",
) -> dict:
    """Test loss and task metric of `model` as it is now, and the seconds each took (what `tuneloop
    plan` estimated, bench/plan_accuracy.py). `status(message)`: a context manager that shows what
    is running (the CLI's spinner)."""
    # For cached decoding on CPU, SDPA measured ~30% faster than the eager attention used for
    # training (24 prompts x 48 tokens: 7.1 s vs 9.8 s); training's choice is restored after.
    training_attention = model.config._attn_implementation
    model.set_attn_implementation("sdpa")
    try:
        # Compiled layers (train.compile) run eagerly here: cached decoding would recompile them.
        with status(f"evaluating on {len(test)} test examples"), torch.compiler.set_stance("force_eager"):
            t = time.perf_counter()
            # The same loss `tuneloop eval` reports: one mean over all answer tokens of the split.
            loss = answer_loss(
                model,
                tokenizer,
                test,
                batch_size=config.batch_size,
                autocast_dtype=precision.autocast_dtype,
                train_on=train_on,
            )["loss"]
            loss_seconds, t = time.perf_counter() - t, time.perf_counter()
            scored = generate_and_score(model, tokenizer, test, config, precision)
            seconds = {"loss": round(loss_seconds, 2), "generate": round(time.perf_counter() - t, 2)}
    finally:
        model.set_attn_implementation(training_attention)
    task = scored["metrics"] if scored["outputs"] else {"perplexity": math.exp(min(loss, 50))}
    return {**scored, "metrics": {"loss": loss, **task}, "seconds": seconds}


def evaluate_base_and_finetuned(
    model,
    tokenizer,
    test: list[Example],
    config: EvalConfig,
    precision: Precision,
    base: dict | None = None,
    status=lambda message: nullcontext(),
    train_on: str = "all_assistant",
) -> dict:
    """eval.json: test-split loss and task metric for the base model and the fine-tuned one.

    With LoRA one copy of the weights serves both: PEFT's disable_adapter() runs the frozen
    base model. Full fine-tuning passes `base`, measured before training changed the weights.
    """
    if base is None:
        with model.disable_adapter():
            base = evaluate_side(
                model,
                tokenizer,
                test,
                config,
                precision,
                status=lambda message: status(f"base model: {message}"),
                train_on=train_on,
            )
    tuned = evaluate_side(
        model,
        tokenizer,
        test,
        config,
        precision,
        status=lambda message: status(f"fine-tuned model: {message}"),
        train_on=train_on,
    )
    gen_set = generation_set(test, config)
    examples = [
        {**example_record(e), "base": side_record(base, i), "finetuned": side_record(tuned, i)}
        for i, e in enumerate(gen_set)
    ]
    return {
        "metric": tuned["metric"],
        "n_test": len(test),
        "n_generated": len(gen_set),
        "n_generated_rows": points_summary(gen_set)["rows"],
        "report_examples": config.report_examples,
        "base": {"metrics": base["metrics"], "seconds": base["seconds"]},
        "finetuned": {"metrics": tuned["metrics"], "seconds": tuned["seconds"]},
        "examples": examples,
        **(
            {
                "comparison": compare_outputs(tuned["metric"], [e.answer for e in gen_set], base, tuned),
                "confusion": {"base": base.get("confusion"), "finetuned": tuned.get("confusion")},
            }
            if gen_set
            else {}
        ),
    }
