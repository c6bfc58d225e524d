"""A/B on one test set: every metric for both sides, the difference with a paired bootstrap
confidence interval, McNemar's exact test where answers are right or wrong, win/tie/loss per
example, and the examples where B got worse, worst first.

The bootstrap resamples examples (the same indices for both sides: the comparison is paired)
and recomputes each metric on the resample, corpus-level ones (BLEU, macro F1) included.
"""

from __future__ import annotations

import numpy as np

from tuneloop.eval.metrics import aggregate

TIE = 1e-9


def win_rate(outcomes: list[float], confidence: float = 0.95, resamples: int = 2000, seed: int = 0) -> dict:
    """The mean of per-pair outcomes (1 a win, 0.5 a tie, 0 a loss) with a bootstrap percentile
    interval: how sure a win rate from a few dozen judged or rated pairs is."""
    values = np.asarray(outcomes, dtype=float)
    if not len(values):
        return {"rate": None, "ci": None, "n": 0}
    means = np.random.default_rng(seed).choice(values, (resamples, len(values))).mean(axis=1)
    tail = (1 - confidence) / 2
    return {
        "rate": float(values.mean()),
        "ci": [float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))],
        "n": len(values),
    }


def compare_outputs(
    metric: str,
    references: list[str],
    a: dict,
    b: dict,
    *,
    resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict:
    """`a`, `b`: {"outputs": [...], "per_example": [...]} on the same references, in the same order."""
    n = len(references)
    if not (len(a["outputs"]) == len(b["outputs"]) == n):
        raise ValueError(f"both sides must answer the same {n} examples")
    metrics_a = aggregate(metric, a["per_example"], a["outputs"], references)
    metrics_b = aggregate(metric, b["per_example"], b["outputs"], references)
    keys = [k for k in metrics_b if "/" not in k and k in metrics_a]  # per-class/field breakdowns stay descriptive
    rng = np.random.default_rng(seed)
    diffs = {k: [] for k in keys}
    for _ in range(resamples if n > 1 else 0):
        idx = rng.integers(0, n, n)
        ma, mb = (
            aggregate(
                metric, [s["per_example"][i] for i in idx], [s["outputs"][i] for i in idx], [references[i] for i in idx]
            )
            for s in (a, b)
        )
        for k in keys:
            diffs[k].append(mb[k] - ma[k])
    tail = (1 - confidence) / 2
    rows = {}
    for k in keys:
        d = np.array(diffs[k])
        rows[k] = {
            "a": metrics_a[k],
            "b": metrics_b[k],
            "difference": metrics_b[k] - metrics_a[k],
            "ci": [float(np.quantile(d, tail)), float(np.quantile(d, 1 - tail))] if len(d) else None,
            # two-sided: how often the resampled difference lands on the other side of zero
            "p_value": float(min(1.0, 2 * min((d <= 0).mean(), (d >= 0).mean()))) if len(d) else None,
        }
    scores_a = [e.get("score") for e in a["per_example"]]
    scores_b = [e.get("score") for e in b["per_example"]]
    per_example = None not in scores_a + scores_b and n > 0
    out = {"metric": metric, "n": n, "resamples": resamples, "confidence": confidence, "metrics": rows}
    if per_example:
        delta = [sb - sa for sa, sb in zip(scores_a, scores_b)]
        out["wins"] = sum(d > TIE for d in delta)
        out["ties"] = sum(abs(d) <= TIE for d in delta)
        out["losses"] = sum(d < -TIE for d in delta)
        out["regressions"] = [i for i in sorted(range(n), key=lambda i: delta[i]) if delta[i] < -TIE]
        out["improvements"] = [i for i in sorted(range(n), key=lambda i: -delta[i]) if delta[i] > TIE]
    if all("correct" in e for e in a["per_example"] + b["per_example"]) and n:
        out["mcnemar"] = mcnemar(a["per_example"], b["per_example"])
    return out


def mcnemar(a: list[dict], b: list[dict]) -> dict:
    """Exact McNemar: of the examples exactly one side gets right, is the split 50/50?"""
    from scipy.stats import binomtest

    only_a = sum(x["correct"] and not y["correct"] for x, y in zip(a, b))
    only_b = sum(y["correct"] and not x["correct"] for x, y in zip(a, b))
    p = binomtest(only_b, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    return {"only_a_correct": only_a, "only_b_correct": only_b, "p_value": float(p)}
