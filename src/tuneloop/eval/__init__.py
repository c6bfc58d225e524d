"""Evaluation: score generated answers against the references, compare models, rate them."""

from tuneloop.eval.metrics import choose_metric, score

__all__ = ["choose_metric", "score"]
