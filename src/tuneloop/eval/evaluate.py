"""Evaluate one model on held-out examples: answer loss, generated answers, the task metric."""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch

from tuneloop.config import EvalConfig
from tuneloop.data import Example
from tuneloop.data.conversation import template_messages
from tuneloop.eval.loss import answer_loss
from tuneloop.eval.metrics import choose_metric, confusion, score
from tuneloop.models.generate import generate_answers
from tuneloop.models.precision import Precision


@contextmanager
def decoding(model):
    """Within it, the model answers as evaluation should: SDPA attention and eager layers.

    For cached decoding on CPU, SDPA measured ~30% faster than the eager attention used for training
    (24 prompts x 48 tokens: 7.1 s vs 9.8 s); training's choice is restored after. Compiled layers
    (train.compile) run eagerly: every new cache shape would recompile them (Dynamo's limit of 8
    recompiles was hit within one scale-curve pass before this wrapped it)."""
    training_attention = model.config._attn_implementation
    model.set_attn_implementation("sdpa")
    try:
        with torch.compiler.set_stance("force_eager"):
            yield
    finally:
        model.set_attn_implementation(training_attention)


def generation_set(examples: list[Example], config: EvalConfig) -> list[Example]:
    """The evaluation points: each row's last assistant turn, or with eval.turns: all each of its
    assistant turns, the conversation before it as the prompt (not turns of weight 0: the data
    says not to learn them, so they are no reference either). Capped at eval.max_examples points."""
    # Plain text has no prompt to answer: its test is the loss (and perplexity) alone.
    if not examples or examples[0].kind == "text":
        return []
    if config.turns == "all":
        examples = [
            e.upto(i)
            for e in examples
            for i, m in enumerate(e.messages)
            if m["role"] == "assistant" and i > 0 and m.get("weight", 1) != 0
        ]
    return examples[: config.max_examples or len(examples)]


def points_summary(gen_set: list[Example]) -> dict:
    """How many evaluation points came from how many rows (several per row with eval.turns: all)."""
    return {"points": len(gen_set), "rows": len({(e.file, e.row) for e in gen_set})}


def example_record(e: Example) -> dict:
    """What every per-example result starts with: where the row came from, its prompt and reference."""
    return {"source_row": e.row, "prompt": e.prompt[-1]["content"], "reference": e.answer}


def side_record(scored: dict, i: int) -> dict:
    """One model's answer to example `i` of generate_and_score's result, with its scores."""
    return {"output": scored["outputs"][i], **scored["per_example"][i]}


def answer_token_budget(tokenizer, answers: list[str]) -> int:
    """`eval.max_new_tokens: auto`: the longest reference answer in tokens, x 1.25 + 8. A label
    task then generates ~12 tokens instead of 128: generation stops only when every row of a
    batch has ended, so one rambling answer would otherwise cost the whole batch 128 steps."""
    if not answers:
        return 128
    return tokens_allowed(max(len(ids) for ids in tokenizer(answers, add_special_tokens=False)["input_ids"]))


def tokens_allowed(longest: int) -> int:
    """New tokens allowed for answers whose longest is `longest` tokens: x 1.25 + 8."""
    return math.ceil(1.25 * longest) + 8


def metric_for(examples: list[Example], config: EvalConfig) -> str:
    labelled = bool(examples) and all(e.label is not None and e.label == e.answer.strip() for e in examples)
    return choose_metric([e.answer for e in examples], config.metric, labelled=labelled)


def generate_and_score(
    model,
    tokenizer,
    examples: list[Example],
    config: EvalConfig,
    precision: Precision,
    metric: str | None = None,
    on_batch=None,
) -> dict:
    """Answers for the generation set and their scores: {metric, metrics, outputs, per_example}."""
    gen_set = generation_set(examples, config)
    if not gen_set:
        return {"metric": "loss", "metrics": {}, "outputs": [], "per_example": []}
    metric = metric or metric_for(gen_set, config)
    max_new_tokens = config.max_new_tokens
    if max_new_tokens == "auto":  # a config that was not resolved by a run: bound by these references
        max_new_tokens = answer_token_budget(tokenizer, [e.answer for e in gen_set])
    # Rendered as training rendered them: tool calls and results written out where the template
    # has no syntax for them (data/conversation.py).
    prompts = [template_messages(e.prompt, e.tools, tokenizer) for e in gen_set]
    outputs = generate_answers(
        model,
        tokenizer,
        [messages for messages, _ in prompts],
        max_new_tokens=max_new_tokens,
        batch_size=config.batch_size,
        autocast_dtype=precision.autocast_dtype,
        on_batch=on_batch,
        sample=config.sample,
        temperature=config.temperature,
        top_p=config.top_p,
        seed=config.seed,
        template_kwargs=[kwargs for _, kwargs in prompts],
        stop_repeating=config.stop_repeating,
    )
    metrics, per = score(metric, outputs, [e.answer for e in gen_set])
    out = {"metric": metric, "metrics": metrics, "outputs": outputs, "per_example": per, **points_summary(gen_set)}
    if metric == "classification":
        out["confusion"] = confusion(per)
    return out


def evaluate_model(
    model,
    tokenizer,
    examples: list[Example],
    config: EvalConfig,
    precision: Precision,
    on_batch=None,
    train_on: str = "all_assistant",
) -> dict:
    """Loss and perplexity on every example (over the turns training learns: `train_on`), plus
    the task metric on the generation set."""
    loss = answer_loss(
        model,
        tokenizer,
        examples,
        batch_size=config.batch_size,
        autocast_dtype=precision.autocast_dtype,
        train_on=train_on,
    )
    scored = generate_and_score(model, tokenizer, examples, config, precision, on_batch=on_batch)
    return {**scored, "metrics": {**loss, **scored["metrics"]}, "n": len(examples)}
