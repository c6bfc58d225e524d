"""The doctor for preference runs (DPO, ORPO): their curves fail in their own ways.

    diverging      a NaN, or the preference loss ending well above where it started (ln 2 for DPO)
    overfitting    chosen_collapse: the reward margin grows while the chosen answers' log-probability
                   falls: the model separates the pairs by making both answers unlikely, unlearning
                   the good answers it had (the known DPO failure; more likely at low beta)
    underfitting   at_chance: validation preference accuracy within noise of 0.5 at the end
    healthy        none of the above

Read from metrics.jsonl's eval_preference_accuracy, eval_reward_margin and eval_logp_chosen
(train_* where no evaluation logged them). Thresholds are named so a reader can argue with them.
"""

from __future__ import annotations

import math

from tuneloop.doctor.curves import Curves
from tuneloop.doctor.diagnose import Diagnosis, Finding, curve_summary

CLIMB = 1.10  # final loss this many times the first: going the wrong way
# The chosen log-probability falling by this share of its start (DPO logs it summed over the
# answer's tokens, ORPO averaged per token: a share reads both).
COLLAPSE = 0.10
CHANCE_Z = 2.0  # accuracy within this many standard errors of 0.5: no signal learned


def is_preference(records: list[dict]) -> bool:
    return any("train_reward_margin" in r or "eval_reward_margin" in r for r in records)


def _series(records: list[dict], name: str) -> list[tuple[int, float]]:
    """(step, value) of eval_<name>, else train_<name>; non-numbers (a logged "nan") become NaN."""
    for prefix in ("eval_", "train_"):
        points = [(r["step"], _float(r[prefix + name])) for r in records if prefix + name in r]
        if points:
            return points
    return []


def _float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def diagnose_preference(records: list[dict], n_validation: int | None = None, info: dict | None = None) -> Diagnosis:
    findings = _diverging(records) or _collapse(records) or _at_chance(records, n_validation)
    verdict = findings[0].kind if findings else "healthy"
    accuracy = _series(records, "preference_accuracy")
    margin = _series(records, "reward_margin")
    if not findings:
        findings = [
            Finding(
                "healthy",
                {"preference_accuracy": accuracy[-1:], "reward_margin": margin[-1:]},
                0.7,
                "the preference accuracy is above chance and the chosen answers keep their likelihood",
            )
        ]
    summary = {
        **curve_summary(Curves.from_metrics(records), records),
        "objective": "preference",
        "final_preference_accuracy": accuracy[-1][1] if accuracy else None,
        "final_reward_margin": margin[-1][1] if margin else None,
    }
    if info and info.get("preference_accuracy"):
        summary["validation_preference_accuracy"] = info["preference_accuracy"]
    if info and info.get("timings", {}).get("train"):
        summary["train_seconds"] = info["timings"]["train"]
    return Diagnosis(verdict, findings, summary=summary)


def _diverging(records: list[dict]) -> list[Finding]:
    losses = [(r["step"], _float(r["train_loss"])) for r in records if "train_loss" in r]
    bad = [(s, v) for s, v in losses if not math.isfinite(v)]
    if bad:
        return [Finding("diverging", {"non_finite_at": bad[0][0]}, 0.95, "the loss became NaN or infinite", "nan")]
    curve = _series(records, "loss")  # the validation loss, else the training loss
    if len(curve) >= 2 and curve[-1][1] > CLIMB * curve[0][1]:
        return [
            Finding(
                "diverging",
                {"first": curve[0], "last": curve[-1]},
                0.8,
                f"the preference loss rose from {curve[0][1]:.3f} to {curve[-1][1]:.3f}: steps too large",
                "loss_climbing",
            )
        ]
    return []


def _collapse(records: list[dict]) -> list[Finding]:
    chosen, margin = _series(records, "logp_chosen"), _series(records, "reward_margin")
    if len(chosen) < 2 or len(margin) < 2:
        return []
    (s0, first), (s1, last) = chosen[0], chosen[-1]
    drop = first - last
    if drop < COLLAPSE * abs(first) or margin[-1][1] <= margin[0][1]:
        return []
    return [
        Finding(
            "overfitting",
            {"logp_chosen": [(s0, first), (s1, last)], "reward_margin": [margin[0], margin[-1]]},
            min(0.95, 0.6 + drop / (4 * abs(first))),
            f"the reward margin grew ({margin[0][1]:.2f} → {margin[-1][1]:.2f}) while the chosen answers' "
            f"log-probability fell ({first:.1f} → {last:.1f}): the model is unlearning good answers, "
            "separating the pairs by making both unlikely",
            "chosen_collapse",
        )
    ]


def _at_chance(records: list[dict], n_validation: int | None) -> list[Finding]:
    accuracy = _series(records, "preference_accuracy")
    if not accuracy:
        return []
    step, last = accuracy[-1]
    n = n_validation or 0
    se = math.sqrt(0.25 / n) if n else 0.1
    if last > 0.5 + CHANCE_Z * se:
        return []
    return [
        Finding(
            "underfitting",
            {"preference_accuracy": (step, last), "chance": 0.5, "standard_error": round(se, 3)},
            0.75,
            f"the validation preference accuracy ended at {last:.2f}, within noise of chance "
            f"(0.5 ± {CHANCE_Z * se:.2f}): the run has not learned which answer is preferred",
            "at_chance",
        )
    ]
