"""Threads follow the free cores: measured from /proc (faked here, table-driven), fixed by TUNELOOP_THREADS."""

import pytest
import torch

from tuneloop import cpu


def fake_proc(monkeypatch, readings, cores: int = 2):
    """Successive (machine busy, machine total, own) tick readings, cumulative as /proc's."""
    readings = iter(readings)
    monkeypatch.setattr(cpu, "_jiffies", lambda: next(readings))
    monkeypatch.setattr(cpu.os, "cpu_count", lambda: cores)


@pytest.mark.parametrize(
    "busy, own, free",
    [
        (200, 200, 2),  # all the busy time is ours: the machine is free
        (205, 200, 2),  # background noise (0.05 of a core)
        (200, 160, 1),  # a competitor holds 0.4 of a core while our threads spin: it is taken
        (200, 100, 1),  # one busy competitor beside our single thread
        (200, 0, 1),  # two competitors: still at least one thread
        (20, 0, 2),  # 0.2 of a core: not taken
    ],
)
def test_free_cores(monkeypatch, busy, own, free):
    fake_proc(monkeypatch, [(0, 0, 0), (busy, 200, own)])
    assert cpu.LoadMeter().free_cores() == free


BUSY = "import time\nend = time.time() + 1.5\nwhile time.time() < end: pass"


@pytest.mark.parametrize("ours", [True, False])
def test_a_busy_child_is_ours_and_a_busy_stranger_is_not(tmp_path, ours):
    """On the real /proc: a process this one started (torch.compile's workers) is not competition;
    a busy process that is not its descendant (started by a child that exits: adopted by init) is."""
    import subprocess
    import sys

    if not cpu.Path("/proc/stat").exists():
        pytest.skip("needs Linux /proc")
    # a stranger: the shell starts the loop in the background and exits, so the loop is no longer ours
    stranger = ["sh", "-c", f"{sys.executable} -c '{BUSY}' > /dev/null 2>&1 &"]
    start = [sys.executable, "-c", BUSY] if ours else stranger
    meter = cpu.LoadMeter()
    process = subprocess.Popen(start)
    cpu.time.sleep(1.0)
    others = meter.others()
    process.wait()
    cpu.time.sleep(0.6 if not ours else 0)  # the stranger's loop ends by itself
    assert (others < cpu.TAKEN) if ours else (others > 0.5), others


def test_no_proc_means_no_change(monkeypatch):
    monkeypatch.setattr(cpu, "_jiffies", lambda: None)
    assert cpu.LoadMeter().free_cores() is None


PASSIVE = {"OMP_WAIT_POLICY": "PASSIVE"}


@pytest.mark.parametrize(
    "env, cores, readings, expected, omp",
    [
        ({"TUNELOOP_THREADS": "1"}, 2, [], None, {"OMP_NUM_THREADS": "1"}),
        ({}, 2, [(0, 200, 0)], None, {}),  # idle
        # a competitor, confirmed: one thread, which has no barriers to wait at
        ({}, 2, [(200, 200, 100), (400, 400, 200)], "1 thread", {"OMP_NUM_THREADS": "1"}),
        # busy for the first 0.2 s only (a blip): every core, OpenMP's defaults
        ({}, 2, [(200, 200, 100), (400, 400, 300)], None, {}),
        # two of four cores busy: two threads, waiting passively at their barriers
        ({}, 4, [(400, 400, 200), (800, 800, 400)], "2 thread(s), passive wait", {"OMP_NUM_THREADS": "2"} | PASSIVE),
    ],
)
def test_configure_threads_at_start(monkeypatch, env, cores, readings, expected, omp):
    for key in ("TUNELOOP_THREADS", "OMP_NUM_THREADS", "OMP_WAIT_POLICY"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    fake_proc(monkeypatch, [(0, 0, 0), *readings], cores)
    decided = cpu.configure_threads(sample_seconds=0, confirm_seconds=0)
    assert (decided is None) == (expected is None) and (expected is None or expected in decided)
    assert {k: cpu.os.environ[k] for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY") if k in cpu.os.environ} == omp


def test_bad_thread_count_is_an_error(monkeypatch):
    monkeypatch.setenv("TUNELOOP_THREADS", "many")
    with pytest.raises(ValueError, match="TUNELOOP_THREADS='many'"):
        cpu.configure_threads()


def test_governor_shrinks_and_grows_with_the_competition(monkeypatch):
    monkeypatch.delenv("TUNELOOP_THREADS", raising=False)
    before = torch.get_num_threads()
    fake_proc(monkeypatch, [(0, 0, 0), (200, 200, 120), (400, 400, 220), (600, 600, 420)])
    governor = cpu.ThreadGovernor(interval=0)
    try:
        torch.set_num_threads(2)
        assert governor.step() == 1 and torch.get_num_threads() == 1  # a competitor appeared
        assert governor.step() is None  # still there: no change
        assert governor.step() == 2 and torch.get_num_threads() == 2  # gone: the cores come back
        assert [threads for _, threads in governor.changes] == [1, 2]
    finally:
        torch.set_num_threads(before)


def test_cli_threads_option_and_bad_env(tmp_path):
    import os
    import subprocess
    import sys

    def cli(*args, **env):
        return subprocess.run(
            [sys.executable, "-m", "tuneloop.cli", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            env={**os.environ, **env},
            timeout=120,
        )

    bad = cli("eval", "runs/nothing", TUNELOOP_THREADS="lots")
    assert bad.returncode == 2 and "TUNELOOP_THREADS='lots'" in bad.stderr
    fixed = cli("--threads", "1", "eval", "runs/nothing", TUNELOOP_THREADS="")
    assert fixed.returncode == 2 and "runs/nothing" in fixed.stderr  # the option parsed; the run is missing
