"""The doctor for reinforcement runs (GRPO): reward curves fail in their own ways.

    diverging      a NaN loss or reward
    underfitting   no_signal: most groups' answers all scored the same (train_flat_groups), so the
                   advantages are zero and nothing is learned: too few generations, too low a
                   temperature, or a start (the base model) that never writes a rewarded answer
    overfitting    reward_hacking: the training reward rose while the held-out task metric (greedy,
                   validation rows) stayed within its noise or fell, or the answers' length ran away
                   to the limit; collapse: the policy's entropy fell near zero (it writes one answer);
                   kl_runaway: the KL to the reference grew past KL_LIMIT
    healthy        the held-out metric rose with the reward

Read from metrics.jsonl: train_reward, train_reward_std, train_flat_groups, train_entropy,
train_kl, train_completion_length, train_completion_clipped (train/grpo.py's names) and the task
metric of continuous evaluation. Thresholds are named so a reader can argue with them.
"""

from __future__ import annotations

import math

from tuneloop.doctor.curves import Curves
from tuneloop.doctor.diagnose import Diagnosis, Finding, curve_summary

FLAT_GROUPS = 0.8  # share of groups with one score among their answers, over the run's second half: no signal
ENTROPY_COLLAPSE = 0.1  # the policy's entropy at the end below this share of its start
KL_LIMIT = 1.0  # nats per token: far past the small drift a useful RL run makes
CLIPPED = 0.5  # share of answers cut at max_completion_length at the end: the length ran away
NOISE_Z = 2.0


def is_reinforcement(records: list[dict]) -> bool:
    return any("train_reward" in r for r in records)


def series(records: list[dict], name: str) -> list[tuple[int, float]]:
    return [(r["step"], _float(r[name])) for r in records if name in r]


def _float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _halves(points: list[tuple[int, float]]) -> tuple[float, float] | None:
    """Mean of the first third and of the last third of a noisy per-step curve."""
    if len(points) < 3:
        return None
    third = max(1, len(points) // 3)
    first, last = [v for _, v in points[:third]], [v for _, v in points[-third:]]
    return sum(first) / len(first), sum(last) / len(last)


def diagnose_reinforcement(records: list[dict], info: dict | None = None) -> Diagnosis:
    c = Curves.from_metrics(records)
    findings = _diverging(records) or (_no_signal(records) + _hacking(records, c) + _collapse(records))
    verdict = max(findings, key=lambda f: f.confidence).kind if findings else "healthy"
    reward = series(records, "train_reward")
    if not findings:
        gained = _metric_gain(c)
        findings = [
            Finding(
                "healthy",
                {"reward": reward[-1:], "metric": c.metric[-1:] if c.metric else None},
                0.7,
                "the held-out task metric rose with the reward"
                if gained
                else "no failure seen in the reward curves (the held-out metric was not measured, or stayed flat)",
            )
        ]
    summary = {
        **curve_summary(c, records),
        "objective": "reinforcement",
        "first_reward": reward[0][1] if reward else None,
        "last_reward": reward[-1][1] if reward else None,
        "flat_groups": _late_mean(series(records, "train_flat_groups")),
        "completion_length": _late_mean(series(records, "train_completion_length")),
    }
    if info and info.get("timings", {}).get("train"):
        summary["train_seconds"] = info["timings"]["train"]
    return Diagnosis(verdict, findings, summary=summary)


def _late_mean(points: list[tuple[int, float]]) -> float | None:
    late = [v for _, v in points[len(points) // 2 :] if math.isfinite(v)]
    return round(sum(late) / len(late), 4) if late else None


def _metric_gain(c: Curves) -> bool:
    if len(c.metric) < 2:
        return False
    (s0, first), (s1, last) = c.metric[0], c.metric[-1]
    noise = NOISE_Z * math.hypot(c.metric_se.get(s0, 0.0), c.metric_se.get(s1, 0.0))
    return c.sign * (last - first) > noise


def _diverging(records: list[dict]) -> list[Finding]:
    for name in ("train_loss", "train_reward"):
        bad = [s for s, v in series(records, name) if not math.isfinite(v)]
        if bad:
            return [Finding("diverging", {"non_finite_at": bad[0], "curve": name}, 0.95, f"{name} became NaN", "nan")]
    return []


def _no_signal(records: list[dict]) -> list[Finding]:
    flat = _late_mean(series(records, "train_flat_groups"))
    if flat is None or flat < FLAT_GROUPS:
        return []
    reward = _late_mean(series(records, "train_reward"))
    why = (
        "every answer scored 0: the policy never writes a rewarded answer; start from a supervised run "
        "(train.init_from) that writes the task's form"
        if reward is not None and reward < 0.05
        else "every answer scored the full reward: the task is already solved for these prompts"
        if reward is not None and reward > 0.95
        else "the answers of a group are too alike to be told apart"
    )
    return [
        Finding(
            "underfitting",
            {"flat_groups": flat, "reward": reward},
            0.85,
            f"{flat:.0%} of the groups gave all their answers the same score in the second half of the run, "
            f"so their advantages are zero and nothing is learned: {why}",
            "no_signal",
        )
    ]


def _hacking(records: list[dict], c: Curves) -> list[Finding]:
    out = []
    reward = _halves(series(records, "train_reward"))
    rose = reward is not None and reward[1] - reward[0] > 0.05
    if rose and len(c.metric) >= 2 and not _metric_gain(c):
        (s0, first), (s1, last) = c.metric[0], c.metric[-1]
        out.append(
            Finding(
                "overfitting",
                {"reward": reward, "metric": [(s0, first), (s1, last)], "metric_key": c.metric_key},
                0.8,
                f"the training reward rose ({reward[0]:.3f} → {reward[1]:.3f}) while the held-out "
                f"{c.metric_key} did not ({first:.3f} → {last:.3f}, within noise or down): the policy is "
                "learning what the graders reward, not the task",
                "reward_hacking",
            )
        )
    clipped = _late_mean(series(records, "train_completion_clipped"))
    length = _halves(series(records, "train_completion_length"))
    if clipped is not None and clipped > CLIPPED and length is not None and length[1] > 1.5 * length[0]:
        out.append(
            Finding(
                "overfitting",
                {"completion_length": length, "clipped": clipped},
                0.75,
                f"the answers grew from {length[0]:.0f} to {length[1]:.0f} tokens and {clipped:.0%} end at "
                "the length limit: the length is running away",
                "length_runaway",
            )
        )
    kl = series(records, "train_kl")
    if kl and math.isfinite(kl[-1][1]) and kl[-1][1] > KL_LIMIT:
        out.append(
            Finding(
                "overfitting",
                {"kl": kl[-1]},
                0.75,
                f"the KL to the reference reached {kl[-1][1]:.2f} nats per token: the policy has moved far "
                "from where it started",
                "kl_runaway",
            )
        )
    return out


def _collapse(records: list[dict]) -> list[Finding]:
    entropy = _halves(series(records, "train_entropy"))
    if entropy is None or entropy[0] <= 0 or entropy[1] > ENTROPY_COLLAPSE * entropy[0]:
        return []
    return [
        Finding(
            "overfitting",
            {"entropy": entropy},
            0.8,
            f"the policy's entropy fell from {entropy[0]:.3f} to {entropy[1]:.3f}: it samples one answer, so "
            "groups stop differing and learning stalls",
            "collapse",
        )
    ]
