"""Concurrent requests in, batched generate() calls out, on one worker thread.

The worker takes the first waiting request, collects whatever else arrives within `wait_ms`
(up to `max_batch`), and splits that into groups that can share one generate() call: the same
decoding (greedy, or the same sampling settings; a seeded request decodes alone so its seed
means something). Adapters and adapter strengths mix freely within a group. A streaming request
decodes alone, its tokens pushed to the client as they come.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field

from tuneloop.serve.engine import Engine, Request


@dataclass
class _Item:
    request: Request
    future: Future
    streamer: object = None


@dataclass
class _Group:
    items: list[_Item] = field(default_factory=list)
    alone: bool = False


def group(items: list[_Item], max_batch: int) -> list[_Group]:
    groups: list[_Group] = []
    for item in items:
        r = item.request
        if item.streamer is not None or (not r.greedy and r.seed is not None):
            groups.append(_Group([item], alone=True))
            continue
        for g in groups:
            if not g.alone and len(g.items) < max_batch and g.items[0].request.decoding() == r.decoding():
                break
        else:
            g = _Group()
            groups.append(g)
        g.items.append(item)
    return groups


class Batcher:
    def __init__(self, engine: Engine, max_batch: int = 16, wait_ms: float = 5.0, governor=None):
        """`governor`: a tuneloop.cpu.ThreadGovernor, stepped on this worker thread before each batch
        (torch's thread count is set per calling thread, and generate() runs on this one)."""
        self.engine = engine
        self.governor = governor
        self.max_batch = max_batch
        self.wait = wait_ms / 1000
        self.queue: queue.Queue[_Item | None] = queue.Queue()
        self.batches: list[int] = []  # sizes of the generate() calls made, for tests and /metrics
        self.thread = threading.Thread(target=self._loop, name="tuneloop-batcher", daemon=True)
        self.thread.start()

    def submit(self, request: Request, streamer=None) -> Future:
        future: Future = Future()
        self.queue.put(_Item(request, future, streamer))
        return future

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join(timeout=30)

    def _loop(self) -> None:
        while True:
            first = self.queue.get()
            if first is None:
                return
            items = [first]
            while len(items) < self.max_batch:
                try:
                    item = self.queue.get(timeout=self.wait)
                except queue.Empty:
                    break
                if item is None:
                    self.queue.put(None)  # finish this batch, then stop
                    break
                items.append(item)
            waiting = [i for i in items if not i.request.cancel.is_set()]  # their clients have gone
            for i in items:
                if i.request.cancel.is_set():
                    i.future.cancel()
                    if i.streamer is not None:
                        i.streamer.end()
            if self.governor is not None:
                self.governor.step()
            for g in group(waiting, self.max_batch):
                try:
                    results = self.engine.generate([i.request for i in g.items], streamer=g.items[0].streamer)
                    self.batches.append(len(g.items))
                    for i, result in zip(g.items, results):
                        i.future.set_result(result)
                except Exception as e:  # noqa: BLE001 — the request's caller reports it; the server lives on
                    for i in g.items:
                        i.future.set_exception(e)
                    if g.items[0].streamer is not None:
                        g.items[0].streamer.end()
