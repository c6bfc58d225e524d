"""Training throughput when other CPU-bound processes share the machine (issue 19, first step).

    .venv/bin/python bench/contention.py      # bench/results/contention.json

A `tuneloop train` run (SmolLM2-135M, LoRA, 240 banking77 rows, 2 epochs, no continuous
evaluation) is timed alone, then beside one and two busy competitors: single-threaded Python
loops, the kind of load an editor, a browser or a second run puts on a laptop. Each setting is
measured as shipped, and with OMP_WAIT_POLICY=PASSIVE. The passive policy makes OpenMP worker
threads sleep at barriers instead of spinning, so they do not hold a core while they wait for a
thread the OS has descheduled. Tokens/s is the median over the run's logged training points.
"""

from __future__ import annotations

import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from environment import save

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
BUSY = "while True:\n    sum(i * i for i in range(10000))\n"


def write_data(folder: Path) -> Path:
    with open(SHARED / "banking77" / "train.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))[:240]
    path = folder / "banking.jsonl"
    path.write_text(
        "".join(
            json.dumps(
                {"messages": [{"role": "user", "content": r["text"]}, {"role": "assistant", "content": r["category"]}]}
            )
            + "\n"
            for r in rows
        )
    )
    (folder / "c.yaml").write_text(
        "data: {path: banking.jsonl}\ntrain: {epochs: 2, batch_size: 8, metric_rows: 0, log_every: 2, "
        "eval_every: 1000, compile: false, doctor: off}\n"
    )
    return folder


def train(folder: Path, env: dict) -> float:
    runs = folder / f"runs-{time.time_ns()}"
    done = subprocess.run(
        [sys.executable, "-m", "tuneloop.cli", "train", "c.yaml", "--set", f"runs_dir={runs}"],
        cwd=folder,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    [run] = runs.iterdir()
    speeds = [
        r["tokens_per_second"]
        for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
        if "tokens_per_second" in r
    ]
    return statistics.median(speeds)


def main() -> None:
    result: dict = {"competitors": {}}
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_data(Path(tmp))
        train(folder, {})  # warm the model cache
        for policy, env in (("default", {}), ("passive", {"OMP_WAIT_POLICY": "PASSIVE"})):
            for n in (0, 1, 2):
                busy = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(n)]
                try:
                    speed = train(folder, env)
                finally:
                    for b in busy:
                        b.kill()
                result["competitors"].setdefault(str(n), {})[policy] = round(speed, 1)
                print(f"{policy:8} {n} competitor(s): {speed:.0f} tokens/s", flush=True)
    alone = result["competitors"]["0"]
    result["ratio_with_one_competitor"] = {p: round(result["competitors"]["1"][p] / alone[p], 2) for p in alone}
    result["ratio_with_two_competitors"] = {p: round(result["competitors"]["2"][p] / alone[p], 2) for p in alone}
    result["target_with_one_competitor"] = 0.4
    print(json.dumps(result, indent=2))
    print(f"wrote {save('contention', result)}")


if __name__ == "__main__":
    main()
