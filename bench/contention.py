"""Training throughput when other CPU-bound processes share the machine (issue 19).

    .venv/bin/python bench/contention.py      # ~25 min; bench/results/contention.json

A `tuneloop train` run (SmolLM2-135M, LoRA, 240 banking77 rows, 2 epochs, no continuous
evaluation) is timed alone, then beside one and two busy competitors: single-threaded Python
loops, the kind of load an editor, a browser or a second run puts on a laptop. Two settings:
`before`, every core and OpenMP's default spin-wait, as tuneloop ran until tuneloop/cpu.py
(TUNELOOP_THREADS fixed at the core count gives exactly that); and `shipped`, which takes the
free cores at start (waiting passively when some are busy) and follows them while training.
A last run starts its competitor 40 s into training, so only the governor can react: its
tokens/s is the median of the second half of the logged points. Tokens/s is otherwise the median
over the run's logged training points.
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


def train(folder: Path, env: dict, late_competitor: float | None = None) -> float:
    runs = folder / f"runs-{time.time_ns()}"
    process = subprocess.Popen(
        [sys.executable, "-m", "tuneloop.cli", "train", "c.yaml", "--set", f"runs_dir={runs}"],
        cwd=folder,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    busy = None
    if late_competitor is not None:
        time.sleep(late_competitor)
        busy = subprocess.Popen([sys.executable, "-c", BUSY])
    try:
        _, stderr = process.communicate(timeout=1200)
    finally:
        if busy:
            busy.kill()
    assert process.returncode == 0, stderr[-2000:]
    [run] = runs.iterdir()
    speeds = [
        r["tokens_per_second"]
        for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
        if "tokens_per_second" in r
    ]
    return statistics.median(speeds[len(speeds) // 2 :] if late_competitor is not None else speeds)


def main() -> None:
    result: dict = {"competitors": {}}
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_data(Path(tmp))
        train(folder, {})  # warm the model cache
        for policy, env in (("before", {"TUNELOOP_THREADS": str(os.cpu_count())}), ("shipped", {})):
            for n in (0, 1, 2):
                busy = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(n)]
                try:
                    speed = train(folder, env)
                finally:
                    for b in busy:
                        b.kill()
                result["competitors"].setdefault(str(n), {})[policy] = round(speed, 1)
                print(f"{policy:8} {n} competitor(s): {speed:.0f} tokens/s", flush=True)
        late = train(folder, {}, late_competitor=40)
        result["shipped_competitor_after_40s"] = round(late, 1)
        print(f"shipped, a competitor from 40 s: {late:.0f} tokens/s in the second half", flush=True)
    alone = result["competitors"]["0"]
    result["ratio_competitor_after_40s"] = round(late / alone["shipped"], 2)
    result["ratio_with_one_competitor"] = {p: round(result["competitors"]["1"][p] / alone[p], 2) for p in alone}
    result["ratio_with_two_competitors"] = {p: round(result["competitors"]["2"][p] / alone[p], 2) for p in alone}
    result["target_with_one_competitor"] = 0.4
    print(json.dumps(result, indent=2))
    print(f"wrote {save('contention', result)}")


if __name__ == "__main__":
    main()
