"""Exact and near-duplicate detection: normalised-text hashing, then MinHash + LSH (datasketch).

Exact duplicates are found first with a hash of the normalised text (case, accents-as-written,
punctuation and whitespace ignored). The survivors get a MinHash signature over word
shingles; LSH buckets propose candidate pairs, and a pair counts only when its estimated
Jaccard similarity reaches the threshold. Duplicates form clusters (union-find); the first row
of each cluster is kept. bench/dedup.py measures 100,000 rows on a 2-core CPU.
"""

from __future__ import annotations

import unicodedata
import zlib
from dataclasses import dataclass

import regex

NUM_PERM = 128
# LSH banding tuned to miss few true pairs (false negatives weigh 0.8): every candidate pair is
# verified against the threshold anyway, so extra candidates cost time, not precision.
LSH_WEIGHTS = (0.2, 0.8)
# Punctuation separates words but is not content; symbols are (a $1 fee is not a €1 fee).
_PUNCTUATION = regex.compile(r"\p{P}+")


@dataclass(frozen=True)
class Duplicate:
    index: int  # position in the input list
    of: int  # position of the row that is kept
    kind: str  # "exact" | "near"
    similarity: float  # 1.0 for exact; estimated Jaccard for near


@dataclass
class DedupResult:
    keep: list[int]
    duplicates: list[Duplicate]

    @property
    def clusters(self) -> dict[int, list[int]]:
        """Kept row -> the rows dropped as its duplicates."""
        out: dict[int, list[int]] = {}
        for d in self.duplicates:
            out.setdefault(d.of, []).append(d.index)
        return out

    def cluster_log(self, examples: list) -> list[dict]:
        """`data dedup`'s log: per cluster, the kept row and each dropped one with how it matched,
        as file and row. Linear in the duplicates (600k identical rows log in seconds)."""
        by_index = {d.index: d for d in self.duplicates}
        where = lambda i: {"file": examples[i].file, "row": examples[i].row}  # noqa: E731
        return [
            {
                "kept": where(kept),
                "dropped": [
                    {**where(i), "kind": by_index[i].kind, "similarity": by_index[i].similarity} for i in members
                ],
            }
            for kept, members in self.clusters.items()
        ]


def normalize(text: str) -> str:
    """The key for exact matching: two rows that differ only in case, punctuation or spacing match."""
    return " ".join(_PUNCTUATION.sub(" ", unicodedata.normalize("NFKC", text).casefold()).split())


def shingles(normalized: str, size: int) -> set[bytes]:
    words = normalized.split()
    if len(words) <= size:  # a short text is one shingle: itself
        return {normalized.encode()}
    return {" ".join(words[i : i + size]).encode() for i in range(len(words) - size + 1)}


def _crc32(data: bytes) -> int:
    # zlib's C crc32 instead of datasketch's default SHA-1: the signature quality comes from the
    # 128 random permutations applied afterwards; bench/dedup.py measured 1.05-1.15x end to end.
    return zlib.crc32(data)


def minhashes(normalized: list[str], shingle_size: int, hashfunc=_crc32):
    from datasketch import MinHash

    return MinHash.bulk([shingles(t, shingle_size) for t in normalized], num_perm=NUM_PERM, hashfunc=hashfunc)


def _index(signatures, threshold: float):
    """An LSH index over the signatures, keyed by position."""
    from datasketch import MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=NUM_PERM, weights=LSH_WEIGHTS)
    with lsh.insertion_session() as session:
        for k, m in enumerate(signatures):
            session.insert(k, m, check_duplication=False)
    return lsh


def find_duplicates(
    texts: list[str], threshold: float = 0.8, near: bool = True, shingle_size: int = 3, hashfunc=_crc32
) -> DedupResult:
    normalized = [normalize(t) for t in texts]
    first: dict[str, int] = {}
    duplicates: list[Duplicate] = []
    unique: list[int] = []
    for i, key in enumerate(normalized):
        if key in first:
            duplicates.append(Duplicate(i, first[key], "exact", 1.0))
        else:
            first[key] = i
            unique.append(i)
    if near and len(unique) > 1:
        duplicates += _near_duplicates(unique, [normalized[i] for i in unique], threshold, shingle_size, hashfunc)
    dropped = {d.index for d in duplicates}
    # An exact copy of a row that was itself dropped as a near duplicate is, to the kept row, near.
    near_of = {d.index: d for d in duplicates if d.kind == "near"}
    duplicates = [
        Duplicate(d.index, near_of[d.of].of, "near", near_of[d.of].similarity) if d.of in near_of else d
        for d in duplicates
    ]
    return DedupResult([i for i in range(len(texts)) if i not in dropped], sorted(duplicates, key=lambda d: d.index))


def _near_duplicates(
    indices: list[int], normalized: list[str], threshold: float, shingle_size: int, hashfunc
) -> list[Duplicate]:
    signatures = minhashes(normalized, shingle_size, hashfunc)
    lsh = _index(signatures, threshold)
    parent = list(range(len(indices)))

    def find(k: int) -> int:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    for k, m in enumerate(signatures):
        for j in lsh.query(m):
            if j < k and find(j) != find(k) and m.jaccard(signatures[j]) >= threshold:
                a, b = sorted((find(j), find(k)))
                parent[b] = a  # the earlier row stays the root, so it is the one kept
    out = []
    for k in range(len(indices)):
        r = find(k)
        if r != k:
            out.append(Duplicate(indices[k], indices[r], "near", round(signatures[k].jaccard(signatures[r]), 3)))
    return out


def find_overlap(
    reference: list[str], candidates: list[str], threshold: float = 0.8, near: bool = True, shingle_size: int = 3
) -> list[Duplicate]:
    """Candidates that duplicate some reference text (the leakage check: train against validation/test).

    `index` is the candidate's position, `of` the reference's.
    """
    ref_norm = [normalize(t) for t in reference]
    cand_norm = [normalize(t) for t in candidates]
    exact = {key: i for i, key in reversed(list(enumerate(ref_norm)))}
    found = [Duplicate(i, exact[key], "exact", 1.0) for i, key in enumerate(cand_norm) if key in exact]
    if not near or not reference:
        return found
    matched = {d.index for d in found}
    rest = [i for i in range(len(candidates)) if i not in matched]
    ref_sigs = minhashes(ref_norm, shingle_size)
    lsh = _index(ref_sigs, threshold)
    for i, m in zip(rest, minhashes([cand_norm[i] for i in rest], shingle_size)):
        scored = [(m.jaccard(ref_sigs[j]), j) for j in lsh.query(m)]
        best = max(scored, default=None)
        if best and best[0] >= threshold:
            found.append(Duplicate(i, best[1], "near", round(best[0], 3)))
    return sorted(found, key=lambda d: d.index)
