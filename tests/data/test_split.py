import pytest

from tuneloop.data import DataError, Example, split_examples


def _examples(n):
    return [Example([{"role": "user", "content": str(i)}, {"role": "assistant", "content": "a"}], i + 1) for i in range(n)]


@pytest.mark.parametrize("n, val, test, sizes", [
    (100, 0.1, 0.15, (75, 10, 15)),
    (10, 0.1, 0.1, (8, 1, 1)),
    (480, 0.1, 0.15, (360, 48, 72)),
])
def test_sizes(n, val, test, sizes):
    s = split_examples(_examples(n), val, test, seed=0)
    assert (len(s.train), len(s.validation), len(s.test)) == sizes


def test_disjoint_complete_and_seeded():
    ex = _examples(200)
    a, b, c = (split_examples(ex, 0.1, 0.2, seed) for seed in (1, 1, 2))
    rows = lambda s: [[e.row for e in part] for _, part in s.items()]  # noqa: E731
    assert rows(a) == rows(b) and rows(a) != rows(c)
    flat = [r for part in rows(a) for r in part]
    assert sorted(flat) == list(range(1, 201))


def test_too_few_examples():
    with pytest.raises(DataError, match="need at least 10"):
        split_examples(_examples(5), 0.1, 0.1, seed=0)
