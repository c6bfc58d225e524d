"""The run's own test: the base model and the fine-tuned one on the test split, answer loss and the
task metric, per example side by side (eval.json)."""

from __future__ import annotations

import math
import time
from contextlib import nullcontext

from tuneloop.config import EvalConfig
from tuneloop.data import Example
from tuneloop.eval.compare import compare_outputs
from tuneloop.eval.evaluate import (
    decoding,
    example_record,
    generate_and_score,
    generation_set,
    points_summary,
    side_record,
)
from tuneloop.eval.general import Suite, beyond_noise, cached_base_side, compare_general, measure_general
from tuneloop.eval.loss import answer_loss
from tuneloop.eval.scale_curve import measure_scale_curve
from tuneloop.models.precision import Precision


def evaluate_side(
    model,
    tokenizer,
    test: list[Example],
    config: EvalConfig,
    precision: Precision,
    status=lambda message: nullcontext(),
    train_on: str = "all_assistant",
    general: Suite | None = None,
    base_general: dict | None = None,
) -> dict:
    """Test loss and task metric of `model` as it is now, and the seconds each took (what `tuneloop
    plan` estimated, bench/plan_accuracy.py). `status(message)`: a context manager that shows what
    is running (the CLI's spinner). `general`: also measure the general-ability suite
    (eval/general.py); `base_general`: the base model's side of it, whose answers drift is read on."""
    with decoding(model), status(f"evaluating on {len(test)} test examples"):
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
        if general is not None:
            with status("general ability, leakage and drift"):
                reference = base_general["answers"] if base_general else None
                side = measure_general(
                    model, tokenizer, general, autocast_dtype=precision.autocast_dtype, reference_answers=reference
                )
                scored["general"] = side
                seconds["general"] = side["seconds"]
    task = scored["metrics"] if scored["outputs"] else {"perplexity": math.exp(min(loss, 50))}
    return {**scored, "metrics": {"loss": loss, **task}, "seconds": seconds}


def base_general_side(model, tokenizer, general: Suite, precision: Precision, model_folder) -> dict:
    """The base model's general side (`model` must be the base model now), from the cache when this
    base model, suite and precision were measured before."""

    def measure() -> dict:
        with decoding(model):
            return measure_general(model, tokenizer, general, autocast_dtype=precision.autocast_dtype)

    return cached_base_side(model_folder, precision.value, general, measure)


def evaluate_base_and_finetuned(
    model,
    tokenizer,
    test: list[Example],
    config: EvalConfig,
    precision: Precision,
    base: dict | None = None,
    status=lambda message: nullcontext(),
    train_on: str = "all_assistant",
    general: Suite | None = None,
    task_answers: list[str] = (),
    model_folder=None,
    validation: list[Example] | None = None,
) -> dict:
    """eval.json: test-split loss and task metric for the base model and the fine-tuned one, and with
    `general`, what the fine-tune cost the model (`task_answers`: the training answers, which say
    what the task's form is; `model_folder`: the base model's, the key of its cached general side).
    With `validation` (a LoRA run's validation split) and a cost beyond noise, the adapter's scale
    curve is measured too (eval/scale_curve.py): the doctor's adapter scale is then a measurement.

    With LoRA one copy of the weights serves both: PEFT's disable_adapter() runs the frozen
    base model. Full fine-tuning passes `base`, measured before training changed the weights
    (its general side included, as base["general"]).
    """
    if base is None:
        with model.disable_adapter():
            if general is not None:
                with status("base model: general ability, leakage and drift"):
                    base_general = base_general_side(model, tokenizer, general, precision, model_folder)
            base = evaluate_side(
                model,
                tokenizer,
                test,
                config,
                precision,
                status=lambda message: status(f"base model: {message}"),
                train_on=train_on,
            )
            if general is not None:
                base["general"] = base_general
    tuned = evaluate_side(
        model,
        tokenizer,
        test,
        config,
        precision,
        status=lambda message: status(f"fine-tuned model: {message}"),
        train_on=train_on,
        general=general,
        base_general=base.get("general"),
    )
    gen_set = generation_set(test, config)
    examples = [
        {**example_record(e), "base": side_record(base, i), "finetuned": side_record(tuned, i)}
        for i, e in enumerate(gen_set)
    ]
    balance = {}
    if general is not None:
        balance["general"] = compare_general(general, base["general"], tuned["general"], list(task_answers))
        cost = beyond_noise(balance["general"]["leakage"], +1) or beyond_noise(balance["general"]["score"], -1)
        if validation and cost and config.scale_curve:
            with decoding(model), status("adapter scale curve: the task and the general measures at scales 0 to 1"):
                balance["scale_curve"] = measure_scale_curve(
                    model,
                    tokenizer,
                    validation,
                    config,
                    precision,
                    general,
                    base["general"],
                    tuned["general"],
                    list(task_answers),
                    tuned["metric"],
                    scales=tuple(config.scale_curve),
                )
    return {
        "metric": tuned["metric"],
        "n_test": len(test),
        "n_generated": len(gen_set),
        "n_generated_rows": points_summary(gen_set)["rows"],
        "report_examples": config.report_examples,
        "base": {"metrics": base["metrics"], "seconds": base["seconds"]},
        "finetuned": {"metrics": tuned["metrics"], "seconds": tuned["seconds"]},
        "examples": examples,
        **balance,
        **(
            {
                "comparison": compare_outputs(tuned["metric"], [e.answer for e in gen_set], base, tuned),
                "confusion": {"base": base.get("confusion"), "finetuned": tuned.get("confusion")},
            }
            if gen_set
            else {}
        ),
    }
