"""Read rows from JSONL, JSON arrays, CSV/TSV, Parquet, or a folder of them — and write them back.

Every row keeps where it came from (file and 1-based row: the line for JSONL, the data row
after the header for CSV, the element for a JSON array, the record for Parquet), so every
later problem or log entry can point back to it. A row that cannot be read becomes a
Problem instead of an exception: the linter reports all of them, not the first.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

from tuneloop.data.problems import Problem

TEXT_SUFFIXES = {".jsonl", ".ndjson", ".json", ".csv", ".tsv"}
SUFFIXES = TEXT_SUFFIXES | {".parquet"}


@dataclass(frozen=True)
class Record:
    file: str
    row: int
    value: dict


@dataclass
class ReadResult:
    records: list[Record]
    problems: list[Problem]


def data_files(path: str | Path) -> list[Path]:
    """The file itself, or every supported file in a folder (sorted, so row order is stable)."""
    path = Path(path)
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
    return [path]


def refuse_overwriting(source: str | Path, outputs: list[Path]) -> None:
    """The data commands write new files and never modify the source: an output that is the source,
    or one of the files of a source folder, is an error before anything is read or written."""
    sources = {os.path.realpath(f) for f in data_files(source)} | {os.path.realpath(source)}
    for out in outputs:
        if os.path.realpath(out) in sources:
            raise ValueError(f"{out}: this would overwrite the source data ({source}); write to another path")


def read_records(path: str | Path) -> ReadResult:
    path = Path(path)
    if path.is_symlink() and not path.exists():
        return ReadResult(
            [], [Problem(str(path), None, None, "broken_link", "a symbolic link to nothing (or to itself)")]
        )
    if not path.exists():
        return ReadResult([], [Problem(str(path), None, None, "not_found", "file not found")])
    files = data_files(path)
    if not files:
        return ReadResult(
            [],
            [Problem(str(path), None, None, "empty_folder", f"no {', '.join(sorted(SUFFIXES))} files in the folder")],
        )
    result = ReadResult([], [])
    for file in files:
        part = _read_file(file)
        result.records += part.records
        result.problems += part.problems
    return result


def _read_file(path: Path) -> ReadResult:
    suffix = path.suffix.lower()
    name = str(path)
    if suffix not in SUFFIXES:
        return ReadResult(
            [],
            [
                Problem(
                    name,
                    None,
                    None,
                    "unknown_file_type",
                    f"unsupported file type {suffix or '(none)'}; use one of {sorted(SUFFIXES)}",
                )
            ],
        )
    if suffix == ".parquet":
        return _read_parquet(path)
    raw = path.read_bytes()
    if b"\x00" in raw[:8192]:
        return ReadResult(
            [], [Problem(name, None, None, "binary_file", f"looks like a binary file, not {suffix[1:].upper()} text")]
        )
    if raw.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark, as Excel writes
        raw = raw[3:]
    if suffix in (".csv", ".tsv"):
        result = _read_csv(name, raw, "\t" if suffix == ".tsv" else ",")
    elif suffix == ".json" and raw.lstrip()[:1] == b"[":
        result = _read_json_array(name, raw)
    else:
        result = _read_jsonl(name, raw)
    if not result.records and not result.problems:
        result.problems.append(Problem(name, None, None, "empty_file", "no rows in the file"))
    return result


def _read_jsonl(name: str, raw: bytes) -> ReadResult:
    result = ReadResult([], [])
    for number, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            result.problems.append(
                Problem(
                    name, number, None, "encoding_error", f"not UTF-8 (byte {e.start}: {line[e.start : e.start + 1]!r})"
                )
            )
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as e:
            result.problems.append(
                Problem(name, number, None, "invalid_json", f"not valid JSON: {e.msg} at column {e.colno}")
            )
            continue
        except RecursionError:
            result.problems.append(
                Problem(name, number, None, "too_deep", f"nested more than {MAX_DEPTH} levels deep; not a data row")
            )
            continue
        _append(result, name, number, value)
    return result


def _read_json_array(name: str, raw: bytes) -> ReadResult:
    try:
        values = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        return ReadResult([], [Problem(name, None, None, "encoding_error", f"not UTF-8 at line {line}")])
    except json.JSONDecodeError as e:
        return ReadResult(
            [],
            [Problem(name, None, None, "invalid_json", f"not valid JSON: {e.msg} at line {e.lineno} column {e.colno}")],
        )
    except RecursionError:
        return ReadResult([], [Problem(name, None, None, "too_deep", "nested too deeply to be a data file")])
    result = ReadResult([], [])
    for number, value in enumerate(values, start=1):
        _append(result, name, number, value)
    return result


def _read_csv(name: str, raw: bytes, delimiter: str) -> ReadResult:
    # surrogateescape keeps undecodable bytes as lone surrogates, so one bad row is reported
    # and the rest of the file is still checked.
    text = raw.decode("utf-8", errors="surrogateescape")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    result = ReadResult([], [])
    try:
        header = next(reader)
    except StopIteration:
        return result
    except csv.Error as e:
        return ReadResult([], [Problem(name, None, None, "invalid_csv", f"unreadable header: {e}")])
    header = [h.strip() for h in header]
    number = 0
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            result.problems.append(Problem(name, number + 1, None, "invalid_csv", str(e)))
            break
        number += 1
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != len(header):
            result.problems.append(
                Problem(name, number, None, "wrong_column_count", f"{len(cells)} columns, the header has {len(header)}")
            )
            continue
        bad = [h for h, c in zip(header, cells) if _has_surrogates(c)]
        if bad:
            result.problems.append(Problem(name, number, bad[0], "encoding_error", "not UTF-8 text"))
            continue
        result.records.append(Record(name, number, dict(zip(header, cells))))
    return result


def _read_parquet(path: Path) -> ReadResult:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # noqa: BLE001 — pyarrow raises several types for a corrupt file; all mean the same
        return ReadResult([], [Problem(str(path), None, None, "invalid_parquet", f"not a readable Parquet file: {e}")])
    result = ReadResult([], [])
    for number, value in enumerate(table.to_pylist(), start=1):
        _append(result, str(path), number, value)
    return result


# A chat row is a few levels deep (row -> messages -> turn -> tool call arguments). Far deeper
# values are not data tuneloop can use, and recursive code downstream (cleaning, writing) would
# exhaust Python's stack on them: they are refused at the reader.
MAX_DEPTH = 32


def _depth(value) -> int:
    """How deeply lists and objects nest in `value` (iteratively: the value may be deeper than the stack)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict | list):
            deepest = max(deepest, d)
            if d <= MAX_DEPTH:
                stack.extend((x, d + 1) for x in (v.values() if isinstance(v, dict) else v))
    return deepest


def _append(result: ReadResult, name: str, number: int, value) -> None:
    if isinstance(value, dict) and _depth(value) > MAX_DEPTH:
        result.problems.append(
            Problem(name, number, None, "too_deep", f"nested more than {MAX_DEPTH} levels deep; not a data row")
        )
    elif isinstance(value, dict):
        result.records.append(Record(name, number, value))
    else:
        result.problems.append(
            Problem(name, number, None, "wrong_type", f"expected a JSON object, got {type(value).__name__}")
        )


def _has_surrogates(text: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def write_records(path: str | Path, values: list[dict]) -> Path:
    """Write rows in the format the suffix names (JSONL by default); atomic, never over a source."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(values), tmp)
    elif suffix in (".csv", ".tsv"):
        columns = list(dict.fromkeys(k for v in values for k in v))
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, columns, delimiter="\t" if suffix == ".tsv" else ",")
            writer.writeheader()
            for v in values:
                writer.writerow(
                    {k: json.dumps(x, ensure_ascii=False) if isinstance(x, (dict, list)) else x for k, x in v.items()}
                )
    elif suffix == ".json":
        tmp.write_text(json.dumps(values, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    else:
        tmp.write_text("".join(json.dumps(v, ensure_ascii=False) + "\n" for v in values), encoding="utf-8")
    tmp.replace(path)
    return path
