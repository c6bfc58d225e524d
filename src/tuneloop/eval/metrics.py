"""Task metrics for generated answers, chosen by the kind of task.

    exact_match     the answer string, whitespace-trimmed
    final_number    the number after "####" (GSM8K style), else the last number in the answer
    classification  accuracy, macro and per-class precision/recall/F1 (scikit-learn), confusion matrix
    generation      BLEU and chrF (sacrebleu), ROUGE-1/2/L F-measure (rouge-score)
    json_fields     JSON validity and per-field accuracy for structured output
    tool_calls      the called functions' names and JSON arguments against the reference's calls
    module:function a custom metric: function(predictions, references) -> {name: value}

Scoring is split in two so that A/B comparisons can bootstrap cheaply: `per_example` scores
each answer once; `aggregate` turns any subset of those records into the run-level metrics
(re-running only the corpus-level parts, BLEU/chrF/F1, on the subset).
"""

from __future__ import annotations

import importlib
import json
import re
from typing import Any

from tuneloop.config import BUILTIN_METRICS
from tuneloop.data.load import looks_categorical

LONG_ANSWER_WORDS = 8  # references this long on average are free text: BLEU/ROUGE, not exact match


def parse_json_object(text: str) -> dict | None:
    """The JSON object in `text`, tolerating prose or a code fence around it; None if there is none."""
    return next(json_objects(text), None)


def json_objects(text: str):
    """Every top-level JSON object in `text`, in order (a generator: the first costs only itself)."""
    start, decoder = text.find("{"), json.JSONDecoder()
    while start != -1:
        try:
            obj, end = decoder.raw_decode(text[start:])  # from a "{", a success is an object
        except json.JSONDecodeError:
            start = text.find("{", start + 1)
            continue
        yield obj
        start = text.find("{", start + end)


def tool_calls_in(text: str) -> list[tuple[str, dict | None]]:
    """The (name, arguments) of each call written in `text`: the <tool_call> form tuneloop trains on
    templates without tool syntax, or the bare {"name", "arguments"|"parameters"} JSON that
    tool-calling templates (Qwen, Llama 3.1, Hermes) produce. Arguments that do not parse are None."""
    calls = []
    for obj in json_objects(text):
        name = obj.get("name")
        arguments = obj.get("arguments", obj.get("parameters"))
        if not isinstance(name, str) or arguments is None:
            continue
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except json.JSONDecodeError:
                arguments = None
        calls.append((name, arguments if isinstance(arguments, dict) else None))
    return calls


def choose_metric(references: list[str], requested: str = "auto", labelled: bool = False) -> str:
    """`labelled`: the examples carry class labels (inferred at load time over the whole data set,
    where a small test split alone could not tell a label set from short answers)."""
    if requested != "auto":
        return requested
    if not references:
        return "exact_match"
    if any("<tool_call>" in r and tool_calls_in(r) for r in references):
        return "tool_calls"
    if all(_is_json_object(r) for r in references):
        return "json_fields"
    if all("####" in r for r in references):
        return "final_number"
    if labelled or (len(set(references)) > 1 and looks_categorical([r.strip() for r in references])):
        return "classification"
    if sum(len(r.split()) for r in references) / len(references) >= LONG_ANSWER_WORDS:
        return "generation"
    return "exact_match"


def _is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except json.JSONDecodeError:
        return False


def custom_metric(spec: str):
    """`package.module:function`; the function takes (predictions, references) and returns {name: value}."""
    module, _, name = spec.partition(":")
    if not module or not name:
        raise ValueError(f"metric {spec!r}: expected one of {BUILTIN_METRICS}, auto, or module:function")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"metric {spec!r}: cannot import it ({e})") from None


def score(metric: str, predictions: list[str], references: list[str]) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Aggregate metrics and a per-example record (for the report and for A/B comparisons)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    per = per_example(metric, predictions, references)
    return aggregate(metric, per, predictions, references), per


def per_example(metric: str, predictions: list[str], references: list[str]) -> list[dict[str, Any]]:
    """One record per answer with a `score` in [0, 1] (and `correct` where an answer is right or wrong)."""
    pairs = list(zip(predictions, references))
    if metric == "exact_match":
        return [_binary(p.strip() == r.strip()) for p, r in pairs]
    if metric == "final_number":
        return [
            {
                **_binary(final_number(p) is not None and final_number(p) == final_number(r)),
                "predicted_number": final_number(p),
            }
            for p, r in pairs
        ]
    if metric == "classification":
        return [{**_binary(p.strip() == r.strip()), "label": r.strip(), "predicted": p.strip()} for p, r in pairs]
    if metric == "generation":
        from rouge_score import rouge_scorer
        from sacrebleu import sentence_chrf

        scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
        out = []
        for p, r in pairs:
            rouge = scorer.score(r, p)  # (target, prediction)
            out.append(
                {
                    "rouge1": rouge["rouge1"].fmeasure,
                    "rouge2": rouge["rouge2"].fmeasure,
                    "rougeL": rouge["rougeL"].fmeasure,
                    "chrf": sentence_chrf(p, [r]).score / 100,
                    "score": rouge["rougeL"].fmeasure,
                }
            )
        return out
    if metric == "json_fields":
        return [_json_fields_per(p, r) for p, r in pairs]
    if metric == "tool_calls":
        return [_tool_calls_per(p, r) for p, r in pairs]
    custom_metric(metric)  # validates the spec; a custom metric is aggregate-only
    return [{} for _ in pairs]


def aggregate(metric: str, per: list[dict], predictions: list[str], references: list[str]) -> dict[str, float]:
    n = max(1, len(per))
    if metric in ("exact_match", "final_number"):
        return {"exact_match": sum(e["correct"] for e in per) / n}
    if metric == "classification":
        return _classification(per)
    if metric == "generation":
        from sacrebleu import corpus_bleu, corpus_chrf

        return {
            "bleu": corpus_bleu(predictions, [references]).score,
            "chrf": corpus_chrf(predictions, [references]).score,
            **{k: sum(e[k] for e in per) / n for k in ("rouge1", "rouge2", "rougeL")},
        }
    if metric == "json_fields":
        return _json_fields_aggregate(per)
    if metric == "tool_calls":
        return _tool_calls_aggregate(per)
    values = custom_metric(metric)(predictions, references)
    if not isinstance(values, dict) or not all(isinstance(v, (int, float)) for v in values.values()):
        raise ValueError(f"metric {metric!r} must return a dict of numbers, got {values!r}")
    return {k: float(v) for k, v in values.items()}


def _binary(correct: bool) -> dict:
    return {"correct": bool(correct), "score": float(correct)}


NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def final_number(text: str) -> float | None:
    """GSM8K's answer: the number after the last '####', else the last number in the text."""
    tail = text.rsplit("####", 1)[1] if "####" in text else text
    numbers = NUMBER.findall(tail)
    if not numbers:
        return None
    try:
        return float(numbers[0 if "####" in text else -1].replace(",", ""))
    except ValueError:
        return None


def _classification(per: list[dict]) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    if not per:
        return {"accuracy": 0.0}
    labels = sorted({e["label"] for e in per})  # the classes are the data's own labels
    y_true, y_pred = [e["label"] for e in per], [e["predicted"] for e in per]
    p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels, average="macro", zero_division=0)
    _, _, per_class, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    return {
        "accuracy": accuracy_score(y_true, y_pred),
        "macro_precision": float(p),
        "macro_recall": float(r),
        "macro_f1": float(f),
        **{f"f1/{label}": float(v) for label, v in zip(labels, per_class)},
    }


def confusion(per: list[dict]) -> dict:
    """Rows: the true label; columns: the predicted one, with answers outside the labels as "(other)"."""
    from sklearn.metrics import confusion_matrix

    labels = sorted({e["label"] for e in per})
    other = "(other)"
    y_pred = [e["predicted"] if e["predicted"] in labels else other for e in per]
    columns = labels + ([other] if other in y_pred else [])
    matrix = confusion_matrix([e["label"] for e in per], y_pred, labels=columns)
    return {"labels": columns, "matrix": matrix[: len(labels)].tolist()}


def _json_fields_per(prediction: str, reference: str) -> dict:
    ref = json.loads(reference)
    pred = parse_json_object(prediction)
    right = {k: pred is not None and k in pred and pred[k] == v for k, v in ref.items()}
    return {
        "valid_json": pred is not None,
        "fields_correct": sum(right.values()),
        "fields": len(right),
        "by_field": right,
        "correct": pred is not None and all(right.values()),
        "score": sum(right.values()) / max(1, len(right)),
    }


def _json_fields_aggregate(per: list[dict]) -> dict[str, float]:
    """Per-field accuracy over the reference's keys; a missing or unparseable answer scores 0 on every field."""
    by_field: dict[str, list[int]] = {}
    for e in per:
        for k, ok in e["by_field"].items():
            by_field.setdefault(k, []).append(int(ok))
    n = max(1, len(per))
    return {
        "field_accuracy": sum(e["fields_correct"] for e in per) / max(1, sum(e["fields"] for e in per)),
        "exact_match": sum(e["correct"] for e in per) / n,
        "valid_json": sum(e["valid_json"] for e in per) / n,
        **{f"field_accuracy/{k}": sum(v) / len(v) for k, v in sorted(by_field.items())},
    }


def _tool_calls_per(prediction: str, reference: str) -> dict:
    """A call is right when the same functions are called in order with equal arguments; a
    reference without calls is right when the answer calls nothing."""
    wanted, made = tool_calls_in(reference), tool_calls_in(prediction)
    names_right = [n for n, _ in made] == [n for n, _ in wanted]
    correct = made == wanted
    return {
        "expects_call": bool(wanted),
        "called": [n for n, _ in made],
        "name_correct": names_right,
        "correct": correct,
        "score": float(correct),
    }


def _tool_calls_aggregate(per: list[dict]) -> dict[str, float]:
    """Over every point, so any subset (the bootstrap's) has the same keys: a point whose reference
    answers in words counts as right when the model called nothing."""
    n = max(1, len(per))
    return {
        "tool_call_accuracy": sum(e["correct"] for e in per) / n,
        "tool_name_accuracy": sum(e["name_correct"] for e in per) / n,
    }
