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


def records(points, every=10, se=0.05):
    """metrics.jsonl of a run whose evaluations scored (accuracy, leakage) at steps every, 2*every, ..."""
    out = [{"step": s, "train_loss": 1.0 / s} for s in range(1, every * len(points) + 1)]
    for i, (acc, leak) in enumerate(points, 1):
        out.append(
            {
                "step": i * every,
                "eval_loss": 1.0,
                "eval_accuracy": acc,
                "eval_accuracy_se": se,
                "eval_leakage": leak,
                "eval_leakage_se": round((leak * (1 - leak) / 20) ** 0.5, 5),
            }
        )
    return out


@pytest.mark.parametrize(
    "points, saved, step",
    [
        # the task was learned by step 20 with little leakage; training on made every prompt a label
        ([(0.4, 0.0), (0.97, 0.15), (1.0, 0.9), (1.0, 0.95)], 30, 20),
        # the same, saved at the end (no selection)
        ([(0.4, 0.0), (0.97, 0.15), (1.0, 0.9), (1.0, 0.95)], None, 20),
        # leakage came with the task: no earlier evaluation kept the metric with less of it
        ([(0.4, 0.0), (0.7, 0.8), (1.0, 0.9), (1.0, 0.95)], 30, None),
        # less leakage, but within noise of the saved weights' (20 prompts)
        ([(0.4, 0.0), (0.97, 0.7), (1.0, 0.85), (1.0, 0.9)], 30, None),
        # the saved weights are already the best balance
        ([(0.4, 0.0), (0.97, 0.15), (1.0, 0.9)], 20, None),
    ],
)
def test_the_checkpoint_with_the_best_balance(points, saved, step):
    from tuneloop.doctor import diagnose_metrics

    info = {"best_checkpoint_step": saved} if saved else {}
    d = diagnose_metrics(records(points), n_validation=100, info=info)
    found = [f for f in d.findings if f.kind == "balance_checkpoint"]
    assert [f.evidence["step"] for f in found] == ([step] if step else [])
    d = recommend(d, {"train": {"epochs": 3, "method": "lora", "select_best": "auto"}})
    select = [r for r in d.recommendations if r.param == "train.select_best"]
    if step:
        assert found[0].evidence["saved_step"] == (saved or 40) and f"step {step}" in found[0].message
        assert select[0].to == "balance" and select[0].applied and d.next_config["train"]["select_best"] == "balance"
    else:
        assert select == []
