"""Read chat examples (OpenAI `messages` JSONL) and check every row.

A row is {"messages": [{"role": ..., "content": ...}, ...]} with an optional system turn first,
at least one user turn, and an assistant turn last: that last turn is what the model learns to
produce. Other top-level keys (ids, metadata) are allowed and ignored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tuneloop.data.problems import DataError, Problem

ROLES = {"system", "user", "assistant", "tool"}


@dataclass(frozen=True)
class Example:
    messages: list[dict[str, str]]
    row: int  # 1-based line in the source file, kept so every later report can point back

    @property
    def prompt(self) -> list[dict[str, str]]:
        return self.messages[:-1]

    @property
    def answer(self) -> str:
        return self.messages[-1]["content"]

    def to_json(self) -> dict:
        return {"messages": self.messages, "source_row": self.row}


def load_chat_jsonl(path: str | Path) -> list[Example]:
    """Every row must be valid; otherwise DataError lists all problems. The file is only read."""
    path = Path(path)
    if not path.is_file():
        raise DataError([Problem(str(path), None, None, "not_found", "file not found")])
    raw = path.read_bytes()
    if b"\x00" in raw[:8192]:
        raise DataError([Problem(str(path), None, None, "binary_file", "looks like a binary file, expected JSONL text")])
    examples, problems = [], []
    for number, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        example = _parse_row(str(path), number, line, problems)
        if example is not None:
            examples.append(example)
    if not examples and not problems:
        problems.append(Problem(str(path), None, None, "empty_file", "no examples in the file"))
    if problems:
        raise DataError(problems)
    return examples


def _parse_row(file: str, row: int, line: bytes, problems: list[Problem]) -> Example | None:
    def bad(field: str | None, code: str, message: str) -> None:
        problems.append(Problem(file, row, field, code, message))

    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as e:
        bad(None, "encoding_error", f"not UTF-8 (byte {e.start}: {line[e.start:e.start + 1]!r})")
        return None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        bad(None, "invalid_json", f"not valid JSON: {e.msg} at column {e.colno}")
        return None
    if not isinstance(obj, dict):
        bad(None, "wrong_type", f"expected a JSON object, got {type(obj).__name__}")
        return None
    messages = obj.get("messages")
    if messages is None:
        bad("messages", "missing_field", "missing; each row needs a 'messages' list")
        return None
    if not isinstance(messages, list) or not messages:
        bad("messages", "wrong_type", "must be a non-empty list of {role, content} objects")
        return None
    before = len(problems)
    for i, msg in enumerate(messages):
        field = f"messages[{i}]"
        if not isinstance(msg, dict):
            bad(field, "wrong_type", f"expected an object, got {type(msg).__name__}")
            continue
        role, content = msg.get("role"), msg.get("content")
        if role not in ROLES:
            bad(f"{field}.role", "unknown_role", f"{role!r} is not one of {sorted(ROLES)}")
        if not isinstance(content, str):
            bad(f"{field}.content", "wrong_type" if content is not None else "missing_field",
                f"must be a string, got {type(content).__name__}")
        elif not content.strip():
            bad(f"{field}.content", "empty_content", "is empty")
    if len(problems) > before:
        return None
    roles = [m["role"] for m in messages]
    if roles[-1] != "assistant":
        bad(f"messages[{len(roles) - 1}].role", "no_final_assistant",
            f"the last turn must be the assistant's answer to learn, got {roles[-1]!r}")
        return None
    if "user" not in roles:
        bad("messages", "no_user_turn", "needs at least one user turn")
        return None
    if "system" in roles[1:]:
        bad(f"messages[{roles.index('system', 1)}].role", "misplaced_system", "a system turn may only come first")
        return None
    return Example([{"role": m["role"], "content": m["content"]} for m in messages], row)


def validate_lengths(examples: list[Example], tokenizer, max_seq_len: int, file: str) -> list[int]:
    """Token length of each example under the model's chat template; too long is an error.

    Silently truncating would cut off the very answer the model is meant to learn.
    """
    lengths = [len(tokenizer.apply_chat_template(e.messages, tokenize=True, return_dict=False)) for e in examples]
    problems = [
        Problem(file, e.row, "messages", "too_long",
                f"{n} tokens exceeds data.max_seq_len={max_seq_len}; shorten it or raise max_seq_len")
        for e, n in zip(examples, lengths) if n > max_seq_len
    ]
    if problems:
        raise DataError(problems)
    return lengths
