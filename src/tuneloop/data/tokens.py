"""Token lengths under the model's chat template: what training will actually see."""

from __future__ import annotations

from dataclasses import dataclass, field

from tuneloop.data.conversation import tokenize_examples
from tuneloop.data.example import Example
from tuneloop.data.problems import DataError, Problem


@dataclass(frozen=True)
class TokenLengths:
    total: list[int]  # whole example, template included
    prompt: list[int]  # tokens before the first learned one (0 for plain text)
    learned: list[int]  # tokens in the loss: every learned assistant turn (data.train_on)
    template_problems: list[Problem] = field(default_factory=list)  # turns the template hides or rewrites


def token_lengths(examples: list[Example], tokenizer, train_on: str = "all_assistant") -> TokenLengths:
    """What training sees: the rendered example and its learned tokens (data/conversation.py).

    The totals equal apply_chat_template(tokenize=True) row by row (tests/data/test_tokens.py).
    """
    rows = tokenize_examples(examples, tokenizer, train_on)
    total = [len(t.input_ids) for t in rows]
    # A preference pair must fit with either answer: the longer side counts.
    pairs = [i for i, e in enumerate(examples) if e.rejected is not None]
    for i, t in zip(pairs, tokenize_examples([examples[i].with_rejected() for i in pairs], tokenizer, train_on)):
        total[i] = max(total[i], len(t.input_ids))
    return TokenLengths(
        total,
        [t.first_learned for t in rows],
        [t.n_learned for t in rows],
        [p for t in rows for p in t.problems],
    )


def length_problems(examples: list[Example], lengths: TokenLengths, max_seq_len: int) -> list[Problem]:
    """Too long is an error, not a truncation: cutting would remove the very answer to learn."""
    problems = []
    for e, total, prompt, learned in zip(examples, lengths.total, lengths.prompt, lengths.learned):
        if prompt >= max_seq_len:
            problems.append(
                Problem(
                    e.file,
                    e.row,
                    "messages",
                    "no_trainable_tokens",
                    f"the prompt alone is {prompt} tokens, data.max_seq_len={max_seq_len}: after "
                    "truncation no answer token would be left to learn from",
                )
            )
        elif total > max_seq_len:
            problems.append(
                Problem(
                    e.file,
                    e.row,
                    "messages",
                    "too_long",
                    f"{total} tokens exceeds data.max_seq_len={max_seq_len}; shorten it or raise max_seq_len",
                )
            )
        elif learned == 0:
            problems.append(
                Problem(
                    e.file,
                    e.row,
                    "messages",
                    "no_trainable_tokens",
                    "no assistant turn is learned (all have weight 0, or the answer adds no tokens)",
                )
            )
    return problems


def validate_lengths(
    examples: list[Example], tokenizer, max_seq_len: int, train_on: str = "all_assistant"
) -> TokenLengths:
    lengths = token_lengths(examples, tokenizer, train_on)
    # A turn the template hides cannot be learned: an error, not a row trained on less than asked.
    unrendered = [p for p in lengths.template_problems if p.code == "turn_not_rendered"]
    problems = unrendered + length_problems(examples, lengths, max_seq_len)
    if problems:
        raise DataError(problems)
    return lengths
