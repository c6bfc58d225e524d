"""Seeded train / validation / test split."""

from __future__ import annotations

import random
from dataclasses import dataclass

from tuneloop.data.chat import Example
from tuneloop.data.problems import DataError, Problem

MIN_EXAMPLES = 10  # below this a three-way split leaves a split with no example


@dataclass(frozen=True)
class Splits:
    train: list[Example]
    validation: list[Example]
    test: list[Example]

    def items(self):
        return (("train", self.train), ("validation", self.validation), ("test", self.test))


def split_examples(examples: list[Example], validation_fraction: float, test_fraction: float, seed: int,
                   file: str = "<data>") -> Splits:
    if len(examples) < MIN_EXAMPLES:
        raise DataError([Problem(file, None, None, "too_few_rows",
                                 f"{len(examples)} examples; need at least {MIN_EXAMPLES} to split train/validation/test")])
    order = list(examples)
    random.Random(seed).shuffle(order)
    n_val = max(1, round(len(order) * validation_fraction))
    n_test = max(1, round(len(order) * test_fraction))
    return Splits(train=order[n_val + n_test:], validation=order[:n_val], test=order[n_val:n_val + n_test])
