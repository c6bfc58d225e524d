"""Many LoRA adapters on one base model, each row of a batch with its own adapter and strength.

PEFT can mix adapters in a batch (`adapter_names`), but it runs every adapter's sub-batch
through every LoRA layer separately: with 8 adapters that is ~50 small ops per layer per
decoding step, and measured 0.34x the throughput of a single adapter (bench/serve_adapters.py,
LOG.md). Here the adapters present in a batch are concatenated into one wide low-rank pair per
layer, A = [A_1; ...; A_k] and B = [B_1 ... B_k], and a per-row mask keeps each row's own slice,
already multiplied by its scaling (alpha / r, or alpha / sqrt(r) for rsLoRA) and its request's
strength:

    delta = ((x @ A.T) * mask_row) @ B.T        two matmuls and a multiply per layer, whatever k is

This is the idea of Punica's and S-LoRA's batched kernels, in plain PyTorch matmuls. The delta is
added by forward hooks on the base model's linear layers (PyTorch's extension point; nothing is
patched). Adapters load from PEFT's own files: adapter_config.json and adapter_model.safetensors.
Supported: LoRA on linear layers; DoRA, rank/alpha patterns and modules_to_save are refused
with a message (export such a run merged instead).
"""

from __future__ import annotations

import json
import math
import threading
from contextlib import contextmanager
from pathlib import Path

import torch

PREFIX = "base_model.model."


def _load(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    from safetensors.torch import load_file

    config = json.loads((path / "adapter_config.json").read_text())
    problems = [
        what
        for what, bad in (
            ("DoRA", config.get("use_dora")),
            ("modules_to_save", config.get("modules_to_save")),
            ("rank_pattern", config.get("rank_pattern")),
            ("alpha_pattern", config.get("alpha_pattern")),
            ("bias", config.get("bias", "none") != "none"),
        )
        if bad
    ]
    if config.get("peft_type", "LORA") != "LORA" or problems:
        raise ValueError(
            f"{path}: serving supports plain LoRA adapters; this one uses "
            f"{', '.join(problems) or config.get('peft_type')} (use `tuneloop export` to merge it)"
        )
    weights_file = path / "adapter_model.safetensors"
    if not weights_file.is_file():
        raise FileNotFoundError(f"{path}: no adapter_model.safetensors")
    return config, load_file(weights_file)


class MultiLora:
    def __init__(self, model: torch.nn.Module, adapters: dict[str, Path], dtype: torch.dtype, device: str = "cpu"):
        self.names: list[str] = []
        self.device, self.dtype = device, dtype
        self.modules = dict(model.named_modules())
        # Per layer: adapter name -> (A [r, in], B [out, r] with the scaling folded in)
        self.layers: dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]] = {}
        self.active: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None  # layer -> (A, B) of this batch
        self.mask: dict[str, torch.Tensor] = {}
        self.handles = []
        # Adapters come and go while serving (a fine-tuning job finishes, a model is deleted): a batch
        # holds the lock from building its wide pairs to its last token, so it never sees half an adapter.
        self.lock = threading.Lock()
        for name, path in adapters.items():
            self.add(name, path)

    def add(self, name: str, path: Path) -> None:
        """Load one more adapter (read and checked before the lock is taken: a running batch waits only
        for the swap)."""
        config, weights = _load(path)
        r, alpha = config["r"], config["lora_alpha"]
        scaling = alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r
        pairs = {}
        for key, a in weights.items():
            if ".lora_A." not in key:
                continue
            layer = key.removeprefix(PREFIX).split(".lora_A.")[0]
            b = weights[key.replace(".lora_A.", ".lora_B.")]
            if not isinstance(self.modules.get(layer), torch.nn.Linear):
                raise ValueError(f"{path}: adapter targets {layer!r}, which is not a linear layer of this model")
            pairs[layer] = (a.to(self.device, self.dtype), (b * scaling).to(self.device, self.dtype))
        with self.lock:
            for layer, pair in pairs.items():
                if layer not in self.layers:
                    self.layers[layer] = {}
                    self.handles.append(self.modules[layer].register_forward_hook(self._hook(layer)))
                self.layers[layer][name] = pair
            self.names = [*(n for n in self.names if n != name), name]

    def remove(self, name: str) -> None:
        with self.lock:
            for by_adapter in self.layers.values():
                by_adapter.pop(name, None)
            self.names = [n for n in self.names if n != name]

    @contextmanager
    def rows(self, adapters: list[str | None], strengths: list[float]):
        """For one batch: row i uses adapters[i] (None: the base model) at strengths[i]."""
        with self.lock:
            present = [n for n in self.names if n in adapters]
            if not present:
                yield
                return
            with self._active(present, adapters, strengths):
                yield

    @contextmanager
    def _active(self, present: list[str], adapters: list[str | None], strengths: list[float]):
        self.active, self.mask = {}, {}
        for layer, by_adapter in self.layers.items():
            used = [n for n in present if n in by_adapter]
            if not used:
                continue
            a = torch.cat([by_adapter[n][0] for n in used])  # [sum r, in]
            b = torch.cat([by_adapter[n][1] for n in used], dim=1)  # [out, sum r]
            mask = torch.zeros(len(adapters), 1, a.shape[0], dtype=a.dtype)
            start = 0
            for n in used:
                r = by_adapter[n][0].shape[0]
                for row, (wanted, strength) in enumerate(zip(adapters, strengths)):
                    if wanted == n:
                        mask[row, 0, start : start + r] = strength
                start += r
            self.active[layer] = (a, b)
            self.mask[layer] = mask.to(self.device)
        try:
            yield
        finally:
            self.active, self.mask = None, {}

    def _hook(self, layer: str):
        def add_delta(module, inputs, output):
            if self.active is None or layer not in self.active:
                return output
            a, b = self.active[layer]
            x = inputs[0]
            return output + ((x @ a.T) * self.mask[layer]) @ b.T

        return add_delta
