import json

import pytest
from conftest import chat, write_jsonl

from tuneloop.data import DataError, load_chat_jsonl, validate_lengths

GOOD = json.dumps(chat("hi", "hello"))


# (row text, expected code, expected field) — each defect on line 2, after one good row.
DEFECTS = [
    ('{"messages": [', "invalid_json", None),
    ('[1, 2]', "wrong_type", None),
    ('{"text": "hi"}', "missing_field", "messages"),
    ('{"messages": []}', "wrong_type", "messages"),
    ('{"messages": ["hi"]}', "wrong_type", "messages[0]"),
    (json.dumps({"messages": [{"role": "bot", "content": "x"}, {"role": "assistant", "content": "y"}]}),
     "unknown_role", "messages[0].role"),
    (json.dumps({"messages": [{"role": "user", "content": "  "}, {"role": "assistant", "content": "y"}]}),
     "empty_content", "messages[0].content"),
    (json.dumps({"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "y"}]}),
     "wrong_type", "messages[0].content"),
    (json.dumps({"messages": [{"role": "user"}, {"role": "assistant", "content": "y"}]}),
     "missing_field", "messages[0].content"),
    (json.dumps({"messages": [{"role": "user", "content": "q"}]}), "no_final_assistant", "messages[0].role"),
    (json.dumps({"messages": [{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}]}),
     "no_user_turn", "messages"),
    (json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "system", "content": "s"},
                              {"role": "assistant", "content": "a"}]}), "misplaced_system", "messages[1].role"),
]


@pytest.mark.parametrize("line, code, field", DEFECTS, ids=[d[1] + "-" + str(i) for i, d in enumerate(DEFECTS)])
def test_each_defect_names_file_row_and_field(tmp_path, line, code, field):
    path = write_jsonl(tmp_path / "data.jsonl", [GOOD, line, GOOD])
    with pytest.raises(DataError) as e:
        load_chat_jsonl(path)
    [problem] = e.value.problems
    assert (problem.file, problem.row, problem.code, problem.field) == (str(path), 2, code, field)
    assert f"{path}:2" in str(e.value)


def test_all_problems_are_reported_not_just_the_first(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", ["{", GOOD, '{"x": 1}', GOOD, "nope"])
    with pytest.raises(DataError) as e:
        load_chat_jsonl(path)
    assert [p.row for p in e.value.problems] == [1, 3, 5]


def test_non_utf8_row(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(GOOD.encode() + b"\n" + '{"messages": "caf\xe9"}'.encode("latin-1") + b"\n")
    with pytest.raises(DataError) as e:
        load_chat_jsonl(path)
    assert [(p.row, p.code) for p in e.value.problems] == [(2, "encoding_error")]


@pytest.mark.parametrize("content, code", [(b"\x00\x01\x02binary", "binary_file"), (b"\n\n", "empty_file")])
def test_unusable_files(tmp_path, content, code):
    path = tmp_path / "d.jsonl"
    path.write_bytes(content)
    with pytest.raises(DataError) as e:
        load_chat_jsonl(path)
    assert e.value.problems[0].code == code


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        load_chat_jsonl(tmp_path / "absent.jsonl")


def test_real_data_loads_and_source_is_untouched(tmp_path, banking77_rows):
    path = write_jsonl(tmp_path / "b77.jsonl", banking77_rows)
    before = path.read_bytes()
    examples = load_chat_jsonl(path)
    assert len(examples) == len(banking77_rows)
    assert examples[0].row == 1 and examples[-1].row == len(banking77_rows)
    assert examples[0].prompt[0]["role"] == "system" and examples[0].answer == banking77_rows[0]["messages"][-1]["content"]
    assert path.read_bytes() == before


def test_corrupted_copy_of_real_data(tmp_path, banking77_rows):
    lines = [json.dumps(r) for r in banking77_rows[:50]]
    lines[9] = lines[9][:-5]  # truncated line, as from an interrupted export
    bad = dict(banking77_rows[20])
    bad["messages"] = bad["messages"][:-1]  # answer missing
    lines[20] = json.dumps(bad)
    path = write_jsonl(tmp_path / "b77.jsonl", lines)
    with pytest.raises(DataError) as e:
        load_chat_jsonl(path)
    assert [(p.row, p.code) for p in e.value.problems] == [(10, "invalid_json"), (21, "no_final_assistant")]


def test_too_long_examples_are_errors_not_truncated(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "d.jsonl", [chat("short", "ok"), chat("word " * 300, "ok")])
    examples = load_chat_jsonl(path)
    with pytest.raises(DataError) as e:
        validate_lengths(examples, tokenizer, 64, str(path))
    [problem] = e.value.problems
    assert (problem.row, problem.code, problem.field) == (2, "too_long", "messages")
    assert validate_lengths(examples[:1], tokenizer, 64, str(path))[0] <= 64
