"""Runs the standalone curve diagnosers on histories; executed by bench/doctor_peers.py with the
Python of a scratch venv that has them (they are never tuneloop's dependencies).

    PEERS_PYTHON bench/peers_runner.py cases.json  ->  JSON on stdout: {peer: {case: {verdict, said}}}

Each history arrives in tuneloop's metrics.jsonl format and is handed to each tool in the form
that tool documents. A tool's findings are mapped onto tuneloop's verdicts by what they claim
(the mapping tables below); findings about other things (GPU use, logging, label noise) map to
nothing, and a run with no mapped problem is "healthy". The worst-ranked mapped finding, in the
tool's own order of severity, is the tool's verdict.
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
from pathlib import Path

FTDOCTOR = {
    "overfitting": "overfitting",
    "not_learning": "underfitting",
    "loss_spikes": "diverging",
    "gradients": "diverging",
    "loss_degenerate": "diverging",
    "stopped_improving": "overfitting",
}
RUNMEDIC = {
    "non_finite": "diverging",
    "divergence": "diverging",
    "loss_spikes": "diverging",
    "grad_spikes": "diverging",
    "no_learning": "underfitting",
    "overfitting": "overfitting",
}
TRAINING_DOCTOR = {
    "lr_too_high": "diverging",
    "gradient_instability": "diverging",
    "mixed_precision_instability": "diverging",
    "lr_too_low": "underfitting",
    "early_plateau": "underfitting",
    "overfitting": "overfitting",
}
SK_AUTOD = {
    "Classic overfitting": "overfitting",
    "Missed early stopping": "overfitting",
    "Underfitting": "underfitting",
    "LR too low": "underfitting",
    "LR too high": "diverging",
    "Exploding gradient": "diverging",
}


def _num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def ftdoctor(records: list[dict]) -> tuple[str, list[str]]:
    """ftdoctor reads a Trainer's trainer_state.json: log_history with `loss` for training rows."""
    from ftdoctor import diagnose, load
    from ftdoctor.findings import Severity

    log = []
    for r in records:
        row = {k: v for k, v in r.items()}
        if "train_loss" in row:
            row["loss"] = _num(row.pop("train_loss"))
        log.append(row)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "trainer_state.json"
        path.write_text(json.dumps({"log_history": log, "global_step": max(r.get("step", 0) for r in records)}))
        result = diagnose(load(str(path)))
    found = [f for f in result.findings if f.severity >= Severity.WARNING]
    found.sort(key=lambda f: -int(f.severity))
    return _first(found, lambda f: FTDOCTOR.get(f.check)), [f"{f.check}:{f.severity.name}" for f in result.findings]


def runmedic(records: list[dict]) -> tuple[str, list[str]]:
    """runmedic reads JSON Lines logs with step and metric columns: metrics.jsonl as it is."""
    from runmedic import checks, roles
    from runmedic.loaders.tabular import load_jsonl

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "metrics.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
        run = load_jsonl(path)
    found = checks.run_checks(run, roles.detect(run))  # sorted by severity, critical first
    problems = [f for f in found if f.severity in ("critical", "warning")]
    return _first(problems, lambda f: RUNMEDIC.get(f.check)), [f"{f.check}:{f.severity}" for f in found]


def training_doctor(records: list[dict]) -> tuple[str, list[str]]:
    """training-doctor's offline analysis over logged steps (train_loss, eval_loss, grad_norm, lr)."""
    from training_doctor import Doctor

    doctor = Doctor()
    names = {"train_loss": "train_loss", "eval_loss": "eval_loss", "grad_norm": "grad_norm", "learning_rate": "lr"}
    for r in records:
        values = {names[k]: _num(v) for k, v in r.items() if k in names and _num(v) is not None}
        if values:
            doctor.log(int(r.get("step", 0)), **values)
    found = doctor.analyze()
    rank = {"CRITICAL": 0, "WARNING": 1, "INFO": 2}
    found.sort(key=lambda f: (rank.get(f.severity.name, 3), -f.confidence))
    problems = [f for f in found if f.severity.name in ("CRITICAL", "WARNING")]
    return (
        _first(problems, lambda f: TRAINING_DOCTOR.get(f.detector_name)),
        sorted({f"{f.detector_name}:{f.severity.name}" for f in found}),
    )


def sk_autod(records: list[dict]) -> tuple[str, list[str]]:
    """sk-autod takes aligned per-epoch lists: the training loss at each validation point."""
    from sk_autod import diagnose

    train, val, last_train = [], [], None
    for r in records:
        if "train_loss" in r:
            last_train = _num(r["train_loss"])
        if "eval_loss" in r and last_train is not None:
            v = _num(r["eval_loss"])
            train.append(last_train if math.isfinite(last_train) else 1e9)
            val.append(v if v is not None and math.isfinite(v) else 1e9)
    if len(val) < 3:
        return "healthy", ["too few evaluations"]
    try:
        report = diagnose(train, val)
    except Exception as e:  # it validates its input and refuses some curves
        return "healthy", [f"refused: {e}"]
    problems = [f for f in report.findings if f.severity.value != "INFO"]
    return _first(problems, lambda f: SK_AUTOD.get(f.detector_name)), [
        f"{f.detector_name}:{f.severity.value}" for f in report.findings
    ]


def _first(findings, verdict_of) -> str:
    return next((v for f in findings if (v := verdict_of(f))), "healthy")


PEERS = {"ftdoctor": ftdoctor, "runmedic": runmedic, "training-doctor": training_doctor, "sk-autod": sk_autod}


def main() -> None:
    cases = json.loads(Path(sys.argv[1]).read_text())
    out: dict = {}
    for peer, run in PEERS.items():
        out[peer] = {}
        for name, records in cases.items():
            try:
                verdict, said = run(records)
            except Exception as e:  # a crash is the tool's answer on this history: no verdict
                verdict, said = "error", [f"{type(e).__name__}: {e}"[:200]]
            out[peer][name] = {"verdict": verdict, "said": said}
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
