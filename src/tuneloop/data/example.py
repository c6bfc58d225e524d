"""One training example, whatever format it was read from."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Example:
    """A conversation whose last assistant turn is what the model learns to produce.

    Plain-text rows (`kind="text"`) are one assistant turn with no prompt: language modelling on
    the whole text. `record` is the row as read, so tools that write data back (clean, dedup,
    split) keep the user's own format and fields.
    """

    messages: list[dict[str, str]]
    row: int  # 1-based row in `file`, kept so every later report can point back
    file: str = ""
    kind: str = "chat"  # "chat" | "text"
    label: str | None = None  # the class, for classification-like data (stratified splits, label stats)
    augmented: dict | None = None  # {"method": ..., "source_row": n} on rows made by `data augment`
    record: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def prompt(self) -> list[dict[str, str]]:
        return self.messages[:-1]

    @property
    def answer(self) -> str:
        return self.messages[-1]["content"]

    @property
    def text(self) -> str:
        """The content that makes two examples the same, for deduplication and leakage checks.

        The system turn is left out: it is usually shared by every row and would make unrelated
        examples look alike.
        """
        return "\n".join(m["content"] for m in self.messages if m["role"] != "system")

    def to_json(self) -> dict:
        out = {"messages": self.messages, "source_file": self.file, "source_row": self.row}
        if self.kind != "chat":
            out["kind"] = self.kind
        if self.label is not None:
            out["label"] = self.label
        if self.augmented:
            out["augmented"] = self.augmented
        return out
