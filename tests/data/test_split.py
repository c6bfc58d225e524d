from collections import Counter

import pytest

from tuneloop.data import DataError, Example, split_examples


def _examples(n, labels=None):
    return [
        Example(
            [
                {"role": "user", "content": f"question {i} " + "word " * (i % 5)},
                {"role": "assistant", "content": labels[i % len(labels)] if labels else f"answer {i}"},
            ],
            i + 1,
            "d.jsonl",
            label=labels[i % len(labels)] if labels else None,
        )
        for i in range(n)
    ]


@pytest.mark.parametrize(
    "n, val, test, sizes",
    [
        (100, 0.1, 0.15, (75, 10, 15)),
        (10, 0.1, 0.1, (8, 1, 1)),
        (480, 0.1, 0.15, (360, 48, 72)),
        (100, 20, 30, (50, 20, 30)),  # sizes in rows
        (100, 0.2, 5, (75, 20, 5)),
    ],
)
def test_sizes(n, val, test, sizes):
    s = split_examples(_examples(n), val, test, seed=0, leakage="none")
    assert (len(s.train), len(s.validation), len(s.test)) == sizes


def test_disjoint_complete_and_seeded():
    ex = _examples(200)
    a, b, c = (split_examples(ex, 0.1, 0.2, seed, leakage="none") for seed in (1, 1, 2))
    rows = lambda s: [[e.row for e in part] for _, part in s.items()]  # noqa: E731
    assert rows(a) == rows(b) and rows(a) != rows(c)
    flat = [r for part in rows(a) for r in part]
    assert sorted(flat) == list(range(1, 201))


@pytest.mark.parametrize("n, val, test", [(5, 0.1, 0.1), (20, 10, 10)])
def test_too_few_examples(n, val, test):
    with pytest.raises(DataError, match="too_few_rows|cannot give"):
        split_examples(_examples(n), val, test, seed=0)


def test_stratified_by_label():
    labels = ["a"] * 6 + ["b"] * 3 + ["c"]  # 60% / 30% / 10%
    s = split_examples(_examples(1000, labels), 0.1, 0.2, seed=3, leakage="none")
    for part, n in ((s.validation, 100), (s.test, 200)):
        counts = Counter(e.label for e in part)
        assert abs(counts["a"] - 0.6 * n) <= 1 and abs(counts["b"] - 0.3 * n) <= 1 and abs(counts["c"] - 0.1 * n) <= 1


def test_leakage_removed_from_train():
    ex = _examples(100)
    dup = Example(list(ex[0].messages), 101, "d.jsonl")  # an exact copy of row 1
    s = split_examples(ex + [dup], 10, 10, seed=0, leakage="exact")
    held = {e.row for e in s.validation + s.test}
    if 1 in held:
        assert 101 not in {e.row for e in s.train}
        assert s.removed[0]["row"] == 101 and s.removed[0]["reason"] == "exact_duplicate_of_held_out"
    else:
        assert ({e.row for e in s.train} >= {1} and s.removed == []) or s.removed[0]["row"] == 1


def test_augmented_rows_only_in_train_and_dropped_when_their_source_is_held_out():
    ex = _examples(50)
    augmented = [
        Example(
            [{"role": "user", "content": f"reworded {i}"}, e.messages[1]],
            100 + i,
            "d.jsonl",
            augmented={"method": "eda:swap", "source_row": e.row},
        )
        for i, e in enumerate(ex)
    ]
    s = split_examples(ex + augmented, 10, 10, seed=1, leakage="none")
    held = {e.row for e in s.validation + s.test}
    assert all(not e.augmented for e in s.validation + s.test)
    kept_aug = [e for e in s.train if e.augmented]
    assert all(e.augmented["source_row"] not in held for e in kept_aug)
    assert len(kept_aug) == 30 and len(s.removed) == 20
    assert all(r["reason"] == "augmented_from_held_out" for r in s.removed)


def test_own_validation_rows_are_the_validation_split():
    """data.validation_path: the user's rows are validation, whole; train and test come from the rest,
    and a train row duplicating one of them is dropped as leakage."""
    rows, own = _examples(40), _examples(3)
    own = [Example(e.messages, e.row, "val.jsonl") for e in own]
    splits = split_examples(rows, 0.1, 4, validation_rows=own)
    assert splits.validation == own and len(splits.test) == 4
    assert len(splits.train) == 40 - 4 - 3  # rows 1-3 of d.jsonl say what val.jsonl's say
    assert {d["reason"] for d in splits.removed} == {"exact_duplicate_of_held_out"}
