"""Machine-dependent speed choices and their CPU fallbacks (CI has no GPU: these paths are what it runs)."""

import json

import pytest
from transformers import LlamaConfig

from conftest import write_tickets
from tuneloop.config import TrainConfig
from tuneloop.train.speed import resolve_speed

SMOLLM2 = LlamaConfig(hidden_size=576, num_attention_heads=9, num_hidden_layers=30)
GIB = 2**30


@pytest.mark.parametrize(
    "setting, batch, seq, free_gib, expected",
    [
        ("auto", 8, 256, 16, False),  # ~0.6 GiB of activations against 4 GiB: no recomputation
        ("auto", 16, 2048, 4, True),  # ~28 GiB: must recompute
        (True, 1, 16, 64, True),  # an explicit choice is kept
        (False, 64, 4096, 1, False),
    ],
)
def test_gradient_checkpointing_only_when_memory_requires(setting, batch, seq, free_gib, expected):
    train = TrainConfig(gradient_checkpointing=setting)
    notes = resolve_speed(train, "cpu", SMOLLM2, batch, seq, free_gib * GIB)
    assert train.gradient_checkpointing is expected
    assert bool(notes) == (setting == "auto" and expected)


def test_qlora_falls_back_without_cuda():
    train = TrainConfig(quantize="4bit")
    [note] = resolve_speed(train, "cpu", SMOLLM2, 8, 128, 16 * GIB)
    assert train.quantize == "none" and "needs CUDA" in note


def test_run_with_qlora_and_checkpointing_on_cpu(tmp_path, tiny_model):
    """The CPU fallback end to end: the run trains, config.yaml records what ran, run.json says why."""
    from rich.console import Console

    from tuneloop.config import config_from_dict
    from tuneloop.pipeline import run_loop

    write_tickets(tmp_path / "d.jsonl", 30)
    config = config_from_dict(
        {
            "model": str(tiny_model),
            "runs_dir": str(tmp_path / "runs"),
            "data": {"path": str(tmp_path / "d.jsonl"), "max_seq_len": 256},
            "train": {"epochs": 1, "batch_size": 8, "quantize": "4bit", "gradient_checkpointing": True},
        }
    )
    result = run_loop(config, Console(quiet=True), evaluate=False)
    info = json.loads(result.run.info_file.read_text())
    assert any("quantize: 4bit needs CUDA" in n for n in info["speed_notes"])
    recorded = result.run.config_file.read_text()
    assert "quantize: none" in recorded and "gradient_checkpointing: true" in recorded
    assert any("eval_loss" in m for m in result.run.read_metrics())


@pytest.mark.parametrize("tokens, expected", [(5_000, False), (20_000, True)])
def test_compile_auto_by_training_tokens(tokens, expected):
    train = TrainConfig()
    resolve_speed(train, "cpu", SMOLLM2, 8, 128, 16 * GIB, train_tokens=tokens)
    assert train.compile is expected


@pytest.mark.parametrize("compile, liger_note", [(True, True), (False, False)])
def test_liger_gives_way_to_compiled_layers_on_cuda(monkeypatch, compile, liger_note):
    monkeypatch.setattr("tuneloop.models.kernels.installed", lambda package: True)
    notes = resolve_speed(TrainConfig(compile=compile), "cuda", SMOLLM2, 8, 128, 16 * GIB)
    assert any("Liger's fused kernels off" in n for n in notes) is liger_note


def test_compiled_run_trains_evaluates_and_generates(tmp_path, tiny_model):
    """Compiled decoder layers train; evaluation and generation run them eagerly (no recompile).
    All the layers share one graph, compiled once: the first layer's input (the frozen
    embeddings' output) requires grad like the others', and Dynamo does not restart its analysis."""
    import torch
    from rich.console import Console
    from torch._dynamo.utils import counters

    from tuneloop.config import config_from_dict
    from tuneloop.pipeline import run_loop

    write_tickets(tmp_path / "d.jsonl", 30)
    config = config_from_dict(
        {
            "model": str(tiny_model),
            "runs_dir": str(tmp_path / "runs"),
            "data": {"path": str(tmp_path / "d.jsonl"), "max_seq_len": 256},
            "train": {"epochs": 1, "batch_size": 8, "compile": True},
            "eval": {"max_new_tokens": 4},
        }
    )
    torch._dynamo.reset()  # an earlier test may have compiled the same layers: count this run's graphs only
    counters.clear()
    result = run_loop(config, Console(quiet=True))
    assert counters["frames"]["total"] == 1  # one compiled graph for all layers, and no recompile
    assert counters["stats"]["unique_graphs"] == 1
    assert result.evaluation["n_generated"] == result.evaluation["n_test"] > 0
    assert "compile: true" in result.run.config_file.read_text()
    assert any("eval_loss" in m for m in result.run.read_metrics())


def test_compile_probes_the_vector_isa_off_the_main_thread(monkeypatch, tiny_model):
    """Inductor's instruction-set probe (child processes, ~0.8 s) starts when the layers are set
    to compile, in a thread, so the first compiled step does not wait on it."""
    import threading

    import torch._inductor.cpu_vec_isa as cpu_vec_isa
    from transformers import AutoModelForCausalLM

    from tuneloop.train.speed import compile_layers

    probed = threading.Event()
    where = []
    monkeypatch.setattr(cpu_vec_isa, "pick_vec_isa", lambda: (where.append(threading.current_thread()), probed.set()))
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    assert compile_layers(model) == model.config.num_hidden_layers
    assert probed.wait(timeout=10)
    assert where[0] is not threading.main_thread()
