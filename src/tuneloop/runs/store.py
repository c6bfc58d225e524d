"""`runs/<run-id>/` — written by `tuneloop run`, read by diagnose, eval, serve and the dashboard.

    run.json        status (running|finished|failed|stopped), timestamps, model, versions, git commit
    config.yaml     every hyperparameter, resolved
    data/           the exact train/validation/test splits used (JSONL, with source_file/source_row),
                    report.json (the data profile) and dropped.jsonl (every row left out, and why)
    metrics.jsonl   one object per logged point: step, epoch, train_loss | eval_loss, ...
    adapter/        PEFT LoRA adapter (PeftModel.from_pretrained)
    eval.json       base and fine-tuned metrics on the test split, with per-example outputs
    evals/          `tuneloop eval` records, one per data set (test.json, <file stem>.json)
    compare/        `tuneloop compare` records (<a>-vs-<b>-<data>.json)
    export/         `tuneloop export`: adapter/, merged/, model.gguf
    report.html     self-contained report, ending with the doctor's verdict
    next.yaml       the doctor's recommended next config, ready for `tuneloop run` (when it changes anything)

Writers append or replace whole files atomically, so a reader (the dashboard, a second
terminal running `diagnose`) never sees half a JSON object.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from dataclasses import dataclass
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from tuneloop.config import RunConfig, load_config

TRACKED_PACKAGES = ("tuneloop", "torch", "transformers", "peft", "trl", "datasets", "accelerate")


@dataclass(frozen=True)
class RunDir:
    path: Path

    @classmethod
    def create(cls, runs_dir: Path, name: str) -> RunDir:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        runs_dir.mkdir(parents=True, exist_ok=True)
        for n in range(100):
            candidate = runs_dir / f"{name}-{stamp}" if n == 0 else runs_dir / f"{name}-{stamp}-{n}"
            try:
                candidate.mkdir()
                return cls(candidate)
            except FileExistsError:
                continue
        raise RuntimeError(f"could not create a fresh run directory under {runs_dir}")

    @property
    def id(self) -> str:
        return self.path.name

    # Paths, named once so every stage agrees on them.
    config_file = property(lambda self: self.path / "config.yaml")
    metrics_file = property(lambda self: self.path / "metrics.jsonl")
    adapter_dir = property(lambda self: self.path / "adapter")
    model_dir = property(lambda self: self.path / "model")  # full fine-tuning: the whole model
    eval_file = property(lambda self: self.path / "eval.json")
    report_file = property(lambda self: self.path / "report.html")
    info_file = property(lambda self: self.path / "run.json")
    data_dir = property(lambda self: self.path / "data")
    data_report_file = property(lambda self: self.path / "data" / "report.json")
    token_histogram_file = property(lambda self: self.path / "data" / "token_lengths.png")
    dropped_file = property(lambda self: self.path / "data" / "dropped.jsonl")
    checkpoints_dir = property(lambda self: self.path / "checkpoints")
    next_config_file = property(lambda self: self.path / "next.yaml")  # the doctor's recommended next run
    evals_dir = property(lambda self: self.path / "evals")
    comparisons_dir = property(lambda self: self.path / "compare")
    export_dir = property(lambda self: self.path / "export")

    def eval_record_file(self, data_name: str) -> Path:
        return self.evals_dir / f"{data_name}.json"

    def comparison_file(self, a: str, b: str, data_name: str) -> Path:
        return self.comparisons_dir / f"{a}-vs-{b}-{data_name}.json"

    def config(self) -> RunConfig:
        """config.yaml, validated: the resolved configuration the run trained with."""
        if not self.config_file.is_file():
            raise FileNotFoundError(f"{self.path}: not a run directory (no config.yaml)")
        return load_config(self.config_file)

    def info(self) -> dict[str, Any]:
        """run.json, or {} before the run has started."""
        return self.read_json(self.info_file) if self.info_file.is_file() else {}

    def evaluation(self) -> dict[str, Any] | None:
        """eval.json (base vs fine-tuned on the test split), or None before evaluation."""
        return self.read_json(self.eval_file) if self.eval_file.is_file() else None

    def data_report(self) -> dict[str, Any] | None:
        return self.read_json(self.data_report_file) if self.data_report_file.is_file() else None

    def append_metrics(self, record: dict[str, Any]) -> None:
        # One write() of one line: appends of that size are atomic on local filesystems.
        with open(self.metrics_file, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_file.exists():
            return []
        lines = self.metrics_file.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def write_json(self, path: Path, obj: Any) -> None:
        self.write_text(path, json.dumps(obj, indent=2) + "\n")

    def read_json(self, path: Path) -> Any:
        return json.loads(path.read_text(encoding="utf-8"))

    def write_text(self, path: Path, text: str) -> None:
        self.write_bytes(path, text.encode("utf-8"))

    def weights_dir(self, full: bool) -> Path:
        return self.model_dir if full else self.adapter_dir

    def last_checkpoint(self) -> Path | None:
        """The newest complete checkpoint-N folder (the Trainer writes trainer_state.json last)."""
        done = [p for p in self.checkpoints_dir.glob("checkpoint-*") if (p / "trainer_state.json").exists()]
        return max(done, key=lambda p: int(p.name.split("-")[-1]), default=None)

    def truncate_metrics(self, after_step: int) -> None:
        kept = [r for r in self.read_metrics() if r.get("step", 0) <= after_step]
        self.write_text(self.metrics_file, "".join(json.dumps(r) + "\n" for r in kept))

    def read_split(self, name: str) -> list:
        from tuneloop.data.example import Example

        rows = [json.loads(line) for line in (self.data_dir / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()]
        return [
            Example(
                r["messages"],
                r["source_row"],
                r.get("source_file", ""),
                kind=r.get("kind", "chat"),
                label=r.get("label"),
                augmented=r.get("augmented"),
            )
            for r in rows
        ]

    def write_bytes(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def write_jsonl(self, path: Path, rows: list[dict]) -> Path:
        path.parent.mkdir(exist_ok=True)
        self.write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        return path

    def write_split(self, name: str, examples) -> Path:
        return self.write_jsonl(self.data_dir / f"{name}.jsonl", [e.to_json() for e in examples])

    def start(self, **info: Any) -> None:
        self.write_json(
            self.info_file,
            {
                "id": self.id,
                "status": "running",
                "started_at": _now(),
                "pid": os.getpid(),
                "host": platform.node(),
                "python": platform.python_version(),
                "packages": package_versions(),
                "git_commit": git_commit(),
                **info,
            },
        )

    def update_info(self, **fields: Any) -> None:
        info = self.read_json(self.info_file) if self.info_file.exists() else {"id": self.id}
        info.update(fields)
        self.write_json(self.info_file, info)

    def finish(self, status: str, **fields: Any) -> None:
        self.update_info(status=status, finished_at=_now(), **fields)


def _now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def git_commit() -> str | None:
    """The commit of the tuneloop source that ran, '+dirty' if it had local changes."""
    src = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=src, capture_output=True, text=True, timeout=5)
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "."], cwd=src, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        return commit.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.TimeoutExpired):
        return None
