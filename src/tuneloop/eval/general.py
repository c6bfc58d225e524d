"""What a fine-tune costs the model: its general ability, its drift and the task's behaviour leaking
into unrelated prompts, measured on the base model and the fine-tuned one on the same items.

Three measures, because each sees what the others miss (issue 38, measured on SmolLM2-135M): a
banking77 adapter answered 9 of 10 generic prompts with an intent label while its ARC score rose.
- **General ability**: multiple-choice sets scored by the log-likelihood of each choice after
  "Question: ...\\nAnswer:" (no generation), accuracy and length-normalised accuracy (the choice's
  log-likelihood per character, as lm-evaluation-harness's acc_norm). Plain prompt/completion sets
  are scored by their completion's loss.
- **Behaviour leakage**: generic instructions answered greedily by both models; an answer leaks
  when it takes the fine-tuned task's form where none was asked (a JSON object for a JSON task, a
  label or a verbatim training answer otherwise).
- **Drift**: the base model's own answers to those instructions, scored by both models: nats per
  token the fine-tuned model adds. Label-free and continuous, so it moves before an accuracy does
  on a 135M model that sits near chance on some sets.
Every difference is paired (the same items on both sides) with a 95% interval; a change "beyond
noise" is one whose interval excludes zero.

The base model's side depends only on its weights, the suite and the precision, so it is cached
in TUNELOOP_HOME and a second run of the same base model pays only its own side.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tuneloop.eval.loss import labelled_nll
from tuneloop.eval.metrics import parse_json_object
from tuneloop.models.generate import generate_answers
from tuneloop.paths import tuneloop_home

DEFAULT_SUITE = Path(__file__).resolve().parents[1] / "presets" / "general"
DEFAULT_FILES = ("arc_easy.jsonl", "piqa.jsonl", "instructions.jsonl")  # replay_prompts.jsonl is train/replay.py's
ANSWER_TOKENS = 32  # enough to see an answer's form and score its drift; the general check's main cost
Z95 = 1.96
# Rows per forward and per decoding batch. On 2 cores (AMD EPYC, bf16) 48 rows scored ARC-Easy's
# 400 choices in ~half the time 16 did, and the 40 instructions in one batch decoded 2.2x as fast
# as in three of 16: this small model's steps are bound by per-call overhead, not arithmetic.
BATCH_SIZE = 48


class GeneralDataError(ValueError):
    """A general-ability file that cannot be read: names the file, the line and the field."""


@dataclass(frozen=True)
class GeneralSet:
    name: str  # the file's stem
    kind: str  # "choice": question/choices/answer; "loss": prompt/completion
    rows: list[dict]


@dataclass(frozen=True)
class Suite:
    sets: list[GeneralSet]
    instructions: list[str]  # generic prompts for leakage and drift
    fingerprint: str = field(default="")  # what the cached base side depends on


def load_suite(spec: str | list[str]) -> Suite:
    """`eval.general`: "default" (the shipped ARC-Easy and PIQA samples), "none" (no general-ability
    sets), or files: multiple-choice JSONL (`question`, `choices`, `answer`), prompt/completion JSONL
    (scored by loss), or instruction JSONL (`prompt` alone: replaces the shipped instructions).
    Leakage and drift are always measured: the shipped instructions unless a file gives others."""
    files = [DEFAULT_SUITE / f for f in DEFAULT_FILES] if spec == "default" else [] if spec == "none" else spec
    sets, instructions = [], None
    for file in map(Path, files):
        kind, rows = _read(file)
        if kind == "instructions":
            instructions = (instructions or []) + [r["prompt"] for r in rows]
        else:
            sets.append(GeneralSet(file.stem, kind, rows))
    if instructions is None:
        _, rows = _read(DEFAULT_SUITE / "instructions.jsonl")
        instructions = [r["prompt"] for r in rows]
    text = json.dumps([[s.name, s.kind, s.rows] for s in sets] + [instructions], sort_keys=True)
    return Suite(sets, instructions, hashlib.sha256(text.encode()).hexdigest()[:16])


def _read(file: Path) -> tuple[str, list[dict]]:
    if not file.is_file():
        raise GeneralDataError(f"{file}: no such file (eval.general)")
    rows, kind = [], None
    for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise GeneralDataError(f"{file}:{number}: not JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise GeneralDataError(f"{file}:{number}: a row must be a JSON object")
        row_kind = "choice" if "choices" in row else "loss" if "completion" in row else "instructions"
        if kind is not None and row_kind != kind:
            raise GeneralDataError(f"{file}:{number}: a {row_kind} row in a file of {kind} rows")
        kind = row_kind
        _check(file, number, row, row_kind)
        rows.append(row)
    if not rows:
        raise GeneralDataError(f"{file}: no rows")
    return kind, rows


def _check(file: Path, number: int, row: dict, kind: str) -> None:
    def fail(name: str, message: str):
        raise GeneralDataError(f"{file}:{number}: {name}: {message}")

    text_fields = {"choice": ("question",), "loss": ("prompt", "completion"), "instructions": ("prompt",)}[kind]
    for name in text_fields:
        if not isinstance(row.get(name), str) or not row[name].strip():
            fail(name, "missing or empty (a non-empty string is needed)")
    if kind == "choice":
        choices = row["choices"]
        if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c for c in choices):
            fail("choices", "must be a list of at least two non-empty strings")
        answer = row.get("answer")
        if not isinstance(answer, int) or isinstance(answer, bool) or not 0 <= answer < len(choices):
            fail("answer", f"must be the 0-based index of the right choice (0 to {len(choices) - 1})")


# One model's side -------------------------------------------------------------------------------


def measure_general(
    model,
    tokenizer,
    suite: Suite,
    *,
    autocast_dtype=None,
    reference_answers: list[str] | None = None,
    batch_size: int = BATCH_SIZE,
) -> dict:
    """One model's per-item results: each choice set's (right, right when length-normalised), each
    loss set's (nll, tokens), its answers to the instructions, and the (nll, tokens) of
    `reference_answers` (the base model's answers; its own when None) under this model."""
    t = time.perf_counter()
    options = {"pad": tokenizer.pad_token_id, "batch_size": batch_size, "autocast_dtype": autocast_dtype}
    side: dict = {"sets": {}}
    for general_set in suite.sets:
        scores = labelled_nll(model, _labelled(set_pairs(general_set, tokenizer)), **options)
        side["sets"][general_set.name] = (
            _choice_results(general_set.rows, scores) if general_set.kind == "choice" else [list(x) for x in scores]
        )
    prompts = instruction_prompts(suite, tokenizer)
    side["answers"] = generate_answers(
        model,
        tokenizer,
        [[{"role": "user", "content": p}] for p in suite.instructions],
        max_new_tokens=ANSWER_TOKENS,
        batch_size=max(batch_size, len(prompts)),  # one batch: see BATCH_SIZE
        autocast_dtype=autocast_dtype,
    )
    reference = reference_answers if reference_answers is not None else side["answers"]
    pairs = [(p, _encode(tokenizer, a)) for p, a in zip(prompts, reference)]
    side["answer_nll"] = [list(x) for x in labelled_nll(model, _labelled(pairs), **options)]
    side["seconds"] = round(time.perf_counter() - t, 2)
    return side


def _encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _labelled(pairs: list[tuple[list[int], list[int]]]) -> list[tuple[list[int], list[int]]]:
    """(context, continuation) pairs as (input ids, labels): only the continuation is scored."""
    return [(c + x, [-100] * len(c) + x) for c, x in pairs]


def set_pairs(general_set: GeneralSet, tokenizer) -> list[tuple[list[int], list[int]]]:
    """The (context, continuation) token ids a set scores: every choice after "Question: ...\nAnswer:",
    or each row's completion after its prompt."""
    if general_set.kind != "choice":
        return [(_encode(tokenizer, r["prompt"]), _encode(tokenizer, " " + r["completion"])) for r in general_set.rows]
    pairs = []
    for row in general_set.rows:
        context = _encode(tokenizer, f"Question: {row['question']}\nAnswer:")
        pairs += [(context, _encode(tokenizer, " " + choice)) for choice in row["choices"]]
    return pairs


def instruction_prompts(suite: Suite, tokenizer) -> list[list[int]]:
    """The instructions as the chat template renders them for an answer."""
    return [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": p}], add_generation_prompt=True, tokenize=True, return_dict=False
        )
        for p in suite.instructions
    ]


def _choice_results(rows: list[dict], scores: list[tuple[float, int]]) -> list[list[int]]:
    """Per row (right, right when length-normalised), from its choices' (nll, tokens) in set_pairs' order."""
    results, k = [], 0
    for row in rows:
        n = len(row["choices"])
        logprob = [-nll for nll, _ in scores[k : k + n]]
        normalised = [lp / max(1, len(c)) for lp, c in zip(logprob, row["choices"])]
        results.append([int(_argmax(logprob) == row["answer"]), int(_argmax(normalised) == row["answer"])])
        k += n
    return results


def _argmax(values: list[float]) -> int:
    return max(range(len(values)), key=values.__getitem__)


# The base model's side, cached ------------------------------------------------------------------


def base_side_file(model_folder: str | Path, precision: str, suite: Suite) -> Path:
    """Where the base model's side of `suite` is cached (it exists once measured)."""
    import torch

    folder = Path(model_folder)
    weights = sorted((p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in folder.glob("*.safetensors"))
    key = json.dumps([str(folder), weights, precision, suite.fingerprint, ANSWER_TOKENS, torch.__version__])
    return tuneloop_home() / "general" / f"{hashlib.sha256(key.encode()).hexdigest()[:20]}.json"


def scored_sequences(suite: Suite, tokenizer) -> tuple[list[int], list[int]]:
    """The token lengths of what one side scores without generating (the choice and loss sets'
    sequences), and of the instructions' prompts as the chat template renders them: what the plan prices."""
    scored = [len(c) + len(x) for general_set in suite.sets for c, x in set_pairs(general_set, tokenizer)]
    return scored, [len(p) for p in instruction_prompts(suite, tokenizer)]


def cached_base_side(model_folder: str | Path, precision: str, suite: Suite, measure: Callable[[], dict]) -> dict:
    """The base model's side from the cache, or `measure()` once and cached. Keyed by the weights
    (their files' sizes and times), the suite and the precision: a change to any measures again."""
    path = base_side_file(model_folder, precision, suite)
    if path.is_file():
        try:
            return {**json.loads(path.read_text()), "cached": True}
        except (OSError, json.JSONDecodeError):
            pass  # a damaged cache entry is measured again
    side = measure()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(side))
    tmp.replace(path)
    return side


# Both sides compared ----------------------------------------------------------------------------


def task_form(task_answers: list[str]) -> tuple[str, Callable[[str], bool]]:
    """What "the task's form" is, from the training answers, and a test of an answer for it."""
    answers = [a.strip() for a in task_answers if a.strip()]
    if answers and all(parse_json_object(a) is not None and a.startswith("{") for a in answers):
        # JSON syntax where prose was asked: an object, or a quoted fragment of one (the quickstart's
        # adapter answered "Who wrote Romeo and Juliet?" with '"Romeo and Juliet" by ...'), counted
        # even when cut at ANSWER_TOKENS. The base model opened none of its 40 answers so.
        return "JSON (an object or a quoted string)", lambda answer: answer.strip()[:1] in ("{", '"', "[")
    known = set(answers)

    def verbatim(answer: str) -> bool:
        return (answer.strip().splitlines() or [""])[0].strip() in known or answer.strip() in known

    if len(known) > max(1, len(answers) // 2):  # answers do not repeat: free text
        return "a verbatim training answer", verbatim
    # Class labels. A banking77 adapter answered all 40 instructions with a snake_case intent, 6 of
    # them real labels ("What is the capital of France?" -> "country_support") and 34 made up in
    # their shape ("Why is the sky blue?" -> "why_blue_sky"): the shape is the form that leaks.
    alphabet = set("".join(known))
    words = max(len(label.split()) for label in known)
    longest = max(len(label) for label in known)

    def shaped(answer: str) -> bool:
        a = answer.strip()
        return bool(a) and set(a) <= alphabet and len(a.split()) <= words and len(a) <= 2 * longest

    return "one of the task's labels, or a word in their shape", lambda answer: verbatim(answer) or shaped(answer)


def paired(base: list[float], tuned: list[float]) -> dict:
    """Means of both sides and their paired difference (tuned - base) with a 95% normal interval."""
    n = len(base)
    if n == 0:
        return {"n": 0, "base": None, "finetuned": None, "difference": None, "low": None, "high": None}
    d = [t - b for b, t in zip(base, tuned)]
    mean = sum(d) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1)) if n > 1 else 0.0
    half = Z95 * sd / math.sqrt(n)
    return {
        "n": n,
        "base": sum(base) / n,
        "finetuned": sum(tuned) / n,
        "difference": mean,
        "low": mean - half,
        "high": mean + half,
    }


def compare_general(suite: Suite, base: dict, tuned: dict, task_answers: list[str]) -> dict:
    """eval.json's `general`: per set and overall, leakage and drift, base against fine-tuned."""
    sets, right_base, right_tuned = {}, [], []
    for general_set in suite.sets:
        b, t = base["sets"][general_set.name], tuned["sets"][general_set.name]
        if general_set.kind == "choice":
            sets[general_set.name] = {
                "kind": "choice",
                "acc": paired([r[0] for r in b], [r[0] for r in t]),
                "acc_norm": paired([r[1] for r in b], [r[1] for r in t]),
            }
            right_base += [r[1] for r in b]
            right_tuned += [r[1] for r in t]
        else:  # per-row loss per token: lower is better
            sets[general_set.name] = {
                "kind": "loss",
                "loss": paired([nll / max(1, n) for nll, n in b], [nll / max(1, n) for nll, n in t]),
            }
    form, leaks = task_form(task_answers)
    leaked_base = [int(leaks(a)) for a in base["answers"]]
    leaked_tuned = [int(leaks(a)) for a in tuned["answers"]]
    drift = paired(
        [nll / max(1, n) for nll, n in base["answer_nll"]], [nll / max(1, n) for nll, n in tuned["answer_nll"]]
    )
    return {
        "sets": sets,
        # The general score: length-normalised accuracy over every multiple-choice item, in points.
        "score": _points(paired(right_base, right_tuned)) if right_base else None,
        "leakage": {
            "form": form,
            **paired(leaked_base, leaked_tuned),
            "examples": [
                {"prompt": p, "base": a, "finetuned": b, "leaked": bool(lt)}
                for p, a, b, lt in zip(suite.instructions, base["answers"], tuned["answers"], leaked_tuned)
            ],
        },
        "drift": drift,  # nats per token of the base model's answers: base's own, fine-tuned's, difference
        "seconds": {"base": base["seconds"], "finetuned": tuned["seconds"], "base_cached": bool(base.get("cached"))},
    }


def _points(stats: dict) -> dict:
    return {k: (v * 100 if isinstance(v, float) and k != "n" else v) for k, v in stats.items()}


def beyond_noise(stats: dict | None, direction: int) -> bool:
    """Whether `stats` (paired) moved in `direction` (+1 up, -1 down) with its interval excluding zero."""
    if not stats or stats.get("difference") is None or stats["n"] < 2:
        return False
    return stats["low"] > 0 if direction > 0 else stats["high"] < 0


def general_rows(general: dict) -> list[dict]:
    """The general measures as rows to show (the terminal summary, the report, the dashboard): what,
    base, fine-tuned, the difference with its 95% interval, and whether it moved beyond noise the bad way."""

    def row(what: str, stats: dict, scale: float, digits: int, worse: int) -> dict:
        v = {k: stats[k] * scale for k in ("base", "finetuned", "difference", "low", "high")}
        return {
            "what": what,
            "base": f"{v['base']:.{digits}f}",
            "finetuned": f"{v['finetuned']:.{digits}f}",
            "difference": f"{v['difference']:+.{digits}f} [{v['low']:+.{digits}f}, {v['high']:+.{digits}f}]",
            "worse": beyond_noise(stats, worse),
        }

    leakage = general["leakage"]
    rows = [row(f"leakage: generic prompts answered as {leakage['form']} (%)", leakage, 100, 1, +1)]
    if general.get("score"):
        rows.append(row(f"general score: acc_norm over {general['score']['n']} items (%)", general["score"], 1, 1, -1))
    for name, result in general["sets"].items():
        if result["kind"] == "choice":
            rows.append(row(f"  {name} acc_norm (%)", result["acc_norm"], 100, 1, -1))
        else:
            rows.append(row(f"  {name} loss (nats/token)", result["loss"], 1, 3, +1))
    rows.append(row("drift: the base model's answers, loss (nats/token)", general["drift"], 1, 3, +1))
    return rows
