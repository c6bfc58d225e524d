"""Length-grouped batches whose order depends only on the seed and the epoch.

transformers' LengthGroupedSampler draws its permutation from the global RNG when the epoch's
iterator is made. A run resumed in epoch 2 or later restores the RNG state of its checkpoint, not
the one the uninterrupted run had at the start of that epoch, so its batches came in another order
and its losses drifted from step 19 on (issue 20). Seeding each epoch's draw from (seed, epoch)
makes the order the same however the run got there.
"""

from __future__ import annotations

import torch
from torch.utils.data import Sampler
from transformers.trainer_pt_utils import get_length_grouped_indices


class EpochSeededLengthGroupedSampler(Sampler):
    def __init__(self, lengths: list[int], batch_size: int, seed: int):
        self.lengths, self.batch_size, self.seed = list(lengths), batch_size, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:  # called by the Trainer (through accelerate) at each epoch
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=generator))
