"""What OpenAI checks of fine-tuning files, checked as `tuneloop data check` checks data.

At upload: every line parses and is a row of a format tuneloop reads (OpenAI's chat rows with
`weight` and tools, its DPO rows, and the other formats of data/formats.py). At a job's start
(`validating_files`): the files fit the method (preference rows for dpo, conversations for
supervised), and every row fits the model's context after its chat template.
"""

from __future__ import annotations

from pathlib import Path

from tuneloop.data.load import load_examples
from tuneloop.data.problems import DataError, Problem

PREFERENCE_FORMATS = ("preference", "openai_preference")
SHOWN_PROBLEMS = 3


class FileProblem(ValueError):
    """A file that cannot be used; the message names its line and field."""


def describe(problems: list[Problem], filename: str) -> str:
    def one(p: Problem) -> str:
        where = f"line {p.row}" if p.row is not None else "the file"
        return f"{where}{', ' + p.field if p.field else ''}: {p.message} [{p.code}]"

    shown = "; ".join(one(p) for p in problems[:SHOWN_PROBLEMS])
    more = f" (and {len(problems) - SHOWN_PROBLEMS} more problems)" if len(problems) > SHOWN_PROBLEMS else ""
    return f"{filename}: {shown}{more}"


def check_upload(path: Path, filename: str) -> str:
    """The file's format; FileProblem naming the first lines at fault."""
    loaded = load_examples(path)
    if loaded.problems:
        raise FileProblem(describe(loaded.problems, filename))
    if not loaded.examples:
        raise FileProblem(f"{filename}: no examples")
    return loaded.format


def check_method(fmt: str, method: str, filename: str) -> None:
    """dpo trains on preference rows; supervised on conversations."""
    preference = fmt in PREFERENCE_FORMATS
    if method == "dpo" and not preference:
        raise FileProblem(
            f"{filename}: method dpo needs preference rows (input, preferred_output, non_preferred_output); "
            f"this file holds {fmt} rows"
        )
    if method == "supervised" and preference:
        raise FileProblem(f"{filename}: preference rows train with method dpo, not supervised")


def check_lengths(path: Path, filename: str, tokenizer, max_seq_len: int, train_on: str) -> None:
    """Every row fits the context after the chat template (data/tokens.py says which do not)."""
    from tuneloop.data.tokens import validate_lengths

    try:
        validate_lengths(load_examples(path).examples, tokenizer, max_seq_len, train_on)
    except DataError as e:
        raise FileProblem(describe(e.problems, filename)) from None
