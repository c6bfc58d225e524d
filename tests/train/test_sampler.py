"""The training order: length buckets, seeded by (seed, epoch)."""

import random

import pytest
import torch
from transformers.trainer_pt_utils import get_length_grouped_indices

from tuneloop.train.sampler import EpochSeededLengthGroupedSampler, length_bucketed


def padded(order: list[int], lengths: list[int], size: int) -> int:
    return sum(len(b) * max(lengths[i] for i in b) for b in (order[k : k + size] for k in range(0, len(order), size)))


@pytest.mark.parametrize("n, size", [(448, 16), (100, 8), (7, 8), (1, 1), (2000, 4)])
def test_every_row_once_the_widest_batch_first_a_short_batch_last(n, size):
    rng = random.Random(n)
    lengths = [rng.randint(5, 300) for _ in range(n)]
    order = length_bucketed(lengths, size, torch.Generator().manual_seed(0))
    assert sorted(order) == list(range(n))
    batches = [order[k : k + size] for k in range(0, n, size)]
    widths = [len(b) * max(lengths[i] for i in b) for b in batches if len(b) == size]
    assert not widths or widths[0] == max(widths)
    assert all(len(b) == size for b in batches[:-1])


def test_less_padding_than_transformers_grouping():
    # the benchmark's shape: 448 rows in batches of 16, where transformers groups 7 batches at a time
    rng = random.Random(0)
    lengths = [int(rng.lognormvariate(3.8, 0.35)) for _ in range(448)]
    ours = length_bucketed(lengths, 16, torch.Generator().manual_seed(0))
    theirs = get_length_grouped_indices(lengths, 16, generator=torch.Generator().manual_seed(0))
    assert padded(ours, lengths, 16) < padded(theirs, lengths, 16)
    assert padded(ours, lengths, 16) < 1.05 * sum(lengths)  # 3.4%; transformers' 7-batch groups: 12.4%


def test_the_order_depends_on_seed_and_epoch_only():
    rng = random.Random(1)
    lengths = [rng.randint(5, 300) for _ in range(200)]
    sampler = EpochSeededLengthGroupedSampler(lengths, 8, seed=42)
    sampler.set_epoch(1)
    first = list(sampler)
    torch.manual_seed(123)  # the global RNG (restored from a checkpoint on resume) does not matter
    again = EpochSeededLengthGroupedSampler(lengths, 8, seed=42)
    again.set_epoch(1)
    assert list(again) == first
    again.set_epoch(2)
    assert list(again) != first
    # the batch order is shuffled, not long to short
    widths = [max(lengths[i] for i in first[k : k + 8]) for k in range(0, 200, 8)]
    assert widths[1:] != sorted(widths[1:], reverse=True)
