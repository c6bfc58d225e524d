"""Read the curves the way the practitioners' guides do, and name what is wrong.

Verdicts, most urgent first:
  diverging     NaN/inf, loss climbing above where it started, loss spikes, exploding gradients
  overfitting   validation loss rising over consecutive evaluations while training loss falls;
                training loss below ~0.2 with a widening train/validation gap
  underfitting  both losses high and flat; little gain over the base model
  undertrained  validation loss still falling steeply when training ended
  healthy       none of the above
Each finding carries its evidence (steps and values) and a confidence in [0, 1]. The
thresholds are named below so that a reader can argue with them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tuneloop.doctor.curves import Curves, smooth

VERDICTS = ("diverging", "overfitting", "underfitting", "undertrained", "healthy")
LOW_TRAIN_LOSS = 0.2  # the guides' "training loss below ~0.2" memorisation line
RISE = 0.03  # validation loss this far (relative) above its best counts as risen
FLAT = 0.10  # less relative improvement than this over a run is flat
HIGH_LOSS = 0.5  # a flat validation loss above this (nats per answer token) is not "converged"
STEEP = 0.05  # each of the last evaluations improving by more than this: still learning fast
CLIMB = 1.10  # smoothed training loss this far above its start: the run is going the wrong way
SPIKE = 2.5  # a training loss this many times the recent median is a spike...
SPIKE_MIN_SHARE = 0.1  # ...when the jump is also at least this share of the starting loss
GRAD_EXPLOSION = 10.0  # a grad norm this many times the median
BASE_GAIN = 0.90  # fine-tuned test loss above this share of the base model's: little gained
SMALL_VALIDATION = 50  # fewer validation rows than this: differences of a few % are noise


@dataclass(frozen=True)
class Finding:
    kind: str  # a verdict, or a data finding: small_validation_set, duplicates, leakage
    evidence: dict
    confidence: float
    message: str


@dataclass
class Diagnosis:
    verdict: str
    findings: list[Finding]
    recommendations: list = field(default_factory=list)
    next_config: dict | None = None
    summary: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"verdict": self.verdict, "findings": [asdict(f) for f in self.findings],
                "recommendations": [r.to_dict() for r in self.recommendations], "next_config": self.next_config,
                "summary": self.summary}


def diagnose_metrics(records: list[dict], *, base_loss: float | None = None, tuned_loss: float | None = None,
                     n_validation: int | None = None, data_report: dict | None = None) -> Diagnosis:
    curves = Curves.from_metrics(records)
    findings = (_diverging(curves) + _overfitting(curves) + _underfitting(curves, base_loss, tuned_loss)
                + _undertrained(curves))
    # The most confident problem wins; on a tie, the more urgent one (the order of VERDICTS).
    confidence = {v: max((f.confidence for f in findings if f.kind == v), default=0.0) for v in VERDICTS[:-1]}
    verdict = max(VERDICTS[:-1], key=lambda v: (confidence[v], -VERDICTS.index(v)))
    if confidence[verdict] < 0.5:
        verdict = "healthy"
    if verdict == "healthy":
        findings.append(_healthy(curves))
    findings += _data_findings(n_validation, data_report)
    return Diagnosis(verdict, findings, summary=_summary(curves, records))


def read_metrics_file(path: str | Path) -> list[dict]:
    """The records of a run directory's metrics.jsonl, or of a bare metrics.jsonl."""
    path = Path(path)
    metrics_file = path / "metrics.jsonl" if path.is_dir() else path
    if not metrics_file.is_file():
        raise FileNotFoundError(f"{path}: no metrics.jsonl (expected a run directory or a metrics.jsonl file)")
    records = [json.loads(line) for line in metrics_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not records:
        raise ValueError(f"{metrics_file}: no metrics logged yet")
    return records


def diagnose_path(path: str | Path, records: list[dict] | None = None) -> tuple[Diagnosis, dict | None]:
    """A run directory, or a bare metrics.jsonl (`records`: its records, when the caller has read
    them already). Returns the diagnosis and the run's config (or None)."""
    import yaml

    path = Path(path)
    records = records if records is not None else read_metrics_file(path)
    run = path if path.is_dir() else path.parent
    config = yaml.safe_load((run / "config.yaml").read_text()) if (run / "config.yaml").is_file() else None
    info = _json(run / "run.json") or {}
    evaluation = _json(run / "eval.json") or {}
    diagnosis = diagnose_metrics(
        records,
        base_loss=evaluation.get("base", {}).get("metrics", {}).get("loss"),
        tuned_loss=evaluation.get("finetuned", {}).get("metrics", {}).get("loss"),
        n_validation=info.get("split_sizes", {}).get("validation"),
        data_report=_json(run / "data" / "report.json"))
    return diagnosis, config


def _json(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


def _diverging(c: Curves) -> list[Finding]:
    out = []
    if c.non_finite:
        step, key = c.non_finite[0]
        out.append(Finding("diverging", {"step": step, "metric": key, "count": len(c.non_finite)}, 1.0,
                           f"{key} became NaN/inf at step {step}"))
    if len(c.train) >= 4:
        s = smooth(c.train)
        if s[-1] > s[0] * CLIMB:
            out.append(Finding("diverging", {"first_train_loss": round(s[0], 4), "last_train_loss": round(s[-1], 4)},
                               0.8, f"training loss climbed from {s[0]:.3f} to {s[-1]:.3f}"))
    spikes = []
    for i in range(3, len(c.train)):
        recent = sorted(v for _, v in c.train[max(0, i - 5):i])
        median = recent[len(recent) // 2]
        # Relative and absolute: near zero loss, 0.05 against 0.01 is noise, not instability.
        if c.train[i][1] > SPIKE * median and c.train[i][1] - median > SPIKE_MIN_SHARE * c.train[0][1]:
            spikes.append({"step": c.train[i][0], "loss": round(c.train[i][1], 4), "recent_median": round(median, 4)})
    if spikes:
        out.append(Finding("diverging", {"spikes": spikes[:5]}, min(0.9, 0.4 + 0.2 * len(spikes)),
                           f"{len(spikes)} training-loss spike(s), e.g. {spikes[0]['loss']} at step "
                           f"{spikes[0]['step']} against a recent median of {spikes[0]['recent_median']}"))
    if len(c.grad_norm) >= 5:
        norms = sorted(v for _, v in c.grad_norm)
        median = norms[len(norms) // 2]
        # The first steps' gradients are large by nature (a fresh adapter, a random head): skip them.
        settled = c.grad_norm[max(3, len(c.grad_norm) // 10):] or c.grad_norm
        step, peak = max(settled, key=lambda p: p[1])
        if median > 0 and peak > GRAD_EXPLOSION * median:
            out.append(Finding("diverging", {"step": step, "grad_norm": round(peak, 3), "median": round(median, 3)},
                               0.6, f"gradient norm {peak:.2f} at step {step}, {peak / median:.0f}x its median"))
    return out


def _overfitting(c: Curves) -> list[Finding]:
    out = []
    if len(c.val) >= 3:
        best_i = min(range(len(c.val)), key=lambda i: c.val[i][1])
        best_step, best = c.val[best_i]
        after = c.val[best_i + 1:]
        risen = [(s, v) for s, v in after if v > best * (1 + RISE)]
        rising = len(after) >= 2 and after[-1][1] > after[-2][1] and len(risen) >= 2
        train_then = _train_at(c, best_step)
        train_now = smooth(c.train)[-1] if c.train else None
        train_falling = train_then is not None and train_now is not None and train_now < train_then
        if risen and train_falling:
            confidence = 0.9 if rising else 0.6 if len(risen) >= 2 else 0.5
            out.append(Finding("overfitting", {
                "best_step": best_step, "best_val_loss": round(best, 4), "last_step": c.val[-1][0],
                "last_val_loss": round(c.val[-1][1], 4), "evaluations_above_best": len(risen),
                "train_loss_at_best": round(train_then, 4), "train_loss_now": round(train_now, 4)}, confidence,
                f"validation loss rose from {best:.3f} (step {best_step}) to {c.val[-1][1]:.3f} while training "
                f"loss fell from {train_then:.3f} to {train_now:.3f}"))
    if c.train and c.val:
        train_now = smooth(c.train)[-1]
        gap_now = c.val[-1][1] - train_now
        first_train = _train_at(c, c.val[0][0])
        gap_first = c.val[0][1] - first_train if first_train is not None else None
        if train_now < LOW_TRAIN_LOSS and gap_first is not None and gap_now > max(0.05, 2 * gap_first):
            out.append(Finding("overfitting", {"train_loss": round(train_now, 4), "val_loss": round(c.val[-1][1], 4),
                                               "gap_first": round(gap_first, 4), "gap_now": round(gap_now, 4)}, 0.6,
                               f"training loss {train_now:.3f} is below {LOW_TRAIN_LOSS} and the gap to validation "
                               f"widened from {gap_first:.3f} to {gap_now:.3f}"))
    return out


def _underfitting(c: Curves, base_loss: float | None, tuned_loss: float | None) -> list[Finding]:
    out = []
    if len(c.train) >= 4 and len(c.val) >= 2:
        s = smooth(c.train)
        train_gain = (s[0] - s[-1]) / s[0] if s[0] > 0 else 0.0
        val_gain = (c.val[0][1] - c.val[-1][1]) / c.val[0][1] if c.val[0][1] > 0 else 0.0
        if train_gain < FLAT and val_gain < FLAT and c.val[-1][1] > HIGH_LOSS:
            out.append(Finding("underfitting", {"train_loss": [round(s[0], 4), round(s[-1], 4)],
                                                "val_loss": [round(c.val[0][1], 4), round(c.val[-1][1], 4)],
                                                "train_improvement": round(train_gain, 3),
                                                "val_improvement": round(val_gain, 3)}, 0.8,
                               f"both losses stayed high and flat: training {s[0]:.3f} → {s[-1]:.3f}, "
                               f"validation {c.val[0][1]:.3f} → {c.val[-1][1]:.3f}"))
    if base_loss and tuned_loss and tuned_loss > BASE_GAIN * base_loss:
        out.append(Finding("underfitting", {"base_test_loss": round(base_loss, 4),
                                            "finetuned_test_loss": round(tuned_loss, 4)}, 0.7,
                           f"the fine-tuned test loss {tuned_loss:.3f} is barely below the base model's "
                           f"{base_loss:.3f}"))
    return out


def _undertrained(c: Curves) -> list[Finding]:
    if len(c.val) < 3:
        return []
    last = [v for _, v in c.val[-3:]]
    gains = [(a - b) / a for a, b in zip(last, last[1:]) if a > 0]
    if gains and all(g > STEEP for g in gains):
        return [Finding("undertrained", {"last_val_losses": [round(v, 4) for v in last],
                                         "relative_gains": [round(g, 3) for g in gains]}, 0.7,
                        f"validation loss was still falling fast when training ended "
                        f"({' → '.join(f'{v:.3f}' for v in last)})")]
    return []


def _healthy(c: Curves) -> Finding:
    evidence = {}
    if c.val:
        step, best = min(c.val, key=lambda p: p[1])
        evidence = {"best_step": step, "best_val_loss": round(best, 4), "last_val_loss": round(c.val[-1][1], 4)}
    return Finding("healthy", evidence, 0.7 if len(c.val) >= 3 else 0.4,
                   "training and validation loss fell together and levelled off")


def _data_findings(n_validation: int | None, report: dict | None) -> list[Finding]:
    out = []
    if n_validation is not None and n_validation < SMALL_VALIDATION:
        out.append(Finding("small_validation_set", {"validation_rows": n_validation}, 0.6,
                           f"only {n_validation} validation rows: differences of a few percent in validation loss "
                           "may be noise"))
    dropped = (report or {}).get("dropped", {})
    if dropped.get("duplicates"):
        out.append(Finding("duplicates", {"dropped": dropped["duplicates"]}, 1.0,
                           f"{dropped['duplicates']} duplicate rows were dropped before splitting"))
    if dropped.get("leakage"):
        out.append(Finding("leakage", {"removed_from_train": dropped["leakage"]}, 1.0,
                           f"{dropped['leakage']} train rows duplicated validation/test rows and were removed"))
    return out


def _train_at(c: Curves, step: int) -> float | None:
    """Smoothed training loss at (or just before) a step."""
    if not c.train:
        return None
    s = smooth(c.train)
    before = [i for i, (st, _) in enumerate(c.train) if st <= step]
    return s[before[-1]] if before else s[0]


def _summary(c: Curves, records: list[dict]) -> dict:
    out: dict = {"train_points": len(c.train), "val_points": len(c.val)}
    if c.val:
        step, best = min(c.val, key=lambda p: p[1])
        epoch = next((r.get("epoch") for r in records if r.get("step") == step and "eval_loss" in r), None)
        out.update(best_val_loss=round(best, 4), best_step=step, best_epoch=epoch, last_val_loss=round(c.val[-1][1], 4))
    if c.train:
        out.update(first_train_loss=round(c.train[0][1], 4), last_train_loss=round(c.train[-1][1], 4))
    return out
