"""One fine-tuning job, in a process of its own: `python -m tuneloop.finetuning.worker JOB_DIR`.

It runs `tuneloop run`'s loop (pipeline.py) on the job's config, or `tuneloop resume`'s on the
job's run directory, and writes what the API shows as it goes: metric events per logged step,
the plan's finish time, checkpoints with their metrics, and at the end outcome.json and the
step-metrics CSV. The server never trains in its own process: a crash here fails one job, not the
server, and a restarted server finds this process still running, or its checkpoints.

Signals: SIGTERM stops training the way Ctrl-C does (cancel); SIGUSR1 saves a checkpoint at the next
step and stops there (pause), so resuming loses nothing.
"""

from __future__ import annotations

import csv
import io
import shutil
import signal
import sys
import time
from pathlib import Path

from transformers import TrainerCallback

from tuneloop.finetuning.store import append_event, read_json, write_json

KEPT_CHECKPOINTS = 3  # as OpenAI keeps: the last three
CHECKPOINT_FILES = ("adapter_config.json", "adapter_model.safetensors")
# OpenAI's result file columns, filled from the run's metrics.jsonl
RESULT_COLUMNS = ("step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy")


class JobProgress(TrainerCallback):
    """The job's events, progress.json and checkpoints.json, written from the Trainer's callbacks."""

    def __init__(self, job_dir: Path, job_id: str, model_name: str):
        self.job_dir, self.job_id, self.model_name = job_dir, job_id, model_name
        self.pausing = False
        self.latest: dict = {}  # the last logged metrics, OpenAI's names
        self.progress = read_json(job_dir / "progress.json", {})

    def _write_progress(self, **fields) -> None:
        self.progress.update(fields)
        write_json(self.job_dir / "progress.json", self.progress)

    def on_train_begin(self, args, state, control, **kwargs):
        from tuneloop.runs import RunDir

        run = RunDir(Path(args.output_dir).parent)
        plan = run.info().get("plan") or {}
        left = (plan.get("train_minutes", 0) * (1 - state.global_step / max(1, state.max_steps))) + plan.get(
            "eval_minutes", 0
        )
        self._write_progress(
            run_dir=str(run.path),
            total_steps=state.max_steps,
            estimated_finish=int(time.time() + 60 * left) if plan else None,
        )
        what = f"from step {state.global_step}" if state.global_step else "from the start"
        minutes = f"; the plan: ~{plan['total_minutes']:.1f} min" if plan else ""
        append_event(self.job_dir, f"Training {state.max_steps} steps {what}{minutes} (run {run.path.name})")

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "train_runtime" in logs:
            return
        data = {"step": state.global_step, "total_steps": state.max_steps}
        if "loss" in logs:
            data.update(train_loss=logs["loss"], train_mean_token_accuracy=logs.get("mean_token_accuracy"))
            message = f"Step {state.global_step}/{state.max_steps}: training loss={logs['loss']:.4f}"
        elif "eval_loss" in logs:
            data.update(valid_loss=logs["eval_loss"], valid_mean_token_accuracy=logs.get("eval_mean_token_accuracy"))
            # continuous evaluation's task metric (eval_<metric>), under OpenAI's valid_ prefix
            data.update(
                {
                    f"valid_{k[5:]}": v
                    for k, v in logs.items()
                    if k.startswith("eval_")
                    and k[5:] not in ("loss", "mean_token_accuracy")
                    and isinstance(v, (int, float))
                    and not k.endswith(("_runtime", "_per_second"))
                }
            )
            message = f"Step {state.global_step}/{state.max_steps}: validation loss={logs['eval_loss']:.4f}"
        else:
            return
        self.latest.update({k: v for k, v in data.items() if v is not None})
        append_event(self.job_dir, message, kind="metrics", data={k: v for k, v in data.items() if v is not None})
        if "num_tokens" in logs:
            self._write_progress(trained_tokens=int(logs["num_tokens"]))

    def on_step_end(self, args, state, control, **kwargs):
        if self.pausing:
            control.should_save = True

    def on_save(self, args, state, control, **kwargs):
        source = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if all((source / f).is_file() for f in CHECKPOINT_FILES):
            self._keep(source, state.global_step)
        if self.pausing:
            raise KeyboardInterrupt(f"paused at step {state.global_step}")

    def _keep(self, source: Path, step: int) -> None:
        """The checkpoint's adapter, servable as <model>:ckpt-step-<N>; the oldest beyond three go."""
        target = self.job_dir / "checkpoints" / f"step-{step}"
        target.mkdir(parents=True, exist_ok=True)
        for name in CHECKPOINT_FILES:
            shutil.copy2(source / name, target / name)
        kept = [c for c in read_json(self.job_dir / "checkpoints.json", []) if c["step_number"] != step]
        metrics = {k: v for k, v in self.latest.items() if k not in ("total_steps",)}
        kept.append(
            {
                "object": "fine_tuning.job.checkpoint",
                "id": f"ftckpt-{self.job_id.split('-', 1)[-1][:12]}-{step}",
                "created_at": int(time.time()),
                "fine_tuned_model_checkpoint": f"{self.model_name}:ckpt-step-{step}",
                "fine_tuning_job_id": self.job_id,
                "metrics": {**metrics, "step": step},
                "step_number": step,
            }
        )
        for old in kept[:-KEPT_CHECKPOINTS]:
            shutil.rmtree(self.job_dir / "checkpoints" / f"step-{old['step_number']}", ignore_errors=True)
        write_json(self.job_dir / "checkpoints.json", kept[-KEPT_CHECKPOINTS:])

    def pause(self, signum, frame) -> None:
        self.pausing = True


def result_csv(records: list[dict]) -> str:
    """OpenAI's step-metrics file: one row per step, training and validation figures where logged."""
    rows: dict[int, dict] = {}
    for r in records:
        row = rows.setdefault(r["step"], {"step": r["step"]})
        if "train_loss" in r:
            row.update(train_loss=r["train_loss"], train_accuracy=r.get("train_token_accuracy", ""))
        if "eval_loss" in r:
            row.update(valid_loss=r["eval_loss"], valid_mean_token_accuracy=r.get("eval_token_accuracy", ""))
    out = io.StringIO()
    writer = csv.DictWriter(out, RESULT_COLUMNS, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows[s] for s in sorted(rows))
    return out.getvalue()


def doctor_event(job_dir: Path, diagnosis, evaluation: dict | None) -> None:
    """The doctor's verdict and recommendations, and the test split's metric, base against fine-tuned."""
    from tuneloop.config import headline

    parts = [f"The doctor: {diagnosis.verdict}."]
    if evaluation:
        key = headline(evaluation["metric"])
        base, tuned = evaluation["base"]["metrics"].get(key), evaluation["finetuned"]["metrics"].get(key)
        if base is not None and tuned is not None:
            parts.insert(0, f"Held-out test {key}: base {base:.3f} -> fine-tuned {tuned:.3f}.")
    for r in diagnosis.recommendations:
        if r.applied:
            parts.append(f"Recommends {r.param}: {r.from_} -> {r.to} ({r.why})")
    append_event(
        job_dir, " ".join(parts), level="info" if diagnosis.verdict == "healthy" else "warn", data=diagnosis.to_dict()
    )


def run_job(job_dir: Path) -> dict:
    """Train the job; its outcome as outcome.json says it."""
    from rich.console import Console

    from tuneloop.config import load_config
    from tuneloop.pipeline import resume_loop, run_loop
    from tuneloop.runs import RunDir

    record = read_json(job_dir / "job.json")
    job_id = record["job"]["id"]
    progress = JobProgress(job_dir, job_id, record["model_name"])
    signal.signal(signal.SIGUSR1, progress.pause)
    console = Console(width=120, force_terminal=False)
    resume = record.get("resume_run")
    if resume:
        result = resume_loop(resume, console, callbacks=[progress])
    else:
        result = run_loop(
            load_config(job_dir / "config.yaml"), console, callbacks=[progress], info={"fine_tuning_job": job_id}
        )
    run = RunDir(result.run.path)
    (job_dir / "results.csv").write_text(result_csv(run.read_metrics()), encoding="utf-8")
    if result.diagnosis is not None:
        doctor_event(job_dir, result.diagnosis, result.evaluation)
    return {
        "status": "succeeded",
        "run_dir": str(run.path),
        "trained_tokens": progress.progress.get("trained_tokens"),
        "timings": result.timings,
    }


def main(argv: list[str]) -> int:
    job_dir = Path(argv[0]).resolve()
    try:
        outcome = run_job(job_dir)
    except KeyboardInterrupt as e:  # cancel (SIGTERM) or pause (SIGUSR1): the server knows which it asked for
        outcome = {"status": "interrupted", "error": {"code": "interrupted", "message": str(e) or "interrupted"}}
    except Exception as e:  # noqa: BLE001 — the job fails with the reason; the server reports it
        from tuneloop.data.problems import DataError

        code = "invalid_training_file" if isinstance(e, DataError) else "training_failed"
        outcome = {"status": "failed", "error": {"code": code, "message": f"{type(e).__name__}: {e}"}}
    write_json(job_dir / "outcome.json", {**outcome, "finished_at": int(time.time())})
    return 0 if outcome["status"] == "succeeded" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
