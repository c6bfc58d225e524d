"""Serving: one base model with many LoRA adapters behind an OpenAI-compatible API; export."""

from tuneloop.serve.api import create_app
from tuneloop.serve.batcher import Batcher
from tuneloop.serve.engine import AdapterSpec, Engine, Request, resolve_adapter

__all__ = ["AdapterSpec", "Batcher", "Engine", "Request", "create_app", "resolve_adapter"]
