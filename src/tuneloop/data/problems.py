"""A data problem names where it is (file, row, field) and what is wrong, for people and for --json."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Problem:
    file: str
    row: int | None  # 1-based line number in the file
    field: str | None  # e.g. "messages[2].content"
    code: str  # stable identifier, e.g. "invalid_json", "empty_content"
    message: str

    def __str__(self) -> str:
        where = self.file + (f":{self.row}" if self.row is not None else "")
        field = f" {self.field}:" if self.field else ""
        return f"{where}:{field} {self.message} [{self.code}]"

    def to_dict(self) -> dict:
        return asdict(self)


class DataError(ValueError):
    """Raised with every problem found, not just the first: fixing a file one error per run is misery."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        shown = "\n".join(f"  {p}" for p in problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        super().__init__(f"{len(problems)} problem(s) in the data:\n{shown}{more}")
