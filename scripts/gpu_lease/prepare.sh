#!/usr/bin/env bash
# Build .lease/ (git-ignored): what a lent CUDA machine needs for bench/cuda_paths.py and lacks.
# That machine runs its own python3 (3.12, torch+CUDA, no registry): tuneloop's missing
# dependencies travel as cp312 wheels, bitsandbytes trimmed to its CUDA 13.0 library (43 MB -> 4 MB:
# a call carries 64 MiB at most). The default model's GGUF (98 MB) does not fit beside them, so
# the lease trains SmolLM2-135M's architecture with random weights: speeds, memory and whether
# each path runs are real; losses and task metrics are not.
#   bash scripts/gpu_lease/prepare.sh      # then, through the device tool:
#   run(command="bash scripts/gpu_lease/run.sh", carry=[".lease"], timeout_s=600)
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=.venv/bin/python
rm -rf .lease && mkdir -p .lease/whl .lease/datasets/banking77 .lease/smollm2-config
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .lease/whl \
  "transformers==$($PY -c 'import transformers; print(transformers.__version__)')" \
  "peft==$($PY -c 'import peft; print(peft.__version__)')" "trl==$($PY -c 'import trl; print(trl.__version__)')" \
  "datasets==$($PY -c 'import datasets; print(datasets.__version__)')" dill multiprocess pydantic pydantic_core \
  annotated-types typing-inspection typing_extensions datasketch fastapi starlette uvicorn python-multipart \
  opentelemetry-api gguf liger-kernel bitsandbytes
tmp=$(mktemp -d) && (cd "$tmp" && unzip -q "$OLDPWD"/.lease/whl/bitsandbytes-*.whl \
  && find bitsandbytes -name 'libbitsandbytes_*.so' ! -name '*cpu.so' ! -name '*cuda130.so' -delete \
  && sed -i -E '/libbitsandbytes_(cuda1[12]|cuda132|rocm|xpu)/d' ./*.dist-info/RECORD \
  && name=$(basename "$OLDPWD"/.lease/whl/bitsandbytes-*.whl) && rm "$OLDPWD/.lease/whl/$name" \
  && zip -qr "$OLDPWD/.lease/whl/$name" .) && rm -rf "$tmp"
cp ../shared/datasets/banking77/{train.csv,categories.json} .lease/datasets/banking77/
model=$($PY -c 'from tuneloop.models import resolve_model; print(resolve_model("smollm2-135m-instruct"))')
cp "$model"/{config.json,generation_config.json,tokenizer.json,tokenizer_config.json,chat_template.jinja} .lease/smollm2-config/
du -sh .lease
