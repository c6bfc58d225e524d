#!/usr/bin/env bash
# One line naming this machine's CPU and the matrix/vector flags its kernels choose by, so that a
# red run on another machine can be read (fp32 sums differ between Intel AMX, AVX512-BF16 and AVX2).
model=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
flags=$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(amx_[a-z0-9]+|avx512f|avx512_bf16|avx512_vnni|avx_vnni|avx2|fma)$' | sort | tr '\n' ' ')
echo "cpu: ${model:-unknown} ($(nproc) cores); flags: ${flags:-none of the matrix flags}"
