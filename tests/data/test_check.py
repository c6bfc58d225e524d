"""The linter on defect fixtures made by corrupting copies of real data."""

import csv
import json

from conftest import SHARED, write_jsonl
from tuneloop.data import check_data


def _gsm8k_rows(n=40) -> list[str]:
    return (SHARED / "gsm8k" / "train.jsonl").read_text(encoding="utf-8").splitlines()[:n]


COLUMNS = {"prompt": "{question}", "completion": "{answer}"}


def test_clean_real_data_has_no_errors(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "g.jsonl", _gsm8k_rows())
    report = check_data(path, columns=COLUMNS, tokenizer=tokenizer, max_seq_len=1024)
    assert report.ok and report.valid_rows == report.rows == 40 and report.errors == []


def test_every_defect_is_reported_with_row_field_and_code(tmp_path, tokenizer):
    lines = _gsm8k_rows()
    lines[2] = lines[2][:-10]  # truncated JSON
    row = json.loads(lines[4])
    row["answer"] = 42  # a number renders through the template: allowed
    lines[4] = json.dumps(row)
    row = json.loads(lines[6])
    row["question"] = "   "  # empty
    lines[6] = json.dumps(row)
    row = json.loads(lines[8])
    del row["answer"]  # missing
    lines[8] = json.dumps(row)
    row = json.loads(lines[10])
    row["question"] = row["question"] * 40  # far longer than max_seq_len
    lines[10] = json.dumps(row)
    lines[12] = lines[0]  # exact duplicate of row 1
    row = json.loads(lines[1])
    row["answer"] = "#### 7"
    lines[14] = json.dumps(row)  # same question as row 2, different answer
    path = tmp_path / "g.jsonl"
    path.write_bytes(("\n".join(lines[:16]) + "\n").encode() + b'{"question": "caf\xe9", "answer": "1"}\n')
    report = check_data(path, columns=COLUMNS, tokenizer=tokenizer, max_seq_len=512).to_dict()
    errors = [(e["row"], e["field"], e["code"]) for e in report["errors"]]
    assert errors == [
        (3, None, "invalid_json"),
        (7, "question", "empty_content"),
        (9, "answer", "missing_field"),
        (11, "messages", "no_trainable_tokens"),
        (17, None, "encoding_error"),
    ]
    warnings = {(w["row"], w["code"]) for w in report["warnings"]}
    assert {(13, "exact_duplicate"), (15, "conflicting_answers")} <= warnings
    assert not report["ok"]
    assert all({"row", "field", "code", "message"} <= e.keys() for e in report["errors"] + report["warnings"])


def test_imbalanced_labels_are_a_warning(tmp_path):
    with open(SHARED / "banking77" / "train.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    by_label = {}
    for r in rows:
        by_label.setdefault(r["category"], []).append(r)
    # 120 rows of one intent, 6 of another: 20x imbalance
    picked = by_label["card_arrival"][:120] + by_label["lost_or_stolen_card"][:6]
    path = write_jsonl(tmp_path / "b.jsonl", picked)
    report = check_data(path, columns={"prompt": "{text}", "completion": "{category}"})
    assert report.ok
    assert "label_imbalance" in {w.code for w in report.warnings}
