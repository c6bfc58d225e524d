"""Which tokens of a conversation the model learns, found through the model's own chat template.

A turn's learned span is the text the template adds between "the conversation so far, with
the generation prompt" and "the conversation through this turn": the assistant's content and
its end-of-turn marker. No template needs `{% generation %}` markers and none is hand-written
per model. Templates that rewrite earlier turns as the conversation grows (some drop past
reasoning, some move the system prompt) fail that prefix test; their turns are then found by
searching for the turn's text in the rendered conversation, and `data check` says so.

Tool calls: templates that render `tools` and `tool_calls` get them natively. For templates that
ignore them (SmolLM2's among many), tools are described in the system turn and calls written as
`<tool_call>{"name": ..., "arguments": {...}}</tool_call>` (the Hermes convention many models
were trained on), with tool results as `<tool_response>` user turns.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache

from tuneloop.data.example import Example, message_text
from tuneloop.data.problems import Problem

TRAIN_ON = ("all_assistant", "last_assistant", "all")
TOOLS_PREAMBLE = (
    'You can call these tools. To call one, answer with <tool_call>{"name": ..., "arguments": {...}}'
    "</tool_call>.\nTools:\n"
)
_PROBE_TOOL = "tuneloop_probe_tool"


@dataclass
class Tokenized:
    """One example as training sees it: token ids, which are learned, and the rendered text."""

    input_ids: list[int]
    learned: list[bool]
    text: str
    spans: list[tuple[int, int]]  # character spans of `text` that are learned
    problems: list[Problem] = field(default_factory=list)  # template mismatches found on the way

    @property
    def n_learned(self) -> int:
        return sum(self.learned)

    @property
    def first_learned(self) -> int:
        """Tokens before the first learned one: context the model reads but is not scored on."""
        return next((i for i, bit in enumerate(self.learned) if bit), len(self.learned))

    def labels(self, ignore: int = -100) -> list[int]:
        return [t if bit else ignore for t, bit in zip(self.input_ids, self.learned)]


def learned_turns(messages: list[dict], train_on: str) -> list[int]:
    """Indices of the assistant turns learned. OpenAI's per-message `weight: 0` leaves a turn out."""
    if train_on not in TRAIN_ON:
        raise ValueError(f"train_on={train_on!r}: one of {', '.join(TRAIN_ON)}")
    wanted = [i for i, m in enumerate(messages) if m["role"] == "assistant" and m.get("weight", 1) != 0]
    if train_on == "last_assistant":
        return [i for i in wanted if i == len(messages) - 1]
    return wanted


@lru_cache(maxsize=32)
def _renders_tools(template: str | None, tokenizer) -> bool:
    probe = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "", "tool_calls": [_native_call({"name": _PROBE_TOOL, "arguments": {}})]},
    ]
    tools = [{"type": "function", "function": {"name": _PROBE_TOOL, "parameters": {"type": "object"}}}]
    try:
        text = tokenizer.apply_chat_template(probe, tools=tools, tokenize=False)
    except Exception:  # a template that cannot take tools at all  # noqa: BLE001
        return False
    return text.count(_PROBE_TOOL) >= 2  # the tool list and the call


def renders_tools(tokenizer) -> bool:
    """Whether the model's chat template writes `tools` and assistant `tool_calls` itself."""
    return _renders_tools(tokenizer.chat_template, tokenizer)


def _native_call(call: dict) -> dict:
    return {"type": "function", "function": {"name": call["name"], "arguments": call["arguments"]}}


def template_messages(messages: list[dict], tools: list[dict] | None, tokenizer) -> tuple[list[dict], dict]:
    """The messages and keyword arguments to hand `apply_chat_template` for this tokenizer."""
    if not tools and not any(m.get("tool_calls") for m in messages):
        return [{"role": m["role"], "content": m["content"]} for m in messages], {}
    if renders_tools(tokenizer):
        out = []
        for m in messages:
            plain = {"role": m["role"], "content": m["content"]}
            if m.get("tool_calls"):
                plain["tool_calls"] = [_native_call(c) for c in m["tool_calls"]]
            if m.get("tool_call_id"):
                plain["tool_call_id"] = m["tool_call_id"]
            out.append(plain)
        return out, ({"tools": tools} if tools else {})
    out = []
    for m in messages:
        if m["role"] == "tool":
            out.append({"role": "user", "content": f"<tool_response>\n{m['content']}\n</tool_response>"})
        else:
            out.append({"role": m["role"], "content": message_text(m)})
    if tools:
        listing = TOOLS_PREAMBLE + "\n".join(json.dumps(t, ensure_ascii=False) for t in tools)
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{listing}"}
        else:
            out.insert(0, {"role": "system", "content": listing})
    return out, {}


def render(tokenizer, messages: list[dict], tools: list[dict] | None = None, *, generation_prompt: bool = False) -> str:
    rendered, kwargs = template_messages(messages, tools, tokenizer)
    return tokenizer.apply_chat_template(rendered, tokenize=False, add_generation_prompt=generation_prompt, **kwargs)


def learned_spans(example: Example, tokenizer, train_on: str) -> tuple[str, list[tuple[int, int]], list[Problem]]:
    """The rendered example and the character spans learned in it."""
    if example.kind == "text":
        text = example.answer + (tokenizer.eos_token or "")
        return text, [(0, len(text))], []
    messages, tools = example.messages, example.tools
    text = render(tokenizer, messages, tools)
    problems = _dropped_turns(example, text)
    if train_on == "all":
        _, unweighted = _turn_spans(example, tokenizer, text, range(len(messages)), problems)
        return text, _subtract([(0, len(text))], [span for _, span in unweighted]), problems
    spans, _ = _turn_spans(example, tokenizer, text, learned_turns(messages, train_on), problems)
    return text, spans, problems


def _dropped_turns(example: Example, text: str) -> list[Problem]:
    """System, user and tool turns the template leaves out of `text`, the rendering. (A hidden
    assistant turn is found when its learned span is looked for: `turn_not_rendered`.)"""
    problems = []
    for i, m in enumerate(example.messages):
        if m["role"] != "assistant" and m["content"] not in text:
            system = m["role"] == "system"
            problems.append(
                Problem(
                    example.file,
                    example.row,
                    f"messages[{i}].content",
                    "template_drops_system" if system else "template_drops_turn",
                    f"the chat template leaves out this {m['role']} turn's text"
                    + ("; the model would never see the system prompt" if system else ""),
                )
            )
    return problems


def _turn_spans(example, tokenizer, text, turns, problems) -> tuple[list[tuple[int, int]], list[tuple[int, tuple]]]:
    """Spans of the given assistant turns, and (index, span) of the weight-0 assistant turns met."""
    messages, tools = example.messages, example.tools
    spans, unweighted, cursor = [], [], 0
    for i in turns:
        m = messages[i]
        if m["role"] != "assistant":
            continue
        before = render(tokenizer, messages[:i], tools, generation_prompt=True)
        through = render(tokenizer, messages[: i + 1], tools)
        if text.startswith(through) and through.startswith(before) and len(through) > len(before):
            span = (len(before), len(through))
        else:
            span = _search(example, text, i, cursor, problems)
            if span is None:
                continue
        cursor = span[1]
        if m.get("weight", 1) == 0:
            unweighted.append((i, span))
        else:
            spans.append(span)
    return spans, unweighted


def _search(example: Example, text: str, i: int, cursor: int, problems: list[Problem]) -> tuple[int, int] | None:
    content = message_text(example.messages[i])
    at = text.find(content, cursor)
    if at < 0:
        problems.append(
            Problem(
                example.file,
                example.row,
                f"messages[{i}].content",
                "turn_not_rendered",
                "the chat template's rendering does not contain this assistant turn's text; it cannot be learned",
            )
        )
        return None
    problems.append(
        Problem(
            example.file,
            example.row,
            f"messages[{i}]",
            "template_not_incremental",
            "the chat template renders earlier turns differently once later ones follow; "
            "this turn was found by its text (its end-of-turn marker is not learned)",
        )
    )
    return at, at + len(content)


def _subtract(spans: list[tuple[int, int]], holes: list[tuple[int, int]]) -> list[tuple[int, int]]:
    for lo, hi in holes:
        spans = [part for a, b in spans for part in ((a, min(b, lo)), (max(a, hi), b)) if part[0] < part[1]]
    return spans


def tokenize_examples(examples: list[Example], tokenizer, train_on: str = "all_assistant") -> list[Tokenized]:
    """Render, find the learned spans, then tokenize every row in one batch with character offsets.

    A token is learned when any of its characters is: a token that straddles the start of an
    answer produces answer text. Batched, 5,000 banking77 rows take about a second.
    """
    rendered = [learned_spans(e, tokenizer, train_on) for e in examples]
    if not rendered:
        return []
    encoded = tokenizer([text for text, _, _ in rendered], add_special_tokens=False, return_offsets_mapping=True)
    out = []
    for (text, spans, problems), ids, offsets in zip(rendered, encoded["input_ids"], encoded["offset_mapping"]):
        learned = [any(a < hi and b > lo for lo, hi in spans) for a, b in offsets]
        out.append(Tokenized(list(ids), learned, text, spans, problems))
    return out


def preview(examples: list[Example], tokenizer, train_on: str = "all_assistant") -> dict | None:
    """One training example as the model sees it, with its learned spans: the row with the most
    assistant turns among the first 200, so a multi-turn file shows several spans."""
    if not examples:
        return None
    example = max(examples[:200], key=lambda e: (e.assistant_turns, -e.row))
    [tokenized] = tokenize_examples([example], tokenizer, train_on)
    return {
        "file": example.file,
        "row": example.row,
        "text": tokenized.text,
        "spans": tokenized.spans,
        "tokens": len(tokenized.input_ids),
        "learned_tokens": tokenized.n_learned,
    }


def marked(preview: dict, start: str = "[[", end: str = "]]") -> str:
    """The preview's text with each learned span wrapped in `start` ... `end`."""
    text, out, at = preview["text"], [], 0
    for lo, hi in preview["spans"]:
        out += [text[at:lo], start, text[lo:hi], end]
        at = hi
    return "".join([*out, text[at:]])
