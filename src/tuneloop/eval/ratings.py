"""Human side-by-side ratings: stored in the run store, aggregated into win rates and a ranking.

    runs/ratings.jsonl   one rating per line: the prompt, the two models and their outputs, which
                         side the rater saw first, the verdict (a | b | tie) and an optional comment

The ranking is a Bradley–Terry model fitted by Hunter's MM algorithm (ties count half a win to
each side), reported on the Elo scale (400·log10 strength + 1000) as Chatbot Arena does; unlike
sequential Elo updates it does not depend on the order the ratings came in.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from pathlib import Path

from tuneloop.eval.compare import win_rate

WINNERS = ("a", "b", "tie")


def ratings_file(runs_dir: str | Path) -> Path:
    return Path(runs_dir) / "ratings.jsonl"


def blind_winner(choice: str, flipped: bool) -> str:
    """The winner ("a", "b" or "tie") from what a rater picked on a blind page: "1" (the answer shown
    first), "2" or "tie". `flipped`: b was shown first. Both the terminal and the dashboard ask
    this way."""
    if choice not in ("1", "2", "tie"):
        raise ValueError(f"choice must be 1, 2 or tie, not {choice!r}")
    if choice == "tie":
        return "tie"
    return "b" if (choice == "1") == flipped else "a"


def add_rating(
    runs_dir: str | Path,
    *,
    prompt: str,
    model_a: str,
    model_b: str,
    output_a: str,
    output_b: str,
    winner: str,
    comment: str = "",
    shown_first: str = "a",
    source: str | None = None,
) -> dict:
    if winner not in WINNERS:
        raise ValueError(f"winner must be one of {WINNERS}, not {winner!r}")
    if model_a == model_b:
        raise ValueError("a rating compares two different models")
    record = {
        "time": datetime.now().astimezone().isoformat(timespec="seconds"),
        "prompt": prompt,
        "model_a": model_a,
        "model_b": model_b,
        "output_a": output_a,
        "output_b": output_b,
        "winner": winner,
        "comment": comment,
        "shown_first": shown_first,
        "source": source,
    }
    path = ratings_file(runs_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:  # one write of one line: safe alongside readers
        f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return record


def read_ratings(runs_dir: str | Path) -> list[dict]:
    path = ratings_file(runs_dir)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def summarize(ratings: list[dict]) -> dict:
    """Per model: wins, losses, ties, win rate (ties half); and the Bradley–Terry ranking."""
    models: dict[str, dict] = {}
    outcomes: dict[str, list[float]] = {}
    for r in ratings:
        for side, other in (("a", "b"), ("b", "a")):
            m = models.setdefault(r[f"model_{side}"], {"wins": 0, "losses": 0, "ties": 0})
            result = "wins" if r["winner"] == side else "losses" if r["winner"] == other else "ties"
            m[result] += 1
            outcomes.setdefault(r[f"model_{side}"], []).append({"wins": 1.0, "ties": 0.5, "losses": 0.0}[result])
    for name, m in models.items():
        n = m["wins"] + m["losses"] + m["ties"]
        m["win_rate"] = (m["wins"] + m["ties"] / 2) / n if n else 0.0
        m["win_rate_ci"] = win_rate(outcomes[name])["ci"]
    strength = bradley_terry(ratings)
    ranking = sorted(strength, key=strength.get, reverse=True)
    return {
        "ratings": len(ratings),
        "models": models,
        "ranking": [{"model": name, "elo": round(400 * math.log10(strength[name]) + 1000, 1)} for name in ranking],
    }


def bradley_terry(ratings: list[dict], iterations: int = 200) -> dict[str, float]:
    """Strengths p with P(i beats j) = p_i / (p_i + p_j), geometric mean 1."""
    names = sorted({r["model_a"] for r in ratings} | {r["model_b"] for r in ratings})
    if not names:
        return {}
    wins = {n: 0.0 for n in names}
    games: dict[tuple[str, str], float] = {}
    for r in ratings:
        a, b = r["model_a"], r["model_b"]
        wins[a] += {"a": 1.0, "tie": 0.5}.get(r["winner"], 0.0)
        wins[b] += {"b": 1.0, "tie": 0.5}.get(r["winner"], 0.0)
        key = tuple(sorted((a, b)))
        games[key] = games.get(key, 0.0) + 1
    # A model that never won (or never lost) has no finite MLE; a tiny pseudo-win keeps it ranked last.
    wins = {n: max(w, 0.1) for n, w in wins.items()}
    p = {n: 1.0 for n in names}
    for _ in range(iterations):
        new = {}
        for i in names:
            denominator = sum(n / (p[a] + p[b]) for (a, b), n in games.items() if i in (a, b))
            new[i] = wins[i] / denominator if denominator else p[i]
        mean = math.exp(sum(math.log(v) for v in new.values()) / len(new))
        p = {n: v / mean for n, v in new.items()}
    return p


def preference_pairs(ratings: list[dict]) -> tuple[list[dict], dict]:
    """Ratings as DPO training rows {"prompt", "chosen", "rejected"}, and what was left out.

    Ties say nothing about which answer is better and are dropped (counted). The same two answers
    to one prompt rated more than once are one pair, decided by the majority of the verdicts; a
    split vote is dropped as `conflicting`.
    """
    votes: dict[tuple, list[str]] = {}
    dropped = {"ties": 0, "conflicting": 0, "identical_outputs": 0}
    for r in ratings:
        if r["winner"] == "tie":
            dropped["ties"] += 1
            continue
        if r["output_a"].strip() == r["output_b"].strip():
            dropped["identical_outputs"] += 1
            continue
        winner, loser = (r["output_a"], r["output_b"]) if r["winner"] == "a" else (r["output_b"], r["output_a"])
        key = (r["prompt"], *sorted((winner, loser)))
        votes.setdefault(key, []).append(winner)
    pairs = []
    for (prompt, first, second), winners in votes.items():
        for_first = sum(w == first for w in winners)
        if 2 * for_first == len(winners):
            dropped["conflicting"] += len(winners)
            continue
        chosen, rejected = (first, second) if 2 * for_first > len(winners) else (second, first)
        pairs.append({"prompt": prompt, "chosen": chosen, "rejected": rejected, "ratings": len(winners)})
    return pairs, {"ratings": len(ratings), "pairs": len(pairs), "dropped": dropped}
