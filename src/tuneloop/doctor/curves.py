"""The curves of a run, from metrics.jsonl records: losses, gradient norms, the task metric of
continuous evaluation (eval_<key>) and its behaviour leakage (eval_leakage), with the standard
errors that say how noisy each point is."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from tuneloop.config import HEADLINE, LOWER_IS_BETTER

# eval_* keys that are not a task metric
NOT_A_METRIC = {"eval_loss", "eval_loss_se", "eval_token_accuracy", "eval_leakage"}


@dataclass(frozen=True)
class Curves:
    train: list[tuple[int, float]]  # (step, loss)
    val: list[tuple[int, float]]
    grad_norm: list[tuple[int, float]]
    non_finite: list[tuple[int, str]]  # (step, key) where a loss or grad norm was NaN or inf
    val_se: dict[int, float] = field(default_factory=dict)  # step -> standard error of eval_loss over examples
    metric_key: str | None = None  # e.g. "field_accuracy"
    metric: list[tuple[int, float]] = field(default_factory=list)  # (step, validation metric)
    metric_se: dict[int, float] = field(default_factory=dict)
    train_metric: list[tuple[int, float]] = field(default_factory=list)  # on a training sample
    leakage: list[tuple[int, float]] = field(default_factory=list)  # (step, share of generic prompts in task form)
    leakage_se: dict[int, float] = field(default_factory=dict)

    @classmethod
    def from_metrics(cls, records: list[dict]) -> Curves:
        train, val, grad, bad = [], [], [], []
        for r in records:
            step = r.get("step", 0)
            for key, out in (("train_loss", train), ("eval_loss", val), ("grad_norm", grad)):
                if key not in r:
                    continue
                value = _number(r[key])
                if value is None or not math.isfinite(value):
                    bad.append((step, key))
                else:
                    out.append((step, value))
        key = metric_key(records)

        def series(name):
            return [
                (r.get("step", 0), v)
                for r in records
                if name in r and (v := _number(r[name])) is not None and math.isfinite(v)
            ]

        return cls(
            train,
            val,
            grad,
            bad,
            val_se=dict(series("eval_loss_se")),
            metric_key=key,
            metric=series(f"eval_{key}") if key else [],
            metric_se=dict(series(f"eval_{key}_se")) if key else {},
            train_metric=series(f"train_{key}") if key else [],
            leakage=series("eval_leakage"),
            leakage_se=dict(series("eval_leakage_se")),
        )

    @property
    def higher_is_better(self) -> bool:
        return self.metric_key not in LOWER_IS_BETTER

    @property
    def sign(self) -> int:
        """+1 or -1, so that `sign * metric` is larger when better."""
        return 1 if self.higher_is_better else -1

    def best_metric(self) -> tuple[int, float] | None:
        if not self.metric:
            return None
        loss = dict(self.val)
        # A tie on the metric goes to the lower validation loss, as KeepBestByMetric decides it.
        return max(self.metric, key=lambda p: (self.sign * p[1], -loss.get(p[0], math.inf), -p[0]))


def metric_key(records: list[dict]) -> str | None:
    """The task metric that continuous evaluation logged (eval_<key>), headline metrics first."""
    keys = {k for r in records for k in r if k.startswith("eval_") and k not in NOT_A_METRIC and not k.endswith("_se")}
    for key in (*dict.fromkeys(HEADLINE.values()), "preference_accuracy"):  # DPO / ORPO runs' own
        if f"eval_{key}" in keys:
            return key
    return sorted(keys)[0][len("eval_") :] if keys else None


def _number(value) -> float | None:
    if isinstance(value, (int, float)):
        return float(value)
    try:  # metrics.jsonl stores NaN and inf as strings: JSON has no literal for them
        return float(value)
    except (TypeError, ValueError):
        return None


def smooth(points: list[tuple[int, float]], window: int = 3) -> list[float]:
    """Trailing mean: one noisy logging point should not decide a verdict."""
    values = [v for _, v in points]
    return [
        sum(values[max(0, i - window + 1) : i + 1]) / len(values[max(0, i - window + 1) : i + 1])
        for i in range(len(values))
    ]
