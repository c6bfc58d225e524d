"""The OpenAI-compatible API, driven by the official `openai` client, as users would: a real server on
a free localhost port, the tiny base model with two adapters from real runs."""

import concurrent.futures
import json
import urllib.error
import urllib.request

import openai
import pytest


def _chat(client, model, content="My parcel never arrived.", **kw):
    return client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": content}],
        max_tokens=kw.pop("max_tokens", 8),
        temperature=kw.pop("temperature", 0),
        **kw,
    )


def test_models_lists_base_and_adapters(client, server):
    assert [m.id for m in client.models.list()] == [server["base"], "support", "billing"]


def test_chat_completion_shape_and_usage(client):
    r = _chat(client, "support")
    assert r.object == "chat.completion" and r.model == "support"
    assert r.choices[0].message.role == "assistant" and isinstance(r.choices[0].message.content, str)
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.completion_tokens <= 8 and r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_adapters_and_scales_change_outputs_deterministically(client, server):
    base, support = _chat(client, server["base"], max_tokens=12), _chat(client, "support", max_tokens=12)
    assert base.choices[0].message.content != support.choices[0].message.content
    assert _chat(client, "support", max_tokens=12).choices[0].message.content == support.choices[0].message.content
    zero = _chat(client, "support", max_tokens=12, extra_body={"adapter_scale": 0.0})
    assert zero.choices[0].message.content == base.choices[0].message.content  # scale 0 is the base model


def test_concurrent_mixed_requests_match_solo_answers(client, server):
    """32 concurrent clients over three models and two scales: batched, and each answer as if alone."""
    cases = [
        (m, s, f"Question {i}: where is my order ORD-{1000 + i}?")
        for i, (m, s) in enumerate([(server["base"], None), ("support", None), ("support", 0.5), ("billing", None)] * 8)
    ]

    def ask(case):
        model, scale, content = case
        extra = {"extra_body": {"adapter_scale": scale}} if scale is not None else {}
        return _chat(client, model, content, max_tokens=6, **extra).choices[0].message.content

    batches_before = len(server["batcher"].batches)
    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        together = list(pool.map(ask, cases))
    sizes = server["batcher"].batches[batches_before:]
    assert max(sizes) > 1 and sum(sizes) == 32  # requests were batched...
    alone = [ask(c) for c in cases[:8]]
    assert together[:8] == alone  # ...without changing anyone's answer


def test_streaming_chat(client):
    stream = _chat(client, "support", max_tokens=10, stream=True)
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[-1].choices[0].finish_reason in ("stop", "length")
    assert text == _chat(client, "support", max_tokens=10).choices[0].message.content


def test_completions_with_stop_and_several_prompts(client, server):
    r = client.completions.create(
        model=server["base"], prompt=["Hello there", "Order status"], max_tokens=5, temperature=0
    )
    assert [c.index for c in r.choices] == [0, 1] and r.object == "text_completion"
    full = r.choices[0].text
    assert len(full) > 3  # five tokens of the random tiny model: some text to cut
    stop = full[2:4]
    cut = client.completions.create(
        model=server["base"], prompt="Hello there", max_tokens=5, temperature=0, stop=[stop]
    )
    assert cut.choices[0].text == full[: full.index(stop)] and cut.choices[0].finish_reason == "stop"


def test_sampling_with_a_seed_repeats(client):
    a = _chat(client, "support", temperature=1.0, seed=7, max_tokens=10)
    b = _chat(client, "support", temperature=1.0, seed=7, max_tokens=10)
    assert a.choices[0].message.content == b.choices[0].message.content


def test_unknown_model_is_a_404_naming_the_models(client):
    with pytest.raises(openai.NotFoundError) as e:
        _chat(client, "nope")
    assert "nope" in str(e.value) and "support" in str(e.value)


@pytest.mark.parametrize(
    "body, needle",
    [
        ({"model": "support", "messages": []}, "messages"),
        ({"model": "support", "messages": [{"role": "wizard", "content": "x"}]}, "role"),
        ({"model": "support", "messages": [{"role": "user", "content": "x"}], "temperature": 9}, "temperature"),
        ({"model": "support", "messages": [{"role": "user", "content": "x"}], "adapter_scale": -1}, "adapter_scale"),
        ({"model": "support", "messages": [{"role": "user", "content": "x"}], "max_tokens": 100000}, "context"),
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "support", "messages": [{"role": "user", "content": "x"}], "n": 17}, "n"),
        (
            {"model": "support", "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]},
            "tools",
        ),
        ({"model": "support", "messages": [{"role": "user", "content": "x"}], "temprature": 0}, "temprature"),
    ],
)
def test_malformed_requests_are_400s_with_a_message(server, body, needle):
    status, error = _post(server, "/chat/completions", json.dumps(body).encode())
    assert status == 400 and needle in error["message"]


def test_invalid_json_and_bad_key(server):
    status, error = _post(server, "/chat/completions", b"{not json")
    assert status == 400
    status, error = _post(server, "/chat/completions", b"{}", key="wrong")
    assert status == 401 and "API key" in error["message"]


def test_adapter_scale_on_the_base_model_is_refused(client, server):
    with pytest.raises(openai.BadRequestError, match="adapter_scale"):
        _chat(client, server["base"], extra_body={"adapter_scale": 0.5})


def _post(server, path, data, key="secret"):
    request = urllib.request.Request(
        server["url"] + path,
        data=data,
        method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())["error"]


def test_ignore_eos_generates_exactly_max_tokens(client):
    r = _chat(client, "support", max_tokens=7, extra_body={"ignore_eos": True})
    assert r.usage.completion_tokens == 7 and r.choices[0].finish_reason == "length"


def test_our_server_works_as_an_llm_judge_endpoint(server):
    from tuneloop.eval.judge import EndpointJudge, judge_pairs

    judge = EndpointJudge(server["url"], "support", api_key="secret")
    result = judge_pairs(judge, ["Where is my parcel?"], ["It ships today."], ["No idea."])
    assert result["judge"] == "support" and set(result["pairs"][0]) >= {"a_first", "b_first", "p_a", "winner"}
    assert result["pairs"][0]["a_first"] in (0.0, 0.5, 1.0)
