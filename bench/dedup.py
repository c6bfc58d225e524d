"""Deduplication of 100,000 rows: time (target < 30 s on a 2-core CPU) and quality.

    .venv/bin/python bench/dedup.py            # writes bench/results/dedup.json

Rows: every text of the three shared datasets (banking77 questions, gsm8k question + answer,
dialogsum dialogue + summary), then copies until 100,000, each copy either exact (case and
punctuation changed), lightly edited (1-3 word edits: a near duplicate), or heavily edited.

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
        },
        extra_packages=("datasketch",),
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
