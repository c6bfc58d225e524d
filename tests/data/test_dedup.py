"""Exact and near-duplicate detection, pinned on hand-made cases and on real banking77 text."""

import csv

import pytest

from conftest import SHARED
from tuneloop.data import find_duplicates, find_overlap
from tuneloop.data.dedup import normalize

# 40 words, so one changed word leaves 35 of 41 three-word shingles shared: Jaccard 0.85.
BASE = (
    "my card payment was declined at the supermarket yesterday and i do not know why it happened because "
    "there was enough money in the account and the card had worked fine in the morning at the cafe near work"
)


@pytest.mark.parametrize(
    "a, b, kind",
    [
        (BASE, BASE.upper() + "!!", "exact"),  # case and punctuation do not count
        (BASE, "  " + BASE.replace(" ", "   "), "exact"),
        (BASE, BASE.replace("yesterday", "today"), "near"),  # one word in 40
        (BASE, BASE.replace("yesterday", "today").replace("morning", "evening").replace("cafe", "bar"), None),
        (BASE, BASE + " please help", "near"),
        (BASE, "how do i top up my account with a bank transfer from abroad", None),
    ],
)
def test_pairs(a, b, kind):
    result = find_duplicates([a, b])
    assert [d.kind for d in result.duplicates] == ([kind] if kind else [])
    assert result.keep == ([0] if kind else [0, 1])


def test_threshold_is_configurable():
    a, b = BASE, BASE.replace("yesterday", "today").replace("morning", "evening")
    assert find_duplicates([a, b], threshold=0.9).duplicates == []
    assert len(find_duplicates([a, b], threshold=0.6).duplicates) == 1


def test_clusters_keep_the_first_row_and_exact_off_switch():
    texts = [
        BASE,
        "unrelated text about exchange rates for travel money",
        BASE + " thanks",
        BASE.upper(),
        BASE + " thanks a lot",
    ]
    result = find_duplicates(texts)
    assert result.keep == [0, 1]
    assert result.clusters == {0: [2, 3, 4]}
    assert [d.kind for d in find_duplicates(texts, near=False).duplicates] == ["exact"]


def test_real_banking77_duplicates_are_found():
    with open(SHARED / "banking77" / "train.csv", newline="", encoding="utf-8") as f:
        texts = [r["text"] for r in csv.DictReader(f)]
    result = find_duplicates(texts)
    exact = [d for d in result.duplicates if d.kind == "exact"]
    near = [d for d in result.duplicates if d.kind == "near"]
    # Pinned: the real file's duplicates (read by hand: "top up" / "top-up", stray newlines, ...).
    assert (len(exact), len(near)) == (27, 65)
    assert all(normalize(texts[d.index]) == normalize(texts[d.of]) for d in exact)
    assert all(d.of < d.index for d in result.duplicates)
    # Clusters chain (a~b, b~c), so a member's similarity to the kept row can be lower; most are direct.
    assert sum(d.similarity >= 0.8 for d in near) >= 0.9 * len(near)


def test_overlap_between_sets():
    held = [BASE, "what is the exchange rate for euros"]
    train = ["totally different question about pins", BASE.replace("yesterday", "today"), held[1].upper()]
    found = find_overlap(held, train)
    assert [(d.index, d.of, d.kind) for d in found] == [(1, 0, "near"), (2, 1, "exact")]
