"""SIGTERM ends training the way Ctrl-C does."""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def interrupt_on_sigterm():
    """SIGTERM (`kill`, a scheduler ending a job) ends training the way Ctrl-C does, so the run
    is recorded as interrupted and can be resumed, instead of vanishing while marked running."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
