"""Write a Llama-family Hugging Face model folder as GGUF with the `gguf` package (llama.cpp's
format library), following llama.cpp's own converter: tensor names from gguf's name map, Q/K
rows permuted to llama.cpp's rotary layout, the BPE tokenizer's vocabulary and merges.
Only the architectures listed in ARCHITECTURES are written; others are refused, not guessed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

ARCHITECTURES = {"LlamaForCausalLM": "LLAMA"}  # SmolLM2 and other Llama-layout models


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF's rotary halves -> llama.cpp's interleaved pairs (transformers undoes this on load)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(folder: Path, out: Path, dtype: str = "f16") -> Path:
    import gguf
    import torch
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(folder)
    arch = next((ARCHITECTURES[a] for a in config.architectures or [] if a in ARCHITECTURES), None)
    if arch is None:
        raise ValueError(f"GGUF export supports {', '.join(ARCHITECTURES)}; this model is {config.architectures}")
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch], config.num_hidden_layers)
    writer = gguf.GGUFWriter(str(out), "llama")
    writer.add_name(folder.name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    rope_theta = getattr(config, "rope_theta", None) or (config.rope_parameters or {}).get("rope_theta", 10000.0)
    writer.add_rope_freq_base(float(rope_theta))
    writer.add_rope_dimension_count(config.hidden_size // config.num_attention_heads)
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if dtype == "f16" else gguf.LlamaFileType.ALL_F32)

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    if model.get("type") != "BPE":
        raise ValueError(f"GGUF export supports byte-level BPE tokenizers; this one is {model.get('type')}")
    vocab = {token: i for token, i in model["vocab"].items()}
    special = {t.content: i for i, t in tokenizer.backend_tokenizer.get_added_tokens_decoder().items() if t.special}
    vocab.update(special)
    tokens = [""] * config.vocab_size
    types = [gguf.TokenType.UNUSED] * config.vocab_size
    for token, i in vocab.items():
        if i < config.vocab_size:
            tokens[i] = token
            types[i] = gguf.TokenType.CONTROL if token in special else gguf.TokenType.NORMAL
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for key, add in (
        ("bos_token_id", writer.add_bos_token_id),
        ("eos_token_id", writer.add_eos_token_id),
        ("pad_token_id", writer.add_pad_token_id),
    ):
        if getattr(tokenizer, key, None) is not None:
            add(getattr(tokenizer, key))
    writer.add_add_bos_token(False)
    if tokenizer.chat_template:
        writer.add_chat_template(tokenizer.chat_template)

    state = {}
    for file in sorted(folder.glob("*.safetensors")):
        state.update(load_file(file))
    for name, tensor in state.items():
        if name == "lm_head.weight" and config.tie_word_embeddings:
            continue  # tied: llama.cpp reuses token_embd
        stem = name.removesuffix(".weight")
        target = names.get_name(stem)
        if target is None:
            raise ValueError(f"GGUF export: no GGUF name for tensor {name}")
        w = tensor.to(torch.float32).numpy()
        if stem.endswith("q_proj"):
            w = _permute(w, config.num_attention_heads)
        elif stem.endswith("k_proj"):
            w = _permute(w, config.num_key_value_heads)
        # 1-D tensors (norms) stay f32, as llama.cpp's converter keeps them.
        writer.add_tensor(f"{target}.weight", w.astype(np.float16 if dtype == "f16" and w.ndim > 1 else np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out
