"""Deduplication of 100,000 rows: time (target < 30 s on a 2-core CPU) and quality.

    .venv/bin/python bench/dedup.py            # writes bench/results/dedup.json

Rows: every text of the three shared datasets (banking77 questions, gsm8k question + answer,
dialogsum dialogue + summary), then copies until 100,000, each copy either exact (case and
punctuation changed), lightly edited (1-3 word edits: a near duplicate), or heavily edited.

A second case: 600,001 identical rows through `tuneloop data dedup` as a user runs it (issue 20:
its cluster log scanned the duplicate list once per dropped row, and the command was killed after
200 s). The quadratic log is kept here as the baseline, timed on 16,000 rows.

Baselines in the same run:
  - speed: datasketch's default SHA-1 hashing against the crc32 hashing tuneloop uses;
  - quality: brute-force exact Jaccard over every pair of a 3,000-row sample, against which
    the MinHash+LSH pairs are scored (precision and recall at the 0.8 threshold).
"""

from __future__ import annotations

import csv
import json
import random
import struct
import sys
import time
from hashlib import sha1
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from environment import save

from tuneloop.data.dedup import find_duplicates, normalize, shingles

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
N_ROWS = 100_000
THRESHOLD = 0.8


def source_texts() -> list[str]:
    with open(SHARED / "banking77" / "train.csv", newline="", encoding="utf-8") as f:
        texts = [r["text"] for r in csv.DictReader(f)]
    for r in map(json.loads, (SHARED / "gsm8k" / "train.jsonl").read_text(encoding="utf-8").splitlines()):
        texts.append(r["question"] + "\n" + r["answer"])
    for r in map(json.loads, (SHARED / "dialogsum" / "dev.jsonl").read_text(encoding="utf-8").splitlines()):
        texts.append(r["dialogue"] + "\n" + r["summary"])
    return texts


def edit(text: str, n: int, rng: random.Random) -> str:
    words = text.split()
    for _ in range(n):
        i = rng.randrange(len(words))
        words[i] = (
            rng.choice(["really", "please", "now", "the", "my", "very"]) if rng.random() < 0.5 else words[i][::-1]
        )
    return " ".join(words)


def build_rows(sources: list[str], n_rows: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    rows = list(sources)
    while len(rows) < n_rows:
        t = rng.choice(sources)
        kind = rng.random()
        if kind < 0.3:
            rows.append(t.upper() + " !")  # exact after normalisation
        elif kind < 0.6:
            rows.append(edit(t, rng.randint(1, 3), rng))  # near (for texts long enough)
        else:
            rows.append(edit(t, max(4, len(t.split()) // 2), rng))  # mostly not a duplicate
    rng.shuffle(rows)
    return rows


def sha1_hash32(data: bytes) -> int:  # datasketch's default hash function
    return struct.unpack("<I", sha1(data).digest()[:4])[0]


def timed(fn, *args, **kwargs):
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, round(time.perf_counter() - t, 2)


def quality(sources: list[str], sample: int = 3000, seed: int = 1) -> dict:
    """Score MinHash+LSH against exact Jaccard over all pairs of a sample dense in duplicates:
    600 sources and 2,400 variants of them."""
    texts = build_rows(random.Random(seed).sample(sources, sample // 5), sample, seed)
    sets = [shingles(normalize(t), 3) for t in texts]
    truth = set()
    for i in range(sample):
        for j in range(i):
            a, b = sets[i], sets[j]
            if a and b and len(a & b) / len(a | b) >= THRESHOLD:
                truth.add((j, i))
    result = find_duplicates(texts, threshold=THRESHOLD)
    # A row is correctly flagged when it truly has a duplicate among the earlier rows.
    flagged = {d.index for d in result.duplicates}
    should = {i for _, i in truth}
    tp = len(flagged & should)
    return {
        "sample": sample,
        "true_duplicate_rows": len(should),
        "flagged_rows": len(flagged),
        "precision": round(tp / max(1, len(flagged)), 4),
        "recall": round(tp / max(1, len(should)), 4),
    }


def quadratic_cluster_log(examples, result) -> list[dict]:
    """The cluster log as `data dedup` built it before (the baseline): a scan of every duplicate per dropped row."""
    return [
        {
            "kept": {"file": examples[k].file, "row": examples[k].row},
            "dropped": [
                {
                    "file": examples[i].file,
                    "row": examples[i].row,
                    **next({"kind": d.kind, "similarity": d.similarity} for d in result.duplicates if d.index == i),
                }
                for i in members
            ],
        }
        for k, members in result.clusters.items()
    ]


def identical_rows(n_rows: int = 600_001, baseline_rows: int = 16_000) -> dict:
    import subprocess
    import tempfile

    from tuneloop.data import load_examples_strict

    row = json.dumps(
        {
            "messages": [
                {"role": "user", "content": "Where is my card?"},
                {"role": "assistant", "content": "card_arrival"},
            ]
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "same.jsonl"
        path.write_text((row + "\n") * n_rows, encoding="utf-8")
        t = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "tuneloop.cli", "data", "dedup", str(path), "-o", str(Path(tmp) / "out.jsonl")],
            capture_output=True,
            text=True,
            timeout=600,
        )
        cli_seconds = round(time.perf_counter() - t, 2)
        assert done.returncode == 0, done.stderr
        kept = len((Path(tmp) / "out.jsonl").read_text().splitlines())
        small = Path(tmp) / "small.jsonl"
        small.write_text((row + "\n") * baseline_rows, encoding="utf-8")
        examples = load_examples_strict(small, label="none").examples
    result = find_duplicates([e.text for e in examples], threshold=THRESHOLD)
    log, linear_s = timed(result.cluster_log, examples)
    old, quadratic_s = timed(quadratic_cluster_log, examples, result)
    assert log == old
    return {
        "rows": n_rows,
        "cli_seconds": cli_seconds,
        "kept": kept,
        "log_rows_compared": baseline_rows,
        "cluster_log_seconds": linear_s,
        "baseline_quadratic_cluster_log_seconds": quadratic_s,
        "speedup_vs_quadratic": round(quadratic_s / max(linear_s, 1e-3), 1),
    }


def main() -> None:
    sources = source_texts()
    rows, build_s = timed(build_rows, sources, N_ROWS)
    print(f"{len(rows)} rows built in {build_s}s")
    (result, seconds) = timed(find_duplicates, rows, threshold=THRESHOLD)
    exact = sum(d.kind == "exact" for d in result.duplicates)
    near = len(result.duplicates) - exact
    print(f"tuneloop (crc32): {seconds}s; {exact} exact, {near} near, {len(result.keep)} kept")
    (baseline, baseline_s) = timed(find_duplicates, rows, threshold=THRESHOLD, hashfunc=sha1_hash32)
    print(f"datasketch default SHA-1 hashing: {baseline_s}s")
    agree = {(d.index, d.of) for d in result.duplicates} == {(d.index, d.of) for d in baseline.duplicates}
    q = quality(sources)
    print(f"quality vs exact Jaccard on a {q['sample']}-row sample: precision {q['precision']}, recall {q['recall']}")
    same = identical_rows()
    print(
        f"{same['rows']} identical rows: `tuneloop data dedup` {same['cli_seconds']}s, kept {same['kept']}; cluster "
        f"log on {same['log_rows_compared']} rows {same['cluster_log_seconds']}s against "
        f"{same['baseline_quadratic_cluster_log_seconds']}s quadratic"
    )
    path = save(
        "dedup",
        {
            "rows": len(rows),
            "threshold": THRESHOLD,
            "target_seconds": 30,
            "seconds": seconds,
            "meets_target": seconds < 30,
            "exact_duplicates": exact,
            "near_duplicates": near,
            "kept": len(result.keep),
            "baseline_sha1_seconds": baseline_s,
            "speedup_vs_sha1": round(baseline_s / seconds, 2),
            "same_result_as_sha1": agree,
            "quality": q,
            "identical_rows": same,
        },
        extra_packages=("datasketch",),
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
