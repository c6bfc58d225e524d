"""Sharing the CPU: how many threads tuneloop computes with, and how they wait, on a busy machine.

bench/contention.py (LOG.md): a training run beside one busy process fell to 0.28x of its speed
alone. OpenMP's workers spin at every barrier while the OS has descheduled one of them, holding a
core that the busy process then also loses. Waiting passively fixes that (0.90x) but costs a
third of the speed alone, and a single thread has no barriers at all. So:

1. At start, before torch loads (`configure_threads`, from the CLI): when other processes keep
   cores busy, use only the free ones, waiting passively when that is more than one.
2. While training (`ThreadGovernor`, a Trainer callback): every few seconds, measure again and set
   torch's thread count to the free cores, so a competitor that starts later shrinks the run
   instead of making it spin, and one that stops gives the cores back.

`TUNELOOP_THREADS` (or `tuneloop --threads N`) fixes the count and turns both off. Linux only
(/proc); elsewhere nothing changes.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

ENV = "TUNELOOP_THREADS"
# Other processes' use of a core above this counts as that core being taken (a busy competitor
# shows as 0.4-1.0 of a core while ours spin; background noise as < 0.1).
TAKEN = 0.25


def _jiffies() -> tuple[int, int, int] | None:
    """(busy, total) clock ticks of the whole machine, and those of this process and its descendants
    (`_own_ticks`), from /proc."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        own = _own_ticks()
    except (OSError, ValueError, IndexError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields), own


def _own_ticks() -> int:
    """CPU ticks of this process and of every process it started: a child is not a competitor.
    torch.compile's Inductor compiles in a pool of worker processes; counted as others, they made
    the governor drop a run to one thread for 40 s of its first minute (LOG.md). Live descendants
    count their own ticks; those that ended and were waited for are in cutime and cstime."""
    parents, ticks = {}, {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):  # the process ended while we read
            continue
        pid = int(stat.parent.name)
        parents[pid] = int(fields[1])
        ticks[pid] = int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])  # utime stime cutime cstime
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    total, todo = 0, [os.getpid()]
    while todo:
        pid = todo.pop()
        total += ticks.get(pid, 0)
        todo += children.get(pid, [])
    return total


class LoadMeter:
    """How many cores other processes kept busy since the last reading."""

    def __init__(self):
        self.cores = os.cpu_count() or 1
        self._last = _jiffies()

    def others(self) -> float | None:
        now = _jiffies()
        if now is None or self._last is None or now[1] <= self._last[1]:
            self._last = now
            return None
        busy, total, own = (a - b for a, b in zip(now, self._last))
        self._last = now
        return max(0.0, (busy - own) / total * self.cores)

    def free_cores(self) -> int | None:
        others = self.others()
        if others is None:
            return None
        return max(1, self.cores - math.ceil(others - TAKEN))


def fixed_threads() -> int | None:
    value = os.environ.get(ENV, "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{ENV}={value!r}: a number of threads, 1 or more")
    return int(value)


def configure_threads(
    threads: int | None = None, sample_seconds: float = 0.2, confirm_seconds: float = 0.5
) -> str | None:
    """Call before torch is imported. Returns what was adapted to a busy machine, for the log; None
    when the count was given (`threads`, TUNELOOP_THREADS) or every core is free.

    A busy first reading is confirmed by a second, longer one: 0.2 s is 40 clock ticks on 2 cores,
    and 6 of them spent elsewhere read as a competitor. A bench's quickstart run started so, on one
    thread with passive waits, beside nothing but the idle bench (LOG.md)."""
    threads = threads or fixed_threads()
    if threads:
        os.environ[ENV] = str(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        return None
    meter = LoadMeter()
    time.sleep(sample_seconds)
    free = meter.free_cores()
    if free is not None and free < meter.cores:
        time.sleep(confirm_seconds)
        free = meter.free_cores()
    if free is None or free >= meter.cores:
        return None
    os.environ.setdefault("OMP_NUM_THREADS", str(free))
    if free == 1:
        # One thread has no barriers to wait at. The policy is read once, when OpenMP starts, and
        # would outlast the competitor: when the governor gives the cores back, passive waits cost
        # a third of the speed (LOG.md, 2026-11-29).
        return f"other processes keep {meter.cores - free} of {meter.cores} cores busy: 1 thread"
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # sleep at barriers: the busy cores are not ours
    return f"other processes keep {meter.cores - free} of {meter.cores} cores busy: {free} thread(s), passive wait"


class ThreadGovernor:
    """Follows the free cores while training: torch.set_num_threads at most every `interval` s."""

    def __init__(self, interval: float = 5.0):
        self.interval = interval
        self.meter = LoadMeter()
        self._checked = time.monotonic()
        self.changes: list[tuple[float, int]] = []  # (seconds since start, threads): run.json's thread_changes
        self._start = self._checked

    def step(self) -> int | None:
        """Re-measure if due; the new thread count when it changed, else None."""
        import torch

        now = time.monotonic()
        if now - self._checked < self.interval or fixed_threads():
            return None
        self._checked = now
        free = self.meter.free_cores()
        if free is None or free == torch.get_num_threads():
            return None
        torch.set_num_threads(free)
        self.changes.append((round(now - self._start, 1), free))
        return free
