"""The doctor's other side of the balance (tuneloop/doctor/balance.py): what the fine-tune cost the model."""

import pytest

from tuneloop.doctor import recommend
from tuneloop.doctor.balance import balance_findings
from tuneloop.doctor.diagnose import Diagnosis


def stats(base, tuned, low, high, n=40):
    return {"n": n, "base": base, "finetuned": tuned, "difference": tuned - base, "low": low, "high": high}


def general(leak=(0.0, 0.0, -0.05, 0.05), score=(50.0, 50.0, -3.0, 3.0), drift=(1.0, 1.1, 0.05, 0.15)):
    return {
        "sets": {},
        "score": stats(*score, n=200),
        "leakage": {
            "form": "a JSON object",
            **stats(*leak),
            "examples": [{"prompt": "What is 12 plus 7?", "base": "19", "finetuned": '{"12": "12"}', "leaked": True}],
        },
        "drift": stats(*drift),
    }


@pytest.mark.parametrize(
    "measured, names",
    [
        (general(), ["balance_kept"]),
        (general(leak=(0.0, 0.4, 0.25, 0.55)), ["behaviour_leakage"]),
        (general(leak=(0.0, 0.05, -0.02, 0.12)), ["balance_kept"]),  # within noise
        (general(score=(53.0, 47.0, -9.0, -3.0)), ["general_ability"]),
        (general(drift=(1.0, 1.8, 0.6, 1.0)), ["drift"]),
        (general(drift=(1.0, 1.3, 0.2, 0.4)), ["balance_kept"]),  # beyond noise, but under DRIFT
        (general(leak=(0.0, 0.9, 0.8, 1.0), score=(53.0, 45.0, -12.0, -4.0)), ["behaviour_leakage", "general_ability"]),
    ],
)
def test_findings(measured, names):
    found = balance_findings(measured)
    assert [f.name or f.kind for f in found] == names
    if "behaviour_leakage" in names:
        leak = found[0]
        assert (
            leak.evidence["leaked"] == round(measured["leakage"]["finetuned"] * 40)
            and "What is 12 plus 7?" in leak.message
        )


def curve(task, loss):
    points = [{"scale": s, "task": t, "general_loss": g} for s, t, g in zip([0.0, 0.5, 0.75, 1.0], task, loss)]
    from tuneloop.eval.scale_curve import choose_scale

    return {"metric": "accuracy", "keep": 0.95, "points": points, "recommended": choose_scale(points), "rows": 40}


@pytest.mark.parametrize(
    "scale_curve, message, serve_scale",
    [
        (curve([0.0, 0.9, 0.92, 0.92], [0, 5, 20, 60]), "at adapter scale 0.5", 0.5),
        (curve([0.0, 0.5, 0.7, 0.92], [0, 5, 20, 60]), "no weaker adapter scale keeps 95%", None),
        (curve([0.3, 0.3, 0.3, 0.3], [0, 5, 20, 60]), "gained nothing", None),
    ],
)
def test_the_scale_curve_becomes_a_measured_recommendation(scale_curve, message, serve_scale):
    found = balance_findings(general(leak=(0.0, 0.5, 0.3, 0.7)), scale_curve)
    assert [f.kind for f in found] == ["forgetting", "adapter_scale"] and message in found[1].message
    config = {"train": {"epochs": 3, "learning_rate": 2e-4, "method": "lora"}, "data": {"replay": 0.0}}
    d = recommend(Diagnosis("healthy", found), config)
    scales = [r.to for r in d.recommendations if r.param == "serve.adapter_scale"]
    assert scales == ([serve_scale] if serve_scale else [])
    [replay] = [r for r in d.recommendations if r.param == "data.replay"]
    assert replay.applied and d.next_config["data"]["replay"] == 0.2
    assert {r.param for r in d.recommendations if not r.applied} >= {"train.epochs", "train.learning_rate"}


def test_a_run_that_lost_nothing_gets_no_balance_changes():
    d = recommend(Diagnosis("healthy", balance_findings(general())), {"train": {"epochs": 1, "method": "lora"}})
    assert not any(r.param in ("data.replay", "serve.adapter_scale") for r in d.recommendations)
