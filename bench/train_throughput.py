"""Training throughput: tuneloop's defaults against a plain TRL SFTTrainer script, one after the other.

    .venv/bin/python bench/train_throughput.py [--rows 448] [--repeats 3]  # writes bench/results/train_throughput.json
    python bench/train_throughput.py --device cuda                          # writes ..._cuda.json

Same model (SmolLM2-135M-Instruct), same banking77 rows (from ../shared/datasets, mapped to
prompt/completion with a short system prompt), 1 epoch, LoRA r=16 alpha=32 on all linear layers.
tuneloop runs at its defaults (`batch_size: auto` and `learning_rate: auto`, as `tuneloop run`
resolves them for this data: the headline `tuneloop` and `ratios`), and also at the baseline's
batch 8 and learning rate 2e-4 (`tuneloop_batch8`). tuneloop's side takes its own path: its
tokenization of the learned spans, its trainer, its compile rule, its learning-rate rule. The baseline is the script
a user writes first: TRL's SFTConfig defaults, plus `use_cpu=True` on a CPU (the first thing TRL's
own error asks for there). Each side runs in its own process, so its peak RSS is its own.
On CUDA both sides train on the GPU (tuneloop with its CUDA kernels: Liger where installed,
padding-free batches) and the peak is the GPU's allocated memory.

Each side runs `--repeats` times (3 by default), the sides taking turns, and the run with the median
tokens/s is the side's result (all the runs' tokens/s are kept): on this shared 2-core machine one
run of the same side varies by up to +-10% (TRL took 114.9-127.9 s over three sessions), and taking
turns spreads a slow spell of the machine over every side.

Steady-state tokens/s: tokens / (steps x the median step time), which leaves out the compile
and warm-up of the first steps; the headline ratio is over all of train(), compile included.

MFU: 4 x N x tokens / time (a LoRA step is a forward, 2N FLOPs per token, plus the backward to
the activations, ~2N; the frozen weights get no gradient), divided by the machine's matmul peak:
the faster of bf16 and fp32, both measured at the start of the same invocation (on a CPU whose
bf16 instructions are slower than fp32, tuneloop computes in fp32, so the bf16 rate alone would
not be the limit).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from environment import save

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
SYSTEM = "Classify the banking customer's message into one intent label."
LR, BATCH, EPOCHS, R, ALPHA = 2e-4, 8, 1, 16, 32
N_VALIDATION = 64


def rows(n_train: int) -> tuple[list[dict], list[dict]]:
    """Every 10th banking77 row (the file is sorted by intent, so this spans all 77), as
    conversational prompt/completion."""
    with open(SHARED / "banking77" / "train.csv", newline="", encoding="utf-8") as f:
        picked = list(csv.DictReader(f))[::10][: n_train + N_VALIDATION]
    data = [
        {
            "prompt": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": r["text"]}],
            "completion": [{"role": "assistant", "content": r["category"]}],
        }
        for r in picked
    ]
    return data[N_VALIDATION:], data[:N_VALIDATION]


def matmul_peak_gflops(device: str = "cpu", dtype: str = "bf16", repeats: int = 20) -> float:
    """Products of random n x n matrices in `dtype` (n = 2048 on CPU, 8192 on CUDA, where a
    smaller one does not fill the chip)."""
    import torch

    n = 8192 if device == "cuda" else 2048
    a, b = (
        torch.randn(n, n, dtype=getattr(torch, {"bf16": "bfloat16", "fp32": "float32"}[dtype]), device=device)
        for _ in range(2)
    )
    for _ in range(3):
        a @ b
    synchronize(device)
    t = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    return 2 * n**3 * repeats / (time.perf_counter() - t) / 1e9


def synchronize(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def train_tokens(dataset) -> int:
    """Tokens the model processes in one epoch: the tokenized training set's lengths."""
    return sum(len(ids) for ids in dataset["input_ids"])


def run_tuneloop(n_train: int, out: Path, batch: str, device: str, profile: bool = False) -> dict:
    """tuneloop's own path (pipeline.py): its tokenization of the learned spans, its trainer, its
    compile rule; `batch` a number, or auto as `tuneloop run` resolves it, and the learning rate
    `auto` resolves for that batch (train/auto.py; 2e-4 at batch 8, as the baseline's)."""
    from transformers import AutoConfig

    from tuneloop.cli import quiet_libraries
    from tuneloop.config import LoraConfig, TrainConfig
    from tuneloop.data import Example
    from tuneloop.models import choose_precision, load_model, load_tokenizer, resolve_model
    from tuneloop.train import build_trainer, to_training_rows
    from tuneloop.train.auto import auto_batch_size, auto_learning_rate
    from tuneloop.train.memory import free_memory_bytes
    from tuneloop.train.speed import COMPILE_MIN_TOKENS, compile_layers

    quiet_libraries()
    folder = resolve_model("smollm2-135m-instruct")
    tokenizer = load_tokenizer(folder)
    train, val = (
        to_training_rows([Example(r["prompt"] + r["completion"], i + 1) for i, r in enumerate(part)], tokenizer)
        for part in rows(n_train)
    )
    if batch == "auto":
        lengths = sorted(len(ids) for ids in train["input_ids"])
        p95 = lengths[int(0.95 * (len(lengths) - 1))]
        size = auto_batch_size(len(train), p95, AutoConfig.from_pretrained(folder), free_memory_bytes(device))
    else:
        size = int(batch)
    precision = choose_precision("auto", device)
    will_compile = train_tokens(train) * EPOCHS >= COMPILE_MIN_TOKENS  # compile: auto
    trainer = build_trainer(
        load_model(folder, precision, device),
        tokenizer,
        train,
        val,
        train=TrainConfig(
            epochs=EPOCHS,
            batch_size=size,
            learning_rate=auto_learning_rate("lora", size),
            eval_every=10_000,
            log_every=5,
            compile=will_compile,
        ),
        lora=LoraConfig(r=R, alpha=ALPHA),
        max_seq_len=1024,
        precision=precision,
        output_dir=out,
        device=device,
    )
    # The baseline saves no checkpoints and runs no validation pass while training: compare
    # training alone (both sides' validation loss is measured after, the same way).
    trainer.args.save_strategy = "no"
    trainer.args.eval_strategy = "no"
    if will_compile:
        compile_layers(trainer.model)
    label = f"tuneloop ({precision.value}, batch {size}{' = auto' if batch == 'auto' else ''})"
    return {**_measure(trainer, label, device, profile), "learning_rate": trainer.args.learning_rate}


def run_trl(n_train: int, out: Path, device: str, profile: bool = False) -> dict:
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from tuneloop.cli import quiet_libraries
    from tuneloop.models import resolve_model

    quiet_libraries()
    train, val = rows(n_train)
    trainer = SFTTrainer(
        model=str(resolve_model("smollm2-135m-instruct")),
        args=SFTConfig(
            output_dir=str(out),
            use_cpu=device == "cpu",
            num_train_epochs=EPOCHS,
            learning_rate=LR,
            per_device_train_batch_size=BATCH,
            report_to="none",
            save_strategy="no",
        ),
        train_dataset=Dataset.from_list(train),
        eval_dataset=Dataset.from_list(val),
        peft_config=LoraConfig(r=R, lora_alpha=ALPHA, target_modules="all-linear", task_type="CAUSAL_LM"),
    )
    return {**_measure(trainer, "plain TRL defaults", device, profile), "learning_rate": trainer.args.learning_rate}


def _measure(trainer, label: str, device: str, profile: bool = False) -> dict:
    import torch

    losses, step_ends = [], []

    from transformers import TrainerCallback

    class Record(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                losses.append(logs["loss"])

        def on_step_end(self, args, state, control, **kwargs):
            synchronize(device)  # a step's end is when its GPU work ends, not its launch
            step_ends.append(time.perf_counter())

    trainer.add_callback(Record())
    if profile:
        trainer.add_callback(profile_callback(device))
    tokens = train_tokens(trainer.train_dataset)
    t = time.perf_counter()
    trainer.train()
    synchronize(device)
    seconds = time.perf_counter() - t
    validation_loss = trainer.evaluate()["eval_loss"]
    n_params = sum(p.numel() for p in trainer.model.parameters())
    # Steady state: the median step, so compilation and warm-up (the first steps) do not count.
    step_seconds = sorted(b - a for a, b in itertools.pairwise(step_ends))
    median_step = step_seconds[len(step_seconds) // 2]
    return {
        "label": label,
        "train_seconds": round(seconds, 1),
        "tokens": tokens,
        "tokens_per_second": round(tokens * EPOCHS / seconds, 1),
        "median_step_seconds": round(median_step, 3),
        "steady_tokens_per_second": round(tokens * EPOCHS / (median_step * len(step_ends)), 1),
        "final_train_loss": round(losses[-1], 4) if losses else None,
        "validation_loss": round(validation_loss, 4),
        "parameters": n_params,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if device == "cuda" else None,
        "steps": trainer.state.global_step,
    }


PROFILED_STEPS = range(10, 14)  # past the compile and warm-up


def profile_callback(device: str):
    """A callback that runs torch's profiler over PROFILED_STEPS and prints its top operations by
    host (self CPU) time, per step, as a `PROFILE` line: where a host-bound step's time goes."""
    import torch
    from transformers import TrainerCallback

    activities = [torch.profiler.ProfilerActivity.CPU]
    if device == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)

    class _Profile(TrainerCallback):
        profiler = torch.profiler.profile(activities=activities)

        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == PROFILED_STEPS.start:
                self.profiler.start()
            elif state.global_step == PROFILED_STEPS.stop:
                synchronize(device)
                self.profiler.stop()
                steps = len(PROFILED_STEPS)
                rows = sorted(self.profiler.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
                top = [
                    {
                        "name": e.key[:80],
                        "calls_per_step": e.count / steps,
                        "self_cpu_ms_per_step": round(e.self_cpu_time_total / 1000 / steps, 2),
                        "cpu_total_ms_per_step": round(e.cpu_time_total / 1000 / steps, 2),
                        "self_device_ms_per_step": round(getattr(e, "self_device_time_total", 0) / 1000 / steps, 2),
                    }
                    for e in rows[:30]
                ]
                print("PROFILE " + json.dumps(top), flush=True)

    return _Profile()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=448, help="training rows (plus 64 validation rows)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each side; the median run is kept")
    parser.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda where there is one, else cpu")
    parser.add_argument("--one", choices=["tuneloop", "tuneloop_batch8", "trl"], help="run one side, print its result")
    parser.add_argument(
        "--profile",
        action="store_true",
        help=f"with --one: profile steps {PROFILED_STEPS.start}-{PROFILED_STEPS.stop - 1}",
    )
    args = parser.parse_args()
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    out = Path("/tmp/tuneloop-bench-train")
    if args.one:
        if args.one == "trl":
            result = run_trl(args.rows, out / args.one, device, args.profile)
        else:
            batch = str(BATCH) if args.one == "tuneloop_batch8" else "auto"
            result = run_tuneloop(args.rows, out / args.one, batch, device, args.profile)
        print("RESULT " + json.dumps(result))
        return
    peaks = {dtype: matmul_peak_gflops(device, dtype) for dtype in ("bf16", "fp32")}
    peak = max(peaks.values())
    print(f"matmul peak measured: bf16 {peaks['bf16']:.0f}, fp32 {peaks['fp32']:.0f} GFLOP/s")
    runs: dict[str, list[dict]] = {"tuneloop": [], "tuneloop_batch8": [], "trl": []}
    for repeat, side in itertools.product(range(args.repeats), runs):
        done = subprocess.run(
            [sys.executable, __file__, "--one", side, "--rows", str(args.rows), "--device", device],
            capture_output=True,
            text=True,
        )
        line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if line is None:
            raise SystemExit(f"{side} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        s = json.loads(line[len("RESULT ") :])
        runs[side].append(s)
        print(f"run {repeat + 1}/{args.repeats}, {s['label']}: {s['tokens_per_second']} tok/s, {s['train_seconds']} s")
    sides = {}
    for side, results in runs.items():
        s = sorted(results, key=lambda r: r["tokens_per_second"])[len(results) // 2]
        s["mfu"] = round(4 * s["parameters"] * s["tokens_per_second"] / (peak * 1e9), 4)
        s["runs_tokens_per_second"] = [r["tokens_per_second"] for r in results]
        sides[side] = s
        print(
            f"{s['label']} (median of {len(results)}): {s['tokens_per_second']} tok/s, {s['train_seconds']} s, "
            f"peak RSS {s['peak_rss_mb']} MB, peak GPU {s['peak_gpu_mb']} MB, train loss {s['final_train_loss']}, "
            f"validation loss {s['validation_loss']}, MFU {s['mfu']:.1%}"
        )
    base = sides["trl"]

    def against_trl(ours: dict) -> dict:
        return {
            "tokens_per_second": round(ours["tokens_per_second"] / base["tokens_per_second"], 2),
            "steady_tokens_per_second": round(ours["steady_tokens_per_second"] / base["steady_tokens_per_second"], 2),
            "peak_rss": round(ours["peak_rss_mb"] / base["peak_rss_mb"], 2),
            **({"peak_gpu": round(ours["peak_gpu_mb"] / base["peak_gpu_mb"], 2)} if device == "cuda" else {}),
            "validation_loss": round(ours["validation_loss"] / base["validation_loss"], 4),
        }

    ratios, ratios_batch8 = against_trl(sides["tuneloop"]), against_trl(sides["tuneloop_batch8"])
    print(f"ratios tuneloop (defaults) / TRL: {ratios}; at TRL's batch and learning rate: {ratios_batch8}")
    path = save(
        "train_throughput" if device == "cpu" else f"train_throughput_{device}",
        {
            "settings": {
                "device": device,
                "model": "smollm2-135m-instruct",
                "data": "banking77 every 10th row",
                "train_rows": args.rows,
                "validation_rows": N_VALIDATION,
                "epochs": EPOCHS,
                "batch_size": f"tuneloop auto; tuneloop_batch8 and TRL {BATCH}",
                "learning_rate": f"tuneloop auto; tuneloop_batch8 and TRL {LR}",
                "lora_r": R,
                "lora_alpha": ALPHA,
                "repeats": args.repeats,
            },
            "matmul_peak_gflops": {dtype: round(gflops, 1) for dtype, gflops in peaks.items()},
            "tuneloop": sides["tuneloop"],
            "tuneloop_batch8": sides["tuneloop_batch8"],
            "trl_defaults": base,
            "ratios": ratios,
            "ratios_batch8": ratios_batch8,
            "targets": {
                "tokens_per_second_ratio": ">= 5 (issue 19)",
                "mfu": ">= 0.30 at tuneloop's defaults",
                "validation_loss_within": "2%",
                "peak_rss_ratio": "<= 1",
            },
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
