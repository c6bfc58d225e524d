"""The adapter scale, measured (tuneloop/eval/scale_curve.py): which scale keeps the task and the general ability."""

import pytest

from tuneloop.eval.scale_curve import choose_scale, general_loss, recommended_scale
from tuneloop.runs import RunDir


def curve(task: list[float | None], loss: list[float]) -> list[dict]:
    scales = [0.0, 0.25, 0.5, 0.75, 1.0]
    return [{"scale": s, "task": t, "general_loss": g} for s, t, g in zip(scales, task, loss)]


@pytest.mark.parametrize(
    "task, loss, chosen",
    [
        ([0.0, 0.40, 0.68, 0.70, 0.70], [0, 2, 10, 30, 60], 0.5),  # 0.68 >= 0 + 0.95 x 0.70 = 0.665
        ([0.0, 0.40, 0.60, 0.70, 0.70], [0, 2, 10, 30, 60], 0.75),
        ([0.0, 0.40, 0.60, 0.62, 0.70], [0, 2, 10, 30, 60], 1.0),  # only the adapter as trained keeps the gain
        ([0.2, 0.70, 0.70, 0.70, 0.70], [0, 0, 0, 0, 0], 1.0),  # no loss anywhere: the stronger adapter
        ([0.0, 0.80, 0.75, 0.72, 0.70], [0, 5, 20, 40, 60], 0.25),  # weaker is better at both
        ([0.5, 0.5, 0.5, 0.5, 0.5], [0, 1, 2, 3, 4], None),  # no gain at scale 1: nothing to keep
        ([None, 0.5, 0.5, 0.5, 0.5], [0, 1, 2, 3, 4], None),
    ],
)
def test_choose_scale(task, loss, chosen):
    result = choose_scale(curve(task, loss))
    assert (result["scale"] if result else None) == chosen
    if result:
        assert result["gain_kept"] >= 0.95 and result["general_loss_at_1"] == loss[-1]


def test_general_loss_adds_the_leakage_rise_and_the_score_drop_in_points():
    general = {"leakage": {"difference": 0.25}, "score": {"difference": -3.5}}
    assert general_loss(general) == 28.5
    assert general_loss({"leakage": {"difference": -0.1}, "score": {"difference": 2.0}}) == 0.0
    assert general_loss({"leakage": {"difference": 0.1}, "score": None}) == 10.0


@pytest.mark.parametrize(
    "evaluation, expected",
    [
        ({"general": {}, "scale_curve": {"recommended": {"scale": 0.5}, "metric": "accuracy"}}, 0.5),
        ({"general": {}}, 1.0),  # nothing lost beyond noise: no curve, the adapter as trained
        ({"general": {}, "scale_curve": {"recommended": None, "metric": "accuracy"}}, "gained nothing"),
        ({}, "did not measure"),
        (None, "needs a finished run"),
    ],
)
def test_scale_auto(tmp_path, evaluation, expected):
    run = RunDir(tmp_path)
    if evaluation is not None:
        run.write_json(run.eval_file, evaluation)
    if isinstance(expected, float):
        assert recommended_scale(run) == expected
    else:
        with pytest.raises(ValueError, match=expected):
            recommended_scale(run)
