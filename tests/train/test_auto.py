import pytest
from transformers import LlamaConfig

from tuneloop.train.auto import auto_batch_size, auto_epochs
from tuneloop.train.memory import activation_bytes_per_token


@pytest.mark.parametrize("n_train, epochs", [(10, 10), (30, 4), (34, 3), (500, 3), (8333, 3), (10_000, 2),
                                             (30_000, 1), (3, 25)])
def test_auto_epochs_follow_dataset_size(n_train, epochs):
    assert auto_epochs(n_train) == epochs


SMOLLM2 = LlamaConfig(hidden_size=576, num_hidden_layers=30, num_attention_heads=9)


@pytest.mark.parametrize("n_train, seq_len, free_gib, batch", [
    (354, 170, 20, 16),  # quickstart-sized: data and memory allow the cap
    (100, 170, 20, 4),  # 100 rows: at most 1/20 of the set
    (10_000, 256, 4, 4),  # ~240 MB of activations per 256-token example; a quarter of 4 GiB holds 4
    (10_000, 1024, 2, 1),  # eager attention's scores grow with length squared
    (10_000, 4096, 0.5, 1),  # never below 1
])
def test_auto_batch_size_from_memory_and_data(n_train, seq_len, free_gib, batch):
    assert auto_batch_size(n_train, seq_len, SMOLLM2, free_gib * 2**30) == batch


def test_activation_estimate_is_pinned():
    # 30 layers x 576 x (34 + 5 x 9 x 170 / 576) bytes per token
    assert activation_bytes_per_token(SMOLLM2, 170) == pytest.approx(30 * 576 * (34 + 5 * 9 * 170 / 576))
