"""The data report: size, turns, token lengths (whole and learned), per-role lengths, labels, duplicates,
warnings.

`tuneloop data stats` prints it; `tuneloop run` stores it as runs/<id>/data/report.json and
shows it in the run report. Warnings use the same {row, field, code, message} shape as the
linter's so every consumer reads one format.
"""

from __future__ import annotations

import math
from collections import Counter

from tuneloop.data.dedup import DedupResult
from tuneloop.data.example import Example
from tuneloop.data.tokens import TokenLengths

PERCENTILES = (5, 25, 50, 75, 95, 99)
IMBALANCE_RATIO = 10  # largest class / smallest class above this deserves a warning
MIN_PER_LABEL = 5  # fewer rows than this per class cannot reach every split


def percentiles(values: list[int]) -> dict:
    if not values:
        return {"count": 0}
    ordered = sorted(values)
    pick = lambda q: ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]  # nearest rank  # noqa: E731
    return {
        "count": len(values),
        "mean": round(sum(values) / len(values), 1),
        "min": ordered[0],
        **{f"p{q}": pick(q) for q in PERCENTILES},
        "max": ordered[-1],
    }


def profile(
    examples: list[Example],
    tokenizer=None,
    lengths: TokenLengths | None = None,
    dedup: DedupResult | None = None,
    max_seq_len: int | None = None,
) -> dict:
    report: dict = {"rows": len(examples), "augmented_rows": sum(1 for e in examples if e.augmented)}
    warnings: list[dict] = []
    turns = Counter(len(e.messages) for e in examples)
    report["turns_per_example"] = dict(sorted(turns.items()))
    assistant = Counter(e.assistant_turns for e in examples if e.kind == "chat")
    if assistant:
        report["assistant_turns_per_example"] = dict(sorted(assistant.items()))
    if any(e.tools or any(m.get("tool_calls") for m in e.messages) for e in examples):
        report["tool_calls"] = sum(len(m.get("tool_calls") or ()) for e in examples for m in e.messages)
    by_role: dict[str, list[str]] = {}
    for e in examples:
        for m in e.messages:
            by_role.setdefault(m["role"], []).append(m["content"])
    report["characters_by_role"] = {role: percentiles([len(t) for t in texts]) for role, texts in by_role.items()}
    if tokenizer is not None:
        report["tokens_by_role"] = {
            role: percentiles([len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]])
            for role, texts in by_role.items()
        }
    if lengths is not None:
        report["tokens"] = percentiles(lengths.total)
        # "trainable": the tokens in the loss, every learned assistant turn (data.train_on)
        report["trainable_tokens"] = percentiles(lengths.learned)
        report["total_trainable_tokens"] = sum(lengths.learned)
        if max_seq_len:
            report["max_seq_len"] = max_seq_len
            over = sum(1 for n in lengths.total if n > max_seq_len)
            report["rows_over_max_seq_len"] = over
    labels = Counter(e.label for e in examples if e.label is not None)
    if labels and len(labels) >= 2:
        report["labels"] = dict(labels.most_common())
        most, least = labels.most_common()[0], labels.most_common()[-1]
        report["imbalance_ratio"] = round(most[1] / least[1], 2)
        if most[1] / least[1] > IMBALANCE_RATIO:
            warnings.append(
                _warning(
                    "label_imbalance",
                    f"'{most[0]}' has {most[1]} rows and '{least[0]}' {least[1]} "
                    f"({most[1] / least[1]:.0f}x): accuracy will mislead; read per-class F1, "
                    "and consider collecting or augmenting the small classes",
                )
            )
        rare = [label for label, n in labels.items() if n < MIN_PER_LABEL]
        if rare:
            warnings.append(
                _warning(
                    "rare_label",
                    f"{len(rare)} label(s) have fewer than {MIN_PER_LABEL} rows, "
                    f"e.g. {rare[:5]}: too few to be in train, validation and test",
                )
            )
    if dedup is not None:
        exact = sum(1 for d in dedup.duplicates if d.kind == "exact")
        near = sum(1 for d in dedup.duplicates if d.kind == "near")
        report["duplicates"] = {
            "exact": exact,
            "near": near,
            "rate": round((exact + near) / max(1, len(examples)), 4),
            "clusters": len(dedup.clusters),
        }
        if exact + near:
            warnings.append(
                _warning(
                    "duplicates",
                    f"{exact} exact and {near} near-duplicate rows "
                    f"({100 * (exact + near) / max(1, len(examples)):.1f}%)",
                )
            )
    report["warnings"] = warnings
    return report


def _warning(code: str, message: str) -> dict:
    return {"row": None, "field": None, "code": code, "message": message}
