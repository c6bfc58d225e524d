"""What a fine-tune costs the model (tuneloop/eval/general.py): the suite's files, the measures on
the tiny model, the paired comparison and the task's form."""

import json

import pytest

from conftest import write_jsonl
from tuneloop.eval.general import (
    DEFAULT_SUITE,
    GeneralDataError,
    cached_base_side,
    compare_general,
    load_suite,
    measure_general,
    paired,
    task_form,
)


def test_the_default_suite_is_shipped_with_its_notice():
    suite = load_suite("default")
    assert [(s.name, s.kind, len(s.rows)) for s in suite.sets] == [("arc_easy", "choice", 60), ("piqa", "choice", 60)]
    assert len(suite.instructions) == 40 and "What is the capital of France?" in suite.instructions
    assert "CC BY-SA 4.0" in (DEFAULT_SUITE / "NOTICE.md").read_text()
    assert load_suite("none").sets == [] and load_suite("none").instructions == suite.instructions


def test_users_files_replace_the_sets_and_the_instructions(tmp_path):
    choice = write_jsonl(tmp_path / "quiz.jsonl", [{"question": "2+2?", "choices": ["3", "4"], "answer": 1}])
    loss = write_jsonl(tmp_path / "prose.jsonl", [{"prompt": "Once", "completion": "upon a time"}])
    asks = write_jsonl(tmp_path / "asks.jsonl", [{"prompt": "Say hi."}, {"prompt": "Count to 3."}])
    suite = load_suite([str(choice), str(loss), str(asks)])
    assert [(s.name, s.kind) for s in suite.sets] == [("quiz", "choice"), ("prose", "loss")]
    assert suite.instructions == ["Say hi.", "Count to 3."]
    assert suite.fingerprint != load_suite([str(choice), str(loss)]).fingerprint


@pytest.mark.parametrize(
    "line, message",
    [
        ("not json", ":1: not JSON"),
        ('{"question": "q", "choices": ["a"], "answer": 0}', ":1: choices: must be a list of at least two"),
        ('{"question": "q", "choices": ["a", "b"], "answer": 2}', ":1: answer: must be the 0-based index"),
        ('{"question": "q", "choices": ["a", "b"], "answer": true}', ":1: answer: must be the 0-based index"),
        ('{"question": "", "choices": ["a", "b"], "answer": 0}', ":1: question: missing or empty"),
        ('{"prompt": "p", "completion": ""}', ":1: completion: missing or empty"),
        ('{"text": "hello"}', ":1: prompt: missing or empty"),
        ("[1, 2]", ":1: a row must be a JSON object"),
    ],
)
def test_bad_rows_name_the_file_line_and_field(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(GeneralDataError, match=f"bad.jsonl{message}"):
        load_suite([str(path)])


def test_mixed_kinds_and_missing_files_are_errors(tmp_path):
    path = write_jsonl(
        tmp_path / "mixed.jsonl", [{"prompt": "a"}, {"question": "q", "choices": ["a", "b"], "answer": 0}]
    )
    with pytest.raises(GeneralDataError, match="mixed.jsonl:2: a choice row in a file of instructions rows"):
        load_suite([str(path)])
    with pytest.raises(GeneralDataError, match="nowhere.jsonl: no such file"):
        load_suite([str(tmp_path / "nowhere.jsonl")])


@pytest.mark.parametrize(
    "answers, leaked, clean",
    [
        (['{"a": 1}', '{"b": 2}'], '{"intent": "x"', "Paris is the capital."),  # cut JSON still leaks
        (['{"a": 1}', '{"b": 2}'], '"Bienvenue, welcome to Paris!"', "The capital is Paris."),  # a quoted fragment
        (["card_arrival", "card_arrival", "top_up", "top_up"], "top_up\nmore", "It is Paris."),
        (
            ["card_arrival", "card_arrival", "top_up", "top_up"],
            "arrival_card_top",
            "a top card",
        ),  # label-shaped, not a label
        (["A long free answer one.", "Another long free answer."], "Another long free answer.", "Paris."),
    ],
)
def test_task_form(answers, leaked, clean):
    name, leaks = task_form(answers)
    assert leaks(leaked) and not leaks(clean), name


def test_paired_difference_and_interval():
    stats = paired([0, 0, 1, 1], [1, 1, 1, 0])
    assert stats["n"] == 4 and stats["base"] == 0.5 and stats["finetuned"] == 0.75 and stats["difference"] == 0.25
    # differences 1, 1, 0, -1: sd 0.9574, half-width 1.96 * 0.9574 / 2
    assert stats["low"] == pytest.approx(0.25 - 0.93827, abs=1e-4) and stats["high"] == pytest.approx(1.18827, abs=1e-4)
    assert paired([], [])["difference"] is None


def _side(right, leaked_answers, nll):
    return {"sets": {"quiz": right}, "answers": leaked_answers, "answer_nll": nll, "seconds": 1.0}


def test_compare_general_reads_leakage_score_and_drift(tmp_path):
    quiz = write_jsonl(
        tmp_path / "quiz.jsonl", [{"question": f"q{i}", "choices": ["a", "b"], "answer": 0} for i in range(4)]
    )
    asks = write_jsonl(tmp_path / "asks.jsonl", [{"prompt": f"p{i}"} for i in range(4)])
    suite = load_suite([str(quiz), str(asks)])
    base = _side(
        [[1, 1], [1, 1], [0, 1], [0, 0]], ["Sure.", "Hi!", "Yes.", "No."], [[4.0, 4], [8.0, 4], [2.0, 2], [1.0, 1]]
    )
    tuned = _side([[1, 1], [0, 0], [0, 0], [0, 0]], ['{"x": 1}', '{"y"', "Yes.", '{"z": 3}'], [[8.0, 4]] * 4)
    result = compare_general(suite, base, tuned, ['{"k": 1}', '{"k": 2}'])
    assert result["leakage"]["form"] == "JSON (an object or a quoted string)"
    assert (result["leakage"]["base"], result["leakage"]["finetuned"]) == (0.0, 0.75)
    assert [e["leaked"] for e in result["leakage"]["examples"]] == [True, True, False, True]
    assert result["score"]["base"] == 75.0 and result["score"]["finetuned"] == 25.0  # acc_norm, in points
    assert result["sets"]["quiz"]["acc"]["difference"] == -0.25
    assert result["drift"]["base"] == 1.25 and result["drift"]["difference"] == 0.75  # nats per token


def test_measure_general_on_the_tiny_model(tiny_model, tokenizer, tmp_path):
    from tuneloop.models import Precision, load_model

    quiz = write_jsonl(
        tmp_path / "quiz.jsonl",
        [{"question": f"{i}+1?", "choices": ["one", "two", "three"], "answer": i % 3} for i in range(5)],
    )
    prose = write_jsonl(tmp_path / "prose.jsonl", [{"prompt": "Once", "completion": "upon a time"}])
    suite = load_suite([str(quiz), str(prose)])
    model = load_model(tiny_model, Precision.fp32)
    side = measure_general(model, tokenizer, suite, batch_size=4)
    assert len(side["sets"]["quiz"]) == 5 and all(r in ([0, 0], [0, 1], [1, 0], [1, 1]) for r in side["sets"]["quiz"])
    [[nll, tokens]] = side["sets"]["prose"]
    assert tokens == len(tokenizer(" upon a time", add_special_tokens=False)["input_ids"]) and nll > 0
    assert len(side["answers"]) == len(suite.instructions) == len(side["answer_nll"])
    again = measure_general(model, tokenizer, suite, batch_size=16, reference_answers=side["answers"])
    assert again["answers"] == side["answers"]  # greedy: the same answers
    for (a, n), (b, m) in zip(side["answer_nll"], again["answer_nll"]):
        assert n == m and a == pytest.approx(b, rel=1e-4)  # the same model scores its own answers alike


def test_the_base_side_is_cached_per_weights_suite_and_precision(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNELOOP_HOME", str(tmp_path / "home"))
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"x")
    suite, calls = load_suite("none"), []

    def measure():
        calls.append(1)
        return {"answers": ["a"], "seconds": 2.0}

    assert cached_base_side(folder, "fp32", suite, measure) == {"answers": ["a"], "seconds": 2.0}
    assert cached_base_side(folder, "fp32", suite, measure)["cached"] is True and len(calls) == 1
    cached_base_side(folder, "bf16", suite, measure)
    (folder / "model.safetensors").write_bytes(b"changed")
    cached_base_side(folder, "fp32", suite, measure)
    assert len(calls) == 3
    assert json.loads(next((tmp_path / "home" / "general").glob("*.json")).read_text())["answers"] == ["a"]
