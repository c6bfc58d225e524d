"""The data stage of `tuneloop run` on real banking77 rows mapped from CSV columns."""

import csv
import json

import pytest

from conftest import SHARED
from tuneloop.config import DataConfig
from tuneloop.data.prepare import prepare_data


def test_banking77_columns_dedup_stratified_split(tmp_path, tokenizer):
    with open(SHARED / "banking77" / "train.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    # Two intents, plus an exact copy and a near copy of a row: both must be dropped and logged.
    picked = [r for r in rows if r["category"] in ("card_arrival", "exchange_rate")][:200]
    picked += [picked[3], {"text": picked[5]["text"].upper() + "??", "category": picked[5]["category"]}]
    path = tmp_path / "b.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, ["text", "category"])
        w.writeheader()
        w.writerows(picked)
    data = DataConfig(
        path=path,
        columns={"prompt": "{text}", "completion": "{category}"},
        validation_size=0.1,
        test_size=0.2,
        max_seq_len=256,
    )
    prepared = prepare_data(data, tokenizer)
    assert {(d["row"], d["reason"]) for d in prepared.dropped} >= {(201, "exact_duplicate"), (202, "exact_duplicate")}
    report = prepared.report
    assert report["format"] == "columns" and report["rows"] == 202
    kept = 202 - report["dropped"]["duplicates"]
    assert sum(report["splits"].values()) == kept - report["dropped"]["leakage"]
    by_split = report["labels_by_split"]
    for name in ("validation", "test"):
        share = by_split[name]["card_arrival"] / sum(by_split[name].values())
        overall = report["labels"]["card_arrival"] / report["rows"]
        assert abs(share - overall) < 0.05
    train_texts = {e.text for e in prepared.splits.train}
    assert not train_texts & {e.text for e in prepared.splits.test + prepared.splits.validation}


def test_a_validation_file_of_its_own(tmp_path, tokenizer):
    """data.validation_path (OpenAI's validation_file): its rows are the validation split, checked as
    strictly as the training file's; a row too long for max_seq_len is an error naming that file."""
    from conftest import write_tickets
    from tuneloop.data.problems import DataError

    write_tickets(tmp_path / "train.jsonl", 30)
    write_tickets(tmp_path / "val.jsonl", 5, start=100)
    data = DataConfig(
        path=tmp_path / "train.jsonl", validation_path=tmp_path / "val.jsonl", test_size=5, max_seq_len=384
    )
    prepared = prepare_data(data, tokenizer)
    assert {e.file for e in prepared.splits.validation} == {str(tmp_path / "val.jsonl")}
    assert (len(prepared.splits.validation), len(prepared.splits.test), len(prepared.splits.train)) == (5, 5, 25)
    assert prepared.report["validation_path"] == str(tmp_path / "val.jsonl")
    long = {"messages": [{"role": "user", "content": "word " * 500}, {"role": "assistant", "content": "ok"}]}
    with open(tmp_path / "val.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(long) + "\n")
    with pytest.raises(DataError, match=r"val\.jsonl:6"):
        prepare_data(data, tokenizer)
