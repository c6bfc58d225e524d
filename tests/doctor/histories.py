"""A labelled suite of training histories, in the run directory's metrics.jsonl format.

Each case is shaped like a picture in the practitioners' guides, or like a failure a
standalone curve diagnoser gets wrong: a spike that recovers, clipping that absorbed a
gradient spike, the jitter of a tiny validation set, losses that rebound, a validation loss
that rises while the task metric still improves. `label` is the verdict a careful reader gives;
`finding` is a note or shape the doctor must report. bench/doctor_peers.py runs tuneloop's
doctor and the peers on these same histories.

REAL adds histories of real training runs (histories/real/<label>-<name>.jsonl), labelled by
how the run was set up or by what the next run showed, never by a diagnoser's answer:
bench/real_histories.py makes the tiny-model ones; the SmolLM2 ones are runs of this project's
benchmarks (their origin is in histories/real/README.md).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Case:
    records: list[dict]
    label: str  # the verdict
    finding: str | None = None  # a finding kind or name that must be among the findings
    absent: tuple[str, ...] = ()  # kinds that must not be (contradictions)
    kwargs: dict = field(default_factory=dict)  # base_loss, tuned_loss, n_validation, ...


def history(
    train: list[float],
    val: list[float],
    every: int = 5,
    grad: list[float] | None = None,
    metric: list[float] | None = None,
    metric_key: str = "field_accuracy",
    metric_se: float = 0.02,
    val_se: float | None = None,
    train_metric: float | None = None,
) -> list[dict]:
    """train_loss logged every step; eval_loss (and the metric) every `every` steps; 10 steps an epoch."""
    out = []
    for i, loss in enumerate(train, start=1):
        out.append({"step": i, "epoch": i / 10, "train_loss": loss, **({"grad_norm": grad[i - 1]} if grad else {})})
        k = i // every - 1
        if i % every == 0 and k < len(val):
            record = {"step": i, "epoch": i / 10, "eval_loss": val[k]}
            if val_se is not None:
                record["eval_loss_se"] = val_se
            if metric is not None and k < len(metric) and metric[k] is not None:
                record[f"eval_{metric_key}"] = metric[k]
                record[f"eval_{metric_key}_se"] = metric_se
            if train_metric is not None and k == len(val) - 1:
                record[f"train_{metric_key}"] = train_metric
            out.append(record)
    return out


def falling(start: float, end: float, n: int, rate: float = 4.0) -> list[float]:
    return [end + (start - end) * math.exp(-rate * i / n) for i in range(n)]


def jitter(values: list[float], amount: float) -> list[float]:
    """Deterministic ±amount relative wiggle."""
    return [v * (1 + amount * (1 if i % 2 else -1)) for i, v in enumerate(values)]


HEALTHY_TRAIN = falling(2.0, 0.45, 40)
HEALTHY_VAL = [1.2, 0.8, 0.62, 0.56, 0.55, 0.55, 0.55, 0.55]

CASES: dict[str, Case] = {
    # The guides' four pictures and undertraining.
    "healthy": Case(history(HEALTHY_TRAIN, HEALTHY_VAL), "healthy"),
    "overfitting": Case(
        history(falling(2.0, 0.05, 40), [1.0, 0.7, 0.6, 0.62, 0.68, 0.75, 0.83, 0.9]), "overfitting", "loss_rising"
    ),
    "underfitting": Case(
        history([2.4 - 0.002 * i for i in range(40)], [2.35, 2.34, 2.34, 2.33, 2.33, 2.32, 2.32, 2.31]),
        "underfitting",
        "flat",
    ),
    "diverging": Case(
        history([2.0, 1.8, 1.7, 1.9, 2.4, 3.1, 4.5, 6.0, 8.0, 9.5] + [10.0] * 10, [1.8, 2.6, 7.0, 10.1]),
        "diverging",
        "climb",
        absent=("underfitting", "healthy"),
    ),
    "undertrained": Case(history(falling(2.0, 0.2, 40)[:20], [1.6, 1.2, 0.95, 0.75]), "undertrained", "steep"),
    "nan": Case(
        history([2.0, 1.5, 1.2], [1.4]) + [{"step": 4, "epoch": 0.4, "train_loss": "nan"}], "diverging", "non_finite"
    ),
    # What the standalone diagnosers get wrong.
    "spike_recovers": Case(
        history(HEALTHY_TRAIN[:20] + [3.5] + HEALTHY_TRAIN[21:], HEALTHY_VAL),
        "healthy",
        "spike_recovered",
        absent=("diverging",),
    ),
    "clipping_absorbed_grad_spike": Case(
        history(HEALTHY_TRAIN, HEALTHY_VAL, grad=[1.0] * 25 + [40.0] + [1.0] * 14),
        "healthy",
        "grad_spike_absorbed",
        absent=("diverging",),
    ),
    "tiny_validation_jitter": Case(
        history(HEALTHY_TRAIN, jitter([1.0, 0.8, 0.7, 0.66, 0.65, 0.65, 0.65, 0.65], 0.04), val_se=0.05),
        "healthy",
        absent=("overfitting",),
        kwargs={"n_validation": 12},
    ),
    "tiny_validation_jitter_no_se": Case(
        history(HEALTHY_TRAIN, jitter([1.0, 0.8, 0.7, 0.66, 0.65, 0.65, 0.65, 0.65], 0.04)),
        "healthy",
        absent=("overfitting",),
        kwargs={"n_validation": 12},
    ),
    "both_rebound": Case(
        history(
            falling(2.0, 0.4, 25) + [0.5, 0.7, 0.9, 1.1, 1.3, 1.5, 1.6, 1.7, 1.8, 1.9, 2.0, 2.0, 2.0, 2.0, 2.0],
            [1.1, 0.7, 0.55, 0.5, 0.5, 0.9, 1.4, 1.8],
        ),
        "diverging",
        "rebound",
        absent=("healthy",),
    ),
    "climb_not_underfitting": Case(
        history([1.88, 2.0, 2.4, 3.0, 3.8, 4.6, 5.5, 6.4, 7.3, 8.0, 8.5, 8.85] * 1 + [8.85] * 8, [2.1, 4.0, 7.5, 8.9]),
        "diverging",
        "climb",
        absent=("underfitting",),
    ),
    # The task metric next to the loss.
    "metric_still_improving": Case(
        history(HEALTHY_TRAIN, HEALTHY_VAL, metric=[0.4, 0.55, 0.63, 0.68, 0.71, 0.74, 0.76, 0.79]),
        "healthy",
        "still_improving",
    ),
    "loss_rises_metric_improves": Case(
        history(
            falling(2.0, 0.05, 40),
            [1.0, 0.7, 0.6, 0.62, 0.68, 0.75, 0.83, 0.9],
            metric=[0.5, 0.6, 0.66, 0.7, 0.73, 0.75, 0.78, 0.8],
        ),
        "healthy",
        "loss_rising_metric_improving",
        absent=("overfitting",),
    ),
    "task_overfitting": Case(
        history(
            falling(2.0, 0.05, 40),
            [1.0, 0.8, 0.7, 0.66, 0.66, 0.67, 0.67, 0.68],
            metric=[0.5, 0.65, 0.72, 0.74, 0.7, 0.64, 0.6, 0.58],
        ),
        "overfitting",
        "task_overfitting",
    ),
    "capacity": Case(
        history(
            falling(2.0, 0.9, 40),
            [1.3, 1.1, 1.0, 0.98, 0.97, 0.97, 0.97, 0.97],
            metric=[0.3, 0.45, 0.5, 0.52, 0.52, 0.53, 0.52, 0.52],
            train_metric=0.55,
        ),
        "underfitting",
        "capacity",
    ),
    "no_gain_over_base": Case(
        history(HEALTHY_TRAIN, HEALTHY_VAL, metric=[0.3, 0.3, 0.31, 0.3, 0.31, 0.3, 0.31, 0.3]),
        "underfitting",
        "no_gain_over_base",
        kwargs={"base_metric": 0.31, "tuned_metric": 0.3},
    ),
}


REAL_DIR = Path(__file__).resolve().parent / "histories" / "real"
REAL: dict[str, Case] = {
    f"real:{path.stem}": Case(
        [json.loads(line) for line in path.read_text().splitlines() if line.strip()], path.stem.split("-", 1)[0]
    )
    for path in sorted(REAL_DIR.glob("*.jsonl"))
}
