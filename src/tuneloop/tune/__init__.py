"""Closing the loop: autotune follows the doctor's advice run after run; sweep searches with Optuna."""

from tuneloop.tune.autotune import Autotune, autotune
from tuneloop.tune.sweep import SweepResult, sweep

__all__ = ["Autotune", "SweepResult", "autotune", "sweep"]
