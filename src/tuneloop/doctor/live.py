"""The doctor during training: diagnose at every evaluation, show it, and optionally act.

`train.doctor: watch` shows the verdict in the progress display. `stop` also ends a run that is
clearly diverging or clearly overfitting, and the Trainer then restores the best checkpoint
(load_best_model_at_end), so stopping loses nothing. Stopping acts in single-process runs only:
every process of a distributed run would have to agree on it.
"""

from __future__ import annotations

from transformers import TrainerCallback

from tuneloop.doctor.diagnose import diagnose_metrics
from tuneloop.runs import RunDir

STOP_ON = {"diverging": 0.8, "overfitting": 0.9}  # verdict -> the confidence needed to stop a run


class LiveDoctor(TrainerCallback):
    def __init__(self, run: RunDir, stop: bool):
        self.run = run
        self.stop = stop
        self.latest = None  # the Diagnosis after the last evaluation

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if not state.is_world_process_zero or not metrics or "eval_loss" not in metrics:
            return  # the end-of-run test-set evaluations are not part of the curve
        self.latest = diagnosis = diagnose_metrics(self.run.read_metrics())
        needed = STOP_ON.get(diagnosis.verdict)
        confidence = max((f.confidence for f in diagnosis.findings if f.kind == diagnosis.verdict), default=0.0)
        if self.stop and needed is not None and confidence >= needed and args.world_size == 1:
            finding = next(f for f in diagnosis.findings if f.kind == diagnosis.verdict)
            self.run.update_info(
                doctor_stopped={
                    "step": state.global_step,
                    "verdict": diagnosis.verdict,
                    "confidence": confidence,
                    "message": finding.message,
                }
            )
            control.should_training_stop = True
