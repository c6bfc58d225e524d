"""Data: read chat examples loudly, split them reproducibly."""

from tuneloop.data.chat import Example, load_chat_jsonl, validate_lengths
from tuneloop.data.problems import DataError, Problem
from tuneloop.data.split import Splits, split_examples

__all__ = ["DataError", "Example", "Problem", "Splits", "load_chat_jsonl", "split_examples", "validate_lengths"]
