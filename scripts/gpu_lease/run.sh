#!/usr/bin/env bash
# On the lent CUDA machine, from the repository root, with .lease/ carried (scripts/gpu_lease/prepare.sh).
# BUDGET: seconds for bench/cuda_paths.py (480: its first three parts, at 150 s or more each);
# PARTS: e.g. "--parts train_throughput no_compile" for the ones after. Earlier results are kept (--merge).
# Results: bench/results/cuda_paths.json (and train_throughput_cuda.json), copied to $OUT.
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false TUNELOOP_HOME=/tmp/tlhome
nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .lease/whl/*.whl || exit 3
mkdir -p ../shared && ln -sfn "$PWD/.lease/datasets" ../shared/datasets
# SmolLM2-135M-Instruct's architecture and tokenizer, random weights, where resolve_model finds a converted model.
python3 - <<'PY' || exit 4
import shutil, torch
from transformers import AutoConfig, LlamaForCausalLM
source, target = ".lease/smollm2-config", "/tmp/tlhome/models/smollm2-135m-instruct"
torch.manual_seed(0)
LlamaForCausalLM(AutoConfig.from_pretrained(source)).save_pretrained(target)
for f in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"):
    shutil.copy(f"{source}/{f}", target)
PY
python3 bench/cuda_paths.py --merge --budget "${BUDGET:-480}" $PARTS \
  --note "weights: random, in SmolLM2-135M-Instruct's shape (the GGUF does not fit a lease's carry): speeds and memory are real, losses and task metrics are not" \
  --note "FlashAttention-2: flash-attn has no binary wheel on PyPI to carry" \
  --note "vLLM: its wheel and CUDA libraries (hundreds of MB) exceed the lease's 64 MiB carry" 2>&1 | tee "$OUT/cuda_paths.log"
cp bench/results/cuda_paths.json bench/results/train_throughput_cuda.json "$OUT/" 2>/dev/null
exit 0
