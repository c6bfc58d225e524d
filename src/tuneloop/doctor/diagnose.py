"""Read the curves the way the practitioners' guides do, and name what is wrong.

Verdicts, most urgent first:
  diverging     NaN/inf, loss climbing above where it started, spikes that do not recover,
                both losses rebounding well above their best
  overfitting   validation loss rising beyond its noise while training loss falls; training loss
                below ~0.2 with a widening gap; the validation task metric falling (task overfitting)
  underfitting  both losses high and flat; little gain over the base model (loss or task metric);
                a task metric low even on training examples (capacity)
  undertrained  validation loss still falling steeply when training ended
  healthy       none of the above
Beside the verdict, findings that are not problems: headroom (the best validation loss or metric
is at the last evaluation), loss rising while the metric still improves, spikes that recovered,
and which checkpoint to keep. Users judge a run by its task metric, so where continuous
evaluation logged one (eval_<key>), it outranks the loss: a rising validation loss with an
improving metric is not harmful overfitting.

Each finding carries its evidence (steps and values) and a confidence in [0, 1]. Changes are
judged against the evaluation's own noise: the standard error over validation examples that
each evaluation logs (eval_loss_se, eval_<key>_se), or one estimated from the validation size.
The thresholds are named below so that a reader can argue with them.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tuneloop.doctor.curves import Curves, smooth
from tuneloop.runs import RunDir
from tuneloop.runs.store import read_metrics_file as read_metrics

VERDICTS = ("diverging", "overfitting", "underfitting", "undertrained", "healthy")
LOW_TRAIN_LOSS = 0.2  # the guides' "training loss below ~0.2" memorisation line
RISE = 0.03  # validation loss this far (relative) above its best counts as risen, at the least...
NOISE_Z = 2.0  # ...and by at least this many standard errors of the evaluation
FLAT = 0.10  # less relative improvement than this over a run is flat
HIGH_LOSS = 0.5  # a flat validation loss above this (nats per answer token) is not "converged"
STEEP = 0.05  # each of the last evaluations improving by more than this: still learning fast
CLIMB = 1.10  # smoothed training loss this far above its start: the run is going the wrong way
REBOUND = 1.5  # smoothed training loss this many times its own minimum at the end: unstable late
SPIKE = 2.5  # a training loss this many times the recent median is a spike...
SPIKE_MIN_SHARE = 0.1  # ...when the jump is also at least this share of the starting loss
RECOVERED = 1.5  # a spike recovered when the loss is back below this x the pre-spike median...
RECOVERY_POINTS = 3  # ...within this many logged points
GRAD_EXPLOSION = 10.0  # a grad norm this many times the median
BASE_GAIN = 0.90  # fine-tuned test loss above this share of the base model's: little gained
SMALL_VALIDATION = 50  # fewer validation rows than this: differences of a few % are noise
CAPACITY = 0.9  # a [0, 1] task metric below this on training examples: the model cannot fit its task
HEADROOM_POINTS = 1  # the best at one of the last this-many evaluations: still improving...
RECENT_POINTS = 3  # ...and the trend through at least this many recent evaluations gains beyond noise


@dataclass(frozen=True)
class Finding:
    kind: str  # a verdict, or a note: still_improving, loss_rising_metric_improving, spike_recovered, checkpoint, ...
    evidence: dict
    confidence: float
    message: str
    name: str = ""  # the shape within a verdict, e.g. task_overfitting, capacity, rebound


@dataclass
class Diagnosis:
    verdict: str
    findings: list[Finding]
    recommendations: list = field(default_factory=list)
    next_config: dict | None = None
    summary: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "verdict": self.verdict,
            "findings": [asdict(f) for f in self.findings],
            "recommendations": [r.to_dict() for r in self.recommendations],
            "next_config": self.next_config,
            "summary": self.summary,
        }

    def has(self, kind: str) -> bool:
        return any(f.kind == kind or f.name == kind for f in self.findings)


def diagnose_metrics(
    records: list[dict],
    *,
    base_loss: float | None = None,
    tuned_loss: float | None = None,
    n_validation: int | None = None,
    data_report: dict | None = None,
    base_metric: float | None = None,
    tuned_metric: float | None = None,
    info: dict | None = None,
    general: dict | None = None,
    scale_curve: dict | None = None,
) -> Diagnosis:
    """`base_metric`/`tuned_metric`: the task metric on the test split (eval.json); `info`: run.json,
    which says which checkpoint the saved weights are and how long training took; `general` and
    `scale_curve`: what the fine-tune cost the model (eval.json; doctor/balance.py). Preference runs
    (DPO, ORPO) are read by doctor/preference.py, reinforcement runs (GRPO) by doctor/rl.py."""
    from tuneloop.doctor.balance import balance_checkpoint, balance_findings  # it builds on this module
    from tuneloop.doctor.preference import diagnose_preference, is_preference  # it builds on this module
    from tuneloop.doctor.rl import diagnose_reinforcement, is_reinforcement  # it builds on this module

    if is_preference(records):
        diagnosis = diagnose_preference(records, n_validation, info)
        diagnosis.findings += balance_findings(general, scale_curve)
        return diagnosis
    if is_reinforcement(records):
        diagnosis = diagnose_reinforcement(records, info)
        diagnosis.findings += balance_findings(general, scale_curve)
        return diagnosis
    c = Curves.from_metrics(records)
    noise = _loss_noise(c, n_validation)
    metric = _metric_findings(c)
    improving = any(
        f.kind in ("still_improving", "loss_rising_metric_improving") and f.evidence.get("by") == "metric"
        for f in metric
    )
    findings = (
        _diverging(c, noise)
        + _overfitting(c, noise, metric_improving=improving)
        + _underfitting(c, base_loss, tuned_loss, base_metric, tuned_metric, noise)
        + _undertrained(c)
        + metric
    )
    # The most confident problem wins; on a tie, the more urgent one (the order of VERDICTS).
    confidence = {v: max((f.confidence for f in findings if f.kind == v), default=0.0) for v in VERDICTS[:-1]}
    verdict = max(VERDICTS[:-1], key=lambda v: (confidence[v], -VERDICTS.index(v)))
    if confidence[verdict] < 0.5:
        verdict = "healthy"
    # No contradictory findings side by side: the verdict's own findings, and the notes.
    findings = [f for f in findings if f.kind == verdict or f.kind not in VERDICTS]
    if verdict == "healthy":
        findings.insert(0, _healthy(c))
    findings += _data_findings(n_validation, data_report)
    findings += balance_findings(general, scale_curve) + balance_checkpoint(c, info)
    summary = curve_summary(c, records)
    keep = _checkpoint(c, info or {}, verdict)
    if keep:
        summary["keep"] = keep.evidence
        findings.append(keep)
    if info and info.get("timings", {}).get("train"):
        summary["train_seconds"] = info["timings"]["train"]
    return Diagnosis(verdict, findings, summary=summary)


def read_metrics_file(path: str | Path) -> list[dict]:
    """The records of a run directory's metrics.jsonl, or of a bare metrics.jsonl."""
    path = Path(path)
    metrics_file = RunDir(path).metrics_file if path.is_dir() else path
    if not metrics_file.is_file():
        raise FileNotFoundError(f"{path}: no metrics.jsonl (expected a run directory or a metrics.jsonl file)")
    records = read_metrics(metrics_file)
    if not records:
        raise ValueError(f"{metrics_file}: no metrics logged yet")
    return records


def diagnose_path(path: str | Path, records: list[dict] | None = None) -> tuple[Diagnosis, dict | None]:
    """A run directory, or a bare metrics.jsonl (`records`: its records, when the caller has read
    them already). Returns the diagnosis and the run's config (or None)."""
    from tuneloop.config import headline

    path = Path(path)
    records = records if records is not None else read_metrics_file(path)
    run = RunDir(path if path.is_dir() else path.parent)
    config = run.config().model_dump(mode="json") if run.config_file.is_file() else None
    info = run.info()
    evaluation = run.evaluation() or {}
    key = headline(evaluation.get("metric", "loss"))
    side = lambda name, k: evaluation.get(name, {}).get("metrics", {}).get(k)  # noqa: E731
    diagnosis = diagnose_metrics(
        records,
        base_loss=side("base", "loss"),
        tuned_loss=side("finetuned", "loss"),
        base_metric=side("base", key) if key != "loss" else None,
        tuned_metric=side("finetuned", key) if key != "loss" else None,
        n_validation=info.get("split_sizes", {}).get("validation"),
        data_report=run.data_report(),
        info=info,
        general=evaluation.get("general"),
        scale_curve=evaluation.get("scale_curve"),
    )
    return diagnosis, config


def _loss_noise(c: Curves, n_validation: int | None) -> float:
    """The relative change in validation loss that the evaluation's own noise can explain: NOISE_Z
    standard errors over examples where the run logged them, else a guess from the validation
    size (about 0.5 / sqrt(n): per-example answer losses vary about half as much as their mean)."""
    if c.val_se and c.val:
        best_step, best = min(c.val, key=lambda p: p[1])
        se = c.val_se.get(best_step, max(c.val_se.values()))
        return max(RISE, NOISE_Z * se / best) if best > 0 else RISE
    if n_validation:
        return max(RISE, 0.5 / math.sqrt(n_validation))
    return RISE


def _diverging(c: Curves, noise: float) -> list[Finding]:
    out = []
    if c.non_finite:
        step, key = c.non_finite[0]
        out.append(
            Finding(
                "diverging",
                {"step": step, "metric": key, "count": len(c.non_finite)},
                1.0,
                f"{key} became NaN/inf at step {step}",
                "non_finite",
            )
        )
    s = smooth(c.train) if len(c.train) >= 4 else []
    if s and s[-1] > s[0] * CLIMB:
        out.append(
            Finding(
                "diverging",
                {"first_train_loss": round(s[0], 4), "last_train_loss": round(s[-1], 4)},
                0.8,
                f"training loss climbed from {s[0]:.3f} to {s[-1]:.3f}",
                "climb",
            )
        )
    elif s and c.val and s[-1] > min(s) * REBOUND:
        best_val = min(v for _, v in c.val)
        if c.val[-1][1] > best_val * (1 + max(FLAT, noise)):
            out.append(
                Finding(
                    "diverging",
                    {
                        "min_train_loss": round(min(s), 4),
                        "last_train_loss": round(s[-1], 4),
                        "best_val_loss": round(best_val, 4),
                        "last_val_loss": round(c.val[-1][1], 4),
                    },
                    0.7,
                    f"training and validation loss both rebounded well above their best (training "
                    f"{min(s):.3f} → {s[-1]:.3f}, validation {best_val:.3f} → {c.val[-1][1]:.3f}): the "
                    "run became unstable late",
                    "rebound",
                )
            )
    spikes, recovered = _spikes(c)
    if spikes:
        out.append(
            Finding(
                "diverging",
                {"spikes": spikes[:5]},
                min(0.9, 0.4 + 0.2 * len(spikes)),
                f"{len(spikes)} training-loss spike(s) that did not recover, e.g. {spikes[0]['loss']} at "
                f"step {spikes[0]['step']} against a recent median of {spikes[0]['recent_median']}",
                "spikes",
            )
        )
    if recovered:
        out.append(
            Finding(
                "spike_recovered",
                {"spikes": recovered[:5]},
                0.6,
                f"{len(recovered)} training-loss spike(s) that recovered within {RECOVERY_POINTS} logged "
                f"points (e.g. {recovered[0]['loss']} at step {recovered[0]['step']}): a hard batch, not "
                "instability",
            )
        )
    if len(c.grad_norm) >= 5:
        norms = sorted(v for _, v in c.grad_norm)
        median = norms[len(norms) // 2]
        # The first steps' gradients are large by nature (a fresh adapter, a random head): skip them.
        settled = c.grad_norm[max(3, len(c.grad_norm) // 10) :] or c.grad_norm
        step, peak = max(settled, key=lambda p: p[1])
        if median > 0 and peak > GRAD_EXPLOSION * median:
            evidence = {"step": step, "grad_norm": round(peak, 3), "median": round(median, 3)}
            harmful = any(sp["step"] >= step for sp in spikes) or (s and s[-1] > s[0] * CLIMB)
            if harmful:
                out.append(
                    Finding(
                        "diverging",
                        evidence,
                        0.6,
                        f"gradient norm {peak:.2f} at step {step}, "
                        f"{peak / median:.0f}x its median, and the loss went up",
                        "gradient_explosion",
                    )
                )
            else:  # clipping bounded the update; the loss did not move
                out.append(
                    Finding(
                        "grad_spike_absorbed",
                        evidence,
                        0.6,
                        f"gradient norm {peak:.2f} at step {step} ({peak / median:.0f}x its median), absorbed "
                        "by gradient clipping: the loss did not go up",
                    )
                )
    return out


def _spikes(c: Curves) -> tuple[list[dict], list[dict]]:
    """Training-loss spikes, split into those that stayed and those that recovered."""
    stayed, recovered = [], []
    for i in range(3, len(c.train)):
        recent = sorted(v for _, v in c.train[max(0, i - 5) : i])
        median = recent[len(recent) // 2]
        # Relative and absolute: near zero loss, 0.05 against 0.01 is noise, not instability.
        if c.train[i][1] > SPIKE * median and c.train[i][1] - median > SPIKE_MIN_SHARE * c.train[0][1]:
            spike = {"step": c.train[i][0], "loss": round(c.train[i][1], 4), "recent_median": round(median, 4)}
            after = [v for _, v in c.train[i + 1 : i + 1 + RECOVERY_POINTS]]
            if any(v < RECOVERED * median for v in after):
                recovered.append(spike)
            elif after or i == len(c.train) - 1:  # the last point: no evidence it recovered
                stayed.append(spike)
    return stayed, recovered


def _overfitting(c: Curves, noise: float, metric_improving: bool) -> list[Finding]:
    """From the losses. When the task metric still improves, a rising validation loss is noted
    (loss_rising_metric_improving) rather than called overfitting."""
    out = []
    if len(c.val) >= 3:
        best_i = min(range(len(c.val)), key=lambda i: c.val[i][1])
        best_step, best = c.val[best_i]
        after = c.val[best_i + 1 :]
        risen = [(s, v) for s, v in after if v > best * (1 + noise)]
        rising = len(after) >= 2 and after[-1][1] > after[-2][1] and len(risen) >= 2
        train_then = _train_at(c, best_step)
        train_now = smooth(c.train)[-1] if c.train else None
        train_falling = train_then is not None and train_now is not None and train_now < train_then
        if risen and train_falling:
            confidence = 0.9 if rising else 0.6 if len(risen) >= 2 else 0.5
            evidence = {
                "best_step": best_step,
                "best_val_loss": round(best, 4),
                "last_step": c.val[-1][0],
                "last_val_loss": round(c.val[-1][1], 4),
                "evaluations_above_best": len(risen),
                "noise": round(noise, 4),
                "train_loss_at_best": round(train_then, 4),
                "train_loss_now": round(train_now, 4),
            }
            message = (
                f"validation loss rose from {best:.3f} (step {best_step}) to {c.val[-1][1]:.3f}, more than its "
                f"noise ({noise:.1%}), while training loss fell from {train_then:.3f} to {train_now:.3f}"
            )
            if metric_improving:
                out.append(
                    Finding(
                        "loss_rising_metric_improving",
                        {**evidence, "by": "metric"},
                        confidence,
                        message + f"; but validation {c.metric_key} kept improving: a rising loss is not by "
                        "itself harmful overfitting (the model grows more confident, right or wrong); keep "
                        "the checkpoint the metric prefers",
                    )
                )
            else:
                out.append(Finding("overfitting", evidence, confidence, message, "loss_rising"))
    if c.train and c.val and not metric_improving:
        train_now = smooth(c.train)[-1]
        gap_now = c.val[-1][1] - train_now
        first_train = _train_at(c, c.val[0][0])
        gap_first = c.val[0][1] - first_train if first_train is not None else None
        if train_now < LOW_TRAIN_LOSS and gap_first is not None and gap_now > max(0.05, 2 * gap_first):
            out.append(
                Finding(
                    "overfitting",
                    {
                        "train_loss": round(train_now, 4),
                        "val_loss": round(c.val[-1][1], 4),
                        "gap_first": round(gap_first, 4),
                        "gap_now": round(gap_now, 4),
                    },
                    0.6,
                    f"training loss {train_now:.3f} is below {LOW_TRAIN_LOSS} and the gap to validation "
                    f"widened from {gap_first:.3f} to {gap_now:.3f}",
                    "memorising",
                )
            )
    return out


def _underfitting(c: Curves, base_loss, tuned_loss, base_metric, tuned_metric, noise: float) -> list[Finding]:
    out = []
    if len(c.train) >= 4 and len(c.val) >= 2:
        s = smooth(c.train)
        # From the first evaluation on: the first few steps drop fast on any run (format tokens,
        # the end-of-turn marker) and say nothing about whether the task is being learned.
        start = _train_at(c, c.val[0][0]) or s[0]
        train_gain = (start - s[-1]) / start if start > 0 else 0.0
        val_gain = (c.val[0][1] - c.val[-1][1]) / c.val[0][1] if c.val[0][1] > 0 else 0.0
        # Flat, not rising: losses that go up are divergence or overfitting, not a model that cannot learn.
        if -FLAT < train_gain < FLAT and -max(FLAT, noise) < val_gain < FLAT and c.val[-1][1] > HIGH_LOSS:
            out.append(
                Finding(
                    "underfitting",
                    {
                        "train_loss": [round(start, 4), round(s[-1], 4)],
                        "val_loss": [round(c.val[0][1], 4), round(c.val[-1][1], 4)],
                        "train_improvement": round(train_gain, 3),
                        "val_improvement": round(val_gain, 3),
                    },
                    0.8,
                    f"both losses stayed high and flat after the first evaluation: training "
                    f"{start:.3f} → {s[-1]:.3f}, validation {c.val[0][1]:.3f} → {c.val[-1][1]:.3f}",
                    "flat",
                )
            )
    if base_loss and tuned_loss and tuned_loss > BASE_GAIN * base_loss:
        out.append(
            Finding(
                "underfitting",
                {"base_test_loss": round(base_loss, 4), "finetuned_test_loss": round(tuned_loss, 4)},
                0.7,
                f"the fine-tuned test loss {tuned_loss:.3f} is barely below the base model's {base_loss:.3f}",
                "little_gain_in_loss",
            )
        )
    measured = base_metric is not None and tuned_metric is not None and c.metric_key
    if measured and c.sign * (tuned_metric - base_metric) <= 0.01 * max(abs(base_metric), 1.0):
        out.append(
            Finding(
                "underfitting",
                {
                    "base_test_metric": round(base_metric, 4),
                    "finetuned_test_metric": round(tuned_metric, 4),
                    "metric": c.metric_key,
                },
                0.8,
                f"no gain over the base model on the task: test {c.metric_key} "
                f"{base_metric:.3f} (base) → {tuned_metric:.3f} (fine-tuned)",
                "no_gain_over_base",
            )
        )
    if len(c.metric) >= 2 and c.val and c.val[-1][1] > HIGH_LOSS:
        best = c.best_metric()
        # Stuck, not slow: a loss still falling by a fifth or more is a model still learning.
        val_gain = (c.val[0][1] - c.val[-1][1]) / c.val[0][1] if c.val[0][1] > 0 else 0.0
        if c.sign * (best[1] - c.metric[0][1]) <= NOISE_Z * _metric_se(c, best[0]) and val_gain < 2 * FLAT:
            out.append(
                Finding(
                    "underfitting",
                    {
                        "metric": c.metric_key,
                        "first": round(c.metric[0][1], 4),
                        "best": round(best[1], 4),
                        "val_loss": round(c.val[-1][1], 4),
                    },
                    0.6,
                    f"validation {c.metric_key} did not move ({c.metric[0][1]:.3f} → best "
                    f"{best[1]:.3f}) and the validation loss is still high ({c.val[-1][1]:.3f}): the "
                    "model has not picked up the task",
                    "no_task_progress",
                )
            )
    if c.train_metric and c.metric and c.higher_is_better and 0 <= c.train_metric[-1][1] <= 1:
        train_value = c.train_metric[-1][1]
        plateaued = len(c.metric) >= 2 and not _metric_rising_at_end(c)
        if train_value < CAPACITY and plateaued:
            out.append(
                Finding(
                    "underfitting",
                    {
                        "train_sample_metric": round(train_value, 4),
                        "val_metric": round(c.metric[-1][1], 4),
                        "metric": c.metric_key,
                    },
                    0.6,
                    f"{c.metric_key} is only {train_value:.3f} even on training examples and stopped "
                    "improving: the adapter lacks the capacity (rank, alpha) or the steps (learning rate) "
                    "to fit the task",
                    "capacity",
                )
            )
    return out


def _undertrained(c: Curves) -> list[Finding]:
    if len(c.val) < 3:
        return []
    last = [v for _, v in c.val[-3:]]
    gains = [(a - b) / a for a, b in itertools.pairwise(last) if a > 0]
    if gains and all(g > STEEP for g in gains):
        return [
            Finding(
                "undertrained",
                {"last_val_losses": [round(v, 4) for v in last], "relative_gains": [round(g, 3) for g in gains]},
                0.7,
                f"validation loss was still falling fast when training ended ({' → '.join(f'{v:.3f}' for v in last)})",
                "steep",
            )
        ]
    return []


def _metric_se(c: Curves, step: int) -> float:
    return c.metric_se.get(step, max(c.metric_se.values(), default=0.0))


def recent_trend(c: Curves) -> tuple[float, int, int]:
    """The validation metric's gain over the recent part of the run (better is positive): the
    least-squares line through the last half of the scored evaluations (at least RECENT_POINTS),
    from its first step to its last. A first-against-last comparison calls a plateau "improving"
    whenever the run started low: banking77 went 0.578 -> 0.914, while from epoch 1.8 on it moved
    within its noise (0.883, 0.914, 0.898, 0.914, +-0.025) (issue 42)."""
    points = c.metric[-max(RECENT_POINTS, len(c.metric) // 2) :]
    steps, values = [s for s, _ in points], [v for _, v in points]
    mean_s, mean_v = sum(steps) / len(steps), sum(values) / len(values)
    spread = sum((s - mean_s) ** 2 for s in steps)
    slope = sum((s - mean_s) * (v - mean_v) for s, v in points) / spread if spread else 0.0
    return c.sign * slope * (steps[-1] - steps[0]), steps[0], steps[-1]


def _metric_rising_at_end(c: Curves) -> bool:
    """The best validation metric is at one of the last HEADROOM_POINTS scored evaluations, above
    the first one by more than its noise, and the recent trend gains more than that noise too."""
    best = c.best_metric()
    if best is None or len(c.metric) < 2:
        return False
    at_end = best[0] in {s for s, _ in c.metric[-HEADROOM_POINTS:]}
    noise = NOISE_Z * _metric_se(c, best[0])
    gained = c.sign * (best[1] - c.metric[0][1]) > noise
    return at_end and gained and recent_trend(c)[0] > noise


def _metric_findings(c: Curves) -> list[Finding]:
    """What the task metric of continuous evaluation says: headroom, or task overfitting."""
    out = []
    if c.val:
        best_step, best_loss = min(c.val, key=lambda p: p[1])
        if best_step == c.val[-1][0] and len(c.val) >= 3:
            out.append(
                Finding(
                    "still_improving",
                    {"by": "loss", "best_step": best_step, "best_val_loss": round(best_loss, 4)},
                    0.6,
                    f"validation loss was at its best at the last evaluation (step {best_step}, "
                    f"{best_loss:.3f}): there is headroom, more training should help",
                )
            )
    best = c.best_metric()
    if best is None:
        return out
    key, (best_step, best_value) = c.metric_key, best
    first_value = c.metric[0][1]
    se = _metric_se(c, best_step)
    evidence = {
        "by": "metric",
        "metric": key,
        "first": round(first_value, 4),
        "best": round(best_value, 4),
        "best_step": best_step,
        "last": round(c.metric[-1][1], 4),
        "last_step": c.metric[-1][0],
        "se": round(se, 4),
        "scored_evaluations": len(c.metric),
    }
    if _metric_rising_at_end(c):
        out = [f for f in out if f.evidence.get("by") != "loss"]  # one headroom finding, the metric's
        gain, since, until = recent_trend(c)
        out.append(
            Finding(
                "still_improving",
                {**evidence, "recent_gain": round(gain, 4), "recent_steps": [since, until]},
                0.8 if len(c.metric) >= 3 else 0.6,
                f"validation {key} was still improving at the end ({first_value:.3f} → {best_value:.3f} at "
                f"step {best_step}; +{gain:.3f} over steps {since}-{until}, beyond its noise ±{se:.3f}): "
                "there is headroom, more training should raise it",
            )
        )
        return out
    drop = c.sign * (best_value - c.metric[-1][1])
    train_s = smooth(c.train)
    train_then, train_now = _train_at(c, best_step), (train_s[-1] if train_s else None)
    train_falling = train_then is not None and train_now is not None and train_now < train_then * (1 - RISE)
    if best_step != c.metric[-1][0] and drop > NOISE_Z * max(se, 1e-9) and train_falling:
        below = [v for s, v in c.metric if s > best_step and c.sign * (best_value - v) > NOISE_Z * se]
        out.append(
            Finding(
                "overfitting",
                {**evidence, "train_loss_at_best": round(train_then, 4), "train_loss_now": round(train_now, 4)},
                0.9 if len(below) >= 2 else 0.7,
                f"validation {key} fell from {best_value:.3f} (step {best_step}) to {c.metric[-1][1]:.3f}, "
                f"beyond its noise (±{se:.3f}), while training loss kept falling ({train_then:.3f} → "
                f"{train_now:.3f}): the model is memorising, not learning the task",
                "task_overfitting",
            )
        )
    return out


def _healthy(c: Curves) -> Finding:
    evidence = {}
    if c.val:
        step, best = min(c.val, key=lambda p: p[1])
        evidence = {"best_step": step, "best_val_loss": round(best, 4), "last_val_loss": round(c.val[-1][1], 4)}
    if c.metric:
        evidence.update(metric=c.metric_key, last_metric=round(c.metric[-1][1], 4))
    return Finding(
        "healthy",
        evidence,
        0.7 if len(c.val) >= 3 else 0.4,
        "no problem in the curves: training and validation loss fell together"
        + (f", validation {c.metric_key} {c.metric[-1][1]:.3f}" if c.metric else ""),
    )


def _checkpoint(c: Curves, info: dict, verdict: str) -> Finding | None:
    """Which weights to keep, and whether the saved ones are those."""
    best = c.best_metric()
    if best is not None:
        step, value = best
        by, what = f"eval_{c.metric_key}", f"validation {c.metric_key} {value:.3f}, the best of {len(c.metric)} scored"
    elif c.val:
        step, value = min(c.val, key=lambda p: p[1])
        by, what = "eval_loss", f"validation loss {value:.3f}, the lowest of {len(c.val)}"
    else:
        return None
    last_step = max([s for s, _ in c.train + c.val] or [step])
    saved = info.get("best_checkpoint_step", last_step) if info else None
    evidence = {"step": step, "by": by, "value": round(value, 4), "saved_step": saved}
    message = f"keep the weights from step {step} ({what} evaluations)"
    if saved == step:
        message += "; the saved weights are that checkpoint"
    elif saved is not None:
        message += (
            f"; the saved weights are from step {saved}: rerun with train.select_best: "
            f"{'metric' if by != 'eval_loss' else 'loss'} and early stopping to keep the best one"
        )
    if verdict == "diverging" and c.non_finite:
        message += "; resume only from a checkpoint before the first NaN, with a lower learning rate"
    return Finding("checkpoint", evidence, 1.0, message)


def _data_findings(n_validation: int | None, report: dict | None) -> list[Finding]:
    out = []
    if n_validation is not None and n_validation < SMALL_VALIDATION:
        out.append(
            Finding(
                "small_validation_set",
                {"validation_rows": n_validation},
                0.6,
                f"only {n_validation} validation rows: differences of a few percent in validation loss may be noise",
            )
        )
    dropped = (report or {}).get("dropped", {})
    if dropped.get("duplicates"):
        out.append(
            Finding(
                "duplicates",
                {"dropped": dropped["duplicates"]},
                1.0,
                f"{dropped['duplicates']} duplicate rows were dropped before splitting",
            )
        )
    if dropped.get("leakage"):
        out.append(
            Finding(
                "leakage",
                {"removed_from_train": dropped["leakage"]},
                1.0,
                f"{dropped['leakage']} train rows duplicated validation/test rows and were removed",
            )
        )
    return out


def _train_at(c: Curves, step: int) -> float | None:
    """Smoothed training loss at (or just before) a step."""
    if not c.train:
        return None
    s = smooth(c.train)
    before = [i for i, (st, _) in enumerate(c.train) if st <= step]
    return s[before[-1]] if before else s[0]


def curve_summary(c: Curves, records: list[dict]) -> dict:
    """The curves' headline numbers: first/last/best losses, the task metric's best and last."""
    out: dict = {"train_points": len(c.train), "val_points": len(c.val)}
    if c.val:
        step, best = min(c.val, key=lambda p: p[1])
        epoch = next((r.get("epoch") for r in records if r.get("step") == step and "eval_loss" in r), None)
        out.update(best_val_loss=round(best, 4), best_step=step, best_epoch=epoch, last_val_loss=round(c.val[-1][1], 4))
    if c.train:
        out.update(first_train_loss=round(c.train[0][1], 4), last_train_loss=round(c.train[-1][1], 4))
    best = c.best_metric()
    if best is not None:
        out.update(
            metric=c.metric_key,
            best_metric=round(best[1], 4),
            best_metric_step=best[0],
            last_metric=round(c.metric[-1][1], 4),
            metric_points=len(c.metric),
        )
        if c.train_metric:
            out["train_sample_metric"] = round(c.train_metric[-1][1], 4)
    epochs = max((r.get("epoch") or 0 for r in records), default=0)
    if epochs:
        out["epochs_done"] = round(epochs, 3)
    return out
