import random

import pytest

from conftest import chat
from tuneloop.data import Example
from tuneloop.data.augment import (
    augment_eda,
    augment_with_model,
    augmented_rows,
    eda,
    synonyms,
)

TEXT = "My new card has not arrived yet and I need it for a trip next week"


def test_wordnet_synonyms_are_bundled():
    assert "repayment" in synonyms("refund")
    assert synonyms("qwzx") == ()


@pytest.mark.parametrize("operation", ["synonym", "insert", "swap", "delete"])
def test_eda_operations_are_seeded_and_change_the_text(operation):
    a = eda(TEXT, operation, 0.2, random.Random(1))
    b = eda(TEXT, operation, 0.2, random.Random(1))
    assert a == b and a != TEXT
    if operation == "swap":
        assert sorted(a.split()) == sorted(TEXT.split())
    if operation == "delete":
        assert len(a.split()) < len(TEXT.split())


def test_augment_changes_prompts_only_and_marks_rows():
    examples = [Example(chat(f"{TEXT} {i}", "card_arrival", system="Classify.")["messages"], i + 1) for i in range(8)]
    new = augment_eda(examples, copies=2, seed=0)
    assert 14 <= len(new) <= 16  # an edit that changes nothing (a deletion of no word) adds no row
    for e in new:
        source = examples[e.augmented["source_row"] - 1]
        assert e.messages[0] == source.messages[0] and e.answer == source.answer  # system and answer untouched
        assert e.messages[1]["content"] != source.messages[1]["content"]
        assert e.augmented["method"].startswith("eda:")
    rows = augmented_rows(examples, new)
    assert len(rows) == 8 + len(new) and "augmented" not in rows[0] and rows[8]["augmented"] == new[0].augmented


def test_paraphrase_through_a_loaded_model(tiny_model, tokenizer):
    from tuneloop.models import Precision, load_model

    examples = [Example(chat(f"{TEXT} {i}", "yes")["messages"], i + 1) for i in range(3)]
    model = load_model(tiny_model, Precision.fp32)
    for method in ("paraphrase", "backtranslate"):
        new, rejected = augment_with_model(examples, model, tokenizer, method=method, max_new_tokens=6)
        assert len(new) + len(rejected) == 3  # a random tiny model's output is mostly rejected
        assert all(e.answer == "yes" and e.augmented["method"] == method for e in new)
        assert all(
            e.messages[0]["content"] != examples[e.augmented["source_row"] - 1].messages[0]["content"] for e in new
        )


@pytest.mark.parametrize(
    "source, text, ok",
    [
        ("I am still waiting on my card?", "I'm waiting on my card.", True),
        ("I am still waiting on my card?", "I am still waiting on my card?", False),  # unchanged
        ("I am still waiting on my card?", "Je ne sais pas où est ma carte.", False),  # another language
        ("Is the card still coming?", "The card " + "is coming and it will arrive soon " * 4, False),  # rambling
        ("Is the card still coming?", "", False),
    ],
)
def test_model_rewrites_are_filtered(source, text, ok):
    from tuneloop.data.augment import plausible_rewrite

    assert plausible_rewrite(source, text) is ok


def test_eda_keeps_contractions_and_punctuation_in_place():
    text = "What can I do if my card still hasn't arrived after 2 weeks?"
    for seed in range(20):
        out = eda(text, "swap", 0.2, random.Random(seed))
        assert out.endswith("?") and "hasn't" in out
