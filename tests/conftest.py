"""Shared fixtures: a tiny Llama with the real SmolLM2 tokenizer, and paths to the shared datasets."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import openai
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets"
QUICKSTART = REPO / "examples" / "quickstart"

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests must never reach for a hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Pinned numerics (resume matches an uninterrupted run to 1e-4) need one thread count throughout:
# the free-core governor (tuneloop/cpu.py) is tested on its own, in tests/test_cpu.py.
os.environ.setdefault("TUNELOOP_THREADS", str(os.cpu_count() or 1))


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


def write_tickets(path: Path, n: int, start: int = 0) -> Path:
    """The first n quickstart support tickets (from row `start`) as a JSONL data file."""
    return write_jsonl(path, QUICKSTART.joinpath("tickets.jsonl").read_text().splitlines()[start : start + n])


def tuneloop(*args, cwd, stdin: str | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """The real `tuneloop` command line, run as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "tuneloop.cli", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=stdin,
    )


def chat(user: str, answer: str, system: str | None = None) -> dict:
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": user},
        {"role": "assistant", "content": answer},
    ]
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


def _train_adapter(work, tiny_model, name, lr):
    write_tickets(work / f"{name}.jsonl", 40)
    (work / f"{name}.yaml").write_text(
        f"model: {tiny_model}\ndata: {{path: {name}.jsonl, max_seq_len: 256}}\n"
        f"lora: {{r: 4, alpha: 8}}\ntrain: {{epochs: 1, batch_size: 8, "
        f"learning_rate: {lr}}}\n"
    )
    result = tuneloop("train", f"{name}.yaml", cwd=work)
    assert result.returncode == 0, result.stdout + result.stderr
    return next((work / "runs").glob(f"{name}-*"))


@pytest.fixture(scope="session")
def adapter_runs(tmp_path_factory, tiny_model):
    """Two LoRA runs on the tiny model (for serving, export and chat tests)."""
    work = tmp_path_factory.mktemp("serve")
    return {
        "support": _train_adapter(work, tiny_model, "support", 3e-2),
        "billing": _train_adapter(work, tiny_model, "billing", 1e-2),
    }


@pytest.fixture(scope="session")
def ui_store(tmp_path_factory, tiny_model):
    """Two evaluated runs on the same data: one learning, one barely moving (the doctor has advice)."""
    work = tmp_path_factory.mktemp("ui")
    write_tickets(work / "d.jsonl", 60)
    for name, lr in (("good", 2e-2), ("slow", 1e-6)):
        (work / f"{name}.yaml").write_text(
            f"model: {tiny_model}\ndata: {{path: d.jsonl, max_seq_len: 256}}\n"
            f"train: {{epochs: 2, batch_size: 8, learning_rate: {lr}, log_every: 1}}\neval: {{max_new_tokens: 6}}\n"
        )
        result = tuneloop("run", f"{name}.yaml", cwd=work)
        assert result.returncode == 0, result.stdout + result.stderr
    runs = {p.name.split("-")[0]: p for p in (work / "runs").iterdir()}
    (work / "preset.yaml").write_text((work / "good.yaml").read_text())
    return work, runs


def tiny_run_config(tmp_path, tiny_model, rows: list[dict] | None = None, **train):
    """A run on the tiny model with `train` settings, of `rows` (default: 40 small JSON-answer chats)."""
    from tuneloop.config import config_from_dict

    if rows is None:
        rows = [chat(f"question number {i} " + "pad " * (i % 7), json.dumps({"answer": i % 5})) for i in range(40)]
    tmp_path.mkdir(parents=True, exist_ok=True)
    write_jsonl(tmp_path / "d.jsonl", rows)
    return config_from_dict(
        {
            "model": str(tiny_model),
            "runs_dir": str(tmp_path / "runs"),
            "run_name": "t",
            "data": {"path": str(tmp_path / "d.jsonl"), "max_seq_len": 256, "dedup": "none", "test_size": 4},
            "lora": {"r": 4, "alpha": 8},
            "train": {"batch_size": 4, "learning_rate": 1e-2, "log_every": 1, "eval_every": 2, **train},
            # The general check's sets and the scale curve are tested on their own (tests/eval/):
            # here leakage and drift only, seconds on the tiny model.
            "eval": {"max_new_tokens": 4, "general": "none", "scale_curve": []},
        }
    )


def stop_at(step: int):
    """A TrainerCallback that raises KeyboardInterrupt after `step`, as if Ctrl-C (or a kill) hit the run there."""
    from transformers import TrainerCallback

    class StopAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == step:
                raise KeyboardInterrupt

    return StopAt()


class FakeClock:
    """A time.perf_counter that moves only when a test moves it (`now`)."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


# The servers the API tests drive with the official `openai` client (tests/serve/): real uvicorn
# servers on free localhost ports, the tiny base model with adapters from real runs.


class _Borrowed:
    """An engine that is its own batcher, lent to an app without letting the app close it."""

    def __init__(self, engine):
        self.submit = engine.submit

    def close(self):
        pass


@contextlib.contextmanager
def serving(engine, api_key="secret"):
    """`engine` behind a batcher and the API on a free port; yields the base URL."""
    import uvicorn

    from tuneloop.serve import Batcher, create_app

    # vLLM's engine schedules its own batches and its owner closes it (the app's shutdown must not);
    # the transformers engine gets a batcher of its own
    own = not hasattr(engine, "submit")
    batcher = Batcher(engine, max_batch=16, wait_ms=20) if own else _Borrowed(engine)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(
        create_app(engine, batcher, api_key=api_key), host="127.0.0.1", port=port, log_level="warning"
    )
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    while not uv.started:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/v1", batcher
    finally:
        uv.should_exit = True
        thread.join(timeout=10)
        if own:
            batcher.close()


@pytest.fixture(scope="session")
def server(adapter_runs, tiny_model):
    from tuneloop.serve import Engine, resolve_adapter

    # fp32: greedy answers must not depend on which requests share a batch (bf16 rounding can).
    engine = Engine(
        str(tiny_model),
        [
            resolve_adapter("support", adapter_runs["support"]),
            resolve_adapter("billing", adapter_runs["billing"], scale=0.5),
        ],
        precision="fp32",
    )
    with serving(engine) as (url, batcher):
        yield {"url": url, "engine": engine, "batcher": batcher, "base": str(tiny_model)}


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server["url"], api_key="secret", max_retries=0)


ORDER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_order",
        "description": "Look up an order",
        "parameters": {
            "type": "object",
            "properties": {"order_id": {"type": "string"}},
            "required": ["order_id"],
            "additionalProperties": False,
        },
    },
}


@pytest.fixture(scope="session")
def tool_adapter(tmp_path_factory, tiny_model):
    """A tiny-model adapter trained on OpenAI tool-call rows: every question about an order is
    answered with the same get_order call."""
    from rich.console import Console

    from tuneloop.config import config_from_dict
    from tuneloop.pipeline import run_loop

    work = tmp_path_factory.mktemp("tools")
    call = {
        "id": "c1",
        "type": "function",
        "function": {"name": "get_order", "arguments": json.dumps({"order_id": "A1"})},
    }
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"where is order A1? ask {i}"},
                {"role": "assistant", "content": None, "tool_calls": [call]},
            ],
            "tools": [ORDER_TOOL],
        }
        for i in range(40)
    ]
    write_jsonl(work / "tools.jsonl", rows)
    config = config_from_dict(
        {
            "model": str(tiny_model),
            "runs_dir": str(work / "runs"),
            "run_name": "tools",
            "data": {"path": str(work / "tools.jsonl"), "max_seq_len": 256, "dedup": "none"},
            "lora": {"r": 16, "alpha": 32},
            "train": {"epochs": 20, "batch_size": 8, "learning_rate": 1e-2, "metric_rows": 0, "compile": False},
            "eval": {"general": "none", "scale_curve": []},
        }
    )
    return run_loop(config, Console(quiet=True), evaluate=False).run.path
