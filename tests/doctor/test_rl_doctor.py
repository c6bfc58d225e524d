"""The doctor on reinforcement (GRPO) runs: synthetic metrics.jsonl histories of each failure, and the
recommendations each verdict makes."""

from __future__ import annotations

import pytest

from tuneloop.doctor import diagnose_metrics, recommend


def grpo_history(
    reward: list[float],
    metric: list[float] | None = None,
    flat: float = 0.2,
    entropy: list[float] | None = None,
    length: list[float] | None = None,
    clipped: float = 0.0,
    kl: float | None = None,
) -> list[dict]:
    """One training record per step (TRL's GRPO metrics under tuneloop's names), the held-out task
    metric every 4 steps."""
    records = []
    for i, r in enumerate(reward):
        step = i + 1
        record = {
            "step": step,
            "epoch": step / len(reward),
            "train_loss": 0.01,
            "train_reward": r,
            "train_reward_std": 0.2,
            "train_flat_groups": flat,
            "train_entropy": (entropy or [0.8] * len(reward))[i],
            "train_completion_length": (length or [40] * len(reward))[i],
            "train_completion_clipped": clipped,
        }
        if kl is not None:
            record["train_kl"] = kl * step / len(reward)
        records.append(record)
        if metric and step % 4 == 0 and step // 4 - 1 < len(metric):
            value = metric[step // 4 - 1]
            records.append({"step": step, "eval_field_accuracy": value, "eval_field_accuracy_se": 0.02})
    return records


RISING = [0.3 + 0.02 * i for i in range(16)]
CASES = {
    "healthy": (grpo_history(RISING, metric=[0.70, 0.74, 0.78, 0.82]), "healthy", None),
    "no signal from a start that is never rewarded": (
        grpo_history([0.0] * 16, metric=[0.0] * 4, flat=1.0),
        "underfitting",
        "no_signal",
    ),
    "reward hacking": (grpo_history(RISING, metric=[0.75, 0.74, 0.76, 0.73]), "overfitting", "reward_hacking"),
    "length runaway": (
        grpo_history([0.5] * 16, length=[30 + 10 * i for i in range(16)], clipped=0.8),
        "overfitting",
        "length_runaway",
    ),
    "entropy collapse": (
        grpo_history([0.5] * 16, entropy=[0.8 * 0.7**i for i in range(16)]),
        "overfitting",
        "collapse",
    ),
    "kl runaway": (grpo_history([0.5] * 16, kl=3.0), "overfitting", "kl_runaway"),
    "nan": (grpo_history([0.5, float("nan")] + [0.5] * 14), "diverging", "nan"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_rl_verdicts(name):
    records, verdict, shape = CASES[name]
    diagnosis = diagnose_metrics(records)
    assert diagnosis.verdict == verdict, [f.message for f in diagnosis.findings]
    assert diagnosis.summary["objective"] == "reinforcement"
    if shape:
        assert shape in {f.name for f in diagnosis.findings}


CONFIG = {
    "data": {"path": "d.jsonl"},
    "train": {"method": "grpo", "learning_rate": 2e-5, "init_from": None},
    "grpo": {"num_generations": 4, "temperature": 1.0, "beta": 0.0, "max_completion_length": "auto"},
}


@pytest.mark.parametrize(
    "name, changed",
    [
        ("no signal from a start that is never rewarded", {"grpo.num_generations": 8, "grpo.temperature": 1.2}),
        ("reward hacking", {"train.learning_rate": 1e-5, "grpo.beta": 0.04}),
        ("entropy collapse", {"train.learning_rate": 1e-5, "grpo.temperature": 1.2}),
        ("kl runaway", {"train.learning_rate": 1e-5}),
    ],
)
def test_rl_recommendations(name, changed):
    import copy

    diagnosis = recommend(diagnose_metrics(CASES[name][0]), copy.deepcopy(CONFIG))
    applied = {r.param: r.to for r in diagnosis.recommendations if r.applied}
    assert {k: applied.get(k) for k in changed} == changed, diagnosis.recommendations
