"""The doctor on the labelled suite of histories (histories.py): the verdict, the finding that
explains it, and no contradictory finding beside it."""

import pytest
from histories import CASES, REAL

from tuneloop.doctor import diagnose_metrics, recommend
from tuneloop.doctor.diagnose import VERDICTS

ALL = {**CASES, **REAL}


@pytest.mark.parametrize("name", list(ALL))
def test_verdict_and_finding(name):
    case = ALL[name]
    d = diagnose_metrics(case.records, **case.kwargs)
    messages = [f"{f.kind}/{f.name}: {f.message}" for f in d.findings]
    assert d.verdict == case.label, messages
    if case.finding:
        assert d.has(case.finding), messages
    for kind in case.absent:
        assert not any(f.kind == kind for f in d.findings), messages
    problems = {f.kind for f in d.findings if f.kind in VERDICTS}
    assert problems == {d.verdict}, messages  # nothing contradicts the verdict
    assert all(f.evidence and 0 < f.confidence <= 1 for f in d.findings if f.kind != "healthy")


@pytest.mark.parametrize("name", list(ALL))
def test_every_verdict_says_which_checkpoint_to_keep(name):
    d = diagnose_metrics(ALL[name].records, **ALL[name].kwargs)
    keep = [f for f in d.findings if f.kind == "checkpoint"]
    if any("eval_loss" in r for r in ALL[name].records):
        assert len(keep) == 1 and "keep the weights from step" in keep[0].message


def test_the_metric_decides_which_checkpoint_to_keep():
    d = diagnose_metrics(CASES["task_overfitting"].records)
    assert d.summary["keep"] == {"step": 20, "by": "eval_field_accuracy", "value": 0.74, "saved_step": None}
    saved_last = diagnose_metrics(CASES["task_overfitting"].records, info={"best_checkpoint_step": 40})
    assert "rerun with train.select_best: metric" in next(
        f.message for f in saved_last.findings if f.kind == "checkpoint"
    )


CONFIG = {
    "train": {
        "epochs": 2,
        "learning_rate": 2e-4,
        "method": "lora",
        "weight_decay": 0.0,
        "early_stopping_patience": 0,
        "gradient_accumulation": 1,
    },
    "lora": {"r": 16, "alpha": 32, "dropout": 0.0},
}


@pytest.mark.parametrize(
    "name, applied",
    [
        # headroom: the same training, longer
        ("metric_still_improving", {"train.epochs": 4}),
        # a plateau: a larger adapter first (nearly free on CPU)
        ("healthy", {"lora.r": 32, "lora.alpha": 64}),
    ],
)
def test_a_healthy_run_still_gets_what_could_improve_it_with_its_cost(name, applied):
    d = recommend(diagnose_metrics(CASES[name].records, info={"timings": {"train": 120.0}}), CONFIG)
    assert d.verdict == "healthy"
    assert {r.param: r.to for r in d.recommendations if r.applied} == applied
    assert len([r for r in d.recommendations if not r.applied]) >= 2  # alternatives listed too
    minutes = {r.param: r.minutes for r in d.recommendations if r.applied}
    # from the run's own training time: 2 minutes now; twice the epochs, twice the minutes
    assert minutes == {k: 4.0 if k == "train.epochs" else 2.0 for k in applied}
    assert d.summary["next_run_minutes"] == (4.0 if "train.epochs" in applied else 2.0)


def test_lora_dropout_costs_its_measured_share_of_a_step():
    from tuneloop.doctor.recommend import DROPOUT_STEP_COST, estimated_minutes

    assert estimated_minutes(60.0, CONFIG, {"lora.dropout": 0.1}) == round(DROPOUT_STEP_COST, 1)
    assert estimated_minutes(60.0, CONFIG, {"train.learning_rate": 1e-4}) == 1.0
    assert estimated_minutes(None, CONFIG, {"train.epochs": 4}) is None
