"""tuneloop's doctor against the standalone curve diagnosers on PyPI, on the same labelled histories.

    .venv/bin/python bench/doctor_peers.py            # ~1 min (+ ~1 min once to make the scratch venv)

The histories are the test suite's (tests/doctor/histories.py): synthetic ones shaped like the
guides' pictures and like the shapes curve diagnosers get wrong, each labelled with the verdict
a careful reader gives, and real runs labelled by how they were set up or what the next run
showed (histories/real/). The
peers (ftdoctor, runmedic, training-doctor, sk-autod; pinned below) are installed in a scratch
venv, `.venv-peers`, never into tuneloop's, and run by bench/peers_runner.py, which maps their
findings onto tuneloop's verdicts. Recorded: each tool's verdict and what it said per history,
its accuracy overall and per label, and the same without the labels that need the task metric
(which no peer reads) or `undertrained` (which no peer names). Result: bench/results/doctor_peers.json.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "tests" / "doctor"))
from environment import save  # noqa: E402
from histories import CASES as SYNTHETIC  # noqa: E402
from histories import REAL  # noqa: E402

from tuneloop.doctor import diagnose_metrics  # noqa: E402

CASES = {**SYNTHETIC, **REAL}
PEERS = ["ftdoctor==0.1.0", "runmedic==0.1.1", "training-doctor==0.1.0", "sk-autod==0.1.1"]
VENV = ROOT / ".venv-peers"
# Cases whose label rests on the task metric or the base model's score: no peer reads those.
NEEDS_METRIC = {
    name
    for name, c in CASES.items()
    if any(k.startswith("eval_") and k not in ("eval_loss", "eval_loss_se") for r in c.records for k in r)
    or "base_metric" in c.kwargs
}


def peers_python() -> Path:
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PEERS], check=True)
    return python


def accuracy(verdicts: dict[str, str], names) -> dict:
    names = list(names)
    by_label: dict[str, list[bool]] = defaultdict(list)
    for n in names:
        by_label[CASES[n].label].append(verdicts[n] == CASES[n].label)
    right = sum(sum(v) for v in by_label.values())
    return {
        "correct": f"{right}/{len(names)}",
        "accuracy": round(right / max(1, len(names)), 3),
        "by_label": {label: f"{sum(v)}/{len(v)}" for label, v in sorted(by_label.items())},
    }


def main() -> None:
    ours = {name: diagnose_metrics(c.records, **c.kwargs).verdict for name, c in CASES.items()}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump({name: c.records for name, c in CASES.items()}, f)
    out = subprocess.run(
        [str(peers_python()), str(Path(__file__).with_name("peers_runner.py")), f.name],
        check=True,
        capture_output=True,
        text=True,
    )
    peers = json.loads(out.stdout)
    tools = {"tuneloop": {n: {"verdict": v} for n, v in ours.items()}, **peers}
    loss_only = [n for n in CASES if n not in NEEDS_METRIC and CASES[n].label != "undertrained"]
    result = {
        "cases": {n: {"label": c.label, **{t: tools[t][n]["verdict"] for t in tools}} for n, c in CASES.items()},
        "said": {t: {n: v.get("said") for n, v in tools[t].items()} for t in peers},
        "accuracy": {t: accuracy({n: v["verdict"] for n, v in tools[t].items()}, CASES) for t in tools},
        "accuracy_loss_only": {t: accuracy({n: v["verdict"] for n, v in tools[t].items()}, loss_only) for t in tools},
        "accuracy_real": {t: accuracy({n: v["verdict"] for n, v in tools[t].items()}, REAL) for t in tools},
        "loss_only_cases": loss_only,
        "real_cases": list(REAL),
        "peers": PEERS,
    }
    width = max(map(len, CASES))
    print(f"{'history':{width}}  {'label':12}  " + "  ".join(f"{t:15}" for t in tools))
    for n, row in result["cases"].items():
        print(
            f"{n:{width}}  {row['label']:12}  "
            + "  ".join(f"{row[t] + (' ✓' if row[t] == row['label'] else ''):15}" for t in tools)
        )
    for t in tools:
        print(
            f"{t:15} all {result['accuracy'][t]['correct']:>6}"
            f"   loss-only {result['accuracy_loss_only'][t]['correct']:>6}"
            f"   real runs {result['accuracy_real'][t]['correct']:>6}"
        )
    print(save("doctor_peers", result))


if __name__ == "__main__":
    main()
