"""The fine-tuning API's state, on disk under the server's data directory:

    files/<file-id>.json           the File object, its owner and its detected data format
    files/<file-id>/<filename>     the uploaded bytes, as uploaded
    jobs/<job-id>/job.json         the Job object, its owner and the server's bookkeeping (worker pid, requests)
    jobs/<job-id>/config.yaml      the tuneloop config the job trains with (hyperparameters.py)
    jobs/<job-id>/events.jsonl     the job's events, oldest first (the server and the worker append)
    jobs/<job-id>/progress.json    written by the worker: its run directory, the plan's finish, tokens so far
    jobs/<job-id>/checkpoints.json written by the worker: the checkpoints kept, with their metrics
    jobs/<job-id>/outcome.json     written by the worker as it ends: succeeded or failed, and why
    runs/                          the jobs' tuneloop run directories

job.json has one writer, the server (under `lock`); the worker writes only its own files. A job
record on disk is the queue: a restarted server reads it back (scheduler.py, `recover`).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import threading
import time
from pathlib import Path

TERMINAL = ("succeeded", "failed", "cancelled")
ACTIVE = ("validating_files", "queued", "running", "paused")  # a job in these states holds its files


class NotFound(KeyError):
    """No such file, job or model for this API key (another key's objects are not found either)."""


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def now() -> int:
    return int(time.time())


def write_json(path: Path, value) -> None:
    """Whole or not at all: a reader (the other process, a restarted server) never sees half a file."""
    tmp = path.with_name(path.name + f".{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(value, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: Path, default=None):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return default


def safe_name(filename: str) -> str:
    """An uploaded file's name as stored: its last part, with only letters, digits and ._- (the suffix
    kept: the data readers choose the format by it)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", Path(filename).name) or "data.jsonl"


def append_event(job_dir: Path, message: str, level: str = "info", kind: str = "message", data=None) -> dict:
    """One event in OpenAI's shape, appended in one write (atomic for a line this size)."""
    event = {
        "object": "fine_tuning.job.event",
        "id": new_id("ftevent"),
        "created_at": now(),
        "level": level,
        "message": message,
        "data": data,
        "type": kind,
    }
    with open(job_dir / "events.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(event) + "\n")
    return event


class Store:
    def __init__(self, root: Path):
        self.root = Path(root).resolve()
        self.files_dir, self.jobs_dir, self.runs_dir = (self.root / n for n in ("files", "jobs", "runs"))
        for d in (self.files_dir, self.jobs_dir, self.runs_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()

    # Files

    def add_file(self, owner: str, filename: str, data: bytes, purpose: str, fmt: str | None) -> dict:
        file_id = new_id("file")
        safe = safe_name(filename)
        folder = self.files_dir / file_id
        folder.mkdir()
        (folder / safe).write_bytes(data)
        public = {
            "id": file_id,
            "object": "file",
            "bytes": len(data),
            "created_at": now(),
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
            "status_details": None,
            "expires_at": None,
        }
        write_json(self.files_dir / f"{file_id}.json", {"owner": owner, "file": public, "format": fmt, "name": safe})
        return public

    def stage_upload(self, filename: str, data: bytes) -> Path:
        """The bytes in a scratch folder, under their own name, for validation before they are a file."""
        folder = self.root / "uploads" / secrets.token_hex(8)
        folder.mkdir(parents=True)
        path = folder / safe_name(filename)
        path.write_bytes(data)
        return path

    def file_record(self, owner: str, file_id: str) -> dict:
        record = read_json(self.files_dir / f"{Path(file_id).name}.json")
        if record is None or record["owner"] != owner:
            raise NotFound(file_id)
        return record

    def file(self, owner: str, file_id: str) -> dict:
        return self.file_record(owner, file_id)["file"]

    def file_path(self, owner: str, file_id: str) -> Path:
        record = self.file_record(owner, file_id)
        return self.files_dir / file_id / record["name"]

    def files(self, owner: str) -> list[dict]:
        records = [read_json(p) for p in self.files_dir.glob("*.json")]
        return sorted(
            (r["file"] for r in records if r and r["owner"] == owner), key=lambda f: (f["created_at"], f["id"])
        )[::-1]

    def delete_file(self, owner: str, file_id: str) -> None:
        self.file_record(owner, file_id)
        (self.files_dir / f"{file_id}.json").unlink()
        shutil.rmtree(self.files_dir / file_id, ignore_errors=True)

    def jobs_using(self, file_id: str) -> list[str]:
        return [
            r["job"]["id"]
            for r in self.records()
            if r["job"]["status"] in ACTIVE and file_id in (r["job"]["training_file"], r["job"]["validation_file"])
        ]

    # Jobs

    def job_dir(self, job_id: str) -> Path:
        return self.jobs_dir / Path(job_id).name

    def add_job(self, owner: str, job: dict, config_yaml: str, model_name: str) -> dict:
        folder = self.job_dir(job["id"])
        folder.mkdir()
        (folder / "config.yaml").write_text(config_yaml, encoding="utf-8")
        record = {"owner": owner, "job": job, "model_name": model_name, "worker": None, "requested": None}
        with self.lock:
            write_json(folder / "job.json", record)
        return record

    def record(self, job_id: str, owner: str | None = None) -> dict:
        """job.json; with `owner`, NotFound unless that key owns it."""
        record = read_json(self.job_dir(job_id) / "job.json")
        if record is None or (owner is not None and record["owner"] != owner):
            raise NotFound(job_id)
        return record

    def records(self) -> list[dict]:
        """Every job, newest first."""
        found = [r for p in self.jobs_dir.glob("*/job.json") if (r := read_json(p))]
        return sorted(found, key=lambda r: (r["job"]["created_at"], r["job"]["id"]), reverse=True)

    def update(self, job_id: str, job: dict | None = None, **fields) -> dict:
        """Change the job object's fields (`job`) and the bookkeeping (`fields`) in one write."""
        with self.lock:
            record = self.record(job_id)
            record["job"].update(job or {})
            record.update(fields)
            write_json(self.job_dir(job_id) / "job.json", record)
            return record

    def events(self, job_id: str) -> list[dict]:
        """Newest first, as OpenAI lists them; a torn last line (a process killed mid-append) is left out."""
        path = self.job_dir(job_id) / "events.jsonl"
        events = []
        for line in path.read_text(encoding="utf-8").splitlines() if path.exists() else []:
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return events[::-1]

    def event(self, job_id: str, message: str, level: str = "info", kind: str = "message", data=None) -> dict:
        return append_event(self.job_dir(job_id), message, level, kind, data)

    def progress(self, job_id: str) -> dict:
        return read_json(self.job_dir(job_id) / "progress.json", {})

    def checkpoints(self, job_id: str) -> list[dict]:
        """Newest first."""
        return read_json(self.job_dir(job_id) / "checkpoints.json", [])[::-1]

    def outcome(self, job_id: str) -> dict | None:
        return read_json(self.job_dir(job_id) / "outcome.json")


def page(items: list[dict], after: str | None, limit: int) -> dict:
    """OpenAI's cursor page: the items after the one whose id is `after`, at most `limit` of them."""
    if after is not None:
        ids = [i["id"] for i in items]
        items = items[ids.index(after) + 1 :] if after in ids else []
    return {"object": "list", "data": items[:limit], "has_more": len(items) > limit}
