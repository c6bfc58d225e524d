import json

import pytest

from tuneloop.eval import choose_metric, score
from tuneloop.eval.metrics import parse_json_object

REF = json.dumps({"category": "billing", "priority": "high", "product": None, "refund_requested": True})


@pytest.mark.parametrize("text, expected", [
    ('{"a": 1}', {"a": 1}),
    ('Sure! ```json\n{"a": 1}\n```', {"a": 1}),
    ('{broken {"a": [1, 2]} tail', {"a": [1, 2]}),
    ("no json here", None),
    ("[1, 2]", None),
    ('{"a": ', None),
])
def test_parse_json_object(text, expected):
    assert parse_json_object(text) == expected


@pytest.mark.parametrize("prediction, field_acc, exact, valid", [
    (REF, 1.0, 1.0, 1.0),
    ('{"category": "billing", "priority": "low", "product": null, "refund_requested": true}', 0.75, 0.0, 1.0),
    ('{"category": "billing"}', 0.25, 0.0, 1.0),
    ("I cannot help with that.", 0.0, 0.0, 0.0),
    ('{"category": "billing", "priority": "high", "product": null, "refund_requested": "true"}', 0.75, 0.0, 1.0),
])
def test_json_fields_pinned(prediction, field_acc, exact, valid):
    metrics, per = score("json_fields", [prediction], [REF])
    assert (metrics["field_accuracy"], metrics["exact_match"], metrics["valid_json"]) == (field_acc, exact, valid)
    assert per[0]["correct"] == (exact == 1.0)


def test_per_field_breakdown():
    refs = [REF, REF]
    preds = [REF, '{"category": "shipping", "priority": "high", "product": null, "refund_requested": true}']
    metrics, _ = score("json_fields", preds, refs)
    assert metrics["field_accuracy/category"] == 0.5 and metrics["field_accuracy/priority"] == 1.0
    assert metrics["field_accuracy"] == 7 / 8


@pytest.mark.parametrize("preds, refs, expected", [
    (["a", " b "], ["a", "b"], 1.0),
    (["a", "c"], ["a", "b"], 0.5),
    (["A"], ["a"], 0.0),
])
def test_exact_match(preds, refs, expected):
    assert score("exact_match", preds, refs)[0]["exact_match"] == expected


@pytest.mark.parametrize("refs, requested, expected", [
    ([REF, REF], "auto", "json_fields"),
    ([REF, "card_arrival"], "auto", "exact_match"),
    (["42"], "auto", "exact_match"),  # a bare number is JSON, but not an object
    ([REF], "exact_match", "exact_match"),
])
def test_choose_metric(refs, requested, expected):
    assert choose_metric(refs, requested) == expected


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="2 predictions for 1 references"):
        score("exact_match", ["a", "b"], ["a"])
