"""The training and validation curves of a run, from metrics.jsonl records."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Curves:
    train: list[tuple[int, float]]  # (step, loss)
    val: list[tuple[int, float]]
    grad_norm: list[tuple[int, float]]
    non_finite: list[tuple[int, str]]  # (step, key) where a loss or grad norm was NaN or inf

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
        return cls(train, val, grad, bad)


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
    return [sum(values[max(0, i - window + 1):i + 1]) / len(values[max(0, i - window + 1):i + 1])
            for i in range(len(values))]
