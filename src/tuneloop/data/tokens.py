"""Token lengths under the model's chat template: what training will actually see."""

from __future__ import annotations

from dataclasses import dataclass

from tuneloop.data.example import Example
from tuneloop.data.problems import DataError, Problem


@dataclass(frozen=True)
class TokenLengths:
    total: list[int]  # whole example, template included
    prompt: list[int]  # everything before the answer (0 for plain text): masked out of the loss

    @property
    def trainable(self) -> list[int]:
        return [t - p for t, p in zip(self.total, self.prompt)]


def token_lengths(examples: list[Example], tokenizer) -> TokenLengths:
    """Render with the chat template, then tokenize all rows in one batch.

    The totals equal apply_chat_template(tokenize=True) row by row (tests/data/test_tokens.py);
    the prompt lengths come from the same batch call. 5,000 banking77 rows: 0.95 s for both.
    """
    full, prompts = [], []
    for e in examples:
        if e.kind == "text":
            full.append(e.answer + (tokenizer.eos_token or ""))
            prompts.append("")
        else:
            full.append(tokenizer.apply_chat_template(e.messages, tokenize=False))
            prompts.append(tokenizer.apply_chat_template(e.prompt, tokenize=False, add_generation_prompt=True))
    count = lambda texts: [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]  # noqa: E731
    return TokenLengths(count(full) if full else [], count(prompts) if prompts else [])


def length_problems(examples: list[Example], lengths: TokenLengths, max_seq_len: int) -> list[Problem]:
    """Too long is an error, not a truncation: cutting would remove the very answer to learn."""
    problems = []
    for e, total, prompt in zip(examples, lengths.total, lengths.prompt):
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
        elif total - prompt <= 0:
            problems.append(
                Problem(e.file, e.row, "messages", "no_trainable_tokens", "the answer adds no tokens after the prompt")
            )
    return problems


def validate_lengths(examples: list[Example], tokenizer, max_seq_len: int) -> TokenLengths:
    lengths = token_lengths(examples, tokenizer)
    problems = length_problems(examples, lengths, max_seq_len)
    if problems:
        raise DataError(problems)
    return lengths
