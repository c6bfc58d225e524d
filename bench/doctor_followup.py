"""Does following the doctor's advice help? Deliberately broken runs, then the run it recommends.

    .venv/bin/python bench/doctor_followup.py      # ~6 min on 2 cores; bench/results/doctor_followup.json

Each case trains the tiny 2-layer model (tests' model: SmolLM2's tokenizer, random weights) on
the quickstart tickets, diagnoses the run, and lets `autotune` follow the doctor for a budget of
three runs: the main recommendation first, then alternatives if it did not help. Recorded per
case: the verdict, each attempt's change and best validation loss, and whether the first
follow-up (one application of the recommendation) beat the original run.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from environment import save
from rich.console import Console

from tuneloop.config import config_from_dict
from tuneloop.models import resolve_model
from tuneloop.models.tiny import build_tiny_model
from tuneloop.tune import autotune

TICKETS = Path(__file__).resolve().parents[1] / "examples" / "quickstart" / "tickets.jsonl"
CASES = {  # verdict: (rows, train settings) — as in the slow test, with enough rows to trust validation
    "overfitting": (200, {"method": "full", "epochs": 20, "learning_rate": 3e-3, "batch_size": 8}),
    "underfitting": (200, {"epochs": 2, "learning_rate": 1e-7, "batch_size": 8}),
    "diverging": (200, {"method": "full", "epochs": 2, "learning_rate": 5.0, "batch_size": 8, "max_grad_norm": 1e6}),
}


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="doctor-followup-"))
    model = build_tiny_model(work / "tiny", resolve_model("smollm2-135m-instruct"))
    rows = TICKETS.read_text().splitlines()
    cases = {}
    for verdict, (n, train) in CASES.items():
        data = work / f"{verdict}.jsonl"
        data.write_text("\n".join(rows[:n]) + "\n")
        config = config_from_dict(
            {
                "model": str(model),
                "runs_dir": str(work / "runs"),
                "run_name": verdict,
                "data": {"path": str(data), "max_seq_len": 256},
                "train": {"log_every": 1, "warmup_ratio": 0.0, "doctor": "watch", **train},
            }
        )
        tune = autotune(config, max_runs=3, select="val_loss", evaluate_test=False, console=Console(quiet=True))
        first, *rest = tune.attempts
        cases[verdict] = {
            "verdict": first.verdict,
            "attempts": [
                {
                    "change": {s["param"]: [s["from"], s["to"]] for s in a.step},
                    "verdict": a.verdict,
                    "best_val_loss": a.best_val_loss,
                }
                for a in tune.attempts
            ],
            "first_followup_improved": bool(rest) and rest[0].best_val_loss < first.best_val_loss,
            "best_improved": tune.best is not first,
        }
        print(verdict, [(a.verdict, a.best_val_loss) for a in tune.attempts], flush=True)
    improved = sum(c["first_followup_improved"] for c in cases.values())
    result = {
        "cases": cases,
        "first_followup_improved": f"{improved}/{len(cases)}",
        "best_within_three_runs_improved": f"{sum(c['best_improved'] for c in cases.values())}/{len(cases)}",
    }
    print(
        result["first_followup_improved"],
        "improved after one recommendation;",
        result["best_within_three_runs_improved"],
        "within three runs",
    )
    print(save("doctor_followup", result))


if __name__ == "__main__":
    main()
