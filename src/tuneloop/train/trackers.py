"""The experiment trackers transformers integrates (TensorBoard, MLflow, W&B), pointed at one run.

They read their directories from environment variables when the Trainer is built and when
training starts. Setting those for good would send every later run of the same process (autotune,
a sweep, a notebook) into the first run's directory, so they are set for one run and restored.
"""

from __future__ import annotations

import importlib.util
import os
from contextlib import contextmanager
from pathlib import Path

from tuneloop.config import ConfigError


def check_trackers(report_to: list[str]) -> None:
    """A tracker that is not installed is a clear error before anything starts."""
    missing = [name for name in report_to if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(f"train.report_to: {missing} not installed; pip install {' '.join(missing)}")


def tracker_variables(run_path: Path, report_to: list[str]) -> dict[str, str]:
    """Each tracker writes into the run directory, offline."""
    out = {}
    if "tensorboard" in report_to:
        out["TENSORBOARD_LOGGING_DIR"] = str(run_path / "tensorboard")
    if "mlflow" in report_to:
        out["MLFLOW_TRACKING_URI"] = (run_path / "mlruns").resolve().as_uri()
    if "wandb" in report_to:
        out["WANDB_MODE"] = "offline"
        out["WANDB_DIR"] = str(run_path)
    return out


@contextmanager
def run_trackers(run_path: Path, report_to: list[str]):
    """Inside it, the trackers log into `run_path`; the variables the user set before win, and
    everything is as it was afterwards."""
    ours = {k: v for k, v in tracker_variables(run_path, report_to).items() if k not in os.environ}
    os.environ.update(ours)
    try:
        yield
    finally:
        for key in ours:
            os.environ.pop(key, None)
