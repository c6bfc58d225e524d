"""Shared fixtures: a tiny Llama with the real SmolLM2 tokenizer, and paths to the shared datasets."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets"
QUICKSTART = REPO / "examples" / "quickstart"

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests must never reach for a hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def smollm2_folder() -> Path:
    """The converted default model (converted once into TUNELOOP_HOME, ~20 s the first time)."""
    from tuneloop.models import resolve_model

    return resolve_model("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, smollm2_folder) -> Path:
    from tuneloop.models.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", smollm2_folder)


@pytest.fixture(scope="session")
def tokenizer(tiny_model):
    from tuneloop.models import load_tokenizer

    return load_tokenizer(tiny_model)


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def chat(user: str, answer: str, system: str | None = None) -> dict:
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    return {"messages": messages}


@pytest.fixture(scope="session")
def banking77_rows() -> list[dict]:
    """Real intent-classification rows from ../shared/datasets, as chat examples."""
    import csv

    path = SHARED / "banking77" / "train.csv"
    if not path.exists():
        pytest.fail(f"{path} is missing: the shared datasets must sit beside the repository")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))[:400]
    return [chat(r["text"], r["category"], system="Classify the banking customer's intent.") for r in rows]
