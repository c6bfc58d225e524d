"""LLM-as-judge: both orders asked, position bias cancelled, a local model's probabilities used."""

import pytest

from tuneloop.eval.judge import LocalJudge, judge_pairs


class FirstAlways:
    name = "first-always"

    def first_is_better(self, messages):
        return 1.0


class Keyword:
    """Prefers the answer containing 'refund', wherever it appears."""

    name = "keyword"

    def first_is_better(self, messages):
        text = messages[-1]["content"]
        first = text.split("[Answer 1]")[1].split("[Answer 2]")[0]
        return 1.0 if "refund" in first else 0.0


def test_a_judge_that_always_picks_the_first_answer_only_produces_ties():
    result = judge_pairs(FirstAlways(), ["q1", "q2"], ["a", "b"], ["c", "d"])
    assert [p["p_a"] for p in result["pairs"]] == [0.5, 0.5]
    assert result["ties"] == 2 and result["position_consistency"] == 0.0


def test_a_consistent_judge_decides_both_ways():
    result = judge_pairs(Keyword(), ["q1", "q2"], ["issue a refund", "no"], ["no", "refund it"])
    assert [p["winner"] for p in result["pairs"]] == ["a", "b"]
    assert (result["a_wins"], result["b_wins"], result["position_consistency"]) == (1, 1, 1.0)


def test_local_judge_gives_probabilities(tiny_model):
    judge = LocalJudge(str(tiny_model))
    result = judge_pairs(judge, ["Where is my parcel?"], ["It ships today."], ["Bhutan Bhutan"])
    pair = result["pairs"][0]
    assert 0 < pair["a_first"] < 1 and 0 < pair["b_first"] < 1
    assert pair["p_a"] == pytest.approx((pair["a_first"] + 1 - pair["b_first"]) / 2)
