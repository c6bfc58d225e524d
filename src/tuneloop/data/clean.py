"""Clean text fields without changing the file's format: unicode, whitespace, markup, optional PII redaction.

Cleaning walks every string in a row (so it works for any format, nested message lists
included) and records what it changed. Rows left without a usable example are dropped, and
the reason is logged; the source file is never written.
"""

from __future__ import annotations

import html
import os
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field

# Zero-width and bidi control characters survive NFKC and make equal-looking strings differ.
_INVISIBLE = re.compile("[\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# Only well-known HTML tags: `List<int>` or `a < b > c` in code or maths must survive.
_TAG = re.compile(
    r"</?(?:p|div|span|br|hr|b|i|u|em|strong|a|ul|ol|li|h[1-6]|table|thead|tbody|tr|td|th|img|font|"
    r"html|body|head|title|blockquote|pre|code|sup|sub|small|big|center|section|article|nav)"
    r"(?:\s[^<>]*)?/?>",
    re.IGNORECASE,
)
_ENTITY = re.compile(r"&(?:#\d{1,7}|#x[0-9a-fA-F]{1,6}|[a-zA-Z]{2,8});")
_SPACES = re.compile(r"[ \t\u00a0]+")
_BLANK_LINES = re.compile(r"\n{3,}")

PII_PATTERNS = {
    "email": re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[a-zA-Z]{2,}\b"),
    "card": re.compile(r"\b(?:\d[ -]?){12,18}\d\b"),
    "ip": re.compile(r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b"),
    # Not inside a longer run of digit groups (an order or account number).
    "phone": re.compile(
        r"(?<![\w+])(?<!\d[ .-])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?|\d{2,4}[ .-])"
        r"\d{3,4}[ .-]?\d{3,4}\b(?![ .-]?\d)"
    ),
}
PLACEHOLDER = {"email": "[EMAIL]", "card": "[CARD_NUMBER]", "ip": "[IP_ADDRESS]", "phone": "[PHONE]"}


@dataclass
class Cleaned:
    text: str
    changes: list[str] = field(default_factory=list)  # e.g. "unicode", "whitespace", "markup", "pii:email"


def _strip_markup(text: str) -> str:
    return _ENTITY.sub(lambda m: html.unescape(m.group()), _TAG.sub("", text))


def _tidy_whitespace(text: str) -> str:
    lines = [_SPACES.sub(" ", line).strip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


NORMALISERS = (
    ("unicode", lambda t: _CONTROL.sub("", _INVISIBLE.sub("", unicodedata.normalize("NFKC", t)))),
    ("markup", _strip_markup),
    ("whitespace", _tidy_whitespace),
)


def clean_text(
    text: str, redact_pii: bool = False, pii_counts: Counter | None = None, normalise: bool = True
) -> Cleaned:
    changes = []
    for name, fn in NORMALISERS if normalise else ():
        new = fn(text)
        if new != text:
            changes.append(name)
            text = new
    for kind, pattern in PII_PATTERNS.items() if redact_pii else ():
        found = 0

        def redact(m: re.Match, kind=kind) -> str:
            nonlocal found
            if kind == "card" and not _luhn(m.group()):
                return m.group()  # an order or account number, not a card
            found += 1
            return PLACEHOLDER[kind]

        text = pattern.sub(redact, text)
        if found:
            changes.append(f"pii:{kind}")
            if pii_counts is not None:
                pii_counts[kind] += found
    return Cleaned(text, changes)


def clean_value(value, redact_pii: bool, changes: set[str], pii_counts: Counter, normalise: bool = True):
    """Clean every string inside a JSON-like value (dicts and lists of messages included)."""
    if isinstance(value, str):
        cleaned = clean_text(value, redact_pii, pii_counts, normalise)
        changes.update(cleaned.changes)
        return cleaned.text
    if isinstance(value, dict):
        return {k: clean_value(v, redact_pii, changes, pii_counts, normalise) for k, v in value.items()}
    if isinstance(value, list):
        return [clean_value(v, redact_pii, changes, pii_counts, normalise) for v in value]
    return value


def _luhn(candidate: str) -> bool:
    digits = [int(c) for c in candidate if c.isdigit()]
    checksum = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        checksum += d
    return checksum % 10 == 0


@dataclass
class CleanSummary:
    rows_in: int
    kept: int
    dropped: int
    changed: int
    changes: Counter  # rows per kind of change
    pii: Counter  # redactions per kind
    log: list[dict]  # one entry per row dropped or changed, with the reasons


def clean_file(
    path, out_path, fmt: str = "auto", columns: dict[str, str] | None = None, redact_pii: bool = False
) -> CleanSummary:
    """Write a cleaned copy of `path` to `out_path` and return what happened to every row."""

    from tuneloop.data.formats import detect_format, to_example, unknown_format_problem
    from tuneloop.data.problems import DataError, Problem
    from tuneloop.data.readers import Record, read_records, write_records

    if os.path.realpath(out_path) == os.path.realpath(path):  # realpath: a symlink loop is not an exception
        raise ValueError(f"{out_path}: refusing to overwrite the source file; write the cleaned copy elsewhere")
    read = read_records(path)
    if not read.records:  # nothing readable (missing, binary, corrupt): say so, write nothing
        raise DataError(read.problems or [Problem(str(path), None, None, "empty_file", "no rows in the file")])
    log = [
        {"file": p.file, "row": p.row, "action": "dropped", "reasons": [f"{p.code}: {p.message}"]}
        for p in read.problems
    ]
    if columns:
        fmt = "columns"
    elif fmt == "auto":
        fmt = detect_format(read.records)
        if fmt is None:  # without a format every row would look unusable and be dropped
            raise DataError([unknown_format_problem(path, read.records)])
    kept, changes, pii = [], Counter(), Counter()
    for record in read.records:
        changed: set[str] = set()
        value = clean_value(record.value, redact_pii, changed, pii)
        problems = []
        if to_example(Record(record.file, record.row, value), fmt, problems, columns=columns) is None:
            reasons = [f"{p.field or 'row'}: {p.message} [{p.code}]" for p in problems]
            log.append({"file": record.file, "row": record.row, "action": "dropped", "reasons": reasons})
            continue
        kept.append(value)
        if changed:
            changes.update(changed)
            log.append({"file": record.file, "row": record.row, "action": "changed", "reasons": sorted(changed)})
    write_records(out_path, kept)
    log.sort(key=lambda e: (e["file"], e["row"] or 0))
    dropped = sum(e["action"] == "dropped" for e in log)
    return CleanSummary(
        len(read.records) + len(read.problems),
        len(kept),
        dropped,
        sum(e["action"] == "changed" for e in log),
        changes,
        pii,
        log,
    )
