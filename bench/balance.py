"""What does fine-tuning cost the model, and does the measured adapter scale keep the balance?

    .venv/bin/python bench/balance.py                          # every case (~85 min on 2 cores)
    .venv/bin/python bench/balance.py --case quickstart_1      # one case; the others' results are kept

Each case is a real `tuneloop run` of SmolLM2-135M-Instruct; the general check runs as part of it
(eval.general: default, base vs fine-tuned on the shipped ARC-Easy and PIQA samples, behaviour
leakage and drift on 40 generic instructions), and the adapter scale curve where the run lost
general ability beyond noise. Cases:
  quickstart_1   the shipped quickstart as a new user runs it (1 epoch)
  quickstart_8   the quickstart at the 8 epochs autotune reaches (bench/doctor_real.py)
  banking77      20 messages per intent (1,540 rows) from ../shared/datasets/banking77, the message
                 as the prompt and the intent as the answer, every other setting tuneloop's default
  *_replay       the same with data.replay: 0.2 (the doctor's proposal against behaviour leakage)
Recorded per case: the test task metric base and fine-tuned (paired bootstrap interval), the general
score, leakage and drift with their intervals, the scale curve and the recommended scale; then the
test split and the general check again at the recommended scale (`tuneloop eval --scale S
--general default`), so the bar is read on held-out data: the task metric within 2 points of the
unscaled run while the general loss at least halves. Also: the general check's share of the run's
wall time (the bar: at most 10% of the quickstart's) and the doctor's findings.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from environment import RESULTS, banking77_per_intent, save
from rich.console import Console

import tuneloop
from tuneloop.cli import quiet_libraries
from tuneloop.config import config_from_dict, headline, load_config
from tuneloop.eval.scale_curve import general_loss

ROOT = Path(__file__).resolve().parents[1]


def quickstart(work: Path, epochs: int):
    config = load_config(ROOT / "examples" / "quickstart" / "quickstart.yaml", [f"train.epochs={epochs}"])
    config.runs_dir = work / "runs"
    return config


def with_replay(make, share: float):
    def config(work: Path):
        c = make(work)
        c.data.replay = share
        return c

    return config


def banking77(work: Path):
    rows = banking77_per_intent(20)
    path = work / "banking77.jsonl"
    path.write_text("".join(json.dumps({"prompt": r["text"], "completion": r["category"]}) + "\n" for r in rows))
    return config_from_dict({"run_name": "banking77", "runs_dir": str(work / "runs"), "data": {"path": str(path)}})


CASES = {
    "quickstart_1": lambda work: quickstart(work, 1),
    "quickstart_1_replay": with_replay(lambda work: quickstart(work, 1), 0.2),
    "banking77": banking77,
    "banking77_replay": with_replay(banking77, 0.2),
    "quickstart_8": lambda work: quickstart(work, 8),
    "quickstart_8_replay": with_replay(lambda work: quickstart(work, 8), 0.2),
}


def _stats(s: dict | None, digits: int = 3) -> dict | None:
    if not s:
        return None
    return {k: (round(v, digits) if isinstance(v, float) else v) for k, v in s.items() if k != "examples"}


def run_case(name: str, work: Path) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    config = CASES[name](work)
    t = time.perf_counter()
    run = tuneloop.run(config, console=Console())
    wall = time.perf_counter() - t
    ev = run.evaluation
    key = headline(ev["metric"])
    general, curve = ev["general"], ev.get("scale_curve")
    seconds = general["seconds"]
    check = seconds["finetuned"] + (0 if seconds["base_cached"] else seconds["base"])
    diagnosis = run.diagnose()
    result = {
        "run": str(run.path),
        "config": {"epochs": run.config.train.epochs, "train_rows": run.info["split_sizes"]["train"]},
        "minutes": {
            "wall": round(wall / 60, 2),
            **{k: round(v / 60, 2) for k, v in run.timings.items()},
            "general_check": round(check / 60, 2),
        },
        "general_check_share_of_wall": round(check / wall, 3),
        "base_general_cached": seconds["base_cached"],
        "task": {
            "metric": key,
            "base": ev["base"]["metrics"].get(key),
            "finetuned": ev["finetuned"]["metrics"].get(key),
            "difference_ci": (ev.get("comparison", {}).get("metrics", {}).get(key) or {}).get("ci"),
        },
        "general": {
            "score": _stats(general["score"], 2),
            "sets": {n: {k: _stats(v) for k, v in s.items() if k != "kind"} for n, s in general["sets"].items()},
            "leakage": _stats(general["leakage"]),
            "drift": _stats(general["drift"]),
            "general_loss_points": general_loss(general),
            "leaked_examples": [e for e in general["leakage"]["examples"] if e["leaked"]][:5],
        },
        "scale_curve": curve,
        "doctor": {
            "verdict": diagnosis.verdict,
            "balance": [
                {"kind": f.kind, "name": f.name, "message": f.message}
                for f in diagnosis.findings
                if f.kind in ("forgetting", "adapter_scale", "balance_kept")
            ],
            "recommendations": [r.to_dict() for r in diagnosis.recommendations[:6]],
        },
    }
    recommended = (curve or {}).get("recommended")
    if recommended and recommended["scale"] != 1.0:
        at = run.evaluate(scale=recommended["scale"], general="default")
        scaled = {"leakage": at.general["leakage"], "score": at.general["score"]}
        result["at_recommended_scale"] = {
            "scale": recommended["scale"],
            "task_test": at.metrics.get(key),
            "task_drop_points": round(100 * (result["task"]["finetuned"] - at.metrics.get(key)), 2),
            "leakage": _stats(at.general["leakage"]),
            "score": _stats(at.general["score"], 2),
            "drift": _stats(at.general["drift"]),
            "general_loss_points": general_loss(scaled),
        }
        kept = result["at_recommended_scale"]
        result["bar"] = {
            "task_within_2_points": kept["task_drop_points"] <= 2.0,
            "general_loss_at_least_halved": kept["general_loss_points"]
            <= 0.5 * result["general"]["general_loss_points"],
        }
    return result


def replay_effects(cases: dict) -> dict:
    """What data.replay cost on the task and saved in general loss: each case against its _replay twin
    (the test task metric in points; the general loss, leakage rise plus score drop, in points)."""
    out = {}
    for name, plain in cases.items():
        replayed = cases.get(f"{name}_replay")
        if replayed is None:
            continue
        drop = round(100 * (plain["task"]["finetuned"] - replayed["task"]["finetuned"]), 2)
        before, after = plain["general"]["general_loss_points"], replayed["general"]["general_loss_points"]
        out[name] = {
            "task_drop_points": drop,
            "general_loss_points": [before, after],
            "leakage": [plain["general"]["leakage"]["finetuned"], replayed["general"]["leakage"]["finetuned"]],
            "bar": {"task_within_2_points": drop <= 2.0, "general_loss_at_least_halved": after <= 0.5 * before},
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=sorted(CASES), action="append", help="run only these cases")
    args = parser.parse_args()
    quiet_libraries()
    out = RESULTS / "balance.json"
    previous = json.loads(out.read_text()).get("cases", {}) if out.is_file() else {}
    cases = dict(previous)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.case or list(CASES):
            print(f"== {name}", flush=True)
            cases[name] = run_case(name, Path(tmp) / name)
            save("balance", {"cases": cases, "replay": replay_effects(cases)})
    print(
        json.dumps(
            {n: {k: c.get(k) for k in ("task", "bar", "general_check_share_of_wall")} for n, c in cases.items()},
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
