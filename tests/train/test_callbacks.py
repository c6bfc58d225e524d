"""The Trainer callbacks that need no model: where training's time went (TrainingClock)."""

from types import SimpleNamespace

import pytest

from conftest import FakeClock
from tuneloop.train import callbacks
from tuneloop.train.callbacks import TrainingClock


class Run:
    def __init__(self):
        self.info = {}

    def update_info(self, **fields):
        self.info.update(fields)


@pytest.mark.parametrize(
    "events, parts",
    [
        # (callback, seconds spent before it): the Trainer's order after each step
        ([("step_begin", 1), ("step_end", 2)], {"steps": 2, "evaluation": 0, "checkpoints": 0}),
        (
            [("step_begin", 0), ("step_end", 2), ("evaluate", 3), ("save", 4)],
            {"steps": 2, "evaluation": 3, "checkpoints": 4},
        ),
        # validation without a log point, then a save; the next step's wait before it is no part
        (
            [("step_begin", 0), ("step_end", 1), ("evaluate", 3), ("save", 5), ("step_begin", 7), ("step_end", 1)],
            {"steps": 2, "evaluation": 3, "checkpoints": 5},
        ),
        # a save without validation (save_steps apart from eval_steps)
        ([("step_begin", 0), ("step_end", 1), ("save", 6)], {"steps": 1, "evaluation": 0, "checkpoints": 6}),
    ],
)
def test_training_clock_splits_training_into_the_plans_parts(monkeypatch, events, parts):
    clock = FakeClock()
    monkeypatch.setattr(callbacks.time, "perf_counter", clock)
    run = Run()
    timer = TrainingClock(run)
    state = SimpleNamespace(is_world_process_zero=True)
    for event, seconds in events:
        clock.now += seconds
        getattr(timer, f"on_{event}")(None, state, None)
    timer.on_train_end(None, state, None)
    assert run.info["train_parts"] == pytest.approx(parts)
