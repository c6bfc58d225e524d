"""Seeded train / validation / test split, stratified by label, then a leakage check.

Sizes are fractions (0.1) or row counts (200). With labels, rows are interleaved so every
label is spread evenly through the order before it is cut, which keeps each split's label
mix close to the whole. Rows made by `data augment` only ever go to train; one whose source
row landed in validation or test is dropped, since it would leak that row. Finally no train
row may be an exact or near duplicate of a validation or test row.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from tuneloop.data.dedup import find_overlap
from tuneloop.data.example import Example
from tuneloop.data.problems import DataError, Problem

MIN_EXAMPLES = 10  # below this a three-way split leaves a split with no example


@dataclass
class Splits:
    train: list[Example]
    validation: list[Example]
    test: list[Example]
    removed: list[dict] = field(default_factory=list)  # train rows dropped for leakage, with the reason

    def items(self):
        return (("train", self.train), ("validation", self.validation), ("test", self.test))


def split_size(size: float, n: int) -> int:
    return int(size) if size >= 1 else max(1, round(n * size))


def split_examples(
    examples: list[Example],
    validation: float = 0.1,
    test: float = 0.15,
    seed: int = 42,
    stratify: bool = True,
    leakage: str = "near",
    threshold: float = 0.8,
    file: str = "<data>",
    validation_rows: list[Example] | None = None,
) -> Splits:
    """`leakage`: "near" (exact and near duplicates), "exact", or "none" (no check).
    `validation_rows`: the user's own validation file (data.validation_path), used whole instead of
    cutting `validation` rows from `examples`."""
    originals = [e for e in examples if not e.augmented]
    augmented = [e for e in examples if e.augmented]
    n = len(originals)
    n_val = 0 if validation_rows is not None else split_size(validation, n)
    n_test = split_size(test, n)
    if n < MIN_EXAMPLES or n - n_val - n_test < 1:
        raise DataError(
            [
                Problem(
                    file,
                    None,
                    None,
                    "too_few_rows",
                    f"{n} examples cannot give {n_val} validation and {n_test} test rows and still "
                    f"leave training data (need at least {MIN_EXAMPLES})",
                )
            ]
        )
    rng = random.Random(seed)
    if stratify and all(e.label is not None for e in originals):
        order = _interleave_by_label(originals, rng)
    else:
        order = list(originals)
        rng.shuffle(order)
    splits = Splits(
        train=order[n_val + n_test :],
        validation=list(validation_rows) if validation_rows is not None else order[:n_val],
        test=order[n_val : n_val + n_test],
    )
    held_out = {(e.file, e.row): name for name, part in splits.items() if name != "train" for e in part}
    for e in augmented:
        source = (e.file, e.augmented.get("source_row"))
        if source in held_out:
            splits.removed.append(_removed(e, "augmented_from_held_out", held_out[source], source[1], 1.0))
        else:
            splits.train.append(e)
    if leakage != "none":
        _remove_leaks(splits, near=leakage == "near", threshold=threshold)
    if not splits.train:
        raise DataError(
            [
                Problem(
                    file,
                    None,
                    None,
                    "no_training_rows",
                    f"every one of the {len(splits.removed)} training rows duplicates a validation or test row "
                    "(leakage check); the data has too few distinct examples",
                )
            ]
        )
    return splits


def _interleave_by_label(examples: list[Example], rng: random.Random) -> list[Example]:
    groups: dict[str, list[Example]] = {}
    for e in examples:
        groups.setdefault(e.label, []).append(e)
    keyed = []
    for label in sorted(groups):
        group = groups[label]
        rng.shuffle(group)
        offset = rng.random()
        # Item i of a label of size m sits at (i + offset) / m: each label evenly spread over [0, 1).
        keyed += [((i + offset) / len(group), rng.random(), e) for i, e in enumerate(group)]
    keyed.sort(key=lambda t: (t[0], t[1]))
    return [e for _, _, e in keyed]


def _remove_leaks(splits: Splits, near: bool, threshold: float) -> None:
    held = [("validation", e) for e in splits.validation] + [("test", e) for e in splits.test]
    overlap = find_overlap([e.text for _, e in held], [e.text for e in splits.train], threshold=threshold, near=near)
    drop = set()
    for d in overlap:
        split, other = held[d.of]
        splits.removed.append(
            _removed(splits.train[d.index], f"{d.kind}_duplicate_of_held_out", split, other.row, d.similarity)
        )
        drop.add(d.index)
    splits.train = [e for i, e in enumerate(splits.train) if i not in drop]


def _removed(e: Example, reason: str, split: str, row: int, similarity: float) -> dict:
    return {
        "file": e.file,
        "row": e.row,
        "reason": reason,
        "duplicate_of": {"split": split, "row": row},
        "similarity": similarity,
    }
