"""End to end: every `tuneloop data` command as a user runs it, on copies of the shared datasets."""

import csv
import json
from functools import partial

import pytest

import conftest
from conftest import SHARED, write_jsonl

MAP = ["--prompt", "{text}", "--completion", "{category}"]
tuneloop = partial(conftest.tuneloop, timeout=300)


@pytest.fixture(scope="module")
def banking(tmp_path_factory):
    """400 banking77 rows (4 intents) with two exact copies and PII planted in two rows."""
    work = tmp_path_factory.mktemp("data_cli")
    with open(SHARED / "banking77" / "train.csv", newline="", encoding="utf-8") as f:
        rows = [
            r
            for r in csv.DictReader(f)
            if r["category"] in ("card_arrival", "exchange_rate", "lost_or_stolen_card", "top_up_failed")
        ][:400]
    rows[10]["text"] += " Email me at sam@example.com"
    rows[11]["text"] = "<b>" + rows[11]["text"] + "</b>   "
    rows += [rows[0], rows[1]]
    path = work / "banking.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, ["text", "category"])
        w.writeheader()
        w.writerows(rows)
    return work, path


def test_check_json_and_exit_status(banking, tiny_model):
    work, path = banking
    ok = tuneloop("data", "check", path, *MAP, "--model", tiny_model, "--json", cwd=work)
    assert ok.returncode == 0, ok.stderr
    report = json.loads(ok.stdout)
    assert report["errors"] == [] and report["rows"] == 402
    assert {(w["row"], w["code"]) for w in report["warnings"]} >= {(401, "exact_duplicate"), (402, "exact_duplicate")}
    bad = work / "bad.jsonl"
    write_jsonl(bad, ['{"text": "hi", "category": "x"}', '{"text": ', '{"category": "y"}'])
    result = tuneloop("data", "check", bad, *MAP, "--model", tiny_model, cwd=work)
    assert result.returncode == 1
    assert f"{bad}:2: not valid JSON" in result.stdout and f"{bad}:3: text: missing" in result.stdout


def test_check_never_shows_a_traceback(banking, tiny_model):
    work, _ = banking
    (work / "image.parquet").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    result = tuneloop("data", "check", work / "image.parquet", "--no-tokens", cwd=work)
    assert result.returncode == 1 and "Traceback" not in result.stdout + result.stderr
    assert "not a readable Parquet file" in result.stdout


def test_clean_redacts_and_logs(banking):
    work, path = banking
    before = path.read_bytes()
    result = tuneloop("data", "clean", path, "-o", work / "clean.csv", "--redact-pii", *MAP, cwd=work)
    assert result.returncode == 0, result.stderr
    assert path.read_bytes() == before
    text = (work / "clean.csv").read_text()
    assert "[EMAIL]" in text and "sam@example.com" not in text and "<b>" not in text
    log = [json.loads(line) for line in (work / "clean.csv.log.jsonl").read_text().splitlines()]
    # The planted rows, plus real rows of banking77 with stray whitespace.
    assert {(e["row"], tuple(e["reasons"])) for e in log} >= {(11, ("pii:email",)), (12, ("markup", "whitespace"))}
    assert all(e["action"] == "changed" for e in log)
    assert "redacted: email 1" in result.stdout


def test_dedup_writes_clusters(banking):
    work, path = banking
    result = tuneloop("data", "dedup", path, "-o", work / "dedup.jsonl", *MAP, cwd=work)
    assert result.returncode == 0, result.stderr
    kept = (work / "dedup.jsonl").read_text().splitlines()
    clusters = [json.loads(line) for line in (work / "dedup.jsonl.log.jsonl").read_text().splitlines()]
    dropped = sum(len(c["dropped"]) for c in clusters)
    assert len(kept) == 402 - dropped and dropped >= 2
    assert {"row": 401, "file": str(path), "kind": "exact", "similarity": 1.0} in clusters[0]["dropped"] + [
        d for c in clusters for d in c["dropped"]
    ]
    assert json.loads(kept[0]) == {"text": json.loads(kept[0])["text"], "category": "card_arrival"}


def test_split_is_stratified_and_leak_free(banking):
    work, path = banking
    result = tuneloop("data", "split", path, "-o", work / "splits", "--validation", 40, "--test", 0.2, *MAP, cwd=work)
    assert result.returncode == 0, result.stderr
    parts = {}
    for name in ("train", "validation", "test"):
        with open(work / "splits" / f"{name}.csv", newline="", encoding="utf-8") as f:
            parts[name] = list(csv.DictReader(f))
    assert len(parts["validation"]) == 40 and len(parts["test"]) == 80
    held = {r["text"] for r in parts["validation"] + parts["test"]}
    assert not held & {r["text"] for r in parts["train"]}
    assert len({r["category"] for r in parts["validation"]}) == 4
    assert "stratified by label" in result.stdout


def test_stats_json_and_plot(banking, tiny_model):
    work, path = banking
    result = tuneloop(
        "data", "stats", path, *MAP, "--model", tiny_model, "--plot", work / "hist.png", "--json", cwd=work
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["rows"] == 402 and len(report["labels"]) == 4 and report["duplicates"]["exact"] >= 2
    assert report["tokens"]["p50"] > 0 and (work / "hist.png").read_bytes()[:4] == b"\x89PNG"


def test_augment_then_split_keeps_augmented_rows_in_train(banking):
    work, path = banking
    result = tuneloop("data", "augment", path, "-o", work / "aug.jsonl", "--copies", 1, "--seed", 3, *MAP, cwd=work)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in (work / "aug.jsonl").read_text().splitlines()]
    new = [r for r in rows if "augmented" in r]
    assert len(new) > 300 and all(
        rows[r["augmented"]["source_row"] - 1]["messages"][-1] == r["messages"][-1] for r in new
    )
    result = tuneloop("data", "split", work / "aug.jsonl", "-o", work / "aug_splits", cwd=work)
    assert result.returncode == 0, result.stderr
    for name in ("validation", "test"):
        assert "augmented" not in (work / "aug_splits" / f"{name}.jsonl").read_text()


def test_check_and_stats_read_a_run_config(banking, tiny_model):
    """`--config` checks exactly what `tuneloop run` will see: its data settings, model and max_seq_len."""
    work, path = banking
    (work / "run.yaml").write_text(
        f"model: {tiny_model}\ndata:\n  path: {path.name}\n  max_seq_len: 40\n"
        "  columns: {prompt: '{text}', completion: '{category}'}\n"
    )
    result = tuneloop("data", "check", "--config", work / "run.yaml", "--json", cwd=work)
    report = json.loads(result.stdout)
    assert result.returncode == 1 and report["format"] == "columns"
    assert {e["code"] for e in report["errors"]} == {"too_long", "no_trainable_tokens"}  # 40 tokens: too few
    result = tuneloop("data", "stats", "--config", work / "run.yaml", "--max-seq-len", 512, "--json", cwd=work)
    assert result.returncode == 0 and json.loads(result.stdout)["rows_over_max_seq_len"] == 0
    missing = tuneloop("data", "check", cwd=work)
    assert missing.returncode == 2 and "give a data FILE" in missing.stderr
