"""Cleaning: normalisation, markup, PII redaction; a cleaned copy and a row log, never the source."""

import json

import pytest

from conftest import chat, write_jsonl
from tuneloop.data import clean_file, clean_text

CASES = [
    # (input, redact, output, changes)
    ("ﬁne  \t print\u200b", False, "fine print", ["unicode", "whitespace"]),
    ("<p>Hello&nbsp;<b>world</b></p>", False, "Hello world", ["markup", "whitespace"]),
    ("use List<int> when a < b > c", False, "use List<int> when a < b > c", []),
    ("a\r\n\r\n\r\n\r\nb  ", False, "a\n\nb", ["whitespace"]),
    ("mail jane.doe@example.co.uk now", True, "mail [EMAIL] now", ["pii:email"]),
    ("card 4111 1111 1111 1111 ok", True, "card [CARD_NUMBER] ok", ["pii:card"]),
    ("order 1234 5678 9012 3456", True, "order 1234 5678 9012 3456", []),  # fails the Luhn check
    ("from 192.168.0.12 and 999.1.1.1", True, "from [IP_ADDRESS] and 999.1.1.1", ["pii:ip"]),
    ("call +44 20 7946 0958 or (555) 123-4567", True, "call [PHONE] or [PHONE]", ["pii:phone"]),
    ("version 1.2.3 costs 15.99", True, "version 1.2.3 costs 15.99", []),
]


@pytest.mark.parametrize("text, redact, expected, changes", CASES)
def test_clean_text(text, redact, expected, changes):
    cleaned = clean_text(text, redact_pii=redact)
    assert cleaned.text == expected and cleaned.changes == changes


def test_clean_file_logs_every_row_and_keeps_the_source(tmp_path):
    rows = [
        chat("Hello  <br> there", "ok"),
        chat("\u200b", "dropped: empty prompt"),
        "{broken",
        chat("email me at a@b.io", "sure"),
        chat("fine", "fine"),
    ]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    before = src.read_bytes()
    summary = clean_file(src, tmp_path / "out.jsonl", redact_pii=True)
    assert src.read_bytes() == before
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["messages"][0]["content"] for r in out] == ["Hello there", "email me at [EMAIL]", "fine"]
    assert (summary.rows_in, summary.kept, summary.dropped, summary.changed) == (5, 3, 2, 2)
    assert summary.pii == {"email": 1}
    by_row = {e["row"]: e for e in summary.log}
    assert by_row[2]["action"] == "dropped" and "empty_content" in by_row[2]["reasons"][0]
    assert by_row[3]["action"] == "dropped" and "invalid_json" in by_row[3]["reasons"][0]
    assert by_row[1]["reasons"] == ["markup", "whitespace"] and by_row[4]["reasons"] == ["pii:email"]


def test_refuses_to_overwrite_the_source(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [chat("a", "b")])
    with pytest.raises(ValueError, match="refusing to overwrite"):
        clean_file(src, src)


def test_unknown_format_is_an_error_not_a_file_of_dropped_rows(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [{"question": "q", "answer": "a"}])
    with pytest.raises(ValueError, match=r"keys \['answer', 'question'\]"):
        clean_file(src, tmp_path / "out.jsonl")
    assert not (tmp_path / "out.jsonl").exists()
    summary = clean_file(src, tmp_path / "out.jsonl", columns={"prompt": "{question}", "completion": "{answer}"})
    assert summary.kept == 1


@pytest.mark.parametrize("content", [None, b"\x00\x01binary", b""])
def test_unreadable_input_is_an_error_and_writes_nothing(tmp_path, content):
    from tuneloop.data import DataError

    src = tmp_path / "in.jsonl"
    if content is not None:
        src.write_bytes(content)
    with pytest.raises(DataError):
        clean_file(src, tmp_path / "out.jsonl")
    assert not (tmp_path / "out.jsonl").exists()
