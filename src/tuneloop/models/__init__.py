"""Base models: resolving a spec to a local folder, loading it at the right precision."""

from tuneloop.models.load import load_model, load_tokenizer
from tuneloop.models.precision import Precision, choose_precision
from tuneloop.models.resolve import ModelNotFound, resolve_model

__all__ = ["ModelNotFound", "Precision", "choose_precision", "load_model", "load_tokenizer", "resolve_model"]
