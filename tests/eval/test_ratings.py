"""Human ratings: stored as JSONL in the run store, aggregated into win rates and a Bradley–Terry ranking."""

import pytest

from tuneloop.eval.ratings import (
    add_rating,
    blind_winner,
    bradley_terry,
    preference_pairs,
    read_ratings,
    summarize,
)


def _rate(tmp_path, a, b, winner):
    return add_rating(tmp_path, prompt="p", model_a=a, model_b=b, output_a="x", output_b="y", winner=winner)


def test_ratings_persist_and_aggregate(tmp_path):
    for winner in ("b", "b", "b", "a", "tie"):
        _rate(tmp_path, "base", "run-1", winner)
    ratings = read_ratings(tmp_path)
    assert len(ratings) == 5 and ratings[0]["model_b"] == "run-1"
    summary = summarize(ratings)
    run = summary["models"]["run-1"]
    assert run == {"wins": 3, "losses": 1, "ties": 1, "win_rate": 0.7, "win_rate_ci": run["win_rate_ci"]}
    low, high = run["win_rate_ci"]
    assert 0 <= low < 0.7 < high <= 1  # five ratings: a wide interval
    assert summary["models"]["base"]["win_rate"] == pytest.approx(0.3)
    assert [r["model"] for r in summary["ranking"]] == ["run-1", "base"]


def test_bradley_terry_matches_the_closed_form_for_two_models():
    # Two models: the MLE strength ratio is wins_b / wins_a (ties half each): (3.5 / 1.5)
    ratings = [{"model_a": "A", "model_b": "B", "winner": w} for w in ("b", "b", "b", "a", "tie")]
    p = bradley_terry(ratings)
    assert p["B"] / p["A"] == pytest.approx(3.5 / 1.5, rel=1e-6)


def test_ranking_is_transitive_across_three_models():
    ratings = (
        [{"model_a": "A", "model_b": "B", "winner": "b"}] * 4
        + [{"model_a": "A", "model_b": "B", "winner": "a"}]
        + [{"model_a": "B", "model_b": "C", "winner": "b"}] * 4
        + [{"model_a": "B", "model_b": "C", "winner": "a"}]
    )
    ranking = summarize(ratings)["ranking"]
    assert [r["model"] for r in ranking] == ["C", "B", "A"]
    assert ranking[0]["elo"] > ranking[1]["elo"] > ranking[2]["elo"]


@pytest.mark.parametrize(
    "winner, a, b, message", [("left", "x", "y", "winner must be"), ("a", "x", "x", "two different")]
)
def test_bad_ratings_are_refused(tmp_path, winner, a, b, message):
    with pytest.raises(ValueError, match=message):
        _rate(tmp_path, a, b, winner)
    assert read_ratings(tmp_path) == []


def test_no_ratings_yet():
    assert summarize([]) == {"ratings": 0, "models": {}, "ranking": []}


@pytest.mark.parametrize(
    "choice, flipped, winner",
    [
        ("1", False, "a"),
        ("2", False, "b"),
        ("1", True, "b"),
        ("2", True, "a"),
        ("tie", False, "tie"),
        ("tie", True, "tie"),
    ],
)
def test_blind_winner_undoes_the_shown_order(choice, flipped, winner):
    assert blind_winner(choice, flipped) == winner


def test_blind_winner_rejects_other_choices():
    with pytest.raises(ValueError, match="choice"):
        blind_winner("3", False)


def _verdict(prompt, output_a, output_b, winner, a="m1", b="m2"):
    return {"prompt": prompt, "model_a": a, "model_b": b, "output_a": output_a, "output_b": output_b, "winner": winner}


@pytest.mark.parametrize(
    "ratings, pairs, dropped",
    [
        ([_verdict("p", "good", "bad", "a")], [("p", "good", "bad", 1)], {}),
        ([_verdict("p", "bad", "good", "b")], [("p", "good", "bad", 1)], {}),
        ([_verdict("p", "x", "y", "tie")], [], {"ties": 1}),
        ([_verdict("p", "same ", "same", "a")], [], {"identical_outputs": 1}),
        # rated both ways, shown in either order: the majority decides; a split vote is dropped
        (
            [
                _verdict("p", "good", "bad", "a"),
                _verdict("p", "bad", "good", "b", a="m2", b="m1"),
                _verdict("p", "good", "bad", "b"),
            ],
            [("p", "good", "bad", 3)],
            {},
        ),
        ([_verdict("p", "good", "bad", "a"), _verdict("p", "good", "bad", "b")], [], {"conflicting": 2}),
    ],
)
def test_ratings_become_preference_pairs(ratings, pairs, dropped):
    out, summary = preference_pairs(ratings)
    assert [(p["prompt"], p["chosen"], p["rejected"], p["ratings"]) for p in out] == pairs
    assert {k: v for k, v in summary["dropped"].items() if v} == dropped
