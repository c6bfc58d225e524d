"""Reinforcement fine-tuning (train.method: grpo) from a supervised parent that leaves headroom: does
the task metric as the reward raise the held-out task metric over the parent?

    .venv/bin/python bench/grpo.py                     # the parent (the quickstart, 1 epoch), then GRPO
    .venv/bin/python bench/grpo.py --parent RUN_DIR    # GRPO from an existing parent run

The parent is the shipped quickstart as a new user runs it (1 epoch of SmolLM2-135M-Instruct on the
480 support tickets; field accuracy ~0.75 on the test split: headroom). GRPO continues its adapter
(train.init_from) on the same training prompts, rewarded by the task metric (json_fields' per-answer
field accuracy: grpo.graders' default), with the same data splits. Recorded: the test split's field
accuracy of the parent and of the GRPO run with the paired bootstrap interval of the difference
(`tuneloop compare`), both runs' minutes, the plan's training minutes against the measured ones, the
reward curves' summary and what the doctor said.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from environment import save
from rich.console import Console

import tuneloop
from tuneloop.cli import quiet_libraries
from tuneloop.config import headline, load_config

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "examples" / "quickstart" / "quickstart.yaml"


def timed_run(config) -> tuple[tuneloop.Run, float]:
    t = time.perf_counter()
    run = tuneloop.run(config, console=Console())
    return run, round((time.perf_counter() - t) / 60, 2)


def minutes(run) -> dict:
    return {k: round(v / 60, 2) for k, v in run.timings.items()}


def curve(records: list[dict], name: str) -> dict | None:
    points = [r[name] for r in records if name in r]
    if not points:
        return None
    third = max(1, len(points) // 3)
    return {
        "first_third_mean": round(sum(points[:third]) / third, 4),
        "last_third_mean": round(sum(points[-third:]) / third, 4),
        "points": len(points),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--parent", type=Path, help="a finished quickstart run to start from")
    parser.add_argument("--epochs", type=float, default=1.0, help="GRPO's passes over the training prompts")
    parser.add_argument("--lr", type=float, default=None, help="GRPO's learning rate (default: grpo's auto)")
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path("/tmp/tuneloop-bench-grpo"))
    args = parser.parse_args()
    quiet_libraries()

    parent_minutes = None
    if args.parent is None:
        config = load_config(QUICKSTART)
        config.runs_dir = args.out / "runs"
        parent, parent_minutes = timed_run(config)
        parent_dir = parent.path
    else:
        parent_dir = args.parent.resolve()
    overrides = [
        "train.method=grpo",
        f"train.init_from={parent_dir}",
        f"train.epochs={args.epochs}",
        f"grpo.num_generations={args.generations}",
        "run_name=grpo",
    ]
    if args.lr is not None:
        overrides.append(f"train.learning_rate={args.lr}")
    config = load_config(QUICKSTART, overrides)
    config.runs_dir = args.out / "runs"
    run, wall = timed_run(config)

    comparison = tuneloop.compare(parent_dir, run)
    key = headline(run.evaluation["metric"])
    records = run.metrics
    diagnosis = run.diagnose()
    plan = run.info.get("plan", {})
    measured = run.timings["train"] / 60
    parent_run = tuneloop.open_run(parent_dir)
    result = {
        "parent": {
            "run": str(parent_dir),
            "test": parent_run.evaluation["finetuned"]["metrics"][key],
            "base_test": parent_run.evaluation["base"]["metrics"][key],
            "minutes": {"wall": parent_minutes, **minutes(parent_run)},
        },
        "grpo": {
            "run": str(run.path),
            "config": {
                "epochs": args.epochs,
                "learning_rate": run.config.train.learning_rate,
                "batch_size": run.config.train.batch_size,
                "num_generations": args.generations,
                "max_completion_length": run.config.eval.max_new_tokens,
                "graders": run.config.grpo.graders,
            },
            "test": run.evaluation["finetuned"]["metrics"][key],
            "minutes": {"wall": wall, **minutes(run)},
            "plan_train_minutes": plan.get("train_minutes"),
            "plan_ratio_train": round(measured / plan["train_minutes"], 3) if plan.get("train_minutes") else None,
            "curves": {
                name: curve(records, name)
                for name in (
                    "train_reward",
                    "train_reward_std",
                    "train_flat_groups",
                    "train_entropy",
                    "train_completion_length",
                    f"eval_{key}",
                )
            },
            "doctor": {
                "verdict": diagnosis.verdict,
                "findings": [f.message for f in diagnosis.findings],
                "recommendations": [(r.param, r.to, r.minutes) for r in diagnosis.recommendations if r.applied],
            },
        },
        "metric": key,
        "test_rows": run.evaluation["n_test"],
        "difference": comparison.result["metrics"].get(key),
    }
    print(result)
    save("grpo", result)


if __name__ == "__main__":
    main()
