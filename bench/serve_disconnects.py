"""`tuneloop serve` under load with clients that leave: 400 chat requests at 32 at a time while 20
clients open long streams and disconnect after the first chunk (issue 17's probe).

    .venv/bin/python bench/serve_disconnects.py        # bench/results/serve_disconnects.json

The real server (`tuneloop.server`, uvicorn on a free localhost port) with SmolLM2-135M-Instruct and
one adapter. Measured: how many of the 400 were answered (target: all, with no error), and the
latency of a short request right after the disconnects against the same request on the idle
server, in the same run (target: at most 2x). Before cancellation, the abandoned streams kept
generating and the next short request waited for them (94 s in the issue's probe).
"""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from environment import save

REQUESTS, CONCURRENCY, LEAVERS = 400, 32, 20


def main() -> None:
    import tuneloop
    from tuneloop.models import Precision, load_model, resolve_model

    with tempfile.TemporaryDirectory() as tmp:
        from peft import LoraConfig, get_peft_model

        adapter = Path(tmp) / "adapter"
        get_peft_model(
            load_model(resolve_model("smollm2-135m-instruct"), Precision.fp32),
            LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"),
        ).save_pretrained(adapter)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]

        def post(body: dict):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
            conn.request("POST", "/v1/chat/completions", json.dumps(body), {"content-type": "application/json"})
            return conn, conn.getresponse()

        def chat(content: str, **kw) -> dict:
            return {
                "model": "a",
                "messages": [{"role": "user", "content": content}],
                "max_tokens": 8,
                "temperature": 0,
                **kw,
            }

        def short() -> float:
            t = time.perf_counter()
            conn, r = post(chat("Where is my card?"))
            r.read()
            conn.close()
            assert r.status == 200
            return time.perf_counter() - t

        def answered(n: int) -> int:
            conn, r = post(chat(f"My order ORD-{n} has not arrived.", temperature=0.7 if n % 2 else 0, seed=n))
            r.read()
            conn.close()
            return r.status

        def leave():
            conn, r = post(chat("Tell me a long story.", max_tokens=1500, stream=True, ignore_eos=True))
            r.readline()
            conn.close()

        with tuneloop.server({"a": adapter}, port=port) as server:
            short()  # warm up
            idle = statistics.median(short() for _ in range(5))
            t = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(CONCURRENCY) as pool:
                statuses = list(pool.map(answered, range(REQUESTS)))
                leavers = [threading.Thread(target=leave) for _ in range(LEAVERS)]
                for c in leavers:
                    c.start()
                for c in leavers:
                    c.join()
            load_seconds = time.perf_counter() - t
            time.sleep(1)
            after = statistics.median(short() for _ in range(3))
            precision = server.engine.precision.value
    ok = statuses.count(200)
    result = {
        "model": "smollm2-135m-instruct",
        "precision": precision,
        "requests": REQUESTS,
        "concurrency": CONCURRENCY,
        "disconnecting_clients": LEAVERS,
        "answered_200": ok,
        "errors": REQUESTS - ok,
        "load_seconds": round(load_seconds, 1),
        "idle_latency_s": round(idle, 3),
        "latency_after_disconnects_s": round(after, 3),
        "latency_ratio": round(after / idle, 2),
        "meets_target": ok == REQUESTS and after <= 2 * idle,
    }
    print(json.dumps(result, indent=2))
    print(f"wrote {save('serve_disconnects', result)}")


if __name__ == "__main__":
    main()
