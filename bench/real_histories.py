"""Real training histories for the doctor's labelled suite, labelled by construction.

    .venv/bin/python bench/real_histories.py        # ~3 min on 2 cores

Trains the tiny test model (SmolLM2's tokenizer, random 2-layer weights) on the quickstart
tickets with settings chosen to produce each verdict, as the slow test does, and writes each
run's metrics.jsonl to tests/doctor/histories/real/<label>-<n>.jsonl. The label comes from how
the run was set up, not from any diagnoser: a learning rate of 1e-7 cannot fit (underfitting),
5.0 without clipping explodes (diverging), 30 epochs of full fine-tuning on 40 rows memorise
(overfitting), a moderate LoRA run learns (healthy). tests/doctor/histories.py adds them to the
suite that the tests and bench/doctor_peers.py run.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from rich.console import Console

from tuneloop.cli import quiet_libraries
from tuneloop.config import config_from_dict
from tuneloop.models import resolve_model
from tuneloop.models.tiny import build_tiny_model
from tuneloop.pipeline import run_loop

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "doctor" / "histories" / "real"
TICKETS = ROOT / "examples" / "quickstart" / "tickets.jsonl"
CASES = {  # name: (label, rows, train settings)
    "overfitting-1": ("overfitting", 40, {"method": "full", "epochs": 30, "learning_rate": 3e-3, "batch_size": 4}),
    "underfitting-1": ("underfitting", 80, {"epochs": 2, "learning_rate": 1e-7, "batch_size": 4}),
    "diverging-1": (
        "diverging",
        80,
        {"method": "full", "epochs": 2, "learning_rate": 5.0, "batch_size": 4, "max_grad_norm": 1e6},
    ),
    "healthy-1": ("healthy", 160, {"epochs": 3, "learning_rate": 2e-2, "batch_size": 8}),
    "healthy-2": ("healthy", 200, {"epochs": 4, "learning_rate": 1e-2, "batch_size": 8}),
}


def main() -> None:
    quiet_libraries()
    work = Path(tempfile.mkdtemp(prefix="real-histories-"))
    model = build_tiny_model(work / "tiny", resolve_model("smollm2-135m-instruct"))
    rows = TICKETS.read_text().splitlines()
    OUT.mkdir(parents=True, exist_ok=True)
    for name, (label, n, train) in CASES.items():
        data = work / f"{name}.jsonl"
        data.write_text("\n".join(rows[:n]) + "\n")
        config = config_from_dict(
            {
                "model": str(model),
                "runs_dir": str(work / "runs"),
                "run_name": name,
                "data": {"path": str(data), "max_seq_len": 256},
                "train": {"log_every": 1, "warmup_ratio": 0.0, "metric_rows": 0, **train},
            }
        )
        result = run_loop(config, Console(quiet=True), evaluate=False)
        shutil.copy(result.run.metrics_file, OUT / f"{name}.jsonl")
        print(name, label, OUT / f"{name}.jsonl")


if __name__ == "__main__":
    main()
