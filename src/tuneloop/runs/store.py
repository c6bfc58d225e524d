"""`runs/<run-id>/` — written by `tuneloop run`, read by diagnose, eval, serve and the dashboard.

    run.json        status (running|finished|trained|failed|interrupted), timestamps, model, versions, git commit
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

from tuneloop.config import ConfigError, RunConfig, load_config

TRACKED_PACKAGES = ("tuneloop", "torch", "transformers", "peft", "trl", "datasets", "accelerate")


@dataclass(frozen=True)
class RunDir:
    path: Path

    @classmethod
    def create(cls, runs_dir: Path, name: str) -> RunDir:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        if runs_dir.exists() and not runs_dir.is_dir():
            raise ConfigError(f"runs_dir {runs_dir}: is a file, not a folder for runs")
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
        """run.json, or {} before the run has started. A damaged one (a process killed mid-write on a
        filesystem without atomic rename, a disk that filled) is an error naming the file."""
        if not self.info_file.is_file():
            return {}
        try:
            return self.read_json(self.info_file)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise RunFileDamaged(f"{self.info_file}: damaged ({e})") from None

    def status(self) -> str:
        """run.json's status, except that a run recorded as running whose process is gone (killed,
        or its machine restarted) is `interrupted`."""
        info = self.info()
        status = info.get("status", "unknown")
        if status == "running" and info.get("host") == platform.node() and not _alive(info.get("pid")):
            return "interrupted"
        return status

    def resumable(self) -> bool:
        return self.status() in ("interrupted", "failed", "stopped") and self.last_checkpoint() is not None

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
        """metrics.jsonl's records (see read_metrics_file)."""
        return read_metrics_file(self.metrics_file) if self.metrics_file.exists() else []

    def write_json(self, path: Path, obj: Any) -> None:
        self.write_text(path, json.dumps(obj, indent=2) + "\n")

    def read_json(self, path: Path) -> Any:
        return json.loads(path.read_text(encoding="utf-8"))

    def write_text(self, path: Path, text: str) -> None:
        self.write_bytes(path, text.encode("utf-8"))

    def weights_dir(self, full: bool) -> Path:
        return self.model_dir if full else self.adapter_dir

    def last_checkpoint(self) -> Path | None:
        """The newest intact checkpoint-N folder: its trainer_state.json (the Trainer writes it last)
        parses, and its weights are readable safetensors. A newer damaged one (a kill or a full disk
        during the save) is passed over for the one before."""
        found = sorted(self.checkpoints_dir.glob("checkpoint-*"), key=_step, reverse=True)
        return next((p for p in found if checkpoint_problem(p) is None), None)

    def resume_point(self) -> ResumePoint:
        """Where `tuneloop resume` continues from: the newest intact checkpoint, with notes on what was
        passed over. Raises with the reason when the run cannot be resumed."""
        if not self.config_file.exists():
            raise FileNotFoundError(f"{self.path}: not a run directory (no config.yaml)")
        notes = []
        try:
            info, status = self.info(), self.status()
        except RunFileDamaged as e:  # the config, the splits and the checkpoints are what resuming needs
            notes.append(f"{e}; resuming from the checkpoints with the config's settings")
            info, status = {}, "interrupted"
        if status in ("finished", "trained"):
            raise ValueError(f"{self.path}: the run has finished; nothing to resume")
        if status == "running":
            raise ValueError(f"{self.path}: still running (pid {info.get('pid')} on {info.get('host')})")
        checkpoint = self.last_checkpoint()
        if checkpoint is None:
            problems = "; ".join(self.checkpoint_problems()) or "none was saved before it stopped"
            raise ValueError(
                f"{self.path}: no checkpoint to resume from ({problems}); start it again with `tuneloop run`"
            )
        notes += [
            f"passed over {p}" for p in self.checkpoint_problems() if _step(Path(p.split(":")[0])) > _step(checkpoint)
        ]
        return ResumePoint(checkpoint, info, notes)

    def checkpoint_problems(self) -> list[str]:
        """Why each checkpoint cannot be resumed from, for the message when none can."""
        found = sorted(self.checkpoints_dir.glob("checkpoint-*"), key=_step, reverse=True)
        return [f"{p}: {problem}" for p in found if (problem := checkpoint_problem(p)) is not None]

    def truncate_metrics(self, after_step: int) -> bool:
        """Keep the records up to `after_step`; True when a torn last line was left out."""
        records = self.read_metrics()
        lines = [
            ln for ln in self.metrics_file.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()
        ]
        kept = [r for r in records if r.get("step", 0) <= after_step]
        self.write_text(self.metrics_file, "".join(json.dumps(r) + "\n" for r in kept))
        return len(lines) > len(records)

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
                tools=r.get("tools"),
                rejected=r.get("rejected"),
            )
            for r in rows
        ]

    def write_bytes(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        try:
            tmp.write_bytes(data)
            os.replace(tmp, path)
        except OSError:  # a full disk: the old file stays whole, and no half-written .tmp is left
            tmp.unlink(missing_ok=True)
            raise

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
        try:
            info = self.info() or {"id": self.id}
        except RunFileDamaged:  # rewrite what can be said rather than fail to record the outcome
            info = {"id": self.id, "damaged_run_json_replaced": True}
        info.update(fields)
        self.write_json(self.info_file, info)

    def finish(self, status: str, **fields: Any) -> None:
        self.update_info(status=status, finished_at=_now(), **fields)


@dataclass(frozen=True)
class ResumePoint:
    checkpoint: Path
    info: dict[str, Any]  # run.json ({} when it was damaged)
    notes: list[str]  # what was passed over on the way


class RunFileDamaged(ValueError):
    """A file of the run directory that cannot be read; the message names it."""


def read_metrics_file(path: Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl. A torn last line (the process died mid-append) is left
    out; a damaged line before it is an error naming file and line."""
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            if number == len(lines):
                break
            raise RunFileDamaged(f"{path}:{number}: damaged line ({e.msg})") from None
    return records


def _step(checkpoint: Path) -> int:
    try:
        return int(checkpoint.name.rsplit("-", 1)[-1])
    except ValueError:
        return -1


def checkpoint_problem(checkpoint: Path) -> str | None:
    """None when `checkpoint` can be resumed from, else what is wrong with it."""
    state = checkpoint / "trainer_state.json"
    if _step(checkpoint) < 0:
        return "not a checkpoint-<step> folder"
    try:
        json.loads(state.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return "no trainer_state.json (the save did not finish)"
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        return "trainer_state.json is damaged"
    weights = [*checkpoint.glob("*.safetensors")]
    if not weights:
        return "no weights (*.safetensors)"
    for w in weights:
        if not _safetensors_readable(w):
            return f"{w.name} is damaged or empty"
    return None


def _safetensors_readable(path: Path) -> bool:
    """The header parses and the data it describes is all there (a truncated file fails)."""
    try:
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            if size <= 0 or size > path.stat().st_size:
                return False
            header = json.loads(f.read(size))
        end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
        return path.stat().st_size >= 8 + size + end
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _alive(pid) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


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


def git_commit(src: Path | None = None) -> str | None:
    """The commit of the tuneloop source that ran, '+dirty' if it had local changes anywhere in the
    package (`src`: the package folder; runs/ alone used to be checked)."""
    src = src or Path(__file__).resolve().parents[1]
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
