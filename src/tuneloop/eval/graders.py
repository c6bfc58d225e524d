"""Graders: a score in [0, 1] for one answer to one row. Reinforcement fine-tuning (train.method: grpo)
trains on them; `tuneloop data check --config` tries each on the reference answers first.

A grader is given as (grpo.graders in the config):

    task_metric             the run's task metric, per answer (eval/metrics.py's `score`): the default
    format                  1 when the answer has the references' form: a JSON object when they are
                            JSON, one of the labels when they are labels, else a non-empty answer
    module:function         your Python function (prompt, answer, row) -> float
    {type: string_check, ...}, {type: text_similarity, ...}, {type: python, ...},
    {type: score_model, ...}, {type: multi, ...}
                            OpenAI's grader objects, as its reinforcement fine-tuning takes them
                            ({{sample.output_text}} and {{item.<field>}} templates)

each optionally with `weight` (a dict key, or {grader: ..., weight: w} around a name): the reward is
the weighted mean of the graders' scores.
"""

from __future__ import annotations

import ast
import importlib
import json
import operator
import re
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from tuneloop.data.load import looks_categorical
from tuneloop.eval.metrics import parse_json_object, per_example


class GraderError(ValueError):
    """A grader that cannot be built or that failed on an answer; the message names the grader."""


@dataclass(frozen=True)
class Grader:
    name: str
    weight: float
    score: Callable[[list[dict], str, dict], float]  # (prompt messages, answer, row) -> [0, 1]


# {{sample.output_text}} / {{item.reference}} / {{item.<any field of the row>}}
TEMPLATE = re.compile(r"\{\{\s*(sample|item)\.([A-Za-z0-9_.]+)\s*\}\}")


def render(template: str, answer: str, row: dict) -> str:
    def value(match: re.Match) -> str:
        scope, key = match.groups()
        if scope == "sample":
            if key not in ("output_text", "output_json"):
                raise GraderError(f"{{{{sample.{key}}}}}: sample has output_text and output_json")
            return answer
        found = row
        for part in key.split("."):
            if not isinstance(found, dict) or part not in found:
                raise GraderError(f"{{{{item.{key}}}}}: the row has no {key!r} (fields: {', '.join(row)})")
            found = found[part]
        return found if isinstance(found, str) else json.dumps(found)

    return TEMPLATE.sub(value, template)


def build_graders(specs: list, metric: str, references: list[str]) -> list[Grader]:
    """The graders of grpo.graders; `metric` is the run's task metric, `references` the training answers
    (what `format` learns the task's form from)."""
    if not specs:
        raise GraderError("grpo.graders: give at least one grader (task_metric is the usual one)")
    return [_one(spec, metric, references, f"grpo.graders[{i}]") for i, spec in enumerate(specs)]


def reward(graders: list[Grader], prompt: list[dict], answer: str, row: dict) -> float:
    """The weighted mean of the graders' scores."""
    total = sum(g.weight for g in graders)
    return sum(g.weight * g.score(prompt, answer, row) for g in graders) / total


def _one(spec, metric: str, references: list[str], where: str) -> Grader:
    if isinstance(spec, dict) and "grader" in spec:  # {grader: NAME_OR_OBJECT, weight: w}
        inner = _one(spec["grader"], metric, references, where)
        return Grader(inner.name, float(spec.get("weight", 1.0)), inner.score)
    if spec == "task_metric":
        return Grader(metric, 1.0, _task_metric(metric))
    if spec == "format":
        return Grader("format", 1.0, _format(references))
    if isinstance(spec, str) and ":" in spec:
        return Grader(spec, 1.0, _python_function(spec, where))
    if isinstance(spec, dict) and "type" in spec:
        weight = float(spec.get("weight", 1.0))
        return Grader(spec.get("name") or spec["type"], weight, _openai(spec, where))
    raise GraderError(f"{where}: {spec!r} is not a grader (task_metric, format, module:function or {{type: ...}})")


def _task_metric(metric: str):
    def score(prompt, answer, row):
        record = per_example(metric, [answer], [row["reference"]])[0]
        if "score" not in record:
            raise GraderError(f"task_metric: {metric} scores a whole set, not one answer; give a per-answer grader")
        return float(record["score"])

    return score


def _format(references: list[str]):
    """The references' form: JSON objects, a label set, or free text."""
    if references and all(parse_json_object(r) is not None for r in references):
        return lambda prompt, answer, row: float(parse_json_object(answer) is not None)
    if references and looks_categorical(references):  # as data/load.py tells a label set
        labels = {r.strip() for r in references}
        return lambda prompt, answer, row: float(answer.strip() in labels)
    return lambda prompt, answer, row: float(bool(answer.strip()))


def _python_function(spec: str, where: str):
    module, _, name = spec.partition(":")
    try:
        function = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise GraderError(f"{where}: cannot import {spec}: {e}") from None
    return lambda prompt, answer, row: float(function(prompt, answer, row))


# OpenAI's graders


def _openai(spec: dict, where: str):
    kind = spec["type"]
    builders = {
        "string_check": _string_check,
        "text_similarity": _text_similarity,
        "python": _python_source,
        "score_model": _score_model,
        "multi": _multi,
    }
    if kind not in builders:
        raise GraderError(f"{where}: grader type {kind!r}: one of {', '.join(builders)}")
    return builders[kind](spec, where)


def _string_check(spec: dict, where: str):
    operations = {
        "eq": lambda a, b: a == b,
        "ne": lambda a, b: a != b,
        "like": lambda a, b: b in a,
        "ilike": lambda a, b: b.lower() in a.lower(),
    }
    op = spec.get("operation", "eq")
    if op not in operations:
        raise GraderError(f"{where}: string_check operation {op!r}: one of {', '.join(operations)}")
    check, text, reference = operations[op], spec.get("input", "{{sample.output_text}}"), spec["reference"]
    return lambda prompt, answer, row: float(check(render(text, answer, row), render(reference, answer, row)))


def _text_similarity(spec: dict, where: str):
    metric = spec.get("evaluation_metric", "fuzzy_match")
    text, reference = spec.get("input", "{{sample.output_text}}"), spec["reference"]

    def fuzzy(a: str, b: str) -> float:
        import difflib

        return difflib.SequenceMatcher(None, a, b).ratio()

    def bleu(a: str, b: str) -> float:
        from sacrebleu import sentence_bleu

        return sentence_bleu(a, [b]).score / 100

    def rouge(kind: str):
        from rouge_score import rouge_scorer

        scorer = rouge_scorer.RougeScorer([kind], use_stemmer=True)
        return lambda a, b: scorer.score(b, a)[kind].fmeasure

    measures = {"fuzzy_match": fuzzy, "bleu": bleu, "rouge_l": rouge("rougeL")}
    measures |= {f"rouge_{n}": rouge(f"rouge{n}") for n in range(1, 6)}
    if metric not in measures:
        raise GraderError(
            f"{where}: text_similarity evaluation_metric {metric!r}: one of {', '.join(measures)} "
            "(gleu, meteor and cosine are not available here)"
        )
    measure = measures[metric]
    return lambda prompt, answer, row: float(measure(render(text, answer, row), render(reference, answer, row)))


def _python_source(spec: dict, where: str):
    """OpenAI's python grader: `source` defines grade(sample, item) -> float. It runs in this process,
    with your config's trust (it is your code, as a module:function grader is)."""
    namespace: dict = {}
    try:
        exec(compile(spec["source"], f"<{where}>", "exec"), namespace)  # the user's own grader code
    except Exception as e:  # noqa: BLE001 — a grader that does not compile fails the config, naming it
        raise GraderError(f"{where}: the python grader's source does not run: {type(e).__name__}: {e}") from None
    if not callable(namespace.get("grade")):
        raise GraderError(f"{where}: the python grader's source must define grade(sample, item)")
    grade = namespace["grade"]
    return lambda prompt, answer, row: float(grade({"output_text": answer}, row))


def _score_model(spec: dict, where: str):
    """A model asked for a score through any OpenAI-compatible endpoint (tuneloop serve's too):
    `base_url` (default http://127.0.0.1:8000/v1), `model`, `input` (messages with templates), `range`."""
    base = spec.get("base_url", "http://127.0.0.1:8000/v1").rstrip("/")
    low, high = spec.get("range", [0, 1])
    messages, model = spec["input"], spec["model"]

    def score(prompt, answer, row):
        body = {
            "model": model,
            "messages": [{"role": m["role"], "content": render(m["content"], answer, row)} for m in messages],
            "temperature": 0,
            **spec.get("sampling_params", {}),
        }
        request = urllib.request.Request(
            f"{base}/chat/completions",
            json.dumps(body).encode(),
            {"Content-Type": "application/json", "Authorization": f"Bearer {spec.get('api_key', 'unused')}"},
        )
        with urllib.request.urlopen(request, timeout=120) as reply:
            text = json.loads(reply.read())["choices"][0]["message"]["content"]
        found = re.search(r"-?\d+(?:\.\d+)?", text)
        if found is None:
            raise GraderError(f"{where}: the score model answered {text[:80]!r}, not a number")
        return min(1.0, max(0.0, (float(found.group()) - low) / (high - low)))

    return score


_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def _multi(spec: dict, where: str):
    """Several graders combined by `calculate_output`, an arithmetic expression of their names
    (+ - * /, numbers, min, max)."""
    graders = {name: _openai(inner, f"{where}.graders.{name}") for name, inner in spec["graders"].items()}
    tree = ast.parse(spec["calculate_output"], mode="eval")

    def evaluate(node, scores):
        if isinstance(node, ast.Expression):
            return evaluate(node.body, scores)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return node.value
        if isinstance(node, ast.Name) and node.id in scores:
            return scores[node.id]
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            return _OPERATORS[type(node.op)](evaluate(node.left, scores), evaluate(node.right, scores))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -evaluate(node.operand, scores)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("min", "max"):
            return {"min": min, "max": max}[node.func.id](*(evaluate(a, scores) for a in node.args))
        raise GraderError(f"{where}: calculate_output: {ast.unparse(node)!r} is not arithmetic over the graders' names")

    evaluate(tree, dict.fromkeys(graders, 0.5))  # fails now on a bad expression, not mid-training

    def score(prompt, answer, row):
        return float(evaluate(tree, {name: g(prompt, answer, row) for name, g in graders.items()}))

    return score


CHECKED_ROWS = 20  # reference answers each grader scores before a run
LOW_SCORE = 0.5  # a grader giving a reference answer less than this would punish the right answer


def grader_problems(specs: list, metric: str, examples: list, file: str, rows: int = CHECKED_ROWS) -> list:
    """Each grader on the first `rows` reference answers (every one of them right by definition): a
    grader that cannot be built, crashes, or scores a reference answer below LOW_SCORE is a problem
    naming the grader and the row (`tuneloop data check --config`, before a grpo run)."""
    from tuneloop.data.problems import Problem

    references = [e.answer for e in examples]
    try:
        graders = build_graders(specs, metric, references)
    except GraderError as e:
        return [Problem(file, None, "grpo.graders", "bad_grader", str(e))]
    problems = []
    for g in graders:
        for e in examples[:rows]:
            row = {**e.record, "reference": e.answer}
            try:
                value = g.score(e.prompt, e.answer, row)
            except Exception as error:  # noqa: BLE001 — reported with the grader and the row, not raised
                problems.append(
                    Problem(file, e.row, "grpo.graders", "grader_failed", f"{g.name}: {type(error).__name__}: {error}")
                )
                break
            if value < LOW_SCORE:
                problems.append(
                    Problem(
                        file,
                        e.row,
                        "grpo.graders",
                        "grader_low_on_reference",
                        f"{g.name} scores this row's reference answer {value:.2f}: it would punish the right answer",
                    )
                )
                break
    return problems
