"""Continuous evaluation's sample and time budget, with a fake clock (no model needed)."""

from types import SimpleNamespace

import pytest
import torch

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


@pytest.mark.parametrize(
    "kept, current, best, sign, keeps",
    [
        (None, (0.5, 0.9), 0.5, 1, True),  # the first evaluation is kept
        ((0.96, 0.2), (1.0, 0.9), 1.0, 1, False),  # within 5% of the best and leaks less: stays
        ((0.90, 0.2), (1.0, 0.9), 1.0, 1, True),  # fell out of the band: the new best takes over
        ((1.0, 0.9), (0.97, 0.5), 1.0, 1, True),  # in the band, and leaks less
        ((1.0, 0.5), (0.97, 0.5), 1.0, 1, False),  # as much leakage: the better metric stays
        ((0.97, 0.5), (1.0, 0.5), 1.0, 1, True),  # as much leakage, a better metric
        ((0.9, 0.2), (0.8, 0.0), 1.0, 1, True),  # both out of the band (the best was earlier): kept gives way
        ((2.0, 0.5), (2.05, 0.1), 2.0, -1, True),  # lower is better: 2.05 is within 5% of 2.0
        ((2.0, 0.5), (2.2, 0.1), 2.0, -1, False),
    ],
)
def test_balance_keeps(kept, current, best, sign, keeps):
    assert task_eval.balance_keeps(kept, current, best, sign) is keeps


def test_select_best_balance_restores_the_weights_it_kept():
    model = torch.nn.Linear(2, 1)
    keeper = task_eval.KeepBestByMetric(SimpleNamespace(key="accuracy", greater_is_better=True), balance=True)
    state, control = SimpleNamespace(global_step=0), SimpleNamespace(should_training_stop=False)
    for step, (accuracy, leakage) in enumerate([(0.5, 0.0), (0.96, 0.3), (1.0, 0.9), (0.98, 0.8)], 1):
        state.global_step = step
        with torch.no_grad():
            model.weight.fill_(step)
        metrics = {"eval_accuracy": accuracy, "eval_leakage": leakage, "eval_loss": 1.0}
        keeper.on_evaluate(None, state, control, metrics=metrics, model=model)
    assert keeper.kept_step == 2 and keeper.best_step == 3 and keeper.kept == (0.96, 0.3)
    keeper.on_train_end(None, state, control, model=model)
    assert model.weight.eq(2).all()
