"""One training example, whatever format it was read from."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace

REPLAY = "replay"  # the `augmented` method of data.replay's rows


def call_text(call: dict) -> str:
    """A tool call as the model writes it when its chat template has no tool syntax (Hermes style)."""
    body = json.dumps({"name": call["name"], "arguments": call["arguments"]}, ensure_ascii=False)
    return f"<tool_call>\n{body}\n</tool_call>"


def message_text(message: dict) -> str:
    """What a message says: its content, then its tool calls written out."""
    calls = [call_text(c) for c in message.get("tool_calls") or ()]
    return "\n".join(part for part in (message["content"], *calls) if part)


@dataclass(frozen=True)
class Example:
    """A conversation ending in an assistant turn. Training learns its assistant turns (all, or
    the last: data.train_on); evaluation asks for the last one (or each: eval.turns).

    Messages are {"role", "content"} plus, where the data has them, OpenAI's `weight` (0 or 1)
    on assistant turns, `tool_calls` ([{"name", "arguments": dict}]) and `tool_call_id`.
    Plain-text rows (`kind="text"`) are one assistant turn with no prompt: language modelling on
    the whole text. `record` is the row as read, so tools that write data back (clean, dedup,
    split) keep the user's own format and fields.
    """

    messages: list[dict]
    row: int  # 1-based row in `file`, kept so every later report can point back
    file: str = ""
    kind: str = "chat"  # "chat" | "text"
    label: str | None = None  # the class, for classification-like data (stratified splits, label stats)
    augmented: dict | None = None  # {"method": ..., "source_row": n} on rows made by `data augment`
    record: dict = field(default_factory=dict, compare=False, repr=False)
    tools: list[dict] | None = None  # OpenAI function definitions the conversation may call
    # Preference rows: the last assistant turn is the chosen answer, this the rejected one.
    rejected: str | None = None

    @property
    def prompt(self) -> list[dict]:
        return self.messages[:-1]

    @property
    def replayed(self) -> bool:
        """A general row data.replay mixed into training (train/replay.py), not a row of the task."""
        return bool(self.augmented) and self.augmented.get("method") == REPLAY

    @property
    def answer(self) -> str:
        return message_text(self.messages[-1])

    @property
    def assistant_turns(self) -> int:
        return sum(1 for m in self.messages if m["role"] == "assistant")

    def upto(self, i: int) -> Example:
        """The conversation through message `i` (an assistant turn): one evaluation point."""
        return replace(self, messages=self.messages[: i + 1], label=self.label if i == len(self.messages) - 1 else None)

    @property
    def text(self) -> str:
        """The content that makes two examples the same, for deduplication and leakage checks.

        The system turn is left out: it is usually shared by every row and would make unrelated
        examples look alike.
        """
        text = "\n".join(message_text(m) for m in self.messages if m["role"] != "system")
        return text if self.rejected is None else f"{text}\n{self.rejected}"

    def with_rejected(self) -> Example:
        """The preference row's conversation ending in the rejected answer instead of the chosen one."""
        last = {"role": "assistant", "content": self.rejected}
        return replace(self, messages=[*self.messages[:-1], last], rejected=None, label=None)

    def to_json(self) -> dict:
        out = {"messages": self.messages, "source_file": self.file, "source_row": self.row}
        if self.kind != "chat":
            out["kind"] = self.kind
        if self.label is not None:
            out["label"] = self.label
        if self.augmented:
            out["augmented"] = self.augmented
        if self.tools:
            out["tools"] = self.tools
        if self.rejected is not None:
            out["rejected"] = self.rejected
        return out
