"""Trainer callbacks: stream metrics to metrics.jsonl as they happen, and show progress."""

from __future__ import annotations

import math
import time

from transformers import TrainerCallback

from tuneloop.runs import RunDir
from tuneloop.train.memory import return_free_memory

# Trainer's log keys -> the run-directory contract's names.
RENAMES = {
    "loss": "train_loss",
    "mean_token_accuracy": "train_token_accuracy",
    "eval_mean_token_accuracy": "eval_token_accuracy",
}
# DPO / ORPO's, logged as train_<name> and eval_<name>: the implicit rewards, their margin, how
# often the chosen answer wins, and the log-probabilities the doctor watches for collapse.
PREFERENCE_KEYS = {
    "rewards/chosen": "reward_chosen",
    "rewards/rejected": "reward_rejected",
    "rewards/margins": "reward_margin",
    "rewards/accuracies": "preference_accuracy",
    "logps/chosen": "logp_chosen",
    "logps/rejected": "logp_rejected",
}
RENAMES |= {key: f"train_{name}" for key, name in PREFERENCE_KEYS.items()}
RENAMES |= {f"eval_{key}": f"eval_{name}" for key, name in PREFERENCE_KEYS.items()}
# GRPO's (train/grpo.py): the reward and its spread, the share of groups whose answers all scored the
# same (no learning signal), the KL to the reference, the policy's entropy and the answers' length.
RENAMES |= {
    "reward": "train_reward",
    "reward_std": "train_reward_std",
    "frac_reward_zero_std": "train_flat_groups",
    "kl": "train_kl",
    "entropy": "train_entropy",
    "completions/mean_length": "train_completion_length",
    "completions/clipped_ratio": "train_completion_clipped",
}
KEEP = (
    "train_loss",
    "eval_loss",
    "learning_rate",
    "grad_norm",
    "train_token_accuracy",
    "eval_token_accuracy",
    "num_tokens",
    "tokens_per_second",
    "weight_penalty",
)


def _kept(name: str) -> bool:
    """KEEP, plus what each validation pass adds: eval_loss_se and the task metric of continuous
    evaluation (eval_<key>, eval_<key>_se, train_<key>); not the Trainer's timing figures."""
    return name in KEEP or (name.startswith(("eval_", "train_")) and not name.endswith(("_runtime", "_per_second")))


def peak_memory_mb() -> float:
    """Peak memory of the process so far: CUDA allocations on a GPU, resident set size on CPU."""
    import resource

    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux reports KiB


class MetricsWriter(TrainerCallback):
    """Append one JSON line per logged point, so a killed run keeps everything it logged.

    tokens_per_second counts only time inside training steps: evaluation pauses would
    otherwise make throughput look worse the more often one validates.
    """

    def __init__(self, run: RunDir):
        self.run = run
        self._step_time = 0.0
        self._step_started = 0.0
        self._last_tokens = 0
        self.latest: dict = {}

    def on_step_begin(self, args, state, control, **kwargs):
        self._step_started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self._step_time += time.perf_counter() - self._step_started

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if (
            not state.is_world_process_zero or "train_runtime" in logs
        ):  # the end-of-training summary, not a point on the curve
            return
        record = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4)}
        for key, value in logs.items():
            name = RENAMES.get(key, key)
            if _kept(name) and isinstance(value, (int, float)):
                record[name] = value if math.isfinite(value) else str(value)
        if "train_loss" in record and "num_tokens" in record and self._step_time > 0:
            record["tokens_per_second"] = round((record["num_tokens"] - self._last_tokens) / self._step_time, 1)
            self._last_tokens, self._step_time = record["num_tokens"], 0.0
        if "train_loss" in record:
            record["peak_memory_mb"] = peak_memory_mb()
        # a training point, or an evaluation (GRPO's scores the task metric only: no eval_loss)
        if "train_loss" in record or any(k.startswith("eval_") for k in record):
            self.run.append_metrics(record)
            self.latest = record


class TrainingProgress(TrainerCallback):
    """A rich progress bar with the latest train/validation loss and throughput.

    Add it after `writer` so it shows the throughput the writer has just computed.
    """

    def __init__(self, console, writer: MetricsWriter, doctor=None, task_eval=None):
        self.console = console
        self.writer = writer
        self.doctor = doctor  # a LiveDoctor, whose latest verdict is shown
        self.task_eval = task_eval  # a TaskEvaluator: its task metric (e.g. field_accuracy) is shown
        self._progress = None
        self._task = None
        self._fields = {"train": "-", "val": "-", "metric": "", "reward": "", "tps": "-", "doctor": ""}

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_local_process_zero:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("[bold]training"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn(
                "train {task.fields[train]}  val {task.fields[val]}{task.fields[metric]}{task.fields[reward]}  "
                "{task.fields[tps]} tok/s{task.fields[doctor]}"
            ),
            console=self.console,
            transient=False,
        )
        self._progress.start()
        self._task = self._progress.add_task("train", total=state.max_steps, **self._fields)

    def on_step_end(self, args, state, control, **kwargs):
        if self._progress is not None:
            self._progress.update(self._task, completed=state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self._progress is None:  # an evaluation outside training (the base model, before it)
            return
        logs = logs or {}
        if "loss" in logs:
            self._fields["train"] = f"{logs['loss']:.3f}"
        if "eval_loss" in logs:
            self._fields["val"] = f"{logs['eval_loss']:.3f}"
        key = self.task_eval.key if self.task_eval else None
        if key and f"eval_{key}" in logs:
            self._fields["metric"] = f"  val {key} {logs[f'eval_{key}']:.3f}"
        if "reward" in logs:  # grpo: the mean reward of the step's answers
            self._fields["reward"] = f"  reward {logs['reward']:.3f}"
        if "tokens_per_second" in self.writer.latest:
            self._fields["tps"] = f"{self.writer.latest['tokens_per_second']:.0f}"
        self._progress.update(self._task, **self._fields)

    def on_evaluate(self, args, state, control, **kwargs):
        if self._progress is not None and self.doctor is not None and self.doctor.latest is not None:
            self._fields["doctor"] = f"  doctor: {self.doctor.latest.verdict}"
            self._progress.update(self._task, **self._fields)

    def on_train_end(self, args, state, control, **kwargs):
        if self._progress is not None:
            self._progress.stop()


class FollowFreeCores(TrainerCallback):
    """Re-check the free cores every few seconds and train on that many threads (tuneloop/cpu.py).
    run.json's `thread_changes` says when the count changed: a slower stretch of the curve explained."""

    def __init__(self, run: RunDir):
        from tuneloop.cpu import ThreadGovernor

        self.run = run
        self.governor = ThreadGovernor()

    def on_step_end(self, args, state, control, **kwargs):
        self.governor.step()

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero and self.governor.changes:
            changes = [{"seconds": s, "threads": n} for s, n in self.governor.changes]
            self.run.update_info(thread_changes=changes)


class ReturnFreeMemory(TrainerCallback):
    """On CPU, hand the heap's free pages back to the system after every step and validation pass:
    the resident memory then follows what the run uses, not what changing batch shapes have left
    scattered in the heap (train/memory.py)."""

    def on_step_end(self, args, state, control, **kwargs):
        return_free_memory()

    def on_evaluate(self, args, state, control, **kwargs):
        return_free_memory()


class TrainingClock(TrainerCallback):
    """Where training's time went: run.json's `train_parts`, seconds in the steps, in the validation
    passes (continuous evaluation's scorings inside them: `continuous_evaluation.scoring_seconds`)
    and in writing checkpoints. The plan prices the same parts (plan/estimate.py), so a run that
    misses its plan says which part missed. After a step the Trainer calls on_step_end, then
    on_evaluate when it validated (its logging, before and inside the validation, counts there: it
    takes milliseconds), then on_save when it saved; each part is the time since the event before."""

    def __init__(self, run: RunDir):
        self.run = run
        self.parts = {"steps": 0.0, "evaluation": 0.0, "checkpoints": 0.0}
        self._mark = time.perf_counter()

    def _lap(self, part: str | None) -> None:
        now = time.perf_counter()
        if part:
            self.parts[part] += now - self._mark
        self._mark = now

    def on_step_begin(self, args, state, control, **kwargs):
        self._lap(None)

    def on_step_end(self, args, state, control, **kwargs):
        self._lap("steps")

    def on_evaluate(self, args, state, control, **kwargs):
        self._lap("evaluation")

    def on_save(self, args, state, control, **kwargs):
        self._lap("checkpoints")

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.run.update_info(train_parts={k: round(v, 2) for k, v in self.parts.items()})
