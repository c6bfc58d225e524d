"""Evaluation: generate answers for held-out prompts and score them against the references."""

from tuneloop.eval.generate import generate_answers
from tuneloop.eval.metrics import choose_metric, score

__all__ = ["choose_metric", "generate_answers", "score"]
