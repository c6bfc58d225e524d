"""The adapter's strength, measured: the validation task metric and what the fine-tune costs the
model at several LoRA scales, without retraining, and the scale that keeps both.

The guides' first cure for an over-specialised adapter is to serve it weaker (alpha x 0.5). Here
the scale is read off the user's own run: at each scale (PEFT's `rescale_adapter_scale` multiplies
every LoRA layer's scaling in place, so nothing is copied) the validation rows are answered and
scored, and the general suite is measured as eval/general.py does at scale 1. Scale 0 is the base
model. The recommended scale keeps at least `keep` (95%) of the validation task gain with the least
general loss: the leakage rate's rise plus the general score's drop, both in points.
"""

from __future__ import annotations

import math
import time

from peft.helpers import rescale_adapter_scale

from tuneloop.config import EvalConfig, headline
from tuneloop.data import Example
from tuneloop.eval.evaluate import generate_and_score
from tuneloop.eval.general import Suite, compare_general, measure_general
from tuneloop.models.precision import Precision

SCALES = (0.25, 0.5, 0.75)  # besides 0 (the base model) and 1 (the adapter as trained): eval.scale_curve's default
KEEP = 0.95
MAX_ROWS = 64  # validation rows answered at each scale: the curve's main cost


def general_loss(general: dict) -> float:
    """Points the model lost: the rise in answers that leak the task's form, plus the general score's drop."""
    leak = max(0.0, general["leakage"]["difference"] or 0.0) * 100
    score = general.get("score") or {}
    return round(leak + max(0.0, -(score.get("difference") or 0.0)), 2)


def measure_scale_curve(
    model,
    tokenizer,
    validation: list[Example],
    config: EvalConfig,
    precision: Precision,
    suite: Suite,
    base_general: dict,
    tuned_general: dict,
    task_answers: list[str],
    metric: str,
    *,
    scales: tuple[float, ...] = SCALES,
    keep: float = KEEP,
) -> dict:
    """eval.json's `scale_curve`: per scale the validation task metric (`metric`, the test's) and the
    general measures, and the recommended scale. `base_general`/`tuned_general`: the two sides
    already measured (scales 0 and 1)."""
    t = time.perf_counter()
    rows = validation[:MAX_ROWS]
    cfg = config.model_copy(update={"max_examples": None})
    points = []
    key = headline(metric)
    for scale in (0.0, *sorted(scales), 1.0):
        if scale == 0.0:
            with model.disable_adapter():
                scored = generate_and_score(model, tokenizer, rows, cfg, precision, metric)
            side = base_general
        else:
            with rescale_adapter_scale(model, scale):
                scored = generate_and_score(model, tokenizer, rows, cfg, precision, metric)
                side = (
                    tuned_general if scale == 1.0 else _general_side(model, tokenizer, suite, precision, base_general)
                )
        general = compare_general(suite, base_general, side, task_answers)
        points.append(
            {
                "scale": scale,
                "task": scored["metrics"].get(key),
                "leakage": general["leakage"]["finetuned"],
                "score": (general.get("score") or {}).get("finetuned"),
                "drift": general["drift"]["difference"],
                "general_loss": general_loss(general),
            }
        )
    chosen = choose_scale(points, keep)
    return {
        "metric": key,
        "rows": len(rows),
        "keep": keep,
        "points": points,
        "recommended": chosen,
        "seconds": round(time.perf_counter() - t, 1),
    }


def _general_side(model, tokenizer, suite, precision, base_general) -> dict:
    return measure_general(
        model, tokenizer, suite, autocast_dtype=precision.autocast_dtype, reference_answers=base_general["answers"]
    )


def choose_scale(points: list[dict], keep: float = KEEP) -> dict | None:
    """The scale that keeps `keep` of the task gain (scale 1 over scale 0) with the least general loss;
    on a tie, the stronger adapter. None when the adapter gained nothing on the validation task."""
    by_scale = {p["scale"]: p for p in points}
    base, full = by_scale[0.0]["task"], by_scale[1.0]["task"]
    if base is None or full is None or full <= base:
        return None
    floor = base + keep * (full - base)
    kept = [p for p in points if p["scale"] > 0 and p["task"] is not None and p["task"] >= floor]
    best = min(kept, key=lambda p: (p["general_loss"], -p["scale"]))
    return {
        "scale": best["scale"],
        "task": best["task"],
        "task_at_1": full,
        "gain_kept": round((best["task"] - base) / (full - base), 3),
        "general_loss": best["general_loss"],
        "general_loss_at_1": by_scale[1.0]["general_loss"],
    }


def check_scale(scale: float, lora: bool) -> None:
    """A clear error for an adapter strength that cannot be applied: not a finite number >= 0, or any
    strength but 1 on a run that fine-tuned the whole model (`tuneloop export` and `eval --scale`)."""
    if not math.isfinite(scale) or scale < 0:
        raise ValueError(f"--scale {scale}: the adapter's strength must be a finite number >= 0")
    if not lora and scale != 1.0:
        raise ValueError("--scale applies to LoRA adapters; this run fine-tuned the whole model")


def recommended_scale(run) -> float:
    """`--scale auto`: the scale eval.json's scale curve recommends for a run (a RunDir), or 1.0 when
    the run lost nothing measurable. A clear error when it cannot say."""
    evaluation = run.evaluation()
    if evaluation is None:
        raise ValueError(f"{run.path}: --scale auto needs a finished run's eval.json (tuneloop run evaluates)")
    if "general" not in evaluation:
        raise ValueError(
            f"{run.path}: --scale auto needs the general check (eval.general), which this run did not measure"
        )
    curve = evaluation.get("scale_curve")
    if curve is None:
        return 1.0  # nothing lost beyond noise: the curve was not needed
    if curve["recommended"] is None:
        raise ValueError(
            f"{run.path}: --scale auto: the adapter gained nothing on the validation {curve['metric']}, so no "
            "scale keeps a gain; give a number"
        )
    return float(curve["recommended"]["scale"])
