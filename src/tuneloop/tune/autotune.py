"""`tuneloop autotune`: the guides' loop, run by itself — train, diagnose, apply the doctor's
recommendation, train again — within a budget of runs or time.

The search is greedy over the doctor's advice. After each run:
  - a new best run replaces the queue with its own recommendations: the main change first
    (everything the doctor applies to next_config), then each alternative on its own;
  - a run that did not beat the best leaves the queue as it was, so the next attempt is the best
    run's next alternative — a recommendation that made things worse is not built upon;
  - a best run the doctor calls healthy ends the loop: there is nothing left to fix.
Every attempt starts from the user's config plus the changes along its lineage, so `auto`
values (epochs, batch size, evaluation interval) are resolved afresh for the changed run.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rich.console import Console

from tuneloop.config import RunConfig, config_with
from tuneloop.doctor import diagnose_path, recommend
from tuneloop.eval.metrics import LOWER_IS_BETTER, headline
from tuneloop.runs import RunDir


@dataclass
class Attempt:
    index: int
    run: str  # run directory
    parent: str | None  # the run whose diagnosis proposed this one
    changes: dict  # config key -> value, relative to the user's config, along the whole lineage
    step: list[dict]  # the recommendations applied in this step: param, from, to, why
    verdict: str = ""
    best_val_loss: float | None = None
    metric: str | None = None  # the task metric's name when runs are evaluated
    metric_value: float | None = None
    seconds: float = 0.0


@dataclass
class Autotune:
    path: Path  # runs/autotune/<name>-<stamp>/: lineage.json and report.html
    select: str  # "val_loss" or "metric"
    attempts: list[Attempt] = field(default_factory=list)
    stopped_because: str = ""

    @property
    def best(self) -> Attempt | None:
        scored = [a for a in self.attempts if _score(a, self.select) is not None]
        return min(scored, key=lambda a: _score(a, self.select), default=None)

    def to_dict(self) -> dict:
        best = self.best
        return {"select": self.select, "best_run": best.run if best else None,
                "stopped_because": self.stopped_because, "attempts": [asdict(a) for a in self.attempts]}


def _score(a: Attempt, select: str) -> float | None:
    """Lower is better."""
    if select == "val_loss" or a.metric_value is None:
        return a.best_val_loss if select == "val_loss" else None
    return a.metric_value if a.metric in LOWER_IS_BETTER else -a.metric_value


def autotune(config: RunConfig, *, max_runs: int = 4, max_minutes: float | None = None, select: str = "val_loss",
             console: Console | None = None) -> Autotune:
    from tuneloop.pipeline import run_loop

    if select not in ("val_loss", "metric"):
        raise ValueError(f"select must be val_loss or metric, not {select!r}")
    console = console or Console()
    name = config.run_name or "run"
    home = RunDir.create(Path(config.runs_dir) / "autotune", name)
    tune = Autotune(home.path, select)
    original = config.model_dump(mode="json")
    queue: list[tuple[dict, list[dict], str | None]] = [({}, [], None)]  # (changes, step, parent run)
    tried: set[str] = set()
    t0 = time.perf_counter()
    while True:
        queue = [q for q in queue if _key(q[0]) not in tried]
        if not queue:
            tune.stopped_because = tune.stopped_because or "no untried recommendation left"
            break
        if len(tune.attempts) >= max_runs:
            tune.stopped_because = f"run budget spent ({max_runs} runs)"
            break
        elapsed = time.perf_counter() - t0
        if max_minutes is not None and tune.attempts:
            per_run = elapsed / len(tune.attempts)
            if elapsed + per_run > max_minutes * 60:  # the next run would not finish in time
                tune.stopped_because = f"time budget ({max_minutes:g} min): the next run would overrun it"
                break
        changes, step, parent = queue.pop(0)
        tried.add(_key(changes))
        attempt = Attempt(len(tune.attempts), "", parent, changes, step)
        described = ", ".join(f"{s['param']} {s['from']} → {s['to']}" for s in step) or "the config as given"
        console.rule(f"autotune run {attempt.index + 1}/{max_runs}: {described}")
        t = time.perf_counter()
        result = run_loop(config_with(original, changes, run_name=f"{name}-{attempt.index}"), console,
                          evaluate=select == "metric",
                          info={"lineage": {"autotune": str(home.path.resolve()), "attempt": attempt.index, "parent": parent,
                                            "changes": step}})
        attempt.seconds = round(time.perf_counter() - t, 1)
        attempt.run = str(result.run.path)
        diagnosis, run_config = diagnose_path(result.run.path)
        recommend(diagnosis, run_config)
        attempt.verdict = diagnosis.verdict
        attempt.best_val_loss = diagnosis.summary.get("best_val_loss")
        if result.evaluation:
            attempt.metric = headline(result.evaluation["metric"])
            attempt.metric_value = result.evaluation["finetuned"]["metrics"][attempt.metric]
        tune.attempts.append(attempt)
        console.print(f"[bold]{diagnosis.verdict}[/bold] · best validation loss {attempt.best_val_loss}"
                      + (f" · {attempt.metric} {attempt.metric_value:.4f}" if attempt.metric else ""))
        if tune.best is attempt:
            if diagnosis.verdict == "healthy":
                tune.stopped_because = "the best run is healthy: nothing left to fix"
                _write(home, tune)
                break
            queue = _proposals(diagnosis, changes, attempt.run)
        _write(home, tune)
    _write(home, tune)
    return tune


def _proposals(diagnosis, changes: dict, parent: str) -> list[tuple[dict, list[dict], str]]:
    """The doctor's main change (all applied recommendations together), then each concrete
    alternative alone. Inference-time and data advice cannot be tried by retraining."""
    concrete = [r for r in diagnosis.recommendations
                if r.param.split(".")[0] in ("train", "lora") and not isinstance(r.to, str) and r.to != r.from_]
    main = [r for r in concrete if r.applied]
    out = []
    if main:
        out.append(({**changes, **{r.param: r.to for r in main}}, [_step(r) for r in main], parent))
    for r in concrete:
        if not r.applied:
            out.append(({**changes, r.param: r.to}, [_step(r)], parent))
    return out


def _step(r) -> dict:
    return {"param": r.param, "from": r.from_, "to": r.to, "why": r.why}


def _key(changes: dict) -> str:
    return json.dumps(changes, sort_keys=True)


def _write(home: RunDir, tune: Autotune) -> None:
    from tuneloop.report.lineage import render_lineage

    home.write_json(home.path / "lineage.json", tune.to_dict())
    home.write_text(home.path / "report.html", render_lineage(tune.to_dict()))
