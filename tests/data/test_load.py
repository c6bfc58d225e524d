"""Reading every supported format and file type, and naming each defect's file, row and field."""

import csv
import json

import pytest

from conftest import SHARED, chat, write_jsonl
from tuneloop.data import (
    DataError,
    load_examples,
    load_examples_strict,
    validate_lengths,
)


def load_chat_jsonl(path):
    return load_examples_strict(path, fmt="messages").examples


GOOD = json.dumps(chat("hi", "hello"))


# (row text, expected code, expected field) — each defect on line 2, after one good row.
DEFECTS = [
    ('{"messages": [', "invalid_json", None),
    ("[1, 2]", "wrong_type", None),
    ('{"text": "hi"}', "missing_field", "messages"),
    ('{"messages": []}', "wrong_type", "messages"),
    ('{"messages": ["hi"]}', "wrong_type", "messages[0]"),
    (
        json.dumps({"messages": [{"role": "bot", "content": "x"}, {"role": "assistant", "content": "y"}]}),
        "unknown_role",
        "messages[0].role",
    ),
    (
        json.dumps({"messages": [{"role": "user", "content": "  "}, {"role": "assistant", "content": "y"}]}),
        "empty_content",
        "messages[0].content",
    ),
    (
        json.dumps({"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "y"}]}),
        "wrong_type",
        "messages[0].content",
    ),
    (
        json.dumps({"messages": [{"role": "user"}, {"role": "assistant", "content": "y"}]}),
        "missing_field",
        "messages[0].content",
    ),
    (json.dumps({"messages": [{"role": "user", "content": "q"}]}), "no_final_assistant", "messages[0].role"),
    (
        json.dumps({"messages": [{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}]}),
        "no_user_turn",
        "messages",
    ),
    (
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": "q"},
                    {"role": "system", "content": "s"},
                    {"role": "assistant", "content": "a"},
                ]
            }
        ),
        "misplaced_system",
        "messages[1].role",
    ),
    *[
        (json.dumps({"messages": [{"role": "user", "content": "q"}, assistant], **extra}), code, field)
        for assistant, extra, code, field in [
            ({"role": "assistant", "content": "a", "weight": 2}, {}, "bad_weight", "messages[1].weight"),
            ({"role": "assistant", "content": "a", "weight": True}, {}, "bad_weight", "messages[1].weight"),
            (
                {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{oops"}}]},
                {},
                "bad_tool_call",
                "messages[1].tool_calls[0].function.arguments",
            ),
            (
                {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "[1]"}}]},
                {},
                "bad_tool_call",
                "messages[1].tool_calls[0].function.arguments",
            ),
            (
                {"role": "assistant", "tool_calls": [{"type": "function"}]},
                {},
                "bad_tool_call",
                "messages[1].tool_calls[0].function",
            ),
            (
                {"role": "assistant", "tool_calls": [{"function": {"name": "g", "arguments": "{}"}}]},
                {"tools": [{"type": "function", "function": {"name": "f"}}]},
                "unknown_tool",
                "messages[1].tool_calls[0].function.name",
            ),
            (
                {"role": "assistant", "content": "a"},
                {"tools": [{"function": {}}]},
                "bad_tool",
                "tools[0].function.name",
            ),
            ({"role": "assistant", "tool_calls": []}, {}, "wrong_type", "messages[1].tool_calls"),
        ]
    ],
    (
        json.dumps(
            {"messages": [{"role": "user", "content": "q", "weight": 1}, {"role": "assistant", "content": "a"}]}
        ),
        "bad_weight",
        "messages[0].weight",
    ),
]


@pytest.mark.parametrize(
    "row, fmt, prompt, rejected",
    [
        ({"prompt": "Q?", "chosen": "yes", "rejected": "no"}, "preference", [{"role": "user", "content": "Q?"}], "no"),
        (
            {
                "prompt": [{"role": "system", "content": "S"}, {"role": "user", "content": "Q?"}],
                "chosen": [{"role": "assistant", "content": "yes"}],
                "rejected": [{"role": "assistant", "content": "no"}],
            },
            "preference",
            [{"role": "system", "content": "S"}, {"role": "user", "content": "Q?"}],
            "no",
        ),
        (
            {
                "input": {"messages": [{"role": "user", "content": "Q?"}]},
                "preferred_output": [{"role": "assistant", "content": "yes"}],
                "non_preferred_output": [{"role": "assistant", "content": "no"}],
            },
            "openai_preference",
            [{"role": "user", "content": "Q?"}],
            "no",
        ),
    ],
)
def test_preference_formats(tmp_path, row, fmt, prompt, rejected):
    rows = [{**row, "n": i} for i in range(10)]
    data = load_examples_strict(write_jsonl(tmp_path / "p.jsonl", rows), label="none")
    example = data.examples[0]
    assert data.format == fmt and example.prompt == prompt
    assert (example.answer, example.rejected) == ("yes", rejected)
    assert example.with_rejected().messages[-1] == {"role": "assistant", "content": "no"}


@pytest.mark.parametrize(
    "row, code, field",
    [
        ({"prompt": "Q", "chosen": "same", "rejected": " same"}, "identical_pair", "rejected"),
        ({"prompt": "Q", "chosen": "", "rejected": "no"}, "empty_content", "chosen"),
        ({"prompt": "Q", "chosen": [{"role": "user", "content": "x"}], "rejected": "no"}, "wrong_type", "chosen"),
        (
            {"input": {"messages": [{"role": "user"}]}, "preferred_output": "a", "non_preferred_output": "b"},
            "missing_field",
            "input.messages[0].content",
        ),
        ({"input": "Q", "preferred_output": "a", "non_preferred_output": "b"}, "wrong_type", "input"),
    ],
)
def test_preference_defects_name_row_and_field(tmp_path, row, code, field):
    good = (
        {"prompt": "Q", "chosen": "a", "rejected": "b"}
        if "prompt" in row
        else {
            "input": {"messages": [{"role": "user", "content": "Q"}]},
            "preferred_output": "a",
            "non_preferred_output": "b",
        }
    )
    with pytest.raises(DataError) as e:
        load_examples_strict(write_jsonl(tmp_path / "p.jsonl", [good, row, good]))
    [problem] = e.value.problems
    assert (problem.row, problem.code, problem.field) == (2, code, field)


def test_openai_tool_calls_and_weights_are_read(tmp_path):
    row = {
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": "Let me look.", "weight": 0},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "21C"},
            {"role": "assistant", "content": "21 degrees.", "weight": 1},
        ],
        "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}],
    }
    [example] = load_examples_strict(write_jsonl(tmp_path / "d.jsonl", [row] * 10), label="none").examples[:1]
    assert example.messages[1] == {"role": "assistant", "content": "Let me look.", "weight": 0}
    assert example.messages[2] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"name": "weather", "arguments": {"city": "Paris"}, "id": "c1"}],
    }
    assert example.messages[3] == {"role": "tool", "content": "21C", "tool_call_id": "c1"}
    assert example.tools == row["tools"] and example.assistant_turns == 3


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
    assert (
        examples[0].prompt[0]["role"] == "system" and examples[0].answer == banking77_rows[0]["messages"][-1]["content"]
    )
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
    path = write_jsonl(tmp_path / "d.jsonl", [chat("short", "ok"), chat("word " * 300, "ok"), chat("q", "word " * 60)])
    examples = load_chat_jsonl(path)
    with pytest.raises(DataError) as e:
        validate_lengths(examples, tokenizer, 64)
    assert [(p.row, p.code, p.field) for p in e.value.problems] == [
        (2, "no_trainable_tokens", "messages"),
        (3, "too_long", "messages"),
    ]
    assert validate_lengths(examples[:1], tokenizer, 64).total[0] <= 64


ANSWER = {"role": "assistant", "content": "A"}
# (row, expected format, expected messages): one row of each format, auto-detected.
FORMATS = [
    ({"messages": [{"role": "user", "content": "Q"}, ANSWER]}, "messages", [{"role": "user", "content": "Q"}, ANSWER]),
    ({"prompt": "Q", "completion": "A"}, "prompt_completion", [{"role": "user", "content": "Q"}, ANSWER]),
    (
        {"prompt": [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}], "completion": [ANSWER]},
        "prompt_completion",
        [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}, ANSWER],
    ),
    ({"input": "Q", "output": "A"}, "input_output", [{"role": "user", "content": "Q"}, ANSWER]),
    (
        {"instruction": "Do", "input": "this", "output": "A"},
        "alpaca",
        [{"role": "user", "content": "Do\n\nthis"}, ANSWER],
    ),
    ({"instruction": "Do", "input": "", "output": "A"}, "alpaca", [{"role": "user", "content": "Do"}, ANSWER]),
    (
        {"conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]},
        "sharegpt",
        [{"role": "user", "content": "Q"}, ANSWER],
    ),
    (
        {"system": "S", "conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]},
        "sharegpt",
        [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}, ANSWER],
    ),
    ({"text": "A"}, "text", [ANSWER]),
]


@pytest.mark.parametrize("row, fmt, messages", FORMATS, ids=[f"{f[1]}-{i}" for i, f in enumerate(FORMATS)])
def test_formats_are_detected_and_converted(tmp_path, row, fmt, messages):
    data = load_examples_strict(write_jsonl(tmp_path / "d.jsonl", [row] * 3), label="none")
    assert data.format == fmt
    assert data.examples[0].messages == messages
    assert data.examples[0].kind == ("text" if fmt == "text" else "chat")


# (format, bad row, code, field)
FORMAT_DEFECTS = [
    ("prompt_completion", {"prompt": "Q", "completion": 3}, "wrong_type", "completion"),
    ("prompt_completion", {"prompt": "", "completion": "A"}, "empty_content", "prompt"),
    ("input_output", {"input": "Q"}, "missing_field", "output"),
    ("alpaca", {"instruction": "Do", "input": 5, "output": "A"}, "wrong_type", "input"),
    (
        "sharegpt",
        {"conversations": [{"from": "alien", "value": "Q"}, {"from": "gpt", "value": "A"}]},
        "unknown_role",
        "conversations[0].from",
    ),
    ("sharegpt", {"conversations": [{"from": "human", "value": "Q"}]}, "no_final_assistant", "conversations[0].from"),
    ("text", {"text": "  "}, "empty_content", "text"),
]


@pytest.mark.parametrize("fmt, row, code, field", FORMAT_DEFECTS, ids=[f"{d[0]}-{d[2]}" for d in FORMAT_DEFECTS])
def test_format_defects_name_row_and_field(tmp_path, fmt, row, code, field):
    good = {
        "prompt_completion": {"prompt": "Q", "completion": "A"},
        "input_output": {"input": "Q", "output": "A"},
        "alpaca": {"instruction": "Q", "output": "A"},
        "text": {"text": "A"},
        "sharegpt": {"conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]},
    }[fmt]
    data = load_examples(write_jsonl(tmp_path / "d.jsonl", [good, row, good]), fmt=fmt)
    assert [(p.row, p.code, p.field) for p in data.problems] == [(2, code, field)]
    assert len(data.examples) == 2


def _banking77(n=60) -> list[dict]:
    with open(SHARED / "banking77" / "train.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))[:n]


def _write_csv(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


@pytest.mark.parametrize("suffix", ["csv", "jsonl", "json", "parquet", "folder"])
def test_file_types_with_a_column_mapping(tmp_path, suffix):
    """banking77's text,category in every file type; a template maps it to prompt/completion."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = _banking77()
    if suffix == "csv":
        path = _write_csv(tmp_path / "b.csv", rows)
    elif suffix == "jsonl":
        path = write_jsonl(tmp_path / "b.jsonl", rows)
    elif suffix == "json":
        path = tmp_path / "b.json"
        path.write_text(json.dumps(rows))
    elif suffix == "parquet":
        path = tmp_path / "b.parquet"
        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        path = tmp_path / "folder"
        path.mkdir()
        write_jsonl(path / "a.jsonl", rows[:30])
        _write_csv(path / "b.csv", rows[30:])
    data = load_examples_strict(
        path, columns={"prompt": "Intent of: {text}", "completion": "{category}"}, system_prompt="Classify."
    )
    assert len(data.examples) == 60 and data.format == "columns"
    first = data.examples[0]
    assert first.messages == [
        {"role": "system", "content": "Classify."},
        {"role": "user", "content": f"Intent of: {rows[0]['text']}"},
        {"role": "assistant", "content": rows[0]["category"]},
    ]
    assert first.row == 1 and first.record == rows[0]
    assert data.has_labels and first.label == rows[0]["category"]


def test_csv_defects_name_the_data_row(tmp_path):
    rows = _banking77(10)
    path = _write_csv(tmp_path / "b.csv", rows)
    lines = path.read_bytes().split(b"\r\n")
    lines[3] = lines[3] + b",extra"  # data row 3: one column too many
    lines[5] = "caf\xe9 card,card_arrival".encode("latin-1")  # data row 5: not UTF-8
    path.write_bytes(b"\r\n".join(lines))
    data = load_examples(path, columns={"prompt": "{text}", "completion": "{category}"})
    assert [(p.row, p.code, p.field) for p in data.problems] == [
        (3, "wrong_column_count", None),
        (5, "encoding_error", "text"),
    ]
    missing = load_examples(path, columns={"prompt": "{txt}", "completion": "{category}"})
    assert (missing.problems[0].row, missing.problems[0].code, missing.problems[0].field) == (1, "missing_field", "txt")


@pytest.mark.parametrize(
    "name, content, code",
    [
        ("d.parquet", b"PAR1 not really parquet", "invalid_parquet"),
        ("d.csv", b"\x89PNG\r\n\x1a\n\x00\x00", "binary_file"),
        ("d.json", b'[{"a": 1},', "invalid_json"),
        ("d.xlsx", b"whatever", "unknown_file_type"),
    ],
)
def test_corrupt_files_get_a_clear_problem(tmp_path, name, content, code):
    path = tmp_path / name
    path.write_bytes(content)
    data = load_examples(path)
    assert [p.code for p in data.problems] == [code] and not data.examples


def test_unknown_format_says_how_to_map_it(tmp_path):
    data = load_examples(SHARED / "gsm8k" / "train.jsonl")
    [problem] = data.problems
    assert problem.code == "unknown_format" and "['answer', 'question']" in problem.message
    mapped = load_examples_strict(
        SHARED / "gsm8k" / "train.jsonl", columns={"prompt": "{question}", "completion": "{answer}"}
    )
    assert len(mapped.examples) == 7473 and not mapped.has_labels


def test_labels_inferred_only_for_categorical_answers(tmp_path):
    rows = [chat(f"q{i}", ["yes", "no"][i % 2]) for i in range(20)]
    assert load_examples_strict(write_jsonl(tmp_path / "a.jsonl", rows)).has_labels
    rows = [chat(f"q{i}", f"a long free-form answer number {i}") for i in range(20)]
    assert not load_examples_strict(write_jsonl(tmp_path / "b.jsonl", rows)).has_labels
    rows = [dict(chat(f"q{i}", f"answer {i}"), topic=["x", "y"][i % 2]) for i in range(20)]
    data = load_examples_strict(write_jsonl(tmp_path / "c.jsonl", rows), label="topic")
    assert [e.label for e in data.examples[:2]] == ["x", "y"]
