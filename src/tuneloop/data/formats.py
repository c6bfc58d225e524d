"""The common fine-tuning data formats, detected from their keys, each turned into an Example.

    messages           {"messages": [{"role", "content"}, ...], "tools": [...]} OpenAI chat (weight, tool_calls)
    prompt_completion  {"prompt": str | [msg], "completion": str | [msg]}   TRL / OpenAI legacy
    input_output       {"input": str, "output": str}
    alpaca             {"instruction": str, "input": str (optional), "output": str}
    sharegpt           {"conversations": [{"from", "value"}, ...]}
    preference         {"prompt": str | [msg], "chosen": str | [msg], "rejected": str | [msg]}   TRL / DPO
    openai_preference  {"input": {"messages": [...]}, "preferred_output": [msg], "non_preferred_output": [msg]}
    text               {"text": str}                                        plain text (LM loss on all of it)
    columns            anything else, through templates such as {"prompt": "{text}", "completion": "{category}"}

A converter never raises: it appends Problems that name the row and the field, and returns
None for a row it cannot use.
"""

from __future__ import annotations

import json
import string
from collections import Counter

from tuneloop.data.example import Example
from tuneloop.data.problems import Problem
from tuneloop.data.readers import Record

ROLES = {"system", "user", "assistant", "tool"}
SHAREGPT_ROLES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "model": "assistant",
    "bot": "assistant",
    "tool": "tool",
}

# Keys that identify each format, most specific first (alpaca before input_output).
SIGNATURES = {
    "preference": {"prompt", "chosen", "rejected"},
    "openai_preference": {"input", "preferred_output", "non_preferred_output"},
    "messages": {"messages"},
    "sharegpt": {"conversations"},
    "prompt_completion": {"prompt", "completion"},
    "alpaca": {"instruction", "output"},
    "input_output": {"input", "output"},
    "text": {"text"},
}
FORMATS = (*SIGNATURES, "columns")


def detect_format(records: list[Record]) -> str | None:
    """The format whose keys most of the first rows carry; None when no format fits."""
    votes = Counter()
    for record in records[:200]:
        keys = set(record.value)
        match = next((name for name, needed in SIGNATURES.items() if needed <= keys), None)
        if match:
            votes[match] += 1
    if not votes:
        return None
    name, count = votes.most_common(1)[0]
    return name if count * 2 > min(len(records), 200) else None


def unknown_format_problem(path, records: list[Record]) -> Problem:
    keys = sorted({k for r in records[:50] for k in r.value})
    return Problem(
        str(path),
        None,
        None,
        "unknown_format",
        f"cannot tell the format from the keys {keys}; name it (data.format or --format: "
        f"{', '.join(FORMATS[:-1])}) or map the columns with templates (data.columns or "
        "--prompt/--completion), e.g. prompt '{question}', completion '{answer}'",
    )


def to_example(
    record: Record,
    fmt: str,
    problems: list[Problem],
    columns: dict[str, str] | None = None,
    system_prompt: str | None = None,
) -> Example | None:
    before = len(problems)
    add = _Adder(record, problems)
    value = record.value
    kind, rejected = "chat", None
    tools, tool_names, tools_ok = _tools(add, value) if fmt in ("messages", "prompt_completion") else (None, None, True)
    if fmt == "messages":
        turns = _turns(add, value, "messages", "role", "content", {r: r for r in ROLES}, tool_names)
    elif fmt == "sharegpt":
        turns = _turns(add, value, "conversations", "from", "value", SHAREGPT_ROLES)
        if turns is not None and isinstance(value.get("system"), str) and value["system"].strip():
            turns = [{"role": "system", "content": value["system"]}] + turns
    elif fmt == "prompt_completion":
        prompt = _side(add, value, "prompt", "user", tool_names)
        completion = _side(add, value, "completion", "assistant", tool_names)
        turns = None if prompt is None or completion is None else prompt + completion
    elif fmt == "input_output":
        turns = _pair(add, _string(add, value, "input"), _string(add, value, "output"))
    elif fmt == "alpaca":
        instruction = _string(add, value, "instruction")
        extra = value.get("input")
        if extra is not None and not isinstance(extra, str):
            add("input", "wrong_type", f"must be a string, got {type(extra).__name__}")
            extra = None
        if instruction is not None and extra and extra.strip():
            instruction = f"{instruction}\n\n{extra}"
        turns = _pair(add, instruction, _string(add, value, "output"))
    elif fmt == "text":
        text = _string(add, value, "text")
        turns, kind = (None if text is None else [{"role": "assistant", "content": text}]), "text"
    elif fmt == "columns":
        turns = _from_columns(add, value, columns or {})
    elif fmt in ("preference", "openai_preference"):
        turns, rejected = _preference(add, value, fmt)
    else:
        raise ValueError(f"unknown data format {fmt!r}; one of {FORMATS}")
    if turns is None or not tools_ok or len(problems) > before:
        return None
    if kind == "chat":
        if system_prompt and turns[0]["role"] != "system":
            turns = [{"role": "system", "content": system_prompt}] + turns
        if not _conversation_ok(add, turns, fmt):
            return None
    augmented = value.get("augmented") if isinstance(value.get("augmented"), dict) else None
    return Example(
        turns, record.row, record.file, kind=kind, augmented=augmented, record=value, tools=tools, rejected=rejected
    )


class _Adder:
    def __init__(self, record: Record, problems: list[Problem]):
        self.record, self.problems = record, problems

    def __call__(self, field: str | None, code: str, message: str) -> None:
        self.problems.append(Problem(self.record.file, self.record.row, field, code, message))


def _string(add: _Adder, value: dict, key: str) -> str | None:
    if key not in value or value[key] is None:
        add(key, "missing_field", "missing")
        return None
    text = value[key]
    if not isinstance(text, str):
        add(key, "wrong_type", f"must be a string, got {type(text).__name__}")
        return None
    if not visible(text):
        add(key, "empty_content", _emptiness(text))
        return None
    return text


def _pair(add: _Adder, prompt: str | None, answer: str | None) -> list[dict] | None:
    if prompt is None or answer is None:
        return None
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]


def _side(add: _Adder, value: dict, key: str, role: str, tools: set[str] | None) -> list[dict] | None:
    """A prompt or completion: a plain string, or a list of messages."""
    if isinstance(value.get(key), list):
        return _turns(add, value, key, "role", "content", {r: r for r in ROLES}, tools)
    text = _string(add, value, key)
    return None if text is None else [{"role": role, "content": text}]


def _turns(
    add: _Adder,
    value: dict,
    key: str,
    role_key: str,
    content_key: str,
    role_map: dict[str, str],
    tools: set[str] | None = None,
) -> list[dict] | None:
    """The turns under `key`. OpenAI-style rows may carry `weight`, `tool_calls` and `tool_call_id`;
    `tools` is the set of tool names the row defines (None: the row defines none)."""
    turns = value.get(key)
    if turns is None:
        add(key, "missing_field", f"missing; each row needs a '{key}' list")
        return None
    if not isinstance(turns, list) or not turns:
        add(key, "wrong_type", f"must be a non-empty list of {{{role_key}, {content_key}}} objects")
        return None
    out, ok = [], True
    for i, turn in enumerate(turns):
        field = f"{key}[{i}]"
        if not isinstance(turn, dict):
            add(field, "wrong_type", f"expected an object, got {type(turn).__name__}")
            ok = False
            continue
        role, content = turn.get(role_key), turn.get(content_key)
        if not isinstance(role, str) or role not in role_map:
            add(f"{field}.{role_key}", "unknown_role", f"{role!r} is not one of {sorted(role_map)}")
            ok = False
            continue
        role = role_map[role]
        message = {"role": role, "content": content}
        if role_key == "role" and not _openai_extras(add, turn, field, message, tools):
            ok = False
            continue
        if role == "assistant" and message.get("tool_calls") and content in (None, ""):
            message["content"] = ""  # a pure tool call: OpenAI writes content null
        elif not isinstance(content, str):
            add(
                f"{field}.{content_key}",
                "wrong_type" if content is not None else "missing_field",
                f"must be a string, got {type(content).__name__}",
            )
            ok = False
        elif not visible(content):
            add(f"{field}.{content_key}", "empty_content", _emptiness(content))
            ok = False
        if ok:
            out.append(message)
    return out if ok else None


def _openai_extras(add: _Adder, turn: dict, field: str, message: dict, tools: set[str] | None) -> bool:
    """OpenAI's per-message `weight`, assistant `tool_calls` and a tool turn's `tool_call_id`."""
    if "weight" in turn:
        weight = turn["weight"]
        if message["role"] != "assistant":
            add(f"{field}.weight", "bad_weight", "only assistant turns carry a weight")
            return False
        if weight not in (0, 1) or isinstance(weight, bool):
            add(f"{field}.weight", "bad_weight", f"must be 0 or 1, got {weight!r}")
            return False
        message["weight"] = int(weight)
    calls = turn.get("tool_calls")
    if calls is not None:
        if message["role"] != "assistant":
            add(f"{field}.tool_calls", "misplaced_tool_calls", "only assistant turns make tool calls")
            return False
        parsed = _tool_calls(add, calls, f"{field}.tool_calls", tools)
        if parsed is None:
            return False
        message["tool_calls"] = parsed
    if message["role"] == "tool" and turn.get("tool_call_id") is not None:
        if not isinstance(turn["tool_call_id"], str):
            add(f"{field}.tool_call_id", "wrong_type", "must be a string")
            return False
        message["tool_call_id"] = turn["tool_call_id"]
    return True


def _tool_calls(add: _Adder, calls, field: str, tools: set[str] | None) -> list[dict] | None:
    if not isinstance(calls, list) or not calls:
        add(field, "wrong_type", "must be a non-empty list of {type: function, function: {name, arguments}}")
        return None
    out = []
    for j, call in enumerate(calls):
        where = f"{field}[{j}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            add(f"{where}.function", "bad_tool_call", "each call needs a 'function' object with name and arguments")
            return None
        name, arguments = function.get("name"), function.get("arguments", {})
        if not isinstance(name, str) or not name.strip():
            add(f"{where}.function.name", "bad_tool_call", "the function name must be a non-empty string")
            return None
        if tools is not None and name not in tools:
            add(f"{where}.function.name", "unknown_tool", f"{name!r} is not one of the row's tools {sorted(tools)}")
            return None
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except json.JSONDecodeError as error:
                add(f"{where}.function.arguments", "bad_tool_call", f"not valid JSON: {error.msg} at {error.pos}")
                return None
        if not isinstance(arguments, dict):
            add(f"{where}.function.arguments", "bad_tool_call", "must be a JSON object of argument names to values")
            return None
        entry = {"name": name, "arguments": arguments}
        if isinstance(call.get("id"), str):
            entry["id"] = call["id"]
        out.append(entry)
    return out


def _tools(add: _Adder, value: dict) -> tuple[list[dict] | None, set[str] | None, bool]:
    """The row's `tools` (OpenAI function definitions), their names, and whether they are valid."""
    tools = value.get("tools")
    if tools is None:
        return None, None, True
    if not isinstance(tools, list):
        add("tools", "wrong_type", "must be a list of {type: function, function: {name, parameters}}")
        return None, None, False
    names = set()
    for j, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str) or not name.strip():
            add(f"tools[{j}].function.name", "bad_tool", "each tool needs a function with a non-empty name")
            return None, None, False
        names.add(name)
    return tools or None, names, True


# Zero-width and byte-order characters: text made only of them shows nothing and teaches nothing.
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"))


def visible(text: str) -> bool:
    """Whether `text` has anything a reader would see."""
    return bool(text.translate(_INVISIBLE).strip())


def _emptiness(text: str) -> str:
    return "is empty" if not text.strip() else "has only invisible characters (zero-width spaces and the like)"


def _conversation_ok(add: _Adder, turns: list[dict], fmt: str) -> bool:
    def where(i: int, default: str) -> str:
        key, role_key = {"messages": ("messages", "role"), "sharegpt": ("conversations", "from")}.get(fmt, (None, None))
        return f"{key}[{i}].{role_key}" if key else default

    roles = [t["role"] for t in turns]
    if roles[-1] != "assistant":
        add(
            where(len(roles) - 1, "completion"),
            "no_final_assistant",
            f"the last turn must be the assistant's answer to learn, got {roles[-1]!r}",
        )
        return False
    if "user" not in roles:
        add(
            "conversations" if fmt == "sharegpt" else "messages" if fmt == "messages" else "prompt",
            "no_user_turn",
            "needs at least one user turn",
        )
        return False
    if "system" in roles[1:]:
        add(where(roles.index("system", 1), "prompt"), "misplaced_system", "a system turn may only come first")
        return False
    return True


def _preference(add: _Adder, value: dict, fmt: str) -> tuple[list[dict] | None, str | None]:
    """A prompt with the chosen answer as its last turn, and the rejected answer's text."""
    if fmt == "preference":
        prompt = _side(add, value, "prompt", "user", None)
        keys = ("chosen", "rejected")
    else:
        inner = value.get("input")
        if not isinstance(inner, dict):
            add("input", "wrong_type", "must be an object with a 'messages' list")
            return None, None
        prompt = _turns(_Nested(add, "input"), inner, "messages", "role", "content", {r: r for r in ROLES})
        keys = ("preferred_output", "non_preferred_output")
    chosen, rejected = (_answer(add, value, key) for key in keys)
    if prompt is None or chosen is None or rejected is None:
        return None, None
    if chosen.strip() == rejected.strip():
        add(keys[1], "identical_pair", f"the same answer as {keys[0]}: there is no preference to learn")
        return None, None
    return prompt + [{"role": "assistant", "content": chosen}], rejected


def _answer(add: _Adder, value: dict, key: str) -> str | None:
    """One side of a preference pair: a string, or a list holding one assistant message."""
    side = value.get(key)
    if not isinstance(side, list):
        return _string(add, value, key)
    turns = _turns(add, value, key, "role", "content", {r: r for r in ROLES})
    if turns is None:
        return None
    if len(turns) != 1 or turns[0]["role"] != "assistant":
        add(key, "wrong_type", "must be a string or a list of one assistant message")
        return None
    return turns[0]["content"]


class _Nested:
    """An _Adder whose fields sit inside `prefix` (OpenAI's preference rows nest the prompt)."""

    def __init__(self, add: _Adder, prefix: str):
        self.add, self.prefix = add, prefix

    def __call__(self, field: str | None, code: str, message: str) -> None:
        self.add(f"{self.prefix}.{field}" if field else self.prefix, code, message)


def _from_columns(add: _Adder, value: dict, columns: dict[str, str]) -> list[dict] | None:
    rendered = {}
    for part in ("system", "prompt", "completion"):
        template = columns.get(part)
        if template is None:
            continue
        text = _render(add, value, template)
        if text is None:
            return None
        if not visible(text) and part != "system":
            fields = template_fields(template)
            add(fields[0] if fields else part, "empty_content", f"the {part} is empty")
            return None
        rendered[part] = text
    turns = [{"role": "system", "content": rendered["system"]}] if rendered.get("system", "").strip() else []
    return turns + [
        {"role": "user", "content": rendered["prompt"]},
        {"role": "assistant", "content": rendered["completion"]},
    ]


def _render(add: _Adder, value: dict, template: str) -> str | None:
    missing = [f for f in template_fields(template) if f not in value or value[f] is None]
    if missing:
        add(missing[0], "missing_field", f"missing (used by the template {template!r})")
        return None
    return template.format_map({k: v if isinstance(v, str) else str(v) for k, v in value.items()})


def template_fields(template: str) -> list[str]:
    """The record fields a column template reads, e.g. ["text"] for "Classify: {text}"."""
    return [name for _, name, _, _ in string.Formatter().parse(template) if name]
