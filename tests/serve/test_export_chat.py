"""tuneloop export (adapter, scaled adapter, merged, GGUF; each loaded back) and tuneloop chat."""

import json

import torch

from conftest import tuneloop


def test_export_merged_scaled_and_gguf(adapter_runs, tiny_model, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    run = adapter_runs["support"]
    out = tmp_path / "export"
    result = tuneloop(
        "export", str(run), "--out", str(out), "--scale", "0.5", "--gguf", "--gguf-type", "f32", cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr
    original = json.loads((run / "adapter" / "adapter_config.json").read_text())
    scaled = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert scaled["lora_alpha"] == original["lora_alpha"] * 0.5

    ids = torch.tensor([[1, 504, 3458, 314, 260, 1345]])
    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    with torch.inference_mode():
        base_logits = base(ids).logits
        full = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), run / "adapter")(ids).logits
        merged = AutoModelForCausalLM.from_pretrained(out / "merged")(ids).logits  # plain transformers, no PEFT
        gguf = AutoModelForCausalLM.from_pretrained(out, gguf_file="model.gguf", dtype=torch.float32)(ids).logits
    # Half strength lands halfway between the base model and the full-strength adapter (LoRA is linear in alpha
    # in each layer; through the network, approximately).
    assert torch.allclose(merged, gguf, atol=1e-3)
    half_way = (base_logits + full) / 2
    assert (merged - half_way).abs().mean() < 0.25 * (full - base_logits).abs().mean()


def test_export_refuses_a_missing_run(tmp_path):
    result = tuneloop("export", str(tmp_path / "nope"), cwd=tmp_path)
    assert result.returncode == 2 and "not a run directory" in result.stderr


def test_chat_side_by_side_with_base(adapter_runs, tmp_path):
    run = adapter_runs["support"]
    result = tuneloop(
        "chat",
        str(run),
        "--compare",
        "base",
        "--max-tokens",
        "4",
        cwd=tmp_path,
        stdin="Where is my parcel?\n/reset\nHello\n/quit\n",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(run.name[:20]) >= 3  # the header, then one panel per question
    assert result.stdout.count("you>") == 4
