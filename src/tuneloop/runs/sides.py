"""What `eval` and `compare` evaluate: `base` (a run's base model) or a run directory.

A LoRA run loads its base model and attaches the adapter; a full fine-tune loads its saved
model. Each side is loaded on its own so that two runs with different base models compare.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tuneloop.config import RunConfig
from tuneloop.models import choose_precision, load_model, load_tokenizer, resolve_model
from tuneloop.models.precision import default_device
from tuneloop.runs.store import RunDir


@dataclass
class Side:
    name: str  # "base" or the run id
    model: object
    tokenizer: object
    precision: object


def load_side(spec: str, config: RunConfig, device: str | None = None) -> Side:
    """`spec` is "base" (config's model without fine-tuning) or a run directory."""
    device = device or default_device()
    if spec != "base":
        config = RunDir(Path(spec)).config()
    folder = resolve_model(config.model)
    precision = choose_precision(config.train.precision, device)
    if spec == "base":
        return Side("base", load_model(folder, precision, device, inference=True), load_tokenizer(folder), precision)
    run = RunDir(Path(spec))
    if run.model_dir.is_dir():  # full fine-tuning saved the whole model
        return Side(
            run.id, load_model(run.model_dir, precision, device, inference=True), load_tokenizer(folder), precision
        )
    if not run.adapter_dir.is_dir():
        raise FileNotFoundError(f"{spec}: no adapter/ or model/ (the run has not finished training)")
    from peft import PeftModel

    model = PeftModel.from_pretrained(load_model(folder, precision, device, inference=True), run.adapter_dir)
    return Side(run.id, model, load_tokenizer(folder), precision)
