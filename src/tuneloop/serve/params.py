"""Every parameter of OpenAI's chat and completions requests, and what tuneloop's server does with it.

A parameter is honoured, or refused with a 400 that names it: a silently ignored parameter is worse
than a refusal, because the client believes it got what it asked for. Some parameters cannot change
an answer by OpenAI's own definition (`user`, `safety_identifier`, `prompt_cache_key`): they are
accepted as the identifiers and hints they are. A refused parameter is still accepted at the value
that asks for nothing (`store: false`, `tools: []`, `modalities: ["text"]`), since clients send
those by default. The README's parameter table is generated from PARAMETERS (tests keep it so), and
tests/serve/test_parameters.py walks it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

HONOURED, REFUSED = "honoured", "refused"
BACKENDS = ("transformers", "vllm")


def _none(value) -> bool:
    return value is None or value in ([], {})


@dataclass(frozen=True)
class Parameter:
    name: str
    endpoints: tuple[str, ...]  # "chat", "completions"
    transformers: str  # HONOURED or REFUSED
    vllm: str
    note: str
    asks_nothing: Callable[[object], bool] = _none  # a refused parameter is accepted at such a value

    def status(self, backend: str) -> str:
        return getattr(self, backend)


BOTH, CHAT, COMPLETIONS = ("chat", "completions"), ("chat",), ("completions",)

PARAMETERS = [
    Parameter("model", BOTH, HONOURED, HONOURED, "the base model's name (or `base`) or an adapter's"),
    Parameter("messages", CHAT, HONOURED, HONOURED, "system, developer, user, assistant, tool; text content parts"),
    Parameter("prompt", COMPLETIONS, HONOURED, HONOURED, "a string or a list of strings"),
    Parameter("max_tokens", BOTH, HONOURED, HONOURED, "default 256 (chat), 16 (completions)"),
    Parameter("max_completion_tokens", CHAT, HONOURED, HONOURED, "takes precedence over max_tokens"),
    Parameter("temperature", BOTH, HONOURED, HONOURED, "0 to 2; below 1e-5 is greedy"),
    Parameter("top_p", BOTH, HONOURED, HONOURED, "0 to 1; 0 keeps only the likeliest token"),
    Parameter("stop", BOTH, HONOURED, HONOURED, "a string or a list; the answer ends before it"),
    Parameter("seed", BOTH, HONOURED, HONOURED, "sampling repeats with the same seed; choice i of n uses seed + i"),
    Parameter("stream", BOTH, HONOURED, HONOURED, "server-sent events, ending with data: [DONE]"),
    Parameter("stream_options", BOTH, HONOURED, HONOURED, "include_usage: a last chunk with the usage"),
    Parameter("n", BOTH, HONOURED, HONOURED, "up to 16 choices; usage counts the prompt once"),
    Parameter("presence_penalty", BOTH, HONOURED, HONOURED, "-2 to 2, OpenAI's definition"),
    Parameter("frequency_penalty", BOTH, HONOURED, HONOURED, "-2 to 2, OpenAI's definition"),
    Parameter("logit_bias", BOTH, HONOURED, HONOURED, "token id -> bias, -100 to 100"),
    Parameter(
        "response_format",
        CHAT,
        HONOURED,
        HONOURED,
        "text, json_object, json_schema (strict): enforced by constrained decoding (xgrammar's grammar, on "
        "both backends); compact JSON",
    ),
    Parameter(
        "logprobs",
        BOTH,
        HONOURED,
        HONOURED,
        "chat: true/false with top_logprobs (0-20); completions: 0-5; the model's raw distribution; not with stream",
    ),
    Parameter("top_logprobs", CHAT, HONOURED, HONOURED, "with logprobs: true"),
    Parameter(
        "echo",
        COMPLETIONS,
        HONOURED,
        HONOURED,
        "the prompt before each answer's text (not with logprobs)",
    ),
    Parameter(
        "best_of",
        COMPLETIONS,
        HONOURED,
        HONOURED,
        "best_of samples, the n with the highest log-probability per token returned; not with stream",
    ),
    Parameter("user", BOTH, HONOURED, HONOURED, "an end-user identifier; by definition it does not change the answer"),
    Parameter("safety_identifier", CHAT, HONOURED, HONOURED, "as user"),
    Parameter("prompt_cache_key", CHAT, HONOURED, HONOURED, "a cache-routing hint; one process, nothing to route"),
    Parameter(
        "service_tier",
        CHAT,
        REFUSED,
        REFUSED,
        "one tier; auto and default accepted",
        lambda v: v in (None, "auto", "default"),
    ),
    Parameter(
        "tools",
        CHAT,
        HONOURED,
        HONOURED,
        "rendered as training renders them (natively, or listed in the system turn with <tool_call> "
        "answers); calls parsed back into tool_calls; not with stream",
    ),
    Parameter(
        "tool_choice",
        CHAT,
        HONOURED,
        HONOURED,
        "none, auto; required and a named function force one call by constrained decoding",
    ),
    Parameter("parallel_tool_calls", CHAT, HONOURED, HONOURED, "false keeps the first call of an answer"),
    Parameter("functions", CHAT, REFUSED, REFUSED, "deprecated by OpenAI; send tools"),
    Parameter(
        "function_call", CHAT, REFUSED, REFUSED, "deprecated by OpenAI; send tool_choice", lambda v: v in (None, "none")
    ),
    Parameter(
        "store", CHAT, REFUSED, REFUSED, "completions are not stored; false accepted", lambda v: v in (None, False)
    ),
    Parameter("metadata", CHAT, REFUSED, REFUSED, "only for stored completions"),
    Parameter("modalities", CHAT, REFUSED, REFUSED, 'text only; ["text"] accepted', lambda v: v in (None, ["text"])),
    Parameter("audio", CHAT, REFUSED, REFUSED, "text models only"),
    Parameter("prediction", CHAT, REFUSED, REFUSED, "predicted outputs are not served"),
    Parameter("reasoning_effort", CHAT, REFUSED, REFUSED, "for reasoning models; fine-tuned models here are not"),
    Parameter("verbosity", CHAT, REFUSED, REFUSED, "for reasoning models"),
    Parameter("web_search_options", CHAT, REFUSED, REFUSED, "no web search"),
    Parameter("suffix", COMPLETIONS, REFUSED, REFUSED, "insertion (fill-in-the-middle) is not served"),
    # tuneloop's own, sent with the openai client's extra_body
    Parameter("adapter_scale", BOTH, HONOURED, HONOURED, "tuneloop: this request's adapter strength (0-4)"),
    Parameter("ignore_eos", BOTH, HONOURED, HONOURED, "tuneloop (as vLLM): generate exactly max_tokens"),
]
BY_NAME = {(e, p.name): p for p in PARAMETERS for e in p.endpoints}


class ParameterError(ValueError):
    def __init__(self, param: str, message: str):
        super().__init__(message)
        self.param = param


def check_parameters(body: dict, endpoint: str, backend: str) -> None:
    """Raise ParameterError for the first parameter of `body` this server would not honour: unknown
    to the OpenAI API, or refused on this backend at the value given."""
    for name, value in body.items():
        p = BY_NAME.get((endpoint, name))
        if p is None:
            raise ParameterError(name, f"{name}: not a parameter of OpenAI's {endpoint} request")
        if p.status(backend) == REFUSED and not p.asks_nothing(value):
            raise ParameterError(name, f"{name}: not supported by this server ({backend} backend): {p.note}")


def parameter_table() -> str:
    """The README's table: each parameter, where it applies, and its status per backend."""
    rows = ["| parameter | endpoints | transformers | vLLM | note |", "|---|---|---|---|---|"]
    for p in PARAMETERS:
        rows.append(f"| `{p.name}` | {', '.join(p.endpoints)} | {p.transformers} | {p.vllm} | {p.note} |")
    return "\n".join(rows)
