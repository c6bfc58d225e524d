"""Every OpenAI request parameter is honoured or refused by name (serve/params.py), driven by the
official `openai` client against the tiny model and its adapters."""

import json
from pathlib import Path

import jsonschema
import openai
import pytest

from tuneloop.serve.params import HONOURED, PARAMETERS, parameter_table

README = Path(__file__).resolve().parents[2] / "README.md"
SCHEMA = {
    "type": "object",
    "properties": {
        "intent": {"type": "string", "enum": ["refund", "delivery", "account"]},
        "urgent": {"type": "boolean"},
    },
    "required": ["intent", "urgent"],
    "additionalProperties": False,
}
FORMAT = {"type": "json_schema", "json_schema": {"name": "ticket", "schema": SCHEMA, "strict": True}}

# A value that asks for something, per parameter: honoured ones must answer 200, refused ones 400 naming it.
ASKING = {
    "max_tokens": 4,
    "max_completion_tokens": 4,
    "temperature": 0.7,
    "top_p": 0.0,
    "stop": ["\n"],
    "seed": 3,
    "stream": False,
    "stream_options": {"include_usage": True},
    "n": 2,
    "presence_penalty": 1.0,
    "frequency_penalty": 1.0,
    "logit_bias": {"5": 3.0},
    "response_format": {"type": "json_object"},
    "logprobs": True,
    "top_logprobs": 2,
    "echo": True,
    "best_of": 2,
    "user": "u-1",
    "safety_identifier": "s-1",
    "prompt_cache_key": "k",
    "service_tier": "flex",
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
    "tool_choice": "required",
    "parallel_tool_calls": True,
    "functions": [{"name": "f", "parameters": {"type": "object"}}],
    "function_call": "auto",
    "store": True,
    "metadata": {"k": "v"},
    "modalities": ["text", "audio"],
    "audio": {"voice": "alloy", "format": "wav"},
    "prediction": {"type": "content", "content": "x"},
    "reasoning_effort": "low",
    "verbosity": "low",
    "web_search_options": {},
    "suffix": "end",
    "adapter_scale": 0.5,
    "ignore_eos": True,
}
BASE = {"model", "messages", "prompt"}


def _post(server, path, body):
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        server["url"] + path,
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", "authorization": "Bearer secret"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())["error"]


@pytest.mark.parametrize(
    "endpoint, param",
    [(e, p) for p in PARAMETERS for e in p.endpoints if p.name not in BASE],
    ids=lambda v: v if isinstance(v, str) else v.name,
)
def test_every_parameter_is_honoured_or_refused_by_name(server, endpoint, param):
    body = {"model": "support", "max_tokens": 4}
    if endpoint == "chat":
        path, body["messages"] = "/chat/completions", [{"role": "user", "content": "hi"}]
    else:
        path, body["prompt"] = "/completions", "hi"
    body[param.name] = ASKING[param.name]
    if param.name == "top_logprobs":
        body["logprobs"] = True
    if param.name in ("tool_choice", "parallel_tool_calls"):
        body["tools"] = ASKING["tools"]
    if param.name == "best_of" or (param.name == "n" and endpoint == "completions"):
        body["temperature"] = 1.0
    status, answer = _post(server, path, body)
    if param.status("transformers") == HONOURED or param.asks_nothing(ASKING[param.name]):
        assert status == 200, answer
    else:
        assert status == 400 and answer["param"] == param.name and param.name in answer["message"], answer


def test_a_parameter_openai_does_not_have_is_refused_by_name(server):
    status, error = _post(server, "/chat/completions", {"model": "support", "messages": [], "max_tokns": 4})
    assert status == 400  # messages too; either way the client learns what is wrong
    status, error = _post(
        server,
        "/chat/completions",
        {"model": "support", "messages": [{"role": "user", "content": "x"}], "max_tokns": 4},
    )
    assert status == 400 and error["param"] == "max_tokns"


@pytest.mark.parametrize("model", ["support", "base"])
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_json_schema_answers_parse_and_validate(client, model, temperature):
    for i in range(20):
        answer = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": f"Ticket {i}: my parcel never arrived."}],
            response_format=FORMAT,
            temperature=temperature,
            seed=i,
            max_tokens=40,
        )
        choice = answer.choices[0]
        assert choice.finish_reason == "stop", choice
        jsonschema.validate(json.loads(choice.message.content), SCHEMA)


def test_json_object_answers_parse(client):
    answer = client.chat.completions.create(
        model="support",
        messages=[{"role": "user", "content": "hi"}],
        response_format={"type": "json_object"},
        max_tokens=200,
        temperature=0,
    )
    if answer.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(answer.choices[0].message.content), dict)
    else:  # cut by max_tokens: still an object's beginning, with no free whitespace
        assert answer.choices[0].message.content.startswith("{")


def test_a_schema_that_does_not_compile_is_a_400_naming_it(server):
    bad = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"$ref": "#/nowhere"}}}
    status, error = _post(
        server,
        "/chat/completions",
        {"model": "support", "messages": [{"role": "user", "content": "x"}], "response_format": bad},
    )
    assert status == 400 and error["param"] == "response_format" and "nowhere" in error["message"]


def test_greedy_top_logprobs_put_the_chosen_token_first(client):
    answer = client.chat.completions.create(
        model="support",
        messages=[{"role": "user", "content": "My parcel never arrived."}],
        logprobs=True,
        top_logprobs=3,
        max_tokens=6,
        temperature=0,
    )
    content = answer.choices[0].logprobs.content
    assert len(content) == answer.usage.completion_tokens
    assert "".join(t.token for t in content) == answer.choices[0].message.content
    for t in content:
        assert len(t.top_logprobs) == 3 and t.top_logprobs[0].token == t.token
        assert t.top_logprobs[0].logprob == pytest.approx(t.logprob) and t.logprob <= 0
        assert bytes(t.bytes).decode() == t.token


def test_completion_logprobs_shape(client):
    answer = client.completions.create(model="support", prompt="Hello", max_tokens=5, temperature=0, logprobs=2)
    lp = answer.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == 5
    assert all(
        len(alt) <= 2 and max(alt.values()) == pytest.approx(p) for alt, p in zip(lp.top_logprobs, lp.token_logprobs)
    )


def test_n_choices_repeat_with_a_seed_and_usage_counts_the_prompt_once(client):
    def ask():
        return client.chat.completions.create(
            model="support",
            messages=[{"role": "user", "content": "Where is my order?"}],
            n=3,
            seed=7,
            temperature=1.0,
            max_tokens=8,
            logprobs=True,
        )

    first, second = ask(), ask()
    texts = [c.message.content for c in first.choices]
    assert [c.index for c in first.choices] == [0, 1, 2]
    assert texts == [c.message.content for c in second.choices]
    assert len(set(texts)) > 1  # seed + i: the choices are samples, not copies
    one = client.chat.completions.create(
        model="support", messages=[{"role": "user", "content": "Where is my order?"}], max_tokens=8, temperature=0
    )
    assert first.usage.prompt_tokens == one.usage.prompt_tokens
    assert first.usage.completion_tokens == sum(len(c.logprobs.content) for c in first.choices)


def test_streamed_usage_equals_the_answers_usage(client):
    kwargs = {
        "model": "support",
        "messages": [{"role": "user", "content": "My parcel never arrived."}],
        "max_tokens": 8,
        "temperature": 0,
        "n": 2,
    }
    answer = client.chat.completions.create(**kwargs)
    chunks = list(client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kwargs))
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-1].usage.model_dump() == answer.usage.model_dump()
    for index in (0, 1):
        text = "".join(c.choices[0].delta.content or "" for c in chunks[:-1] if c.choices[0].index == index)
        assert text == answer.choices[index].message.content


def test_logit_bias_bans_and_forces_tokens(client, server):
    from tuneloop.models import load_tokenizer

    tokenizer = load_tokenizer(server["base"])

    def tokens(**kw):
        answer = client.chat.completions.create(
            model="support",
            messages=[{"role": "user", "content": "My parcel never arrived."}],
            max_tokens=6,
            temperature=0,
            logprobs=True,
            **kw,
        )
        return [t.token for t in answer.choices[0].logprobs.content]

    plain = tokens()
    chosen = tokenizer(plain[0], add_special_tokens=False)["input_ids"][0]
    assert tokens(logit_bias={str(chosen): -100})[0] != plain[0]
    assert set(tokens(logit_bias={"42": 100})) == {tokenizer.decode([42])}


def test_best_of_and_echo_on_completions(client):
    answer = client.completions.create(
        model="support", prompt="Hello", max_tokens=4, best_of=3, n=1, temperature=1.0, seed=1
    )
    assert len(answer.choices) == 1 and answer.usage.completion_tokens > 4  # three samples generated, billed
    echoed = client.completions.create(model="support", prompt="Hello", max_tokens=4, temperature=0, echo=True)
    assert echoed.choices[0].text.startswith("Hello")


def test_the_readme_table_is_the_servers():
    assert parameter_table() in README.read_text()


def test_tool_choice_required_and_named_force_a_valid_call(client):
    from conftest import ORDER_TOOL

    refund = {
        "type": "function",
        "function": {
            "name": "refund",
            "parameters": {"type": "object", "properties": {"amount": {"type": "integer"}}, "required": ["amount"]},
        },
    }
    tools = [ORDER_TOOL, refund]
    for choice, names in (
        ("required", {"get_order", "refund"}),
        ({"type": "function", "function": {"name": "refund"}}, {"refund"}),
    ):
        answer = client.chat.completions.create(
            model="base",
            messages=[{"role": "user", "content": "My parcel never arrived."}],
            tools=tools,
            tool_choice=choice,
            max_tokens=60,
            temperature=1.0,
            seed=3,
        )
        c = answer.choices[0]
        assert c.finish_reason == "tool_calls" and len(c.message.tool_calls) == 1, c
        call = c.message.tool_calls[0]
        assert call.function.name in names and call.id.startswith("call_")
        schema = next(t for t in tools if t["function"]["name"] == call.function.name)["function"]["parameters"]
        jsonschema.validate(json.loads(call.function.arguments), schema)


def test_a_tool_trained_adapter_answers_with_tool_calls(tool_adapter, tiny_model):
    from conftest import ORDER_TOOL, serving
    from tuneloop.serve import Engine, resolve_adapter

    engine = Engine(str(tiny_model), [resolve_adapter("orders", tool_adapter)], precision="fp32")
    with serving(engine) as (url, _):
        client = openai.OpenAI(base_url=url, api_key="secret", max_retries=0)
        messages = [{"role": "user", "content": "where is order A1? ask 99"}]
        answer = client.chat.completions.create(
            model="orders", messages=messages, tools=[ORDER_TOOL], temperature=0, max_tokens=40
        )
        c = answer.choices[0]
        assert c.finish_reason == "tool_calls", c
        assert c.message.tool_calls[0].function.name == "get_order"
        assert json.loads(c.message.tool_calls[0].function.arguments) == {"order_id": "A1"}
        # the conversation goes on with the call and its result, rendered as training renders them
        messages += [
            c.message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": c.message.tool_calls[0].id, "content": '{"status": "shipped"}'},
        ]
        follow = client.chat.completions.create(
            model="orders", messages=messages, tools=[ORDER_TOOL], temperature=0, max_tokens=8
        )
        assert follow.choices[0].message is not None
        # tool_choice none: the tools are not shown, so no call comes back
        plain = client.chat.completions.create(
            model="orders", messages=messages[:1], tools=[ORDER_TOOL], tool_choice="none", temperature=0, max_tokens=40
        )
        assert plain.choices[0].message.tool_calls is None
