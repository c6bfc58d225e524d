"""Verdicts on synthetic curves shaped like the guides' pictures, and the recommendations they lead to."""

import math

import pytest

from tuneloop.doctor import diagnose_metrics, recommend


def metrics(train: list[float], val: list[float], every: int = 5, grad: list[float] | None = None) -> list[dict]:
    """train_loss logged every step; eval_loss every `every` steps; 10 steps an epoch."""
    out = []
    for i, loss in enumerate(train, start=1):
        out.append({"step": i, "epoch": i / 10, "train_loss": loss, **({"grad_norm": grad[i - 1]} if grad else {})})
        if i % every == 0 and i // every <= len(val):
            out.append({"step": i, "epoch": i / 10, "eval_loss": val[i // every - 1]})
    return out


def falling(start, end, n):
    return [end + (start - end) * math.exp(-4 * i / n) for i in range(n)]


CURVES = {
    "healthy": metrics(falling(2.0, 0.45, 40), [1.2, 0.8, 0.62, 0.56, 0.55, 0.55, 0.55, 0.55]),
    "overfitting": metrics(falling(2.0, 0.05, 40), [1.0, 0.7, 0.6, 0.62, 0.68, 0.75, 0.83, 0.9]),
    "underfitting": metrics([2.4 - 0.002 * i for i in range(40)], [2.35, 2.34, 2.34, 2.33, 2.33, 2.32, 2.32, 2.31]),
    "diverging": metrics([2.0, 1.8, 1.7, 1.9, 2.4, 3.1, 4.5, 6.0, 8.0, 9.5] * 1 + [10.0] * 10, [1.8, 2.6, 7.0, 10.1]),
    "undertrained": metrics(falling(2.0, 0.2, 40)[:20], [1.6, 1.2, 0.95, 0.75]),
}


@pytest.mark.parametrize("expected", list(CURVES))
def test_verdicts(expected):
    d = diagnose_metrics(CURVES[expected])
    assert d.verdict == expected, [f.message for f in d.findings]
    assert any(f.kind == expected and f.evidence and 0 < f.confidence <= 1 for f in d.findings)


def test_nan_is_divergence_with_full_confidence():
    records = metrics([2.0, 1.5, 1.2], [1.4]) + [{"step": 4, "epoch": 0.4, "train_loss": "nan"}]
    d = diagnose_metrics(records)
    assert d.verdict == "diverging" and d.findings[0].confidence == 1.0 and d.findings[0].evidence["step"] == 4


def test_overfitting_evidence_names_steps_and_values():
    [finding] = [f for f in diagnose_metrics(CURVES["overfitting"]).findings if f.kind == "overfitting"][:1]
    assert finding.evidence["best_step"] == 15 and finding.evidence["best_val_loss"] == 0.6
    assert finding.evidence["last_val_loss"] == 0.9 and finding.confidence == 0.9


def test_little_gain_over_the_base_model_is_underfitting():
    d = diagnose_metrics(CURVES["healthy"], base_loss=0.6, tuned_loss=0.58)
    assert d.verdict == "underfitting"


def test_data_findings():
    d = diagnose_metrics(CURVES["healthy"], n_validation=12, data_report={"dropped": {"duplicates": 3, "leakage": 2}})
    assert {f.kind for f in d.findings} >= {"small_validation_set", "duplicates", "leakage"}


CONFIG = {
    "train": {
        "epochs": 5,
        "learning_rate": 2e-4,
        "weight_decay": 0.0,
        "gradient_accumulation": 2,
        "warmup_ratio": 0.05,
        "warmup_steps": None,
        "max_grad_norm": 1.0,
        "early_stopping_patience": 0,
        "method": "lora",
    },
    "lora": {"r": 16, "alpha": 32, "dropout": 0.0},
}


@pytest.mark.parametrize(
    "verdict, expected",
    [
        # applied: stop early at the best point and regularise; fewer epochs (the best was at 1.5), a lower
        # learning rate, a larger batch and a softer adapter are listed but not applied
        ("overfitting", {"train.weight_decay": 0.05, "lora.dropout": 0.1, "train.early_stopping_patience": 2}),
        (
            "underfitting",
            {
                "train.epochs": 10,
                "train.learning_rate": 4e-4,
                "lora.r": 32,
                "lora.alpha": 64,
                "train.gradient_accumulation": 1,
            },
        ),
        ("diverging", {"train.learning_rate": 6e-5, "train.warmup_ratio": 0.1, "train.max_grad_norm": 0.5}),
        ("undertrained", {"train.epochs": 7.5}),
        ("healthy", {"lora.r": 32, "lora.alpha": 64}),  # nothing wrong; a plateau: a larger adapter could improve it
    ],
)
def test_recommendations_are_concrete_changes(verdict, expected):
    d = recommend(diagnose_metrics(CURVES[verdict]), CONFIG)
    got = {r.param: r.to for r in d.recommendations if r.applied}
    assert got == expected
    assert all(r.why and r.why[0].islower() for r in d.recommendations)
    for param, value in expected.items():
        if not param.startswith("serve."):
            section, key = param.split(".")
            assert d.next_config[section][key] == value
    assert CONFIG["train"]["epochs"] == 5  # the input config is not changed


def test_overfitting_lists_alternatives_and_the_inference_time_remedy():
    d = recommend(diagnose_metrics(CURVES["overfitting"]), CONFIG)
    alternatives = {r.param: r.to for r in d.recommendations if not r.applied}
    assert alternatives == {
        "train.learning_rate": 1e-4,
        "train.epochs": 2,
        "train.gradient_accumulation": 4,
        "serve.adapter_scale": 0.5,
        "data": "more, more diverse examples",
    }


def test_overfitting_despite_early_stopping_lowers_the_learning_rate():
    config = {**CONFIG, "train": {**CONFIG["train"], "early_stopping_patience": 3}}
    d = recommend(diagnose_metrics(CURVES["overfitting"]), config)
    assert {r.param: r.to for r in d.recommendations if r.applied} == {
        "train.learning_rate": 1e-4,
        "train.weight_decay": 0.05,
        "lora.dropout": 0.1,
    }


@pytest.mark.parametrize(
    "method, lr, verdict, expected",
    [
        ("lora", 1e-7, "underfitting", 2e-4),  # far below the range: to the guides' usual value, not 2e-7
        ("full", 1e-8, "underfitting", 2e-5),
        ("lora", 5.0, "diverging", 1e-3),  # far above: to the range's top, not 1.5
        ("full", 1e-3, "diverging", 5e-5),
    ],
)
def test_learning_rate_jumps_back_into_the_guides_range(method, lr, verdict, expected):
    config = {"train": {**CONFIG["train"], "method": method, "learning_rate": lr}, "lora": CONFIG["lora"]}
    d = recommend(diagnose_metrics(CURVES[verdict]), config)
    assert d.next_config["train"]["learning_rate"] == expected


def test_without_a_config_the_changes_are_relative():
    d = recommend(diagnose_metrics(CURVES["diverging"]), None).to_dict()
    lr = next(r for r in d["recommendations"] if r["param"] == "train.learning_rate")
    assert lr == {
        "param": "train.learning_rate",
        "from": None,
        "to": "x0.3",
        "why": lr["why"],
        "applied": False,
        "minutes": None,
    }
    assert d["next_config"] is None and d["verdict"] == "diverging"


@pytest.mark.parametrize(
    "accuracy, improving",
    [
        # banking77 (issue 42): 0.578 at the first evaluation, then within its noise from epoch 1.8 on
        ([0.578, 0.75, 0.84, 0.883, 0.914, 0.898, 0.92], False),
        ([0.5, 0.6, 0.7, 0.8, 0.9], True),  # a steady climb
        ([0.5, 0.9], True),  # two points: the only trend there is
        ([0.80, 0.82, 0.84, 0.86, 0.88, 0.90, 0.92, 0.94], True),  # slow, but beyond noise over the recent half
        ([0.80, 0.82, 0.84, 0.86, 0.88, 0.90], False),  # +0.04 over the last three: within 2 s.e.
    ],
)
def test_still_improving_reads_the_recent_trend_against_noise(accuracy, improving):
    records = metrics(falling(2.0, 0.5, 10 * len(accuracy)), [1.0] * len(accuracy), every=10)
    for i, value in enumerate(accuracy, 1):
        records.append({"step": 10 * i, "eval_accuracy": value, "eval_accuracy_se": 0.025})
    d = diagnose_metrics(records)
    found = [f for f in d.findings if f.kind == "still_improving" and f.evidence.get("by") == "metric"]
    assert bool(found) is improving
    if found:
        assert found[0].evidence["recent_gain"] > 0.05 and "beyond its noise" in found[0].message
