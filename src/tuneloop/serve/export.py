"""`tuneloop export`: a run's fine-tune as files other tools load.

adapter/   the bare PEFT adapter; with a scale, lora_alpha is multiplied by it (the LoRA
           update is alpha/r · BA, so this is the inference-time strength baked in)
merged/    the base model with the adapter folded into its weights (safetensors), which plain
           transformers loads with no PEFT; checked by comparing its logits with the adapter's
model.gguf the merged model as GGUF (Llama-family architectures), checked by loading it back
"""

from __future__ import annotations

import json
import shutil
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from tuneloop.eval.scale_curve import check_scale, recommended_scale
from tuneloop.models import Precision, load_model, load_tokenizer, resolve_model
from tuneloop.runs import RunDir

# A merged model must compute what base + adapter computes: fp32 merging moves logits by ~1e-5.
MERGE_TOLERANCE = 1e-3
# f16 rounding in GGUF moves logits by ~0.03; a wrong tensor layout by far more.
GGUF_TOLERANCE = 0.5


@dataclass
class Export:
    adapter: Path | None  # None for a full fine-tune
    merged: Path
    merged_logit_difference: float
    gguf: Path | None = None
    gguf_logit_difference: float | None = None
    scale: float = 1.0  # the adapter strength baked in


def export_run(
    run: RunDir,
    out: Path | None = None,
    *,
    scale: float | str = 1.0,
    gguf: bool = False,
    gguf_type: str = "f16",
    status=lambda message: nullcontext(),
) -> Export:
    """The adapter (with `scale` baked in; "auto": the scale the run's scale curve measured), the
    merged model and optionally GGUF, each checked against the run's own model; a check that fails
    is an error, not a warning."""
    scale = adapter_scale(run, scale)
    if gguf_type not in ("f16", "f32"):
        raise ValueError(f"gguf type {gguf_type!r}: use f16 or f32")
    check_scale(scale, lora=run.adapter_dir.is_dir())
    out = out or run.export_dir
    adapter = export_adapter(run, out / "adapter", scale) if run.adapter_dir.is_dir() else None
    with status("merging the adapter into the base weights"):
        merged = export_merged(run, out / "merged", adapter)
    if not merged["max_logit_difference"] <= MERGE_TOLERANCE:  # `not <=`: a NaN difference fails too
        raise ValueError(f"the merged model's logits differ from the adapter's by {merged['max_logit_difference']}")
    result = Export(adapter, Path(merged["path"]), merged["max_logit_difference"], scale=scale)
    if gguf:
        with status("writing GGUF and loading it back"):
            written = export_gguf(out / "merged", out / "model.gguf", gguf_type)
        if not written["max_logit_difference"] <= GGUF_TOLERANCE:
            raise ValueError(f"model.gguf loads back with logits off by {written['max_logit_difference']:.3f}")
        result.gguf, result.gguf_logit_difference = Path(written["path"]), written["max_logit_difference"]
    return result


def adapter_scale(run: RunDir, scale: float | str) -> float:
    """A number as it is; "auto": the scale the run's scale curve recommends (eval/scale_curve.py)."""
    if scale == "auto":
        return recommended_scale(run)
    try:
        return float(scale)
    except ValueError:
        raise ValueError(f"--scale {scale!r}: a number >= 0, or auto") from None


def export_adapter(run: RunDir, out: Path, scale: float = 1.0) -> Path:
    if not run.adapter_dir.is_dir():
        raise FileNotFoundError(f"{run.path}: no adapter/ (a full fine-tune is already a whole model: {run.model_dir})")
    shutil.copytree(run.adapter_dir, out, dirs_exist_ok=True)
    if scale != 1.0:
        config_file = out / "adapter_config.json"
        config_file.write_text(
            json.dumps(scaled_adapter_config(json.loads(config_file.read_text()), scale), indent=2) + "\n"
        )
    return out


def scaled_adapter_config(config: dict, scale: float) -> dict:
    """A PEFT LoRA config with the adapter's strength multiplied by `scale`: the update is
    alpha/r · BA, so lora_alpha (and any per-module alpha) carries it."""
    return {
        **config,
        "lora_alpha": config["lora_alpha"] * scale,
        "alpha_pattern": {k: v * scale for k, v in (config.get("alpha_pattern") or {}).items()},
    }


def export_merged(run: RunDir, out: Path, adapter: Path | None = None) -> dict:
    """Fold `adapter` (default: the run's) into fp32 base weights and save; returns the logit check."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    config = run.config()
    folder = resolve_model(config.model)
    tokenizer = load_tokenizer(folder)
    if run.model_dir.is_dir():  # full fine-tuning: the model is already whole
        model = load_model(run.model_dir, Precision.fp32)
        peft_model = None
    else:
        peft_model = PeftModel.from_pretrained(load_model(folder, Precision.fp32), adapter or run.adapter_dir)
        model = peft_model
    probe = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Where is my order ORD-12345?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.inference_mode():
        expected = model(**probe).logits
    if peft_model is not None:
        model = peft_model.merge_and_unload()
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    reloaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    with torch.inference_mode():
        got = reloaded(**probe).logits
    return {"path": str(out), "max_logit_difference": float((got - expected).abs().max())}


def export_gguf(merged: Path, out: Path, dtype: str = "f16") -> dict:
    """Write the merged model as GGUF with the `gguf` package, then load it back with transformers."""
    from transformers import AutoModelForCausalLM

    from tuneloop.serve.gguf import write_gguf

    write_gguf(merged, out, dtype)
    original = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32)
    loaded = AutoModelForCausalLM.from_pretrained(out.parent, gguf_file=out.name, dtype=torch.float32)
    ids = load_tokenizer(merged)("Where is my order ORD-12345?", return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        difference = float((loaded(ids).logits - original(ids).logits).abs().max())
    return {"path": str(out), "max_logit_difference": difference}
