"""`tuneloop data check`: a strict linter. Errors make a file unusable; warnings deserve a look."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tuneloop.data.conversation import preview
from tuneloop.data.dedup import find_duplicates, normalize
from tuneloop.data.load import load_examples
from tuneloop.data.problems import Problem
from tuneloop.data.split import MIN_EXAMPLES
from tuneloop.data.stats import profile
from tuneloop.data.tokens import length_problems, token_lengths


@dataclass
class CheckReport:
    path: str
    format: str
    rows: int
    valid_rows: int
    errors: list[Problem]
    warnings: list[Problem]
    stats: dict = field(default_factory=dict)
    preview: dict | None = None  # one rendered example with its learned spans (data/conversation.py)

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "format": self.format,
            "rows": self.rows,
            "valid_rows": self.valid_rows,
            "ok": self.ok,
            "errors": [p.to_dict() for p in self.errors],
            "warnings": [p.to_dict() for p in self.warnings],
            "preview": self.preview,
        }


def check_data(
    path: str | Path,
    fmt: str = "auto",
    columns: dict[str, str] | None = None,
    system_prompt: str | None = None,
    label: str = "auto",
    tokenizer=None,
    max_seq_len: int | None = None,
    near_duplicate_threshold: float = 0.8,
    train_on: str = "all_assistant",
) -> CheckReport:
    data = load_examples(path, fmt=fmt, columns=columns, system_prompt=system_prompt, label=label)
    errors = list(data.problems)
    examples = data.examples
    lengths, shown, warnings = None, None, []
    if tokenizer is not None and examples:
        lengths = token_lengths(examples, tokenizer, train_on)
        # An assistant turn the template hides cannot be learned (an error, as in `tuneloop run`);
        # a hidden system or user turn, or a template that rewrites turns, deserves a look.
        unrendered = [p for p in lengths.template_problems if p.code == "turn_not_rendered"]
        errors += unrendered
        warnings += _capped([p for p in lengths.template_problems if p not in unrendered])
        if max_seq_len:
            errors += length_problems(examples, lengths, max_seq_len)
        shown = preview(examples, tokenizer, train_on)
    dedup = find_duplicates([e.text for e in examples], threshold=near_duplicate_threshold) if examples else None
    if dedup:
        for d in dedup.duplicates:
            e, kept = examples[d.index], examples[d.of]
            what = "the same as" if d.kind == "exact" else f"a near duplicate (Jaccard {d.similarity:.2f}) of"
            warnings.append(Problem(e.file, e.row, None, f"{d.kind}_duplicate", f"{what} row {kept.row}"))
    warnings += _conflicting_answers(examples)
    if not examples and not errors:  # e.g. a Parquet file with a schema and no rows
        errors.append(Problem(str(path), None, None, "empty_file", "no examples"))
    if 0 < len(examples) < MIN_EXAMPLES:  # `tuneloop run` and `data split` refuse it: an error here too
        errors.append(
            Problem(
                str(path),
                None,
                None,
                "too_few_rows",
                f"{len(examples)} valid rows; a run needs at least {MIN_EXAMPLES} to split",
            )
        )
    stats = profile(examples, lengths=lengths, dedup=dedup, max_seq_len=max_seq_len) if examples else {}
    warnings += [
        Problem(str(path), None, None, w["code"], w["message"])
        for w in stats.get("warnings", [])
        if w["code"] != "duplicates"
    ]  # already listed row by row above
    errors.sort(key=lambda p: (p.file, p.row or 0))
    warnings.sort(key=lambda p: (p.file, p.row or 0))
    bad_rows = {(p.file, p.row) for p in errors if p.row is not None}
    valid = sum(1 for e in examples if (e.file, e.row) not in bad_rows)
    return CheckReport(str(path), data.format, data.n_rows, valid, errors, warnings, stats, shown)


MAX_PER_CODE = 20  # a template problem usually hits every row: name the first few, count the rest


def _capped(problems: list[Problem]) -> list[Problem]:
    out, seen = [], Counter()
    for p in problems:
        seen[p.code] += 1
        if seen[p.code] <= MAX_PER_CODE:
            out.append(p)
    for code, n in seen.items():
        if n > MAX_PER_CODE:
            out.append(Problem(problems[0].file, None, None, code, f"{n - MAX_PER_CODE} more rows like the above"))
    return out


def _conflicting_answers(examples) -> list[Problem]:
    """The same prompt with different answers teaches the model to guess."""
    first: dict[str, tuple] = {}
    out = []
    for e in examples:
        if e.kind != "chat":
            continue
        key = normalize("\n".join(m["content"] for m in e.prompt if m["role"] != "system"))
        answer = normalize(e.answer)
        if key in first and first[key][1] != answer:
            out.append(
                Problem(
                    e.file,
                    e.row,
                    "messages",
                    "conflicting_answers",
                    f"same prompt as row {first[key][0].row} with a different answer",
                )
            )
        first.setdefault(key, (e, answer))
    return out
