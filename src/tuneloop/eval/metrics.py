"""Task metrics for generated answers: JSON-field accuracy for structured output, exact match otherwise."""

from __future__ import annotations

import json
from typing import Any


def parse_json_object(text: str) -> dict | None:
    """The JSON object in `text`, tolerating prose or a code fence around it; None if there is none."""
    start = text.find("{")
    while start != -1:
        try:
            obj, _ = json.JSONDecoder().raw_decode(text[start:])
            if isinstance(obj, dict):
                return obj
        except json.JSONDecodeError:
            pass
        start = text.find("{", start + 1)
    return None


def choose_metric(references: list[str], requested: str = "auto") -> str:
    if requested != "auto":
        return requested
    if references and all(_is_json_object(r) for r in references):
        return "json_fields"
    return "exact_match"


def _is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except json.JSONDecodeError:
        return False


def score(metric: str, predictions: list[str], references: list[str]) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Aggregate metrics and a per-example record (for the report and for A/B comparisons)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if metric == "json_fields":
        return _json_fields(predictions, references)
    if metric == "exact_match":
        return _exact_match(predictions, references)
    raise ValueError(f"unknown metric {metric!r}")


def _exact_match(predictions, references):
    per = [{"correct": p.strip() == r.strip()} for p, r in zip(predictions, references)]
    n = max(1, len(per))
    return {"exact_match": sum(e["correct"] for e in per) / n}, per


def _json_fields(predictions, references):
    """Per-field accuracy over the reference's keys; a missing or unparseable answer scores 0 on every field."""
    per, fields_right, fields_total, valid, exact = [], 0, 0, 0, 0
    by_field: dict[str, list[int]] = {}
    for pred_text, ref_text in zip(predictions, references):
        ref = json.loads(ref_text)
        pred = parse_json_object(pred_text)
        right = {k: pred is not None and k in pred and pred[k] == v for k, v in ref.items()}
        for k, ok in right.items():
            by_field.setdefault(k, []).append(int(ok))
        valid += pred is not None
        exact += pred is not None and all(right.values())
        fields_right += sum(right.values())
        fields_total += len(right)
        per.append({"valid_json": pred is not None, "fields_correct": sum(right.values()), "fields": len(right),
                    "correct": pred is not None and all(right.values())})
    n = max(1, len(per))
    metrics = {
        "field_accuracy": fields_right / max(1, fields_total),
        "exact_match": exact / n,
        "valid_json": valid / n,
        **{f"field_accuracy/{k}": sum(v) / len(v) for k, v in sorted(by_field.items())},
    }
    return metrics, per
