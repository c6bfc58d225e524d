import json

import pytest

from tuneloop.eval import choose_metric, score
from tuneloop.eval.metrics import parse_json_object, per_example

REF = json.dumps({"category": "billing", "priority": "high", "product": None, "refund_requested": True})


@pytest.mark.parametrize(
    "text, expected",
    [
        ('{"a": 1}', {"a": 1}),
        ('Sure! ```json\n{"a": 1}\n```', {"a": 1}),
        ('{broken {"a": [1, 2]} tail', {"a": [1, 2]}),
        ("no json here", None),
        ("[1, 2]", None),
        ('{"a": ', None),
    ],
)
def test_parse_json_object(text, expected):
    assert parse_json_object(text) == expected


@pytest.mark.parametrize(
    "prediction, field_acc, exact, valid",
    [
        (REF, 1.0, 1.0, 1.0),
        ('{"category": "billing", "priority": "low", "product": null, "refund_requested": true}', 0.75, 0.0, 1.0),
        ('{"category": "billing"}', 0.25, 0.0, 1.0),
        ("I cannot help with that.", 0.0, 0.0, 0.0),
        ('{"category": "billing", "priority": "high", "product": null, "refund_requested": "true"}', 0.75, 0.0, 1.0),
    ],
)
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


@pytest.mark.parametrize(
    "preds, refs, expected",
    [
        (["a", " b "], ["a", "b"], 1.0),
        (["a", "c"], ["a", "b"], 0.5),
        (["A"], ["a"], 0.0),
    ],
)
def test_exact_match(preds, refs, expected):
    assert score("exact_match", preds, refs)[0]["exact_match"] == expected


@pytest.mark.parametrize(
    "refs, requested, expected",
    [
        ([REF, REF], "auto", "json_fields"),
        ([REF, "card_arrival"], "auto", "exact_match"),
        (["42"], "auto", "exact_match"),  # a bare number is JSON, but not an object
        ([REF], "exact_match", "exact_match"),
    ],
)
def test_choose_metric(refs, requested, expected):
    assert choose_metric(refs, requested) == expected


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="2 predictions for 1 references"):
        score("exact_match", ["a", "b"], ["a"])


# --- task metrics on the real data in ../shared/datasets ---


def _jsonl(path, n):
    return [json.loads(line) for line in path.read_text().splitlines()[:n]]


def test_final_number_on_gsm8k():
    from conftest import SHARED
    from tuneloop.eval.metrics import final_number

    answers = [r["answer"] for r in _jsonl(SHARED / "gsm8k" / "train.jsonl", 300)]
    assert all(final_number(a) is not None for a in answers)
    assert choose_metric(answers) == "final_number"
    assert final_number(answers[0]) == 72.0  # "... #### 72"
    predictions = ["She sold 72 clips in total.", "#### 10.00", "I think 5, no wait, 7"]
    metrics, per = score("final_number", predictions, answers[:2] + ["#### 7"])
    assert metrics["exact_match"] == 1.0 and per[1]["predicted_number"] == 10.0
    assert score("final_number", ["no idea"], answers[:1])[0]["exact_match"] == 0.0


def test_classification_on_banking77():
    import csv

    from sklearn.metrics import f1_score

    from conftest import SHARED

    with open(SHARED / "banking77" / "train.csv", newline="", encoding="utf-8") as f:
        labels = [r["category"] for r in csv.DictReader(f)][:300]
    predictions = [label if i % 3 else "card_arrival" for i, label in enumerate(labels)]
    metrics, per = score("classification", predictions, labels)
    assert metrics["accuracy"] == pytest.approx(sum(p == t for p, t in zip(predictions, labels)) / 300)
    assert metrics["macro_f1"] == pytest.approx(
        f1_score(labels, predictions, labels=sorted(set(labels)), average="macro", zero_division=0)
    )
    assert len([k for k in metrics if k.startswith("f1/")]) == len(set(labels))
    from tuneloop.eval.metrics import confusion

    matrix = confusion(per)
    assert sum(map(sum, matrix["matrix"])) == 300 and "(other)" not in matrix["labels"]
    assert "(other)" in confusion(score("classification", ["gibberish"], labels[:1])[1])["labels"]


def test_generation_on_dialogsum():
    from conftest import SHARED

    rows = _jsonl(SHARED / "dialogsum" / "dev.jsonl", 50)
    summaries = [r["summary"] for r in rows]
    assert choose_metric(summaries) == "generation"
    perfect, _ = score("generation", summaries, summaries)
    assert perfect["bleu"] == pytest.approx(100.0) and perfect["rougeL"] == pytest.approx(1.0)
    first_lines = [r["dialogue"].split("\n")[0] for r in rows]  # a weak "summary": the opening line
    weak, per = score("generation", first_lines, summaries)
    assert 0 < weak["rougeL"] < 0.5 and 0 < weak["bleu"] < 30 and all(0 <= e["chrf"] <= 1 for e in per)


def test_custom_metric_entry_point():
    metrics, _ = score("tests_metric_plugin:length_ratio", ["ab", "abcd"], ["abcd", "abcd"])
    assert metrics == {"length_ratio": 0.75}
    with pytest.raises(ValueError, match="cannot import"):
        score("no_such_module:f", ["a"], ["a"])


CALL = '<tool_call>\n{"name": "weather", "arguments": {"city": "Paris"}}\n</tool_call>'


@pytest.mark.parametrize(
    "prediction, reference, correct, name_correct",
    [
        (CALL, CALL, True, True),
        ('{"name": "weather", "parameters": {"city": "Paris"}}', CALL, True, True),  # Llama 3.1's own form
        ('{"name": "weather", "arguments": "{\\"city\\": \\"Paris\\"}"}', CALL, True, True),  # arguments as a string
        ('<tool_call>{"name": "weather", "arguments": {"city": "Rome"}}</tool_call>', CALL, False, True),
        ('<tool_call>{"name": "time", "arguments": {"city": "Paris"}}</tool_call>', CALL, False, False),
        ("It is sunny.", CALL, False, False),
        ("It is sunny.", "It is 21 degrees.", True, True),  # no call expected, none made
        (CALL, "It is 21 degrees.", False, False),
    ],
)
def test_tool_calls_compare_names_and_arguments(prediction, reference, correct, name_correct):
    [record] = per_example("tool_calls", [prediction], [reference])
    assert (record["correct"], record["name_correct"]) == (correct, name_correct)


def test_tool_calls_aggregate_and_auto_choice():
    preds, refs = [CALL, "no", "words"], [CALL, CALL, "words"]
    assert choose_metric(refs) == "tool_calls"
    metrics, _ = score("tool_calls", preds, refs)
    assert metrics == pytest.approx({"tool_call_accuracy": 2 / 3, "tool_name_accuracy": 2 / 3})
