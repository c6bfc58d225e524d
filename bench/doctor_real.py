"""Does autotune, aiming at the task metric, find a better model on real data within a budget?

    .venv/bin/python bench/doctor_real.py                      # all cases, ~60 min on 2 cores
    .venv/bin/python bench/doctor_real.py --case banking77     # one case; the others' results are kept

Each case starts autotune from a configuration and gives it a fixed budget of minutes; the
default SmolLM2-135M-Instruct trains on 2 CPU cores. Cases:
  quickstart  the shipped config as a new user runs it (support tickets -> JSON; 1 epoch)
  banking77   intent classification, 77 classes; deliberately poor: learning rate 1e-5 (a tenth of
              the guides' LoRA floor), 1 epoch
  dialogsum   dialogue summarisation (ROUGE-L); deliberately poor: a rank-2 adapter at alpha 2 with
              learning rate 2e-5
The real data are read from ../shared/datasets (a stratified or seeded subset written to a
temporary folder, never into the repository). Runs are kept by the validation task metric;
the test split is evaluated once at the end for the base model, the first run and the best.
Recorded per case: starting and best validation metric, test metric of base / first / best run,
runs and minutes used, and the lineage of changes. Target: the best run beats the starting
run on the test metric in at least 80% of cases; the quickstart reaches field accuracy >= 0.85
within 25 minutes.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from environment import RESULTS, banking77_per_intent, save
from rich.console import Console

from tuneloop.cli import quiet_libraries
from tuneloop.config import config_from_dict, load_config
from tuneloop.tune import autotune

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"


def quickstart(work: Path) -> tuple[object, float]:
    config = load_config(ROOT / "examples" / "quickstart" / "quickstart.yaml")
    config.runs_dir = work / "runs"
    return config, 25.0


def banking77(work: Path) -> tuple[object, float]:
    """10 messages per intent (770 rows): small enough for minutes on a CPU, all 77 classes."""
    rows = banking77_per_intent(10)
    path = work / "banking77.jsonl"
    path.write_text(
        "".join(
            json.dumps({"prompt": f"Banking intent of this message: {r['text']}", "completion": r["category"]}) + "\n"
            for r in rows
        )
    )
    return config_from_dict(
        {
            "run_name": "banking77",
            "runs_dir": str(work / "runs"),
            "data": {"path": str(path), "validation_size": 0.1, "test_size": 0.15, "max_seq_len": 256},
            "train": {"epochs": 1, "learning_rate": 1e-5, "batch_size": 8},
            "eval": {"batch_size": 32},
        }
    ), 15.0


def dialogsum(work: Path) -> tuple[object, float]:
    # The shorter dialogues (up to 1,200 characters, ~300 tokens): minutes of training on a CPU.
    rows = [json.loads(line) for line in (DATASETS / "dialogsum" / "dev.jsonl").read_text().splitlines()]
    rows = random.Random(0).sample([r for r in rows if len(r["dialogue"]) <= 1200], 300)
    path = work / "dialogsum.jsonl"
    path.write_text(
        "".join(
            json.dumps(
                {
                    "prompt": f"Summarise this dialogue in one or two sentences.\n\n{r['dialogue']}",
                    "completion": r["summary"],
                }
            )
            + "\n"
            for r in rows
        )
    )
    return config_from_dict(
        {
            "run_name": "dialogsum",
            "runs_dir": str(work / "runs"),
            "data": {"path": str(path), "validation_size": 30, "test_size": 45, "max_seq_len": 512},
            "lora": {"r": 2, "alpha": 2},
            "train": {"epochs": 1, "learning_rate": 2e-5, "batch_size": 8},
            "eval": {"batch_size": 16},
        }
    ), 15.0


CASES = {"quickstart": quickstart, "banking77": banking77, "dialogsum": dialogsum}


def continuous_evaluation_cost(run: Path) -> dict:
    """What continuous evaluation cost in this run: seconds, share of training, evaluations scored."""
    info = json.loads((run / "run.json").read_text())
    ce = info.get("continuous_evaluation") or {}
    scored = len(ce.get("scored_steps", []))
    return {
        "train_seconds": info.get("timings", {}).get("train"),
        "metric_seconds": ce.get("seconds"),
        "metric_share_of_training": ce.get("share_of_training"),
        "metric_scored": f"{scored}/{scored + len(ce.get('skipped_steps', []))}",
    }


def run_case(name: str, work: Path) -> dict:
    config, minutes = CASES[name](work)
    t = time.perf_counter()
    tune = autotune(config, max_runs=10, max_minutes=minutes, console=Console(stderr=True))
    used = (time.perf_counter() - t) / 60
    first, best = tune.attempts[0], tune.best
    test, key = tune.test, tune.test["key"]
    out = {
        "budget_minutes": minutes,
        "minutes_used": round(used, 1),
        "runs": len(tune.attempts),
        "selected_by": tune.select,
        "metric": key,
        "stopped_because": tune.stopped_because,
        "start_config": {
            "train": config.train.model_dump(include={"epochs", "learning_rate", "batch_size"}),
            "lora": config.lora.model_dump(include={"r", "alpha"}),
        },
        "val_metric": {"start": first.metric_value, "best": best.metric_value},
        "test_metric": {side: test[side]["metrics"][key] for side in ("base", "first", "best")},
        "test_n": test["n"],
        "best_beats_start_on_test": test["best"]["metrics"][key] > test["first"]["metrics"][key],
        "lineage": [
            {
                "run": Path(a.run).name,
                "changes": a.changes,
                "verdict": a.verdict,
                "val_metric": a.metric_value,
                "best_val_loss": a.best_val_loss,
                "minutes": round(a.seconds / 60, 1),
                "estimated_minutes": a.estimated_minutes,
                **continuous_evaluation_cost(Path(a.run)),
            }
            for a in tune.attempts
        ],
        "skipped": tune.skipped,
    }
    print(name, json.dumps({k: out[k] for k in ("val_metric", "test_metric", "runs", "minutes_used")}), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--case", choices=list(CASES), action="append")
    args = parser.parse_args()
    quiet_libraries()
    work = Path(tempfile.mkdtemp(prefix="doctor-real-"))
    previous = RESULTS / "doctor_real.json"
    cases = json.loads(previous.read_text())["cases"] if previous.exists() else {}
    for name in args.case or list(CASES):
        cases[name] = run_case(name, work)
        beat = [c["best_beats_start_on_test"] for c in cases.values()]
        quick = cases.get("quickstart", {})
        shares = [
            a["metric_share_of_training"]
            for c in cases.values()
            for a in c["lineage"]
            if a.get("metric_share_of_training") is not None
        ]
        result = {
            "cases": cases,
            "best_beats_start": f"{sum(beat)}/{len(beat)}",
            "continuous_evaluation_share": {
                "median": sorted(shares)[len(shares) // 2] if shares else None,
                "max": max(shares, default=None),
                "runs": len(shares),
            },
            "quickstart_field_accuracy": quick.get("test_metric", {}).get("best"),
            "quickstart_minutes": quick.get("minutes_used"),
        }
        print(save("doctor_real", result))  # after every case: a long benchmark keeps what it measured


if __name__ == "__main__":
    main()
