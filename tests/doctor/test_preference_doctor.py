"""The doctor on preference runs: table-driven synthetic histories of the known DPO failure shapes."""

import math

import pytest

from tuneloop.doctor import diagnose_metrics, recommend


def history(losses, accuracy, margin, logp_chosen):
    """Training and evaluation records as metrics.jsonl holds them for a DPO run."""
    records = []
    for i, (loss, acc, m, lp) in enumerate(zip(losses, accuracy, margin, logp_chosen)):
        step = 10 * (i + 1)
        records.append({"step": step, "train_loss": loss, "train_reward_margin": m, "train_logp_chosen": lp})
        records.append(
            {
                "step": step,
                "eval_loss": loss,
                "eval_preference_accuracy": acc,
                "eval_reward_margin": m,
                "eval_logp_chosen": lp,
            }
        )
    return records


CASES = [
    # name, verdict, shape, history
    (
        "learning",
        "healthy",
        None,
        history([0.69, 0.6, 0.5, 0.45], [0.6, 0.7, 0.8, 0.85], [0.1, 0.5, 0.9, 1.2], [-40, -40, -41, -41]),
    ),
    (
        "unlearning the good answers",
        "overfitting",
        "chosen_collapse",
        history([0.69, 0.4, 0.2, 0.1], [0.6, 0.8, 0.9, 0.95], [0.1, 1.5, 3.0, 5.0], [-40, -48, -60, -75]),
    ),
    (
        "at chance",
        "underfitting",
        "at_chance",
        history([0.69, 0.69, 0.69, 0.69], [0.5, 0.49, 0.52, 0.5], [0, 0, 0.01, 0], [-40] * 4),
    ),
    (
        "climbing",
        "diverging",
        "loss_climbing",
        history([0.69, 0.9, 1.5, 3.0], [0.6, 0.55, 0.5, 0.5], [0, -1, -2, -3], [-40, -50, -60, -90]),
    ),
    (
        "nan",
        "diverging",
        "nan",
        history([0.69, math.nan, math.nan, math.nan], [0.6, 0.5, 0.5, 0.5], [0, 0, 0, 0], [-40] * 4),
    ),
]


@pytest.mark.parametrize("name, verdict, shape, records", CASES, ids=[c[0] for c in CASES])
def test_preference_verdicts(name, verdict, shape, records):
    diagnosis = diagnose_metrics(records, n_validation=200)
    assert diagnosis.verdict == verdict
    assert diagnosis.summary["objective"] == "preference"
    if shape:
        assert diagnosis.has(shape) and diagnosis.findings[0].evidence


@pytest.mark.parametrize(
    "verdict_case, changes",
    [
        (1, {"train.sft_weight": 1.0, "train.beta": 0.2, "train.learning_rate": 2.5e-5, "train.epochs": 2}),
        (2, {"train.learning_rate": 1.5e-4, "train.epochs": 4}),
        (3, {"train.learning_rate": 1.5e-5}),
    ],
)
def test_preference_recommendations_turn_the_right_knobs(verdict_case, changes):
    config = {
        "model": "smollm2-135m-instruct",
        "data": {"path": "prefs.jsonl"},
        "train": {"method": "dpo", "beta": 0.1, "learning_rate": 5e-5, "epochs": 3},
    }
    diagnosis = recommend(diagnose_metrics(CASES[verdict_case][3], n_validation=200), config)
    applied = {r.param: r.to for r in diagnosis.recommendations if r.applied}
    assert applied == pytest.approx(changes)
    for param, value in changes.items():
        section, key = param.split(".")
        assert diagnosis.next_config[section][key] == pytest.approx(value)
