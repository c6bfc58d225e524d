"""Read a data file or folder in any supported format into Examples, collecting every problem."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

from tuneloop.data.clean import clean_value
from tuneloop.data.example import Example
from tuneloop.data.formats import FORMATS, detect_format, to_example, unknown_format_problem
from tuneloop.data.problems import DataError, Problem
from tuneloop.data.readers import Record, read_records

# Answers look like class labels when there are few distinct short one-line values. Then splits
# are stratified and the data report shows the label balance.
MAX_LABEL_CHARS = 64
MAX_LABELS = 1000


@dataclass
class LoadedData:
    path: str
    format: str
    examples: list[Example]
    n_rows: int  # rows read, good or bad
    problems: list[Problem] = field(default_factory=list)

    @property
    def has_labels(self) -> bool:
        return bool(self.examples) and all(e.label is not None for e in self.examples)


def load_examples(
    path: str | Path,
    fmt: str = "auto",
    columns: dict[str, str] | None = None,
    system_prompt: str | None = None,
    label: str = "auto",
    clean: bool = False,
    redact_pii: bool = False,
) -> LoadedData:
    """Never raises for bad data: problems are collected, each naming its file, row and field.

    `clean` / `redact_pii` apply `data clean`'s normalisation to the rows in memory first.
    """
    read = read_records(path)
    problems = list(read.problems)
    if clean or redact_pii:
        pii = Counter()
        read.records = [
            Record(r.file, r.row, clean_value(r.value, redact_pii, set(), pii, normalise=clean)) for r in read.records
        ]
    if columns:
        fmt = "columns"
    elif fmt == "auto":
        detected = detect_format(read.records)
        if detected is None and read.records:
            problems.append(unknown_format_problem(path, read.records))
            return LoadedData(str(path), "unknown", [], len(read.records) + len(read.problems), problems)
        fmt = detected or "messages"
    elif fmt not in FORMATS:
        raise ValueError(f"unknown data format {fmt!r}; one of {FORMATS}")
    examples = [
        e
        for r in read.records
        if (e := to_example(r, fmt, problems, columns=columns, system_prompt=system_prompt)) is not None
    ]
    examples = _with_labels(examples, label, problems)
    problems.sort(key=lambda p: (p.file, p.row or 0))
    return LoadedData(str(path), fmt, examples, len(read.records) + len(read.problems), problems)


def load_examples_strict(path: str | Path, **kwargs) -> LoadedData:
    data = load_examples(path, **kwargs)
    if data.problems:
        raise DataError(data.problems)
    if not data.examples:
        raise DataError([Problem(str(path), None, None, "empty_file", "no examples")])
    return data


def _with_labels(examples: list[Example], label: str, problems: list[Problem]) -> list[Example]:
    if label == "none" or not examples:
        return examples
    if label == "auto":
        answers = [e.answer.strip() for e in examples if e.kind == "chat"]
        if len(answers) != len(examples) or not looks_categorical(answers):
            return examples
        return [replace(e, label=a) for e, a in zip(examples, answers)]
    out = []
    for e in examples:
        value = e.record.get(label)
        if value is None or str(value).strip() == "":
            problems.append(Problem(e.file, e.row, label, "missing_label", "the label field is missing or empty"))
            continue
        out.append(replace(e, label=str(value).strip()))
    return out


def looks_categorical(answers: list[str]) -> bool:
    counts = Counter(answers)
    return len(counts) <= min(MAX_LABELS, max(2, len(answers) // 5)) and all(
        len(a) <= MAX_LABEL_CHARS and "\n" not in a for a in counts
    )
