"""report.html: self-contained (no network), escaped, and saying what the run measured."""

import re

import pytest

from tuneloop.report import loss_curve_png, render_report
from tuneloop.report.plots import token_histogram_png

METRICS = [{"step": s, "epoch": s / 10, "train_loss": 2.0 - s / 10} for s in range(1, 11)] + [
    {"step": s, "epoch": s / 10, "eval_loss": 2.1 - s / 12, "eval_field_accuracy": s / 10} for s in (5, 10)
]
EVALUATION = {
    "metric": "json_fields",
    "n_test": 2,
    "report_examples": 6,
    "base": {"metrics": {"loss": 2.0, "field_accuracy": 0.1}},
    "finetuned": {"metrics": {"loss": 1.2, "field_accuracy": 0.8}},
    "comparison": {
        "metrics": {"field_accuracy": {"ci": [0.5, 0.9], "p_value": 0.01}},
        "wins": 2,
        "ties": 0,
        "losses": 0,
        "confidence": 0.95,
        "resamples": 1000,
        "regressions": [],
        "improvements": [1],
    },
    "examples": [
        {
            "prompt": "<script>alert(1)</script>",
            "reference": "{}",
            "base": {"output": "<b>x</b>", "correct": False},
            "finetuned": {"output": "{}", "correct": True},
        },
        {"prompt": "p2", "reference": "r2", "base": {"output": "o"}, "finetuned": {"output": "r2"}},
    ],
}


def _report(**changes):
    kwargs = {
        "run_id": "run-1",
        "config": {"model": "m", "data": {"path": "d.jsonl"}, "train": {"epochs": 2}, "lora": {"r": 8}},
        "info": {"status": "finished", "timings": {"train": 12.5}},
        "metrics": METRICS,
        "evaluation": EVALUATION,
        "diagnosis": {"verdict": "healthy", "findings": [], "recommendations": []},
    }
    return render_report(**{**kwargs, **changes})


def test_the_report_is_self_contained_and_escapes_what_models_wrote():
    page = _report(
        data_report={
            "rows": 3,
            "format": "messages",
            "tokens": {"mean": 20, "max": 30},
            "warnings": [{"message": "<i>short</i>", "code": "few_rows"}],
        },
        token_histogram=token_histogram_png([10, 20, 30], 64),
    )
    assert not re.search(r"(src|href)=['\"]?https?://", page)  # plots are embedded, nothing is fetched
    assert page.count("data:image/png;base64,") == 2
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page and "&lt;b&gt;x&lt;/b&gt;" in page
    assert "&lt;i&gt;short&lt;/i&gt;" in page and "<td>rows read</td><td>3</td>" in page


@pytest.mark.parametrize(
    "evaluation, expected",
    [
        (
            EVALUATION,
            [
                "Test split: base model vs fine-tuned (2 examples, metric: json_fields)",
                "+0.7000",
                "[+0.5000, +0.9000]",
                "<b>2</b> better",
            ],
        ),
        (None, ["not evaluated yet"]),
    ],
)
def test_the_evaluation_section(evaluation, expected):
    page = _report(evaluation=evaluation)
    for text in expected:
        assert text in page


def test_improvements_are_green_and_loss_falls_count_as_better():
    page = _report()
    assert re.search(r"<td>loss</td>.*?<td class='better'>-0\.8000</td>", page)
    assert re.search(r"<td>field_accuracy</td>.*?<td class='better'>\+0\.7000</td>", page)


def test_plots_are_png():
    assert loss_curve_png(METRICS)[:4] == b"\x89PNG"
    assert token_histogram_png([5, 6, 7])[:4] == b"\x89PNG"
