"""TRL's ORPOTrainer with its pairs in length-grouped batches (train/sampler.py)."""

from __future__ import annotations

from trl.experimental.orpo import ORPOTrainer

from tuneloop.train.sampler import PairsGroupedByLength


class LengthGroupedORPOTrainer(PairsGroupedByLength, ORPOTrainer):
    pass
