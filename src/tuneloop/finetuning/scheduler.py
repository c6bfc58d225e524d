"""The fine-tuning service inside `tuneloop serve --fine-tuning`: what each API call does, and the
loop that moves jobs along  validating_files -> queued -> running -> succeeded | failed | cancelled
(and paused <-> queued).

Request handlers only read and write the store and send signals; training runs in worker processes
(worker.py), at most `max_jobs` at a time, started by one background thread that polls twice a
second. Workers run in their own session: a server that stops or crashes leaves them training, and
the next server adopts them by pid. A job whose worker is gone when the server starts resumes from
its newest checkpoint, or fails with the reason; none stays `running`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

from tuneloop.finetuning import validate
from tuneloop.finetuning.hyperparameters import (
    JobRequest,
    RequestProblem,
    check_request,
    job_config,
    reported_hyperparameters,
    resolved_hyperparameters,
)
from tuneloop.finetuning.store import TERMINAL, NotFound, Store, new_id, now, page

log = logging.getLogger("tuneloop.fine_tuning")

POLL_SECONDS = 0.5
STOP_GRACE_SECONDS = 20  # after SIGTERM, how long a worker may take to record its interruption before SIGKILL
PAUSE_WAIT_SECONDS = 60  # a pause saves a checkpoint at the next step: wait that long for it in the request


class Conflict(ValueError):
    """An action the object's state does not allow now (409), e.g. deleting a file a job is using."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


class FineTuning:
    def __init__(self, root: Path, engine, defaults: dict, max_jobs: int = 1):
        """`engine`: the server's ServedModels (finished jobs' adapters are added to it). `defaults`: the
        job config, a RunConfig dict without data (hyperparameters.py puts the request over it)."""
        self.store = Store(root)
        self.engine = engine
        self.defaults = {**defaults, "model": engine.base_name}
        self.label = Path(engine.base_name).name
        self.max_jobs = max_jobs
        self.owners: dict[str, str] = {}  # served ft: model -> the API key's owner id
        self.children: dict[str, subprocess.Popen] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="tuneloop-fine-tuning", daemon=True)

    @property
    def router(self):
        """Its HTTP routes, for the server's app (serve/api.py)."""
        from tuneloop.finetuning.routes import router

        return router

    # Lifecycle

    def start(self) -> FineTuning:
        self.recover()
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop scheduling. Running workers go on; the next server adopts them."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def recover(self) -> None:
        """After a restart: serve what succeeded, adopt or resume what was running, finish what ended."""
        for record in self.store.records():
            job, job_id = record["job"], record["job"]["id"]
            if job["status"] == "succeeded" and not record.get("model_deleted"):
                try:
                    self._serve(record)
                except (OSError, ValueError) as e:  # its run directory was moved or deleted: serve the others
                    log.warning("%s: %s is not served: %s", job_id, record["model_name"], e)
            elif job["status"] == "running" and not self._worker_alive(record):
                if self.store.outcome(job_id) is not None or record.get("requested"):
                    self._finish(record)
                else:
                    self._after_lost_worker(record)

    def _after_lost_worker(self, record: dict) -> None:
        from tuneloop.runs import RunDir

        job_id = record["job"]["id"]
        pid = (record.get("worker") or {}).get("pid")
        run_dir = self.store.progress(job_id).get("run_dir")
        checkpoint = RunDir(Path(run_dir)).last_checkpoint() if run_dir else None
        if checkpoint is not None:
            self.store.update(job_id, {"status": "queued"}, resume_run=run_dir, worker=None)
            self.store.event(job_id, f"The server restarted while the job trained; resuming from {checkpoint.name}")
        else:
            self._fail(
                job_id,
                "server_restarted",
                f"the server stopped while the job trained (worker pid {pid} is gone) before its first checkpoint; "
                "create the job again",
            )

    # Files

    def upload(self, owner: str, filename: str, data: bytes, purpose: str) -> dict:
        if purpose != "fine-tune":
            raise RequestProblem(f"purpose {purpose!r}: this server keeps files for fine-tuning only", "purpose")
        staged = self.store.stage_upload(filename, data)
        try:
            fmt = validate.check_upload(staged, filename)
        except validate.FileProblem as e:
            raise RequestProblem(str(e), "file") from None
        finally:
            staged.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                staged.parent.rmdir()
        return self.store.add_file(owner, filename, data, purpose, fmt)

    def delete_file(self, owner: str, file_id: str) -> dict:
        self.store.file(owner, file_id)
        with self.store.lock:
            using = self.store.jobs_using(file_id)
            if using:
                raise Conflict(f"file {file_id} is in use by fine-tuning job {using[0]}; delete it once that ends")
            self.store.delete_file(owner, file_id)
        return {"id": file_id, "object": "file", "deleted": True}

    # Jobs

    def create_job(self, owner: str, request: JobRequest) -> dict:
        check_request(request)
        paths = {}
        for param in ("training_file", "validation_file"):
            file_id = getattr(request, param)
            if file_id is None:
                continue
            try:
                paths[param] = self.store.file_path(owner, file_id)
            except NotFound:
                raise RequestProblem(f"{param}: no file {file_id!r}", param) from None
        init_from = self._init_from(owner, request.model)
        job_id = new_id("ftjob")
        config = job_config(
            request,
            self.defaults,
            paths["training_file"],
            paths.get("validation_file"),
            self.store.runs_dir,
            f"{request.suffix or 'ft'}-{job_id}",
            init_from,
        )
        job = {
            "object": "fine_tuning.job",
            "id": job_id,
            "model": request.model,
            "created_at": now(),
            "finished_at": None,
            "fine_tuned_model": None,
            "organization_id": f"org-{owner}",
            "result_files": [],
            "status": "validating_files",
            "validation_file": request.validation_file,
            "training_file": request.training_file,
            "hyperparameters": (reported := reported_hyperparameters(config, request)),
            "trained_tokens": None,
            "error": None,
            "user_provided_suffix": request.suffix,
            "seed": config.train.seed,
            "estimated_finish": None,
            "integrations": [],
            "metadata": request.metadata,
            "method": {"type": request.method_type(), request.method_type(): {"hyperparameters": reported}},
        }
        from tuneloop.config import dump_config

        model_name = f"ft:{self.label}:{request.suffix or ''}:{job_id}"
        self.store.add_job(owner, job, dump_config(config), model_name)
        self.store.event(job_id, f"Validating training file: {request.training_file}")
        return self.view(self.store.record(job_id))

    def _init_from(self, owner: str, model: str) -> Path | None:
        """None for the base model; a run directory for an `ft:` model of this key's (training goes on
        from its adapter); else the request names a model this server cannot fine-tune."""
        if model in (self.engine.base_name, self.label, "base"):
            return None
        for record in self.store.records():
            if record["owner"] == owner and record["model_name"] == model and record["job"]["status"] == "succeeded":
                return Path(self.store.progress(record["job"]["id"])["run_dir"])
        raise RequestProblem(
            f"model {model!r}: this server fine-tunes {self.label} (the model it serves) or an ft: model of yours",
            "model",
        )

    def view(self, record: dict) -> dict:
        """The job as the API shows it: with the worker's progress and the run's settled hyperparameters."""
        job = dict(record["job"])
        progress = self.store.progress(job["id"])
        if job["status"] == "running":
            job["estimated_finish"] = progress.get("estimated_finish")
            job["trained_tokens"] = progress.get("trained_tokens")
        else:
            job["estimated_finish"] = None
        if progress.get("run_dir") and (Path(progress["run_dir"]) / "config.yaml").is_file():
            from tuneloop.runs import RunDir

            settled = resolved_hyperparameters(RunDir(Path(progress["run_dir"])).config(), job["hyperparameters"])
            job["hyperparameters"] = settled
            job["method"] = {"type": job["method"]["type"], job["method"]["type"]: {"hyperparameters": settled}}
        return job

    def job(self, owner: str, job_id: str) -> dict:
        return self.view(self.store.record(job_id, owner))

    def jobs(self, owner: str, after: str | None, limit: int, metadata: dict[str, str] | None) -> dict:
        mine = [r for r in self.store.records() if r["owner"] == owner]
        if metadata is not None:
            mine = [r for r in mine if all((r["job"]["metadata"] or {}).get(k) == v for k, v in metadata.items())]
        return page([self.view(r) for r in mine], after, limit)

    def events(self, owner: str, job_id: str, after: str | None, limit: int) -> dict:
        self.store.record(job_id, owner)
        return page(self.store.events(job_id), after, limit)

    def checkpoints(self, owner: str, job_id: str, after: str | None, limit: int) -> dict:
        self.store.record(job_id, owner)
        return page(self.store.checkpoints(job_id), after, limit)

    def cancel(self, owner: str, job_id: str) -> dict:
        record = self.store.record(job_id, owner)
        status = record["job"]["status"]
        if status in TERMINAL:
            raise Conflict(f"job {job_id} has already {'been ' if status == 'cancelled' else ''}{status}")
        if status == "running":
            self.store.update(job_id, requested="cancel")
            self._stop_worker(job_id, signal.SIGTERM, STOP_GRACE_SECONDS, kill=True)
            record = self.store.record(job_id)
            if record["job"]["status"] == "running":  # the loop may have finished it meanwhile
                self._finish(record)
        else:
            self._cancelled(job_id)
        return self.job(owner, job_id)

    def pause(self, owner: str, job_id: str) -> dict:
        record = self.store.record(job_id, owner)
        if record["job"]["status"] != "running":
            raise Conflict(f"job {job_id} is {record['job']['status']}; only a running job can be paused")
        if not self.store.progress(job_id).get("run_dir"):
            raise Conflict(f"job {job_id} has not started training yet; pause it once it trains, or cancel it")
        self.store.update(job_id, requested="pause")
        self._stop_worker(job_id, signal.SIGUSR1, PAUSE_WAIT_SECONDS, kill=False)
        record = self.store.record(job_id)
        if record["job"]["status"] == "running" and not self._worker_alive(record):
            self._finish(record)
        return self.job(owner, job_id)

    def resume(self, owner: str, job_id: str) -> dict:
        record = self.store.record(job_id, owner)
        if record["job"]["status"] != "paused":
            raise Conflict(f"job {job_id} is {record['job']['status']}; only a paused job can be resumed")
        self.store.update(job_id, {"status": "queued"}, requested=None)
        self.store.event(job_id, "Job resumed; queued")
        return self.job(owner, job_id)

    # Models

    def visible(self, model: str, owner: str) -> bool:
        """Another key's fine-tuned models are not found; the base model and --adapter ones are everyone's."""
        return self.owners.get(model, owner) == owner

    def delete_model(self, owner: str, model: str) -> dict:
        if model not in self.owners or self.owners[model] != owner:
            raise NotFound(model)
        job_id = model.split(":")[3]
        names = [n for n in self.owners if n == model or n.startswith(model + ":ckpt-")]
        for name in names:
            self.engine.remove_adapter(name)
            del self.owners[name]
        if ":ckpt-" not in model:
            self.store.update(job_id, model_deleted=True)
        return {"id": model, "object": "model", "deleted": True}

    def _serve(self, record: dict) -> None:
        """The job's model and its checkpoints, served from now on."""
        from tuneloop.serve.engine import AdapterSpec

        job_id, owner = record["job"]["id"], record["owner"]
        run_dir = Path(self.store.progress(job_id)["run_dir"])
        served = [(record["model_name"], run_dir / "adapter")]
        served += [
            (c["fine_tuned_model_checkpoint"], self.store.job_dir(job_id) / "checkpoints" / f"step-{c['step_number']}")
            for c in self.store.checkpoints(job_id)
        ]
        for name, path in served:
            if name not in self.owners:
                self.engine.add_adapter(AdapterSpec(name, path.resolve(), 1.0, self.engine.base_name))
                self.owners[name] = owner

    # The loop

    def _loop(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            try:
                self.tick()
            except Exception:  # a bad record must not stop every other job
                log.exception("fine-tuning scheduler")

    def tick(self) -> None:
        records = self.store.records()[::-1]  # oldest first: the queue's order
        for record in records:
            status = record["job"]["status"]
            if status == "validating_files":
                self._validate(record)
            elif status == "running" and not self._worker_alive(record):
                self._finish(self.store.record(record["job"]["id"]))
        running = sum(1 for r in self.store.records() if r["job"]["status"] == "running")
        for record in self.store.records()[::-1]:
            if running >= self.max_jobs:
                break
            if record["job"]["status"] == "queued":
                self._start(record)
                running += 1

    def _validate(self, record: dict) -> None:
        job, job_id, owner = record["job"], record["job"]["id"], record["owner"]
        config = yaml.safe_load((self.store.job_dir(job_id) / "config.yaml").read_text(encoding="utf-8"))
        try:
            for param in ("training_file", "validation_file"):
                if job[param] is None:
                    continue
                file = self.store.file_record(owner, job[param])
                path = self.store.file_path(owner, job[param])
                validate.check_method(file["format"], job["method"]["type"], file["file"]["filename"])
                validate.check_lengths(
                    path,
                    file["file"]["filename"],
                    self.engine.tokenizer,
                    config["data"]["max_seq_len"],
                    config["data"]["train_on"],
                )
        except NotFound as e:
            self._fail(job_id, "invalid_file", f"the file {e.args[0]} was deleted", param)
            return
        except validate.FileProblem as e:
            self._fail(job_id, f"invalid_{param}", str(e), param)
            return
        self.store.update(job_id, {"status": "queued"})
        self.store.event(job_id, "Files validated, moving job to queued state")

    def _start(self, record: dict) -> None:
        job_id = record["job"]["id"]
        job_dir = self.store.job_dir(job_id)
        (job_dir / "outcome.json").unlink(missing_ok=True)
        with open(job_dir / "worker.log", "ab") as out:
            child = subprocess.Popen(
                [sys.executable, "-m", "tuneloop.finetuning.worker", str(job_dir)],
                cwd=self.store.root,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: signals reach the worker and its children only
            )
        self.children[job_id] = child
        worker = {"pid": child.pid, "host": platform.node(), "started_at": now()}
        self.store.update(job_id, {"status": "running"}, worker=worker, requested=None)
        self.store.event(job_id, "Fine-tuning job started")

    def _worker_alive(self, record: dict) -> bool:
        job_id = record["job"]["id"]
        child = self.children.get(job_id)
        if child is not None:
            return child.poll() is None
        worker = record.get("worker") or {}
        pid = worker.get("pid")
        if not isinstance(pid, int) or worker.get("host") != platform.node():
            return False
        try:  # a worker of an earlier server: alive if that pid still runs this job's worker
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return _pid_alive(pid)
        return str(self.store.job_dir(job_id)).encode() in cmdline and b"<defunct>" not in cmdline

    def _stop_worker(self, job_id: str, sig: int, wait: float, kill: bool) -> None:
        record = self.store.record(job_id)
        pid = (record.get("worker") or {}).get("pid")
        if not isinstance(pid, int) or not self._worker_alive(record):
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if sig == signal.SIGUSR1:  # the pause flag is the worker's own; its children need not hear it
                os.kill(pid, sig)
            else:
                os.killpg(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and self._worker_alive(record):
            time.sleep(0.1)
        if kill and self._worker_alive(record):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            while self._worker_alive(record):
                time.sleep(0.05)

    def _finish(self, record: dict) -> None:
        """The worker has ended: record how, from its outcome and what was asked of it."""
        job_id = record["job"]["id"]
        with self.store.lock:
            record = self.store.record(job_id)
            if record["job"]["status"] != "running":
                return
            self.children.pop(job_id, None)
            outcome = self.store.outcome(job_id) or {}
            requested = record.get("requested")
            if requested == "cancel":
                self._cancelled(job_id)
            elif requested == "pause" and outcome.get("status") == "interrupted":
                run_dir = self.store.progress(job_id).get("run_dir")
                self.store.update(job_id, {"status": "paused"}, resume_run=run_dir, worker=None)
                self.store.event(job_id, "Job paused at a checkpoint; resume continues from it")
            elif outcome.get("status") == "succeeded":
                self._succeeded(record, outcome)
            elif outcome.get("status") == "failed":
                error = outcome["error"]
                param = "training_file" if error["code"] == "invalid_training_file" else None
                self._fail(job_id, error["code"], error["message"], param)
            else:
                log_file = self.store.job_dir(job_id) / "worker.log"
                self._fail(job_id, "worker_ended", f"the training process ended without an outcome (see {log_file})")

    def _succeeded(self, record: dict, outcome: dict) -> None:
        job_id, owner = record["job"]["id"], record["owner"]
        results = self.store.add_file(
            owner,
            f"{job_id}_results.csv",
            (self.store.job_dir(job_id) / "results.csv").read_bytes(),
            "fine-tune-results",
            None,
        )
        fields = {
            "status": "succeeded",
            "fine_tuned_model": record["model_name"],
            "finished_at": now(),
            "trained_tokens": outcome.get("trained_tokens"),
            "result_files": [results["id"]],
        }
        self.store.update(job_id, fields, worker=None, resume_run=None)
        self._serve(self.store.record(job_id))
        self.store.event(job_id, f"New fine-tuned model created: {record['model_name']}")
        self.store.event(job_id, "The job has successfully completed")

    def _cancelled(self, job_id: str) -> None:
        self.store.update(job_id, {"status": "cancelled", "finished_at": now()}, worker=None)
        self.store.event(job_id, "Fine-tuning job cancelled")

    def _fail(self, job_id: str, code: str, message: str, param: str | None = None) -> None:
        error = {"code": code, "message": message, "param": param}
        self.store.update(job_id, {"status": "failed", "finished_at": now(), "error": error}, worker=None)
        self.store.event(job_id, f"Fine-tuning job failed: {message}", level="error")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def job_defaults(path: Path | None) -> dict:
    """The server's job config (`--job-config`): a tuneloop config whose data.path, if any, is replaced
    by each job's file; its other paths resolved against its folder. The defaults without one."""
    from tuneloop.config import config_from_dict, load_config

    config = config_from_dict({"data": {"path": "."}}) if path is None else load_config(path, ["data.path=."])
    return config.model_dump(mode="json", exclude={"data": {"path"}, "runs_dir": True, "run_name": True})
