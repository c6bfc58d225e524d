"""A/B statistics: McNemar pinned to its exact binomial value, bootstrap intervals, win/tie/loss, ordering."""

import pytest

from tuneloop.eval.compare import compare_outputs, mcnemar
from tuneloop.eval.metrics import score


def _side(metric, outputs, references):
    return {"outputs": outputs, "per_example": score(metric, outputs, references)[1]}


@pytest.mark.parametrize(
    "a_right, b_right, only_a, only_b, p",
    [
        ([1] * 10, [1] * 10, 0, 0, 1.0),
        ([1, 0, 0, 0, 0, 0, 0, 0, 0, 0], [0, 1, 1, 1, 1, 1, 1, 1, 1, 1], 1, 9, 22 / 1024),  # 2 * P(X <= 1 | n=10)
        ([1, 1, 0, 0], [0, 0, 1, 1], 2, 2, 1.0),
    ],
)
def test_mcnemar_exact(a_right, b_right, only_a, only_b, p):
    m = mcnemar([{"correct": bool(x)} for x in a_right], [{"correct": bool(x)} for x in b_right])
    assert (m["only_a_correct"], m["only_b_correct"]) == (only_a, only_b)
    assert m["p_value"] == pytest.approx(p)


def test_clear_improvement_has_an_interval_above_zero():
    refs = [f"label{i % 4}" for i in range(60)]
    a = _side("exact_match", ["wrong"] * 45 + refs[45:], refs)
    b = _side("exact_match", refs[:57] + ["wrong"] * 3, refs)
    result = compare_outputs("exact_match", refs, a, b, resamples=500)
    row = result["metrics"]["exact_match"]
    assert row["a"] == 0.25 and row["b"] == 0.95 and row["difference"] == pytest.approx(0.7)
    assert 0 < row["ci"][0] < 0.7 < row["ci"][1] and row["p_value"] < 0.01
    assert (result["wins"], result["ties"], result["losses"]) == (45, 12, 3)
    assert result["regressions"] == [57, 58, 59]  # the examples B got wrong that A had right
    assert result["mcnemar"]["p_value"] < 1e-6


def test_identical_sides_show_no_difference():
    refs = ["a", "b", "c", "d"]
    side = _side("exact_match", ["a", "x", "c", "y"], refs)
    row = compare_outputs("exact_match", refs, side, side, resamples=200)["metrics"]["exact_match"]
    assert row["difference"] == 0 and row["ci"] == [0.0, 0.0] and row["p_value"] == 1.0


def test_corpus_metrics_are_recomputed_on_each_resample():
    refs = [
        "the customer wants a refund for the broken blender",
        "the parcel arrived late and damaged",
        "please reset my password today",
        "the invoice shows a double charge",
    ]
    a = _side("generation", ["a refund", "late", "reset", "charge"], refs)
    b = _side("generation", refs, refs)
    result = compare_outputs("generation", refs, a, b, resamples=200)
    assert result["metrics"]["bleu"]["b"] == pytest.approx(100.0)
    assert set(result["metrics"]) == {"bleu", "chrf", "rouge1", "rouge2", "rougeL"}
    assert all(row["ci"][0] > 0 for row in result["metrics"].values())
    assert result["wins"] == 4 and "mcnemar" not in result  # no right/wrong per example in free text


def test_sides_must_answer_the_same_examples():
    with pytest.raises(ValueError, match="same 2 examples"):
        compare_outputs(
            "exact_match", ["a", "b"], _side("exact_match", ["a"], ["a"]), _side("exact_match", ["a", "b"], ["a", "b"])
        )


@pytest.mark.parametrize(
    "metric, predictions, references",
    [
        ("classification", ["a", "b", "b", "zzz", "c", "a", "c"], ["a", "b", "c", "c", "c", "b", "a"]),
        ("classification", ["x"] * 5, ["x", "y", "x", "y", "z"]),
        (
            "generation",
            ["the cat sat on the mat", "a dog ran", "", "hello there world", "summaries are short"],
            ["the cat is on the mat", "the dog ran away", "nothing here", "hello world", "a short summary"],
        ),
        ("exact_match", ["1", "2", "3", "4"], ["1", "2", "4", "4"]),
        ("json_fields", ['{"a": 1, "b": 2}', '{"a": 1}', "no json", '{"a": 2, "b": 2}'], ['{"a": 1, "b": 2}'] * 4),
    ],
)
def test_fast_resampling_equals_recomputing_the_metric(metric, predictions, references):
    """The bootstrap's per-resample values (from sufficient statistics) are aggregate()'s, to float precision."""
    import numpy as np

    from tuneloop.eval.compare import resampler
    from tuneloop.eval.metrics import aggregate

    _, per = score(metric, predictions, references)
    fast = resampler(metric, per, predictions, references)
    rng = np.random.default_rng(0)
    for _ in range(20):
        idx = rng.integers(0, len(references), len(references))
        slow = aggregate(metric, [per[i] for i in idx], [predictions[i] for i in idx], [references[i] for i in idx])
        got = fast(idx)
        for key, value in got.items():
            assert value == pytest.approx(slow[key], abs=1e-9), (key, idx)
        assert set(got) >= {k for k in slow if "/" not in k}  # what the bootstrap compares
