import json

import pytest

from tuneloop.runs import RunDir
from tuneloop.runs.store import RunFileDamaged


def test_run_ids_are_unique_and_lifecycle_is_recorded(tmp_path):
    a, b = RunDir.create(tmp_path, "exp"), RunDir.create(tmp_path, "exp")
    assert a.path != b.path and a.id.startswith("exp-")
    a.start(model="m")
    info = json.loads(a.info_file.read_text())
    assert info["status"] == "running" and info["packages"]["torch"]
    a.finish("finished", timings={"total": 1.0})
    info = json.loads(a.info_file.read_text())
    assert info["status"] == "finished" and info["model"] == "m" and "finished_at" in info


def test_metrics_append_and_read(tmp_path):
    run = RunDir.create(tmp_path, "m")
    assert run.read_metrics() == []
    run.append_metrics({"step": 1, "train_loss": 2.0})
    run.append_metrics({"step": 2, "eval_loss": 1.5})
    assert run.read_metrics() == [{"step": 1, "train_loss": 2.0}, {"step": 2, "eval_loss": 1.5}]


def _dead_pid() -> int:
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@pytest.mark.parametrize(
    "recorded, expected",
    [
        ({"status": "running", "pid": "self", "host": "self"}, "running"),
        ({"status": "running", "pid": "dead", "host": "self"}, "interrupted"),  # killed: kill -9, a reboot
        ({"status": "running", "pid": "dead", "host": "elsewhere"}, "running"),  # another machine: cannot tell
        ({"status": "finished", "pid": "dead", "host": "self"}, "finished"),
    ],
)
def test_a_running_run_whose_process_is_gone_is_interrupted(tmp_path, recorded, expected):
    import os
    import platform

    run = RunDir.create(tmp_path, "r")
    pid = {"self": os.getpid(), "dead": _dead_pid()}[recorded["pid"]]
    host = platform.node() if recorded["host"] == "self" else "another-host"
    run.write_json(run.info_file, {**recorded, "pid": pid, "host": host})
    assert run.status() == expected


def test_a_torn_last_metrics_line_is_left_out_and_a_damaged_one_before_it_is_named(tmp_path):
    run = RunDir.create(tmp_path, "m")
    run.metrics_file.write_text('{"step": 1, "train_loss": 2.0}\n{"step": 2, "eval_lo')
    assert run.read_metrics() == [{"step": 1, "train_loss": 2.0}]
    assert run.truncate_metrics(after_step=5) is True and run.read_metrics() == [{"step": 1, "train_loss": 2.0}]
    run.metrics_file.write_text('{"step": 1, "tr\n{"step": 2, "train_loss": 1.0}\n')
    with pytest.raises(RunFileDamaged, match=r"metrics.jsonl:1: damaged line"):
        run.read_metrics()


def test_a_damaged_run_json_is_named(tmp_path):
    run = RunDir.create(tmp_path, "m")
    run.info_file.write_text('{"status": "runn')
    with pytest.raises(RunFileDamaged, match="run.json: damaged"):
        run.info()
    run.update_info(status="failed")  # recording the outcome still works
    assert run.info()["status"] == "failed"


def _checkpoint(run: RunDir, step: int, *, state: str = '{"global_step": 1}', weights: bytes | None = None):
    folder = run.checkpoints_dir / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    if state is not None:
        (folder / "trainer_state.json").write_text(state)
    if weights is None:
        header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
        weights = len(header).to_bytes(8, "little") + header + b"\0" * 8
    (folder / "adapter_model.safetensors").write_bytes(weights)
    return folder


@pytest.mark.parametrize(
    "damage",
    [
        {"state": '{"global_st'},  # the kill came while the Trainer wrote its state
        {"state": None},  # the save never got that far
        {"weights": b""},  # zero-byte weights (a full disk)
        {"weights": b'\x10\0\0\0\0\0\0\0{"w": {"dtyp'},  # truncated weights
    ],
    ids=["partial-state", "no-state", "empty-weights", "truncated-weights"],
)
def test_resume_falls_back_past_a_damaged_newest_checkpoint(tmp_path, damage):
    run = RunDir.create(tmp_path, "c")
    good = _checkpoint(run, 4)
    _checkpoint(run, 6, **damage)
    assert run.last_checkpoint() == good
    [problem] = run.checkpoint_problems()
    assert "checkpoint-6" in problem


def test_a_failed_write_leaves_no_temporary_file_and_the_old_file_whole(tmp_path, monkeypatch):
    import errno
    import os

    run = RunDir.create(tmp_path, "w")
    run.write_json(run.eval_file, {"old": True})

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(OSError, match="No space left"):
        run.write_json(run.eval_file, {"new": True})
    assert json.loads(run.eval_file.read_text()) == {"old": True}
    assert not list(run.path.rglob("*.tmp"))


def test_git_commit_is_dirty_when_any_module_of_the_package_changed(tmp_path):
    import subprocess

    from tuneloop.runs.store import git_commit

    package = tmp_path / "src" / "pkg"
    (package / "runs").mkdir(parents=True)
    (package / "runs" / "store.py").write_text("a = 1\n")
    (package / "models.py").write_text("b = 1\n")

    def git(*args):
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True, capture_output=True
        )

    git("init", "-q")
    git("add", "-A")
    git("commit", "-qm", "c")
    clean = git_commit(package)
    assert clean is not None and len(clean) == 40
    (package / "models.py").write_text("b = 2\n")  # a module outside runs/
    assert git_commit(package) == clean + "+dirty"
