"""What the dashboard reads from the run store: run summaries, one run's details, comparisons."""

from __future__ import annotations

import json
from pathlib import Path

from tuneloop.config import ConfigError, headline
from tuneloop.doctor import diagnose_metrics, diagnose_path, recommend
from tuneloop.doctor.curves import Curves
from tuneloop.eval.compare import compare_outputs
from tuneloop.eval.general import general_rows
from tuneloop.runs import RunDir
from tuneloop.runs.store import RunFileDamaged
from tuneloop.train.methods import method_of


def read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _config(run: RunDir) -> dict:
    """The run's validated config as plain values; {} for a run directory without a usable one (the
    runs list still shows the run)."""
    try:
        return run.config().model_dump(mode="json")
    except (OSError, ConfigError):
        return {}


def status(run: RunDir) -> str:
    """run.json's status, `interrupted` for a run whose process is gone, `damaged` for an unreadable run.json."""
    try:
        return run.status()
    except RunFileDamaged:
        return "damaged"


def read_metrics(run: RunDir) -> list[dict]:
    try:
        return run.read_metrics()
    except (OSError, RunFileDamaged):
        return []


def runs(runs_dir: Path) -> list[RunDir]:
    if not runs_dir.is_dir():
        return []
    return sorted(
        (r for r in map(RunDir, runs_dir.iterdir()) if r.info_file.is_file()), key=lambda r: r.id, reverse=True
    )


def find(runs_dir: Path, run_id: str) -> RunDir | None:
    """A run by id; ids come from URLs, so only names of existing run directories are accepted."""
    return next((r for r in runs(runs_dir) if r.id == run_id), None)


def summary(run: RunDir, metrics: list[dict] | None = None) -> dict:
    """One row of the runs list. `metrics`: the run's metrics.jsonl when the caller has read it."""
    info, config = read_json(run.info_file) or {}, _config(run)
    metrics = run.read_metrics() if metrics is None else metrics  # a damaged file: safe_summary says so
    val = Curves.from_metrics(metrics).val
    evaluation = read_json(run.eval_file)
    train, lora = config.get("train", {}), config.get("lora", {})
    metric = value = None
    if evaluation:
        metric = headline(evaluation["metric"])
        value = evaluation["finetuned"]["metrics"].get(metric)
    return {
        "id": run.id,
        "status": run.status(),
        "started_at": info.get("started_at", ""),
        "model": Path(str(config.get("model", "?"))).name,
        "data": Path(str(config.get("data", {}).get("path", "?"))).name,
        "method": train.get("method"),
        "learning_rate": train.get("learning_rate"),
        "epochs": train.get("epochs"),
        "batch": (train.get("batch_size") or 0) * (train.get("gradient_accumulation") or 1) or None,
        "lora_r": lora.get("r") if method_of(train.get("method") or "lora").adapter else None,
        "best_val_loss": min((v for _, v in val), default=None),
        "metric": metric,
        "metric_value": value,
        "verdict": diagnose_metrics(metrics).verdict if val else None,
    }


def safe_summary(run: RunDir) -> dict:
    """summary(), or a row that says the run is damaged and why: one bad run must not hide the others."""
    try:
        return summary(run)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        empty = dict.fromkeys(
            (
                "started_at",
                "model",
                "data",
                "method",
                "learning_rate",
                "epochs",
                "batch",
                "lora_r",
                "best_val_loss",
                "metric",
                "metric_value",
                "verdict",
            )
        )
        return {**empty, "id": run.id, "status": "damaged", "error": f"{type(e).__name__}: {e}"}


def detail(run: RunDir) -> dict:
    info, config = read_json(run.info_file) or {}, _config(run)
    info["status"] = status(run)  # what the page shows: a run whose process died is not "running"
    info["resumable"] = info["status"] != "damaged" and run.resumable()
    info["run_path"] = str(run.path)
    metrics = read_metrics(run)
    diagnosis = None
    if any("eval_loss" in m for m in metrics) and info["status"] != "damaged":
        found, run_config = diagnose_path(run.path, metrics)
        diagnosis = recommend(found, run_config).to_dict()
    evaluation = read_json(run.eval_file)
    general = (evaluation or {}).get("general")
    return {
        "id": run.id,
        "info": info,
        "config": config,
        "metrics": metrics,
        "diagnosis": diagnosis,
        "data_report": read_json(run.data_report_file),
        "evaluation": evaluation,
        "general_rows": general_rows(general) if general else None,  # what the fine-tune cost the model
    }


def flatten(config: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in config.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def config_diff(configs: dict[str, dict]) -> list[dict]:
    flat = {name: flatten(c) for name, c in configs.items()}
    keys = sorted(set().union(*flat.values())) if flat else []
    return [
        {"key": k, "values": [flat[n].get(k) for n in flat]}
        for k in keys
        if k != "run_name" and len({json.dumps(flat[n].get(k), sort_keys=True) for n in flat}) > 1
    ]


def finetuned_side(evaluation: dict) -> dict:
    """A run's fine-tuned answers from eval.json, in the shape compare_outputs takes."""
    examples = evaluation.get("examples", [])
    return {
        "outputs": [e["finetuned"]["output"] for e in examples],
        "per_example": [{k: v for k, v in e["finetuned"].items() if k != "output"} for e in examples],
    }


def significance(first: dict, other: dict) -> dict | None:
    """Paired A/B of two evaluated runs on the same test answers (no generation: eval.json has them)."""
    refs_a = [e["reference"] for e in first.get("examples", [])]
    refs_b = [e["reference"] for e in other.get("examples", [])]
    if not refs_a or refs_a != refs_b or first["metric"] != other["metric"]:
        return None
    return compare_outputs(first["metric"], refs_a, finetuned_side(first), finetuned_side(other), resamples=500)
