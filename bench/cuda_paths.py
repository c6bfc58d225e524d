"""The CUDA paths, run as a user runs them, on a lent GPU: one prepared script for a short lease.

    python bench/cuda_paths.py [--rows 1200] [--budget 420]  # writes bench/results/cuda_paths.json
    python bench/cuda_paths.py --parts qlora train_throughput --merge  # again, keeping the other parts

Each variant is a real `tuneloop run` of the same banking77 config (a random 1,200 training rows,
100 validation, 200 held-out test rows; 2 epochs; LoRA r=16), which trains, evaluates the base and
the fine-tuned model on the test rows, and records its speed notes, timings, plan and peak memory:

- defaults: what `tuneloop run` picks on CUDA (bf16, padding-free batches, SDPA or FlashAttention-2
  where installed, compile: auto, and Liger's fused kernels where installed and not compiling);
- qlora: train.quantize 4bit (NF4 base through bitsandbytes);
- no_fused_kernels: train.fused_kernels false;
- no_compile: train.compile false (so Liger's kernels run, where installed).

Two more parts: `profile`, tuneloop's side of the throughput bench with steps 10-13 under torch's
profiler (the operations that take a step's host time), and `train_throughput`, that bench on the
GPU (tuneloop against plain TRL, once a side). The parts run in PARTS order inside `--budget`
seconds, each with at least MIN_PART_SECONDS, so a short lease still brings back the first parts;
a part not run is recorded as not run, and one that timed out keeps what it printed. What no run
can exercise (a package the lease could not carry) is recorded as blocked, with the reason.
"""

from __future__ import annotations

import argparse
import copy
import csv
import importlib.util
import json
import random
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from environment import RESULTS, save

from tuneloop.config import headline

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"
THROUGHPUT = ROOT / "bench" / "train_throughput.py"
VARIANTS = {
    "defaults": {},
    "qlora": {"quantize": "4bit"},
    "no_fused_kernels": {"fused_kernels": False},
    "no_compile": {"compile": False},
}
# What has never run first: the CUDA defaults, QLoRA, then where a GPU step's time goes.
PARTS = ["defaults", "qlora", "profile", "train_throughput", "no_fused_kernels", "no_compile"]
# A part gets at least this long: a cold compile on a fresh machine alone took over a minute
# (2026-11-30: the default run, 84 s allowed, timed out). A part that cannot have it is not run.
MIN_PART_SECONDS = 150
# Packages whose CUDA paths tuneloop takes when they are installed; absent, the run falls back.
OPTIONAL = {"bitsandbytes": "QLoRA", "liger_kernel": "Liger", "flash_attn": "FlashAttention-2", "vllm": "serving"}


def banking77_config(work: Path, n_train: int, model: str) -> dict:
    with open(DATASETS / "banking77" / "train.csv", newline="", encoding="utf-8") as f:
        rows = random.Random(0).sample(list(csv.DictReader(f)), n_train + 300)
    data = work / "banking77.jsonl"
    data.write_text(
        "".join(
            json.dumps({"prompt": f"Banking intent of this message: {r['text']}", "completion": r["category"]}) + "\n"
            for r in rows
        )
    )
    return {
        "model": model,
        "data": {"path": str(data), "validation_size": 100, "test_size": 200, "max_seq_len": 256},
        "train": {"epochs": 2, "learning_rate": 4e-4},
        "eval": {"batch_size": 50},
    }


def run_variant(name: str, config: dict, work: Path, timeout: float) -> dict:
    cfg = copy.deepcopy(config)
    cfg["train"].update(VARIANTS[name])
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    done, wall = _run([sys.executable, "-m", "tuneloop.cli", "run", str(path)], timeout, cwd=work)
    runs = sorted((work / "runs").glob(f"{name}*"))
    if done.returncode != 0 or not runs:
        return _failed(done, wall)
    return {"status": "ran", "wall_seconds": wall, **summarize(runs[-1])}


def summarize(run: Path) -> dict:
    """What the run recorded: its kernel choices, timings, speed, memory and task metric."""
    info = json.loads((run / "run.json").read_text())
    resolved = yaml.safe_load((run / "config.yaml").read_text())["train"]
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    speeds = sorted(e["tokens_per_second"] for e in events if "tokens_per_second" in e)
    evaluation = json.loads((run / "eval.json").read_text())
    metric = evaluation["metric"]
    key = headline(metric)
    peak_mb = max((e["peak_memory_mb"] for e in events if e.get("peak_memory_mb")), default=None)
    plan = info.get("plan") or {}
    planned = {
        "train_seconds": round(plan["train_minutes"] * 60, 1) if plan else None,
        "evaluate_seconds": round(plan["eval_minutes"] * 60, 1) if plan else None,
        "peak_memory_mb": round(plan["peak_memory_gib"] * 1024, 1) if plan else None,
    }
    return {
        "device": info["device"],
        "precision": info["precision"],
        "speed_notes": info["speed_notes"],
        "resolved": {k: resolved[k] for k in ("batch_size", "learning_rate", "quantize", "compile", "fused_kernels")},
        "timings": info["timings"],
        "median_tokens_per_second": speeds[len(speeds) // 2] if speeds else None,
        "peak_memory_mb": peak_mb,
        "plan": planned,
        "final_validation_loss": next((e["eval_loss"] for e in reversed(events) if "eval_loss" in e), None),
        "task_metric": metric,
        "base": {"loss": evaluation["base"]["metrics"]["loss"], key: evaluation["base"]["metrics"].get(key)},
        "finetuned": {"loss": evaluation["finetuned"]["metrics"]["loss"], key: evaluation["finetuned"]["metrics"][key]},
    }


def run_throughput(n_rows: int, timeout: float) -> dict:
    done, wall = _run([sys.executable, str(THROUGHPUT), "--repeats", "1", "--rows", str(n_rows)], timeout)
    if done.returncode != 0:
        return _failed(done, wall)
    written = json.loads((ROOT / "bench" / "results" / "train_throughput_cuda.json").read_text())
    return {"status": "ran", "wall_seconds": wall, "ratios": written["ratios"], "see": "train_throughput_cuda.json"}


def run_profile(n_rows: int, timeout: float) -> dict:
    """tuneloop's side of the throughput bench alone, its steps 10-13 under torch's profiler: the
    operations that take a host-bound step's time."""
    command = [sys.executable, str(THROUGHPUT), "--one", "tuneloop", "--profile", "--rows", str(n_rows)]
    done, wall = _run(command, timeout)
    lines = {
        ln.split(" ", 1)[0]: ln.split(" ", 1)[1]
        for ln in done.stdout.splitlines()
        if ln.startswith(("RESULT ", "PROFILE "))
    }
    if done.returncode != 0 or "PROFILE" not in lines:
        return _failed(done, wall)
    return {
        "status": "ran",
        "wall_seconds": wall,
        "run": json.loads(lines["RESULT"]),
        "top_host_ops": json.loads(lines["PROFILE"]),
    }


def _run(command: list[str], timeout: float, cwd: Path | None = None) -> tuple[subprocess.CompletedProcess, float]:
    """Run a part's command; (its outcome, wall seconds). A timeout raises, as subprocess.run does."""
    t = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    return done, round(time.perf_counter() - t, 1)


def _failed(done: subprocess.CompletedProcess, wall: float) -> dict:
    return {"status": "failed", "rc": done.returncode, "wall_seconds": wall, "output_tail": _tail(done)}


def _tail(done: subprocess.CompletedProcess | subprocess.TimeoutExpired) -> str:
    out, err = (x.decode(errors="replace") if isinstance(x, bytes) else x or "" for x in (done.stdout, done.stderr))
    return (out[-1500:] + "\n" + err[-2500:]).strip()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1200, help="banking77 training rows of each run")
    parser.add_argument("--throughput-rows", type=int, default=900, help="train_throughput.py --rows")
    parser.add_argument("--budget", type=float, default=420, help="seconds for all the parts together")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--parts", nargs="+", choices=PARTS, help="default: all, in this order")
    parser.add_argument(
        "--merge", action="store_true", help="keep the saved results of the parts not run now (each says when it ran)"
    )
    parser.add_argument("--note", action="append", default=[], help="a line recorded with the results (repeatable)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/tuneloop-cuda-paths"))
    parser.add_argument(
        "--smoke", action="store_true", help="check this script on a CPU (pass a tiny --model): prints, saves nothing"
    )
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available() and not args.smoke:
        raise SystemExit("no CUDA device: this benchmark records the CUDA paths (--smoke checks the script on a CPU)")

    deadline = time.monotonic() + args.budget
    args.work.mkdir(parents=True, exist_ok=True)
    config = banking77_config(args.work, args.rows, args.model)
    installed = {p: importlib.util.find_spec(p) is not None for p in OPTIONAL}
    results: dict[str, dict] = {}
    # The parts in the order given (by default: the default CUDA path and QLoRA first). A part gets
    # what is left of the budget less MIN_PART_SECONDS for each part after it, and at least that.
    parts = args.parts or ([*VARIANTS] if args.smoke else PARTS)
    for i, part in enumerate(parts):
        left = deadline - time.monotonic()
        if left < MIN_PART_SECONDS:
            results[part] = {"status": "not run", "reason": f"the {args.budget:.0f} s budget was spent"}
            continue
        timeout = max(MIN_PART_SECONDS, left - MIN_PART_SECONDS * (len(parts) - 1 - i))
        try:
            if part == "train_throughput":
                results[part] = run_throughput(args.throughput_rows, timeout)
            elif part == "profile":
                results[part] = run_profile(args.throughput_rows, timeout)
            else:
                results[part] = run_variant(part, config, args.work, timeout)
        except subprocess.TimeoutExpired as e:
            # What it printed before the kill: where it was (compiling, training, evaluating).
            results[part] = {"status": "timed out", "timeout_seconds": round(timeout), "output_tail": _tail(e)}
        results[part]["ran_at"] = datetime.now().astimezone().isoformat(timespec="seconds")
        print(f"{part}: {json.dumps(results[part])[:600]}", flush=True)
    saved = RESULTS / "cuda_paths.json"
    if args.merge and saved.exists():
        # A part run again keeps its earlier outcomes (a failure that a later commit fixed, say).
        earlier = json.loads(saved.read_text())["results"]
        for part, result in results.items():
            if part in earlier:
                before = {k: v for k, v in earlier[part].items() if k != "earlier"}
                result["earlier"] = [before, *earlier[part].get("earlier", [])]
        results = {**{k: v for k, v in earlier.items() if k not in results}, **results}
    blocked = {
        label: f"{package} is not installed on the lent machine: no CUDA path could run"
        for package, label in OPTIONAL.items()
        if not installed[package]
    }
    record = {
        "settings": {
            "data": f"banking77: {args.rows} training rows, 100 validation, 200 test (random, seed 0)",
            "model": args.model,
            "budget_seconds": args.budget,
        },
        "notes": args.note,
        "cuda_available": torch.cuda.is_available(),
        "installed": installed,
        "blocked": blocked,
        "results": results,
    }
    if args.smoke:
        print(json.dumps(record, indent=1))
        return
    path = save("cuda_paths", record, extra_packages=("bitsandbytes", "liger-kernel", "flash-attn", "vllm", "triton"))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
