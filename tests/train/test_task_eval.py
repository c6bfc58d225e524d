"""Continuous evaluation's sample and time budget, with a fake clock (no model needed)."""

from types import SimpleNamespace

import pytest

from conftest import FakeClock
from tuneloop.config import EvalConfig
from tuneloop.data import Example
from tuneloop.models import Precision
from tuneloop.train import task_eval
from tuneloop.train.task_eval import TaskEvaluator, sample_rows


def examples(n):
    return [
        Example([{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"label{i % 3}"}], i + 1)
        for i in range(n)
    ]


def test_the_sample_is_fixed_and_seeded():
    rows = examples(300)
    a, b = sample_rows(rows, 128, seed=1), sample_rows(rows, 128, seed=1)
    assert a == b and len(a) == 128 and len({e.row for e in a}) == 128
    assert sample_rows(rows, 128, seed=2) != a
    assert sample_rows(rows[:10], 128, seed=1) == rows[:10]  # fewer rows than asked: all of them


@pytest.mark.parametrize(
    "budget, step_seconds, scoring_seconds, expected_scored",
    [
        # cheap scoring: every evaluation fits
        (0.15, 10.0, 1.0, list(range(10, 101, 10))),
        # ten scorings would cost 30% of training: the first, then whenever the allowance (15% of the
        # training so far, one scoring kept for the last) has grown enough, and the last
        (0.15, 10.0, 30.0, [10, 60, 80, 100]),
        # a scoring dearer than the whole budget: only the first (it measures the cost) and the last
        (0.15, 10.0, 50.0, [10, 100]),
        # a budget of 1 scores every evaluation, whatever it costs
        (1.0, 10.0, 50.0, list(range(10, 101, 10))),
    ],
)
def test_the_budget_decides_which_evaluations_are_scored(
    monkeypatch, budget, step_seconds, scoring_seconds, expected_scored
):
    clock = FakeClock()
    monkeypatch.setattr(task_eval.time, "perf_counter", clock)
    evaluator = TaskEvaluator(
        examples(20),
        examples(20),
        tokenizer=None,
        config=EvalConfig(),
        precision=Precision.fp32,
        rows=8,
        budget=budget,
        seed=0,
    )

    def score(model, rows, prefix):
        clock.now += scoring_seconds * len(rows) / 8
        return {f"{prefix}_accuracy": 0.5}

    monkeypatch.setattr(evaluator, "_score", score)
    evaluator.on_train_begin(None, None, None)
    for step in range(1, 101):
        clock.now += step_seconds
        if step % 10 == 0:
            evaluator(model=None, state=SimpleNamespace(global_step=step, max_steps=100))
    assert evaluator.scored_steps == expected_scored
    assert evaluator.skipped_steps == [s for s in range(10, 101, 10) if s not in expected_scored]
    # each scoring's own seconds: the validation sample's, and the last adds the training sample's when it fits
    assert len(evaluator.scoring_seconds) == len(expected_scored)
    assert evaluator.scoring_seconds[:-1] == [pytest.approx(scoring_seconds, abs=0.01)] * (len(expected_scored) - 1)
    assert evaluator.scoring_seconds[-1] >= scoring_seconds - 0.01
    assert sum(evaluator.scoring_seconds) == pytest.approx(evaluator.seconds, abs=0.01 * len(expected_scored))
    share = evaluator.summary(train_seconds=1000.0 + evaluator.seconds)["share_of_training"]
    if budget < 1:  # within the budget, give or take the scoring the first evaluation always makes
        assert share <= budget + scoring_seconds / 1000.0 + 1e-9


def test_answer_token_budget_follows_the_references(tokenizer):
    from tuneloop.eval.evaluate import answer_token_budget

    label = answer_token_budget(tokenizer, ["card_arrival", "exchange_rate"])
    longer = answer_token_budget(tokenizer, ["card_arrival", "a summary of the whole dialogue " * 10])
    assert 8 < label < 24 and longer > 60
