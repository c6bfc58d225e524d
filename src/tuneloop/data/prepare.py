"""The data stage of `tuneloop run`: load, check lengths, deduplicate, split without leakage, profile.

Everything dropped on the way is listed with its reason in `dropped`, which the run stores
as data/dropped.jsonl: no row disappears silently.
"""

from __future__ import annotations

from dataclasses import dataclass

from tuneloop.config import DataConfig
from tuneloop.data.conversation import preview
from tuneloop.data.dedup import find_duplicates
from tuneloop.data.load import LoadedData, load_examples_strict
from tuneloop.data.split import Splits, split_examples
from tuneloop.data.stats import profile
from tuneloop.data.tokens import TokenLengths, validate_lengths


@dataclass
class PreparedData:
    loaded: LoadedData
    lengths: TokenLengths  # of every loaded row, before deduplication
    splits: Splits
    dropped: list[dict]
    report: dict


def load_from_config(data: DataConfig, validation: bool = False) -> LoadedData:
    """The rows of data.path, or with `validation` those of data.validation_path."""
    return load_examples_strict(
        data.validation_path if validation else data.path,
        fmt=data.format,
        columns=data.columns.model_dump() if data.columns else None,
        system_prompt=data.system_prompt,
        label=data.label,
        clean=data.clean,
        redact_pii=data.redact_pii,
    )


def prepare_data(data: DataConfig, tokenizer) -> PreparedData:
    loaded = load_from_config(data)
    examples = loaded.examples
    lengths = validate_lengths(examples, tokenizer, data.max_seq_len, data.train_on)
    validation = None
    if data.validation_path is not None:  # the user's own validation rows, checked as strictly
        validation = load_from_config(data, validation=True).examples
        validate_lengths(validation, tokenizer, data.max_seq_len, data.train_on)
    dedup = None
    dropped: list[dict] = []
    if data.dedup != "none":
        dedup = find_duplicates(
            [e.text for e in examples], threshold=data.near_duplicate_threshold, near=data.dedup == "near"
        )
        for d in dedup.duplicates:
            e, kept = examples[d.index], examples[d.of]
            dropped.append(
                {
                    "file": e.file,
                    "row": e.row,
                    "reason": f"{d.kind}_duplicate",
                    "duplicate_of": {"file": kept.file, "row": kept.row},
                    "similarity": d.similarity,
                }
            )
        examples = [examples[i] for i in dedup.keep]
    splits = split_examples(
        examples,
        data.validation_size,
        data.test_size,
        seed=data.seed,
        stratify=data.stratify,
        leakage=data.leakage_check,
        threshold=data.near_duplicate_threshold,
        file=str(data.path),
        validation_rows=validation,
    )
    dropped += splits.removed
    report = profile(loaded.examples, tokenizer, lengths, dedup, data.max_seq_len)
    report = {
        "path": str(data.path),
        **({"validation_path": str(data.validation_path)} if data.validation_path else {}),
        "format": loaded.format,
        **report,
        "splits": {name: len(part) for name, part in splits.items()},
        "dropped": {"duplicates": len(dropped) - len(splits.removed), "leakage": len(splits.removed)},
        "train_on": data.train_on,
        "preview": preview(splits.train, tokenizer, data.train_on),
    }
    if loaded.has_labels:
        report["labels_by_split"] = {name: _count(e.label for e in part) for name, part in splits.items()}
    return PreparedData(loaded, lengths, splits, dropped, report)


def _count(values) -> dict:
    from collections import Counter

    return dict(Counter(values).most_common())
