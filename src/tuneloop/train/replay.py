"""Replay: general rows mixed into training, so the model keeps answering unrelated prompts as it did.

The guides' cure for forgetting that retrains: while the model learns the task, a share of its
batches reminds it of everything else. With no data of the user's (`data.replay_data` unset) the
general rows are the base model's own greedy answers to shipped generic prompts
(presets/general/replay_prompts.jsonl, none of them an evaluation instruction): self-distillation,
so nothing is downloaded and the target is exactly the behaviour to keep. Rows are added to the
training split only, marked {"augmented": {"method": "replay", ...}}, and written with it; validation
and test stay the task's. The base model's answers are cached like its general side (eval/general.py).
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import replace
from pathlib import Path

from tuneloop.config import ConfigError, RunConfig
from tuneloop.data import Example, Splits
from tuneloop.data.example import REPLAY
from tuneloop.data.prepare import load_from_config
from tuneloop.eval.evaluate import decoding
from tuneloop.eval.general import DEFAULT_SUITE, Suite, cached_base_side
from tuneloop.models import load_model
from tuneloop.models.generate import generate_answers
from tuneloop.models.precision import choose_precision
from tuneloop.train.methods import method_of

PROMPTS = DEFAULT_SUITE / "replay_prompts.jsonl"
ANSWER_TOKENS = 96  # whole answers to learn from, not the general check's short probes


def replay_count(config: RunConfig, train_rows: int) -> int:
    return round(config.data.replay * train_rows)


def with_replay(config: RunConfig, splits: Splits, folder: Path, tokenizer, device: str) -> tuple[Splits, dict]:
    """`splits` with data.replay's general rows added to train, and what was added (for the data report)."""
    wanted = replay_count(config, len(splits.train))
    if wanted == 0:
        return splits, {}
    if method_of(config).learns_from != "answers":
        raise ConfigError(
            f"data.replay adds answers to learn: use it with a method that learns from answers "
            f"(lora, full), not {config.train.method}"
        )
    if config.data.replay_data is not None:
        pool = load_from_config(config.data.model_copy(update={"path": config.data.replay_data})).examples
        source = str(config.data.replay_data)
    else:
        pool = _self_distilled(folder, tokenizer, config.train.precision, device)
        source = "self: the base model's answers to shipped generic prompts"
    chosen = random.Random(config.data.seed).sample(pool, min(wanted, len(pool)))
    rows = [
        replace(e, augmented={"method": REPLAY, "source": source if config.data.replay_data is None else "replay_data"})
        for e in chosen
    ]
    added = {"rows": len(rows), "asked": wanted, "source": source}
    if len(rows) < wanted:
        added["note"] = f"only {len(pool)} general rows to draw from"
    return Splits([*splits.train, *rows], splits.validation, splits.test, splits.removed), added


def _self_distilled(folder: Path, tokenizer, precision: str, device: str) -> list[Example]:
    prompts = [json.loads(line)["prompt"] for line in PROMPTS.read_text(encoding="utf-8").splitlines() if line.strip()]
    chosen = choose_precision(precision, device)

    def measure() -> dict:
        model = load_model(folder, chosen, device, inference=True)
        with decoding(model):
            answers = generate_answers(
                model,
                tokenizer,
                [[{"role": "user", "content": p}] for p in prompts],
                max_new_tokens=ANSWER_TOKENS,
                batch_size=16,
                autocast_dtype=chosen.autocast_dtype,
            )
        return {"answers": answers}

    key = hashlib.sha256(json.dumps([prompts, ANSWER_TOKENS]).encode()).hexdigest()[:16]
    answers = cached_base_side(folder, chosen.value, Suite([], prompts, fingerprint=f"replay-{key}"), measure)[
        "answers"
    ]
    rows = []
    for i, (prompt, answer) in enumerate(zip(prompts, answers)):
        if len(tokenizer(answer, add_special_tokens=False)["input_ids"]) >= ANSWER_TOKENS - 1:
            answer = _whole_sentences(answer)  # cut at the limit: learn where an answer ends, not a cut
        if answer.strip():
            messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
            rows.append(Example(messages=messages, row=i + 1, file=str(PROMPTS)))
    return rows


def _whole_sentences(text: str) -> str:
    """`text` up to its last finished sentence; "" when it has none."""
    end = max(text.rfind(". "), text.rfind(".\n"), text.rfind("! "), text.rfind("? "))
    return text[: end + 1] if end > 0 else ""
