"""Probes of `tuneloop serve` as an attacker and a careless client would send them: nothing a client
sends gives a 500, every stream ends properly, abandoned work stops, and `export`/`chat` refuse
what would make garbage."""

import json
import threading
import time

import pytest
from fastapi.testclient import TestClient

from tuneloop.serve import Batcher, Engine, create_app, resolve_adapter
from tuneloop.serve.engine import Request


@pytest.fixture(scope="module")
def engine(tiny_model, adapter_runs):
    return Engine(str(tiny_model), [resolve_adapter("support", adapter_runs["support"])], precision="fp32")


@pytest.fixture(scope="module")
def client(engine):
    batcher = Batcher(engine, max_batch=8, wait_ms=5)
    app = create_app(engine, batcher, api_key="secret", max_body_bytes=1 << 20)
    with TestClient(app, raise_server_exceptions=False) as c:
        c.headers["Authorization"] = "Bearer secret"
        yield c


def _post(client, path, body, **headers):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(path, content=raw, headers={"content-type": "application/json", **headers})


def _chat(**body):
    return {"model": "support", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}], **body}


@pytest.mark.parametrize(
    "path, body, status, expected",
    [
        ("/v1/chat/completions", _chat(messages=[{"role": "user", "content": "\ud800"}]), 400, "unpaired surrogate"),
        ("/v1/chat/completions", _chat(temperature=1e-300), 200, "chat.completion"),  # tiny is greedy
        ("/v1/chat/completions", _chat(seed=2**63), 400, "seed"),
        ("/v1/chat/completions", _chat(seed=-1), 400, "seed"),
        ("/v1/completions", {"model": "support", "prompt": "", "max_tokens": 3}, 400, "empty prompt"),
        ("/v1/completions", {"model": "support", "prompt": ["ok", ""], "max_tokens": 3}, 400, "empty prompt"),
        ("/v1/chat/completions", _chat(temperature=float("nan")), 400, "temperature"),
        ("/v1/chat/completions", b'{"model": "support", "messages": [', 400, "not valid JSON at character"),
        (
            "/v1/chat/completions",
            _chat(
                messages=[
                    {"role": "developer", "content": "Answer briefly."},
                    {"role": "user", "content": [{"type": "text", "text": "hi"}]},
                ]
            ),
            200,
            "chat.completion",
        ),
        (
            "/v1/chat/completions",
            _chat(
                messages=[
                    {"role": "user", "content": "where is ORD-1?"},
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {"id": "c1", "type": "function", "function": {"name": "track", "arguments": "{}"}}
                        ],
                    },
                    {"role": "tool", "tool_call_id": "c1", "content": "in transit"},
                ]
            ),
            200,
            "chat.completion",
        ),  # SmolLM2's template has no tool syntax: the call and its result are written as training writes them
        (
            "/v1/chat/completions",
            _chat(messages=[{"role": "user", "content": "x"}, {"role": "tool", "content": "42"}]),
            200,
            "chat.completion",
        ),  # a tool result its template renders
    ],
    ids=[
        "surrogate",
        "tiny-temperature",
        "huge-seed",
        "negative-seed",
        "empty-prompt",
        "empty-in-list",
        "nan",
        "bad-json",
        "developer-and-parts",
        "tool-calls-written-out",
        "tool-message",
    ],
)
def test_client_input_never_gives_a_500(client, path, body, status, expected):
    if isinstance(body, dict) and any(isinstance(v, float) and v != v for v in body.values()):
        raw = json.dumps(body).replace("NaN", "NaN").encode()  # JSON with NaN, as some clients send
        response = _post(client, path, raw)
    else:
        response = _post(client, path, body)
    assert response.status_code == status, response.text
    assert expected in response.text


def test_a_body_over_the_cap_is_refused_before_it_is_read(client):
    start = time.perf_counter()
    response = _post(client, "/v1/chat/completions", b'{"model": "support", "pad": "' + b"x" * (5 << 20) + b'"}')
    assert response.status_code == 413 and "over" in response.text and time.perf_counter() - start < 5


@pytest.mark.parametrize("header", ["Bearer secret", "bearer secret", "BEARER  secret"])
def test_the_authorization_scheme_is_case_insensitive(client, header):
    assert _post(client, "/v1/chat/completions", _chat(), Authorization=header).status_code == 200


@pytest.mark.parametrize("extra", [{"seed": 7, "temperature": 0.8}, {"temperature": 0}, {"stop": ["e"]}])
def test_every_stream_ends_with_a_finish_reason_and_done(client, extra):
    response = _post(client, "/v1/chat/completions", _chat(stream=True, max_tokens=6, **extra))
    events = [line.removeprefix("data: ") for line in response.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["choices"][0]["finish_reason"] in ("stop", "length")


@pytest.mark.parametrize("spec", ["a=RUN@nan", "a=RUN@inf", "a=RUN@-1"])
def test_adapter_scales_must_be_finite_and_not_negative(adapter_runs, spec):
    from tuneloop.serve.engine import parse_adapter

    with pytest.raises(ValueError, match="finite number >= 0"):
        parse_adapter(spec.replace("RUN", str(adapter_runs["support"])))


def test_a_cancelled_request_stops_its_generation_and_a_queued_one_is_skipped(engine):
    batcher = Batcher(engine, max_batch=1)
    try:
        long = Request(
            "support",
            engine.chat_ids([{"role": "user", "content": "hi"}]),
            max_tokens=3000,
            temperature=0,
            ignore_eos=True,
        )
        queued = Request("support", long.prompt_ids, max_tokens=3000, temperature=0, ignore_eos=True)
        running, waiting = batcher.submit(long), batcher.submit(queued)
        queued.cancel.set()
        time.sleep(0.3)
        long.cancel.set()
        result = running.result(timeout=60)
        assert result.completion_tokens < 3000  # stopped early, not run to its end
        assert waiting.cancelled()
        quick = batcher.submit(Request("support", long.prompt_ids, max_tokens=4, temperature=0))
        assert quick.result(timeout=30).completion_tokens <= 4
    finally:
        batcher.close()


def test_disconnected_streams_do_not_hold_the_server(engine):
    """Under 200 requests at 32 at a time, twenty clients start long streams and leave after the first
    chunk: every other request is answered, and the next one is served about as fast as on an idle
    server (it waited for the abandoned work before)."""
    import http.client
    import socket

    import uvicorn

    batcher = Batcher(engine, max_batch=8, wait_ms=5)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(engine, batcher), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)

    def post(body: dict) -> http.client.HTTPResponse:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        conn.request("POST", "/v1/chat/completions", json.dumps(body), {"content-type": "application/json"})
        return conn, conn.getresponse()

    try:

        def timed_request() -> float:
            t = time.perf_counter()
            conn, r = post(_chat(max_tokens=4, temperature=0))
            assert r.status == 200
            r.read()
            conn.close()
            return time.perf_counter() - t

        idle = min(timed_request() for _ in range(3))

        def abandon():
            conn, r = post(_chat(max_tokens=3000, stream=True, ignore_eos=True))
            r.readline()  # the first chunk, then the client goes away
            conn.close()

        import concurrent.futures

        def answered(n: int) -> int:
            conn, r = post(_chat(max_tokens=8, temperature=0.7 if n % 3 else 0, seed=n))
            status = r.status
            r.read()
            conn.close()
            return status

        # 200 requests at 32 at a time while 20 clients start long streams and leave.
        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            statuses = pool.map(answered, range(200))
            clients = [threading.Thread(target=abandon) for _ in range(20)]
            for c in clients:
                c.start()
            for c in clients:
                c.join()
            assert set(statuses) == {200}
        time.sleep(0.5)  # the server notices the closed connections
        after = timed_request()
        assert after < max(2 * idle, idle + 1.0), (idle, after)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        batcher.close()


def test_export_refuses_a_non_finite_scale_and_a_nan_logit_check(adapter_runs, tmp_path, monkeypatch):
    from conftest import tuneloop
    from tuneloop.runs import RunDir
    from tuneloop.serve import export

    result = tuneloop("export", adapter_runs["support"], "--scale", "inf", "--out", tmp_path / "x", cwd=tmp_path)
    assert result.returncode == 2 and "finite" in result.stderr and "Traceback" not in result.stderr
    monkeypatch.setattr(export, "export_merged", lambda *a, **k: {"path": "m", "max_logit_difference": float("nan")})
    with pytest.raises(ValueError, match="logits differ"):
        export.export_run(RunDir(adapter_runs["support"]), tmp_path / "y")


@pytest.mark.parametrize(
    "args, stdin, code, expected",
    [
        (["--temperature", "1e-300"], "hello\n", 0, "support"),  # as greedy, like the server
        (["--scale", "inf"], "hello\n", 2, "finite"),
        ([], "word " * 9000 + "\n", 0, "over the model's context"),
    ],
    ids=["tiny-temperature", "infinite-scale", "too-long"],
)
def test_chat_probes(adapter_runs, tmp_path, args, stdin, code, expected):
    from conftest import tuneloop

    result = tuneloop("chat", adapter_runs["support"], "--max-tokens", "4", *args, cwd=tmp_path, stdin=stdin)
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and expected in result.stdout + result.stderr


def test_deterministic_mode_gives_the_solo_answer_under_concurrency_in_bf16(adapter_runs, tiny_model):
    """--deterministic decodes each request alone: a greedy answer is the same whatever else arrives."""
    import concurrent.futures
    import http.client
    import socket

    import tuneloop

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    prompts = [f"My order ORD-{n} {'never arrived ' * (n % 4)}" for n in range(12)]

    def ask(prompt: str) -> str:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        body = _chat(max_tokens=12, temperature=0, messages=[{"role": "user", "content": prompt}])
        conn.request("POST", "/v1/chat/completions", json.dumps(body), {"content-type": "application/json"})
        answer = json.loads(conn.getresponse().read())["choices"][0]["message"]["content"]
        conn.close()
        return answer

    with tuneloop.server(
        {"support": adapter_runs["support"]}, model=str(tiny_model), precision="bf16", deterministic=True, port=port
    ) as server:
        assert server.engine.precision.value == "bf16"
        solo = [ask(p) for p in prompts]
        with concurrent.futures.ThreadPoolExecutor(12) as pool:
            together = list(pool.map(ask, prompts))
    assert together == solo
