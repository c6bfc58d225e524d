"""`tuneloop autotune`: the guides' loop, run by itself — train, diagnose, apply the doctor's
recommendation, train again — aiming at the task metric, within a budget of runs or time.

The search is greedy over the doctor's advice. After each run:
  - a new best run replaces the queue with its own recommendations: the main change first
    (everything the doctor applies to next_config), then each alternative on its own. A
    healthy run has recommendations too (more epochs while the metric still climbs, a larger
    adapter on a plateau), so the loop keeps improving past "healthy" while budget remains;
  - a run that did not beat the best leaves the queue as it was, so the next attempt is the best
    run's next alternative — a recommendation that made things worse is not built upon;
  - a proposal whose estimated time does not fit the remaining minutes is skipped.
Runs are compared on the validation split only: by the task metric of continuous evaluation
(`select: metric`, the default where the task has one) or by validation loss. The test split is
touched once, at the end: the base model, the first run and the best run, so the reported gain
is not selected on the data that measures it.
Every attempt starts from the user's config plus the changes along its lineage, so `auto`
values (epochs, batch size, evaluation interval) are resolved afresh for the changed run.
Every attempt is also measured for what it cost the model (eval/general.py: the leakage rise plus
the general score's drop, in points; the base model's side is cached), and with
`max_general_drop` an attempt that lost more is not eligible as the best: the search keeps the
task gain that keeps the model. The doctor's replay (data.replay) is a change it can try.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rich.console import Console

from tuneloop.config import LOWER_IS_BETTER, ConfigError, RunConfig, config_with
from tuneloop.doctor import diagnose_path, recommend
from tuneloop.doctor.recommend import estimated_minutes
from tuneloop.runs import RunDir

SELECT = ("auto", "metric", "val_loss")


@dataclass
class Attempt:
    index: int
    run: str  # run directory
    parent: str | None  # the run whose diagnosis proposed this one
    changes: dict  # config key -> value, relative to the user's config, along the whole lineage
    step: list[dict]  # the recommendations applied in this step: param, from, to, why
    verdict: str = ""
    best_val_loss: float | None = None
    metric: str | None = None  # the validation task metric's key (continuous evaluation)
    metric_value: float | None = None  # its value for the saved weights (the best scored evaluation)
    seconds: float = 0.0
    estimated_minutes: float | None = None  # what the doctor expected this run to take
    general_loss: float | None = None  # points the model lost: leakage rise + general score drop (eval/scale_curve.py)
    leakage: float | None = None  # share of generic prompts answered in the task's form
    general_seconds: float = 0.0  # what measuring it took


@dataclass
class Autotune:
    path: Path  # runs/autotune/<name>-<stamp>/: lineage.json and report.html
    select: str  # "val_loss" or "metric" ("auto" until the first run shows whether there is a metric)
    attempts: list[Attempt] = field(default_factory=list)
    stopped_because: str = ""
    skipped: list[dict] = field(default_factory=list)  # proposals that would not fit the time budget
    test: dict = field(default_factory=dict)  # base / first / best on the test split, at the end
    max_general_drop: float | None = None  # points of general loss an attempt may cost and still be best

    def eligible(self, a: Attempt) -> bool:
        limit = self.max_general_drop
        return limit is None or a.general_loss is None or a.general_loss <= limit

    @property
    def best(self) -> Attempt | None:
        scored = [a for a in self.attempts if _score(a, self.select) is not None and self.eligible(a)]
        # A tie on the metric (small validation samples) goes to the lower validation loss.
        loss = lambda a: a.best_val_loss if a.best_val_loss is not None else float("inf")  # noqa: E731
        return min(scored, key=lambda a: (_score(a, self.select), loss(a), a.index), default=None)

    def to_dict(self) -> dict:
        best = self.best
        return {
            "select": self.select,
            "max_general_drop": self.max_general_drop,
            "best_run": best.run if best else None,
            "stopped_because": self.stopped_because,
            "attempts": [asdict(a) for a in self.attempts],
            "skipped": self.skipped,
            "test": self.test,
        }


def _score(a: Attempt, select: str) -> float | None:
    """Lower is better."""
    if select != "metric":
        return a.best_val_loss
    if a.metric_value is None:
        return None
    return a.metric_value if a.metric in LOWER_IS_BETTER else -a.metric_value


def autotune(
    config: RunConfig,
    *,
    max_runs: int | None = 4,
    max_minutes: float | None = None,
    select: str = "auto",
    console: Console | None = None,
    evaluate_test: bool = True,
    max_general_drop: float | None = None,
) -> Autotune:
    """`max_general_drop`: the general loss (points: leakage rise + general score drop against the
    base model) an attempt may cost and still be kept as the best."""
    from tuneloop.eval.held_out import run_general
    from tuneloop.eval.scale_curve import general_loss
    from tuneloop.pipeline import run_loop

    if select not in SELECT:
        raise ValueError(f"select must be one of {', '.join(SELECT)} (val_loss or metric), not {select!r}")
    console = console or Console()
    first_minutes = None
    if max_minutes is not None:  # will even the first run fit? (tuneloop plan: this machine's own speed)
        from tuneloop.plan import plan_config

        first_minutes = plan_config(config, evaluate=False).train_minutes
        if first_minutes > max_minutes:
            raise ConfigError(
                f"autotune --max-minutes {max_minutes:g}: the first run alone is planned at ~{first_minutes:.1f} "
                "min on this machine (tuneloop plan); raise the budget, or lower train.epochs or the data"
            )
    name = config.run_name or "run"
    home = RunDir.create(Path(config.runs_dir) / "autotune", name)
    tune = Autotune(home.path, select, max_general_drop=max_general_drop)
    original = config.model_dump(mode="json")
    # (changes, step, parent run, estimated minutes)
    queue: list[tuple[dict, list[dict], str | None, float | None]] = [({}, [], None, first_minutes)]
    tried: set[str] = set()
    t0 = time.perf_counter()
    reserve = 0.0  # minutes kept for the final test-split evaluation
    while True:
        queue = [q for q in queue if _key(q[0]) not in tried]
        if max_runs is not None and len(tune.attempts) >= max_runs:
            tune.stopped_because = f"run budget spent ({max_runs} runs)"
            break
        left = None if max_minutes is None else max_minutes - (time.perf_counter() - t0) / 60 - reserve
        fits = [q for q in queue if left is None or not tune.attempts or _minutes(q, tune) <= left]
        for q in queue:
            if q not in fits and _key(q[0]) not in {_key(s["changes"]) for s in tune.skipped}:
                tune.skipped.append(
                    {"changes": q[0], "estimated_minutes": _minutes(q, tune), "minutes_left": round(left, 1)}
                )
        if not fits:
            tune.stopped_because = tune.stopped_because or (
                "no untried recommendation left"
                if not queue
                else f"time budget ({max_minutes:g} min): no remaining change fits the {left:.1f} minutes left"
            )
            break
        queue.remove(fits[0])
        changes, step, parent, minutes = fits[0]
        tried.add(_key(changes))
        attempt = Attempt(len(tune.attempts), "", parent, changes, step, estimated_minutes=minutes)
        described = ", ".join(f"{s['param']} {s['from']} → {s['to']}" for s in step) or "the config as given"
        of = f"/{max_runs}" if max_runs is not None else ""
        console.rule(
            f"autotune run {attempt.index + 1}{of}: {described}" + (f" (~{minutes:.0f} min)" if minutes else "")
        )
        t = time.perf_counter()
        result = run_loop(
            config_with(original, changes, run_name=f"{name}-{attempt.index}"),
            console,
            evaluate=False,
            info={
                "lineage": {
                    "autotune": str(home.path.resolve()),
                    "attempt": attempt.index,
                    "parent": parent,
                    "changes": step,
                }
            },
        )
        attempt.seconds = round(time.perf_counter() - t, 1)
        attempt.run = str(result.run.path)
        diagnosis, run_config = diagnose_path(result.run.path)
        recommend(diagnosis, run_config)
        attempt.verdict = diagnosis.verdict
        attempt.best_val_loss = diagnosis.summary.get("best_val_loss")
        keep = diagnosis.summary.get("keep", {})
        if diagnosis.summary.get("metric"):
            attempt.metric = diagnosis.summary["metric"]
            # The saved weights' score: the best scored evaluation when the run kept that one.
            attempt.metric_value = (
                keep["value"]
                if keep.get("by", "").startswith("eval_") and keep.get("saved_step") == keep.get("step")
                else diagnosis.summary["last_metric"]
            )
        with console.status("autotune: what this run cost the model (general check)"):
            g = time.perf_counter()
            general = run_general(result.run.path, config.eval.general)
            attempt.general_loss, attempt.leakage = general_loss(general), general["leakage"]["finetuned"]
            attempt.general_seconds = round(time.perf_counter() - g, 1)
        if tune.select == "auto":
            tune.select = "metric" if attempt.metric else "val_loss"
        if evaluate_test and not reserve:
            reserve = _test_minutes(result.run)
        tune.attempts.append(attempt)
        console.print(
            f"[bold]{diagnosis.verdict}[/bold] · best validation loss {attempt.best_val_loss}"
            + (f" · validation {attempt.metric} {attempt.metric_value:.4f}" if attempt.metric else "")
            + f" · general loss {attempt.general_loss:g} points (leakage {attempt.leakage:.0%})"
            + ("" if tune.eligible(attempt) else f", over --max-general-drop {max_general_drop:g}: not kept")
            + f" · {attempt.seconds / 60:.1f} min"
        )
        if tune.best is attempt:
            queue = _proposals(diagnosis, changes, attempt.run, run_config)
            if not queue and diagnosis.verdict == "healthy":
                tune.stopped_because = "the best run is healthy and the doctor has nothing left to try"
        _write(home, tune)
    if evaluate_test and tune.attempts:
        tune.test = _evaluate_test(tune, console)
    _write(home, tune)
    return tune


def _proposals(diagnosis, changes: dict, parent: str, run_config: dict | None) -> list:
    """The doctor's main change (all applied recommendations together), then each concrete
    alternative alone, each with its estimated training minutes. Inference-time and data advice
    cannot be tried by retraining."""
    concrete = [
        r
        for r in diagnosis.recommendations
        if (r.param.split(".")[0] in ("train", "lora") or r.param == "data.replay")
        and not r.relative
        and r.to != r.from_
    ]
    main = [r for r in concrete if r.applied]
    seconds = diagnosis.summary.get("train_seconds")
    out = []
    if main:
        step = {r.param: r.to for r in main}
        out.append(
            ({**changes, **step}, [_step(r) for r in main], parent, estimated_minutes(seconds, run_config, step))
        )
    alternatives: dict[str, list] = {}
    for r in concrete:
        if not r.applied:
            alternatives.setdefault(r.param, []).append(r)
    for r in concrete:
        if r.applied:
            continue
        step = {r.param: r.to}
        if r.param == "lora.r":  # the rank moves with its alpha
            alpha = next((a for a in concrete if a.param == "lora.alpha" and not a.applied), None)
            if alpha:
                step["lora.alpha"] = alpha.to
        elif r.param == "lora.alpha":
            continue
        out.append(({**changes, **step}, [_step(r)], parent, estimated_minutes(seconds, run_config, step)))
    return out


def _minutes(proposal, tune: Autotune) -> float:
    """A proposed run's whole time: the doctor's training estimate, plus what the parent spent
    outside training (data, model load, compile); the parent's time when there is no estimate."""
    _, _, parent, minutes = proposal
    parent_attempt = next((a for a in tune.attempts if a.run == parent), tune.attempts[-1])
    info = RunDir(Path(parent_attempt.run)).read_json(RunDir(Path(parent_attempt.run)).info_file)
    train_minutes = info.get("timings", {}).get("train", parent_attempt.seconds) / 60
    overhead = max(0.0, parent_attempt.seconds / 60 - train_minutes)
    return round((minutes if minutes is not None else train_minutes) + overhead, 1)


def _test_minutes(run: RunDir) -> float:
    """The final evaluation's time: three models on the test split, scaled from the run's own
    continuous evaluation (seconds per generated row), plus a loss pass each."""
    info = run.read_json(run.info_file)
    ce = info.get("continuous_evaluation")
    n_test = info.get("split_sizes", {}).get("test", 0)
    if not ce or not ce.get("scored_steps"):
        return 1.0
    per_row = ce["seconds"] / (len(ce["scored_steps"]) * ce["rows"] + ce["train_rows"])
    return round(3 * 1.3 * per_row * n_test / 60 + 0.5, 1)  # + model loading


def _evaluate_test(tune: Autotune, console: Console) -> dict:
    """Base model, first run and best run on the test split, once, at the end."""
    from tuneloop.config import headline
    from tuneloop.eval.evaluate import evaluate_model
    from tuneloop.runs.sides import load_side

    first, best = tune.attempts[0], tune.best or tune.attempts[0]
    test = RunDir(Path(first.run)).read_split("test")
    config = RunDir(Path(first.run)).config()
    out: dict = {"n": len(test)}
    for label, spec in (("base", "base"), ("first", first.run), ("best", best.run)):
        if label == "best" and best is first:
            out["best"] = {**out["first"]}
            continue
        with console.status(f"autotune: {label} model on the test split ({len(test)} examples)"):
            side = load_side(spec, config)
            result = evaluate_model(
                side.model,
                side.tokenizer,
                test,
                RunDir(Path(first.run if spec == "base" else spec)).config().eval,
                side.precision,
                train_on=config.data.train_on,
            )
        out["metric"] = result["metric"]
        out["key"] = headline(result["metric"])
        attempt = {"first": first, "best": best}.get(label)
        out[label] = {
            "run": None if spec == "base" else spec,
            "metrics": {k: v for k, v in result["metrics"].items() if "/" not in k},
            # what the run cost the model, measured after its training (base: nothing, by definition)
            "general_loss": attempt.general_loss if attempt else 0.0,
            "leakage": attempt.leakage if attempt else None,
        }
    return out


def _step(r) -> dict:
    return {"param": r.param, "from": r.from_, "to": r.to, "why": r.why, "minutes": r.minutes}


def _key(changes: dict) -> str:
    return json.dumps(changes, sort_keys=True)


def _write(home: RunDir, tune: Autotune) -> None:
    from tuneloop.report.lineage import render_lineage

    home.write_json(home.path / "lineage.json", tune.to_dict())
    home.write_text(home.path / "report.html", render_lineage(tune.to_dict()))
