from conftest import chat
from tuneloop.data import Example, find_duplicates, profile, token_lengths
from tuneloop.data.stats import percentiles


def test_percentiles_pinned():
    assert percentiles(list(range(1, 101))) == {
        "count": 100,
        "mean": 50.5,
        "min": 1,
        "p5": 5,
        "p25": 25,
        "p50": 50,
        "p75": 75,
        "p95": 95,
        "p99": 99,
        "max": 100,
    }
    assert percentiles([]) == {"count": 0}


def test_profile_of_labelled_data(tokenizer):
    rows = [chat(f"question {i} about cards", "card" if i % 10 else "loan", system="S") for i in range(40)]
    rows.append(rows[0])
    examples = [Example(r["messages"], i + 1, label=r["messages"][-1]["content"]) for i, r in enumerate(rows)]
    lengths = token_lengths(examples, tokenizer)
    report = profile(examples, tokenizer, lengths, find_duplicates([e.text for e in examples]), max_seq_len=64)
    assert report["rows"] == 41 and report["labels"] == {"card": 36, "loan": 5}
    assert report["imbalance_ratio"] == 7.2
    assert report["duplicates"]["exact"] == 1 and report["duplicates"]["clusters"] == 1
    assert set(report["tokens_by_role"]) == {"system", "user", "assistant"}
    assert report["tokens"]["max"] == max(lengths.total) and report["rows_over_max_seq_len"] == 0
    assert report["total_trainable_tokens"] == sum(lengths.learned) > 0
    assert [w["code"] for w in report["warnings"]] == ["duplicates"]
