"""A setup's finished runs on this machine against their plan: the correction of its next plan.

The calibration (calibrate.py) times each kind of work for a few seconds within two minutes; a run
does minutes of the same work. On a 2-core VM whose pace moves by 20-40% from one window of minutes
to the next, one r16 calibration priced every r16 run's validation passes at 1.39-1.80x their time
while the r8 one, measured a quarter of an hour later, priced GSM8K's at 0.85x and the full one
0.57x (LOG.md): the error belongs to the calibration, so the runs that used it measure it. Each
finished run appends what its parts took and what the calibration priced them at (before any
correction) to its calibration's history; a plan from the same calibration scales each part by
the last RUNS runs' real seconds over their priced seconds. A new calibration starts a new history.
"""

from __future__ import annotations

import json
from pathlib import Path

from tuneloop.paths import tuneloop_home

RUNS = 5  # the latest runs that correct a plan: the machine's pace drifts over hours too
MIN_PRICED_SECONDS = 5.0  # a part priced shorter than this says more about noise than the calibration
BOUNDS = (0.5, 2.0)  # a correction beyond these says the run met something else (a competitor, a swap)
# What each measured part of a run covers among the plan's parts: run.json's train_parts (the steps,
# compiling inside the first; the validation passes with their scorings) and eval.json's seconds.
GROUPS = {
    "steps": ("steps", "compile"),
    "validation": ("validation", "metric"),
    "test_loss": ("test_loss",),
    "generation": ("generate_base", "generate_tuned"),
}


def history_file(calibration_file: str) -> Path:
    return tuneloop_home() / "calibration" / f"{calibration_file}.runs.jsonl"


def corrections(calibration_file: str, measured_at: float) -> dict[str, dict]:
    """{group: {"factor": real / priced seconds, "runs": how many}} from the latest RUNS runs planned
    by this calibration (the one measured at `measured_at`); groups no run measured are left out."""
    path = history_file(calibration_file)
    if not path.exists():
        return {}
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:  # a line cut short by a crash: the others stand
            continue
        if record.get("measured_at") == measured_at:
            records.append(record)
    out = {}
    for group in GROUPS:
        pairs = [r["parts"][group] for r in records if group in r["parts"]][-RUNS:]
        if pairs:
            priced, took = sum(p for p, _ in pairs), sum(t for _, t in pairs)
            factor = min(max(took / priced, BOUNDS[0]), BOUNDS[1])
            out[group] = {"factor": round(factor, 3), "runs": len(pairs)}
    return out


def part_factors(found: dict[str, dict]) -> dict[str, float]:
    """The plan's parts and the factor each is scaled by."""
    return {part: c["factor"] for group, c in found.items() for part in GROUPS[group]}


def record_run(run_path: Path) -> bool:
    """Append a finished run's parts, priced and real, to its calibration's history. Not recorded:
    runs without a plan or resumed, and runs whose pace others set (planned beside busy processes,
    or trained on fewer threads at some point): they say nothing about the calibration."""
    run_path = Path(run_path)
    info = json.loads((run_path / "run.json").read_text())
    plan = info.get("plan")
    if (
        info.get("status") not in ("finished", "trained")
        or not plan
        or not plan.get("calibration")
        or info.get("resumed_from_step") is not None
        or info.get("thread_changes")
        or plan.get("speed", 1.0) != 1.0
    ):
        return False
    eval_file = run_path / "eval.json"
    evaluation = json.loads(eval_file.read_text()) if eval_file.exists() else None
    took = _took(info.get("train_parts") or {}, evaluation, full="base_evaluation" in plan["parts"])
    applied = part_factors(plan.get("corrections") or {})
    parts = {}
    for group, real in took.items():
        priced = sum(plan["parts"].get(p, 0.0) / applied.get(p, 1.0) for p in GROUPS[group])
        if priced >= MIN_PRICED_SECONDS and real > 0:
            parts[group] = [round(priced, 2), round(real, 2)]
    if not parts:
        return False
    calibration = plan["calibration"]
    path = history_file(calibration["file"])
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"run": info.get("id"), "measured_at": calibration["measured_at"], "parts": parts})
    with path.open("a") as f:  # one short line: appends from processes finishing together do not interleave
        f.write(line + "\n")
    return True


def _took(train_parts: dict, evaluation: dict | None, full: bool) -> dict[str, float]:
    """Seconds each group took. Full fine-tuning evaluates its base model before training, planned
    as a part of its own (base_evaluation), so only the fine-tuned side counts here."""
    took = {}
    if "steps" in train_parts:
        took["steps"] = train_parts["steps"]
    if "evaluation" in train_parts:
        took["validation"] = train_parts["evaluation"]
    if evaluation:
        sides = [evaluation["finetuned"]] if full else [evaluation["base"], evaluation["finetuned"]]
        took["test_loss"] = sum(side["seconds"].get("loss", 0.0) for side in sides)
        took["generation"] = sum(side["seconds"].get("generate", 0.0) for side in sides)
    return took
