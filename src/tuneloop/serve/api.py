"""The OpenAI-compatible HTTP API (FastAPI): /v1/models, /v1/chat/completions, /v1/completions.

`model` picks the base model or an adapter; `adapter_scale` (an extra body field; the openai
client sends it with `extra_body`) sets that adapter's strength for one request. Every request
parameter is honoured or refused by name (serve/params.py): structured outputs, log-probabilities,
several choices, penalties and streamed usage included. Errors use the OpenAI error shape: an
unknown model is a 404, a malformed request a 400, never a 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import time
import uuid
from typing import Annotated, Literal

from fastapi import FastAPI
from fastapi import Request as HttpRequest
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator
from transformers.generation.streamers import BaseStreamer

from tuneloop.serve.controls import RowControls, SchemaError
from tuneloop.serve.engine import MIN_TEMPERATURE, Request, Result, ServedModels
from tuneloop.serve.params import ParameterError, check_parameters
from tuneloop.serve.tools import ToolError, ToolPlan, openai_messages_to_internal, plan_tools, split_calls

MAX_SEED = 2**63 - 1  # torch.manual_seed's range
TYPES = {"str", "int", "float", "list", "dict", "bool"}
DEFAULT_MAX_BODY_BYTES = 1 << 20  # 1 MiB: far above any prompt that fits the context
MAX_CHOICES = 16  # n and best_of: the batcher's batch


def _utf8(text: str) -> str:
    """JSON may carry a lone surrogate (\\ud800) that no tokenizer can encode."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"contains an unpaired surrogate at position {e.start}; send valid Unicode text") from None
    return text


Text = Annotated[str, AfterValidator(_utf8)]


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_usage: bool = False
    include_obfuscation: bool = False  # OpenAI's padding against side channels: nothing to pad on localhost


class _Body(BaseModel):
    # Extra fields are kept, then checked against serve/params.py's table: refused by name, never dropped.
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(1.0, ge=0, le=2)
    top_p: float | None = Field(1.0, ge=0, le=1)
    stop: Text | list[Text] | None = None
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    n: int | None = Field(1, ge=1, le=MAX_CHOICES)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    adapter_scale: float | None = Field(None, ge=0, le=4)
    ignore_eos: bool = False

    @field_validator("temperature")
    @classmethod
    def _tiny_is_greedy(cls, value: float | None) -> float:
        return 1.0 if value is None else 0.0 if value < MIN_TEMPERATURE else value

    @field_validator("logit_bias")
    @classmethod
    def _bias_range(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for token, bias in (value or {}).items():
            if not token.isdigit():
                raise ValueError(f"keys are token ids; {token!r} is not")
            if not -100 <= bias <= 100:
                raise ValueError(f"token {token}: bias {bias} is outside -100 to 100")
        return value

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0 or self.top_p == 0  # top_p 0 keeps only the likeliest token


class TextPart(BaseModel):
    type: Literal["text"]
    text: Text


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")  # name, refusal, ...

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Text | list[TextPart] | None = None
    tool_calls: list[dict] | None = None
    tool_call_id: str | None = None

    def for_template(self) -> dict:
        """The message as chat templates take it: `developer` is the system role of newer OpenAI models,
        content parts are joined."""
        content = self.content if not isinstance(self.content, list) else "".join(p.text for p in self.content)
        out = {"role": "system" if self.role == "developer" else self.role, "content": content or ""}
        if self.tool_calls:
            out["tool_calls"] = self.tool_calls
        if self.tool_call_id:
            out["tool_call_id"] = self.tool_call_id
        return out


class ChatBody(_Body):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    response_format: dict | None = None
    tools: list[dict] | None = None
    tool_choice: str | dict | None = None
    parallel_tool_calls: bool | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None


class CompletionBody(_Body):
    prompt: Text | list[Text]
    logprobs: int | None = Field(None, ge=0, le=5)
    echo: bool | None = None
    best_of: int | None = Field(None, ge=1, le=MAX_CHOICES)


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None):
        self.status, self.message, self.code, self.param = status, message, code, param


def _error(status: int, message: str, code: str | None = None, param: str | None = None) -> JSONResponse:
    return JSONResponse(
        status_code=status,
        content={
            "error": {
                "message": message,
                "type": "invalid_request_error" if status < 500 else "server_error",
                "param": param,
                "code": code,
            }
        },
    )


class DeltaStreamer(BaseStreamer):
    """Pushes each new piece of decoded text to an asyncio queue (None at the end).

    The transformers backend hands it token ids through `put` (a transformers streamer); the vLLM
    backend, which detokenizes itself, hands it text through `send`."""

    def __init__(self, tokenizer, loop: asyncio.AbstractEventLoop, out: asyncio.Queue):
        self.tokenizer, self.loop, self.out = tokenizer, loop, out
        self.tokens: list[int] = []
        self.sent = ""
        self.prompt_seen = False

    def put(self, value):
        if not self.prompt_seen:  # generate() first hands over the prompt
            self.prompt_seen = True
            return
        self.tokens.extend(value.reshape(-1).tolist())
        text = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        if len(text) > len(self.sent) and not text.endswith("\ufffd"):  # wait for whole characters
            self.send(text[len(self.sent) :])
            self.sent = text

    def send(self, text: str):
        self.loop.call_soon_threadsafe(self.out.put_nowait, text)

    def end(self):
        self.loop.call_soon_threadsafe(self.out.put_nowait, None)


def create_app(
    engine: ServedModels, batcher, api_key: str | None = None, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
) -> FastAPI:
    """`batcher`: anything with submit(request, streamer) -> Future and close(); the vLLM engine is its own.
    `max_body_bytes`: a larger request is refused (413) before it is read."""

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        # Here, not after uvicorn.run returns: on SIGTERM uvicorn re-raises the signal once the server
        # has stopped, which ends the process before any code after run() (vLLM's engine processes
        # would outlive it).
        batcher.close()

    app = FastAPI(title="tuneloop serve", docs_url=None, redoc_url=None, lifespan=lifespan)
    max_positions = engine.max_positions

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc: RequestValidationError):
        first = exc.errors()[0]
        if first["type"] == "json_invalid":  # loc is ("body", <character position>)
            position = first["loc"][-1]
            reason = (first.get("ctx") or {}).get("error", "invalid JSON")
            return _error(400, f"the body is not valid JSON at character {position}: {reason}")
        # loc names the field, then pydantic's union branches ("str", "function-after[...]"): keep the field.
        param = ".".join(
            str(p) for p in first["loc"][1:] if isinstance(p, int) or (p.isidentifier() and p not in TYPES)
        )
        return _error(400, f"{param or 'body'}: {first['msg']}", param=param or None)

    @app.exception_handler(ApiError)
    async def _api_error(request, exc: ApiError):
        return _error(exc.status, exc.message, exc.code, exc.param)

    @app.middleware("http")
    async def _auth_and_size(request: HttpRequest, call_next):
        if api_key:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
                return _error(401, "missing or wrong API key (Authorization: Bearer ...)", "invalid_api_key")
        length = request.headers.get("content-length")
        too_large = _error(413, f"the request body is over {max_body_bytes} bytes", "request_too_large")
        if length is not None and (not length.isdigit() or int(length) > max_body_bytes):
            return too_large
        if length is None and request.method == "POST" and len(await request.body()) > max_body_bytes:
            return too_large  # a chunked body (no length given); Starlette replays it to the endpoint
        return await call_next(request)

    @app.get("/v1/models")
    async def models():
        return {
            "object": "list",
            "data": [
                {"id": name, "object": "model", "created": 0, "owned_by": "tuneloop"} for name in engine.model_names()
            ],
        }

    def _check(body: _Body, endpoint: str) -> None:
        """The table's verdict on every parameter sent (serve/params.py), then the combinations refused."""
        try:
            check_parameters(body.model_dump(exclude_unset=True), endpoint, engine.backend)
        except ParameterError as e:
            raise ApiError(400, str(e), "unsupported_parameter", e.param) from None
        wants_logprobs = body.logprobs is not None and body.logprobs is not False
        if body.stream and wants_logprobs:
            raise ApiError(400, "logprobs: not with stream on this server; ask without stream", param="logprobs")
        if isinstance(body, ChatBody) and body.top_logprobs is not None and not body.logprobs:
            raise ApiError(400, "top_logprobs: needs logprobs: true", param="top_logprobs")
        if isinstance(body, CompletionBody):
            if body.echo and wants_logprobs:
                raise ApiError(400, "echo: not with logprobs on this server", param="echo")
            if body.best_of is not None and body.best_of < (body.n or 1):
                raise ApiError(400, f"best_of ({body.best_of}) must be at least n ({body.n})", param="best_of")
            if body.stream and (body.best_of or 1) > 1:
                raise ApiError(400, "best_of: not with stream (the best is known only at the end)", param="best_of")

    def _grammar(body: _Body, forced: list[dict] | None):
        """The constraint of a response_format, or of tool_choice required / named (one of `forced`)."""
        if not isinstance(body, ChatBody) or not (body.response_format or forced):
            return None
        param = "tool_choice" if forced else "response_format"
        if forced and body.response_format and body.response_format.get("type") != "text":
            raise ApiError(400, "response_format: not with a forced tool call (tool_choice)", param="response_format")
        try:
            return engine.compile_tools(forced) if forced else engine.compile_format(body.response_format)
        except SchemaError as e:
            raise ApiError(400, str(e), "invalid_response_format", param) from None
        except ImportError:
            why = "constrained decoding needs xgrammar: pip install --no-deps xgrammar apache-tvm-ffi"
            raise ApiError(400, f"{param}: {why}", "unsupported_parameter", param) from None

    def _controls(body: _Body, grammar=None) -> RowControls:
        bias = {int(t): b for t, b in (body.logit_bias or {}).items()}
        vocabulary = len(engine.tokenizer)
        if any(t >= vocabulary for t in bias):
            raise ApiError(400, f"logit_bias: token ids must be below {vocabulary}", param="logit_bias")
        return RowControls(grammar, bias or None, body.presence_penalty or 0.0, body.frequency_penalty or 0.0)

    def _requests(
        body: _Body, prompt_ids: list[int], max_tokens: int, choices: int, logprobs: int | None, grammar=None
    ) -> list[Request]:
        """One Request per choice; choice i samples with seed + i, so n choices differ and repeat."""
        try:
            engine.adapter_of(body.model)
        except KeyError:
            raise ApiError(
                404,
                f"model {body.model!r} not found; available: {', '.join(engine.model_names())}",
                "model_not_found",
                "model",
            ) from None
        if body.adapter_scale is not None and engine.adapter_of(body.model) is None:
            raise ApiError(400, "adapter_scale applies to an adapter, not the base model", param="adapter_scale")
        if max_positions and len(prompt_ids) + max_tokens > max_positions:
            raise ApiError(
                400,
                f"prompt ({len(prompt_ids)} tokens) + max_tokens ({max_tokens}) exceeds the model's "
                f"context of {max_positions} tokens",
                "context_length_exceeded",
                "max_tokens",
            )
        stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
        controls = _controls(body, grammar)
        return [
            Request(
                body.model,
                prompt_ids,
                max_tokens,
                0.0 if body.greedy else body.temperature,
                1.0 if body.greedy else body.top_p,
                stop,
                None if body.seed is None else (body.seed + i) % (MAX_SEED + 1),
                body.adapter_scale,
                body.ignore_eos,
                controls,
                logprobs,
            )
            for i in range(choices)
        ]

    async def _tokenize(fn, value) -> list[int]:
        """Off the event loop (a long prompt tokenizes for a while); a template error is the client's."""
        try:
            return await asyncio.to_thread(fn, value)
        except ValueError as e:
            raise ApiError(400, str(e), param="messages") from None

    @app.post("/v1/chat/completions")
    async def chat(body: ChatBody, http: HttpRequest):
        _check(body, "chat")
        try:
            tools = plan_tools(body.tools, body.tool_choice)
            messages = openai_messages_to_internal([m.for_template() for m in body.messages])
        except ToolError as e:
            raise ApiError(400, str(e), param=e.param) from None
        if body.stream and tools.shown:
            raise ApiError(400, "tools: not with stream on this server yet; ask without stream", param="tools")
        top = (body.top_logprobs or 0) if body.logprobs else None
        requests = _requests(
            body,
            await _tokenize(lambda m: engine.chat_ids(m, tools.shown), messages),
            body.max_completion_tokens or body.max_tokens or 256,
            body.n or 1,
            top,
            _grammar(body, tools.forced),
        )
        rid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        if body.stream:
            return _stream(
                requests,
                rid,
                created,
                "chat.completion.chunk",
                lambda text: {"delta": {"content": text}},
                first={"delta": {"role": "assistant", "content": ""}},
                usage=bool(body.stream_options and body.stream_options.include_usage),
            )
        results = await asyncio.gather(*(_answer(r, http) for r in requests))
        return {
            "id": rid,
            "object": "chat.completion",
            "created": created,
            "model": body.model,
            "choices": [
                {"index": i, **_message(r, tools, body.parallel_tool_calls is not False, top)}
                for i, r in enumerate(results)
            ],
            "usage": _usage(results, prompts=1),
        }

    @app.post("/v1/completions")
    async def completions(body: CompletionBody, http: HttpRequest):
        _check(body, "completions")
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if not prompts:
            raise ApiError(400, "prompt: give at least one prompt", param="prompt")
        if not all(prompts):
            raise ApiError(400, "prompt: an empty prompt gives the model nothing to continue", param="prompt")
        n, best_of = body.n or 1, body.best_of or body.n or 1
        # best_of > n ranks the samples by log-probability: computed even when not returned
        logprobs = body.logprobs if body.logprobs is not None else (0 if best_of > n else None)
        per_prompt = [
            _requests(body, await _tokenize(engine.text_ids, p), body.max_tokens or 16, best_of, logprobs)
            for p in prompts
        ]
        rid, created = f"cmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        if body.stream:
            if len(prompts) > 1:
                raise ApiError(400, "stream one prompt at a time", param="prompt")
            echo = prompts[0] if body.echo else ""
            return _stream(
                per_prompt[0],
                rid,
                created,
                "text_completion",
                lambda text: {"text": text, "logprobs": None},
                first={"text": echo, "logprobs": None} if echo else None,
                usage=bool(body.stream_options and body.stream_options.include_usage),
            )
        # every prompt's choices at once: the batcher batches them together
        flat = await asyncio.gather(*(_answer(r, http) for requests in per_prompt for r in requests))
        answered = [flat[i : i + best_of] for i in range(0, len(flat), best_of)]
        choices = []
        for prompt, results in zip(prompts, answered, strict=True):
            kept = sorted(results, key=_mean_logprob, reverse=True)[:n] if best_of > n else results
            for r in kept:
                choices.append(
                    {
                        "index": len(choices),
                        "text": (prompt if body.echo else "") + r.text,
                        "finish_reason": r.finish_reason,
                        "logprobs": None if body.logprobs is None else _completion_logprobs(r),
                    }
                )
        return {
            "id": rid,
            "object": "text_completion",
            "created": created,
            "model": body.model,
            "choices": choices,
            "usage": _usage([r for results in answered for r in results], prompts=len(prompts)),
        }

    def _message(result: Result, tools: ToolPlan, parallel: bool, top: int | None) -> dict:
        """A chat choice: the answer, its tool calls parsed out where the request offered tools."""
        content, calls = split_calls(result.text, tools.names) if tools.shown else (result.text, [])
        message = {"role": "assistant", "content": content, "refusal": None}
        if calls:
            message["tool_calls"] = calls if parallel else calls[:1]
        return {
            "message": message,
            "logprobs": None if top is None else {"content": _chat_logprobs(result), "refusal": None},
            "finish_reason": "tool_calls" if calls else result.finish_reason,
        }

    def _chat_logprobs(result: Result) -> list[dict]:
        def entry(token: int, logprob: float) -> dict:
            text, raw = engine.token_text(token)
            return {"token": text, "logprob": logprob, "bytes": list(raw)}

        return [
            {**entry(token, logprob), "top_logprobs": [entry(t, lp) for t, lp in alternatives]}
            for token, logprob, alternatives in result.logprobs
        ]

    def _completion_logprobs(result: Result) -> dict:
        tokens = [engine.token_text(t)[0] for t, _, _ in result.logprobs]
        offsets = [sum(len(t) for t in tokens[:i]) for i in range(len(tokens))]
        return {
            "tokens": tokens,
            "token_logprobs": [lp for _, lp, _ in result.logprobs],
            "top_logprobs": [{engine.token_text(t)[0]: lp for t, lp in alt} for _, _, alt in result.logprobs],
            "text_offset": offsets,
        }

    async def _answer(request: Request, http: HttpRequest):
        """The result of a non-streaming request; if the client goes away first, its generation is
        cancelled (the batcher skips it, or stops its row), so abandoned work does not hold the server."""
        future = asyncio.wrap_future(batcher.submit(request))
        while True:
            done, _ = await asyncio.wait({future}, timeout=0.25)
            if done:
                return future.result()
            if await http.is_disconnected():
                request.cancel.set()
                raise ApiError(499, "the client closed the request")

    def _stream(requests: list[Request], rid: str, created: int, kind: str, piece, first=None, usage=False):
        """The choices streamed one after another, each chunk carrying its choice's index (clients
        assemble choices by index); with `usage`, a last chunk with no choices and the usage, as OpenAI
        sends for stream_options.include_usage."""
        loop = asyncio.get_running_loop()
        queues = [asyncio.Queue() for _ in requests]
        futures = [
            batcher.submit(r, streamer=DeltaStreamer(engine.tokenizer, loop, q))
            for r, q in zip(requests, queues, strict=True)
        ]

        def chunk(index: int | None, choice: dict | None = None, **extra) -> str:
            body = {
                "id": rid,
                "object": kind,
                "created": created,
                "model": requests[0].model,
                "choices": [] if choice is None else [{"index": index, **choice}],
                **({"usage": None} if usage else {}),
                **extra,
            }
            return "data: " + json.dumps(body) + "\n\n"

        async def events():
            # Every stream ends with finish reasons and [DONE], or an error event and [DONE]. A client
            # that disconnects cancels the generations (Starlette closes this generator: `finally`).
            try:
                results = []
                for index, (request, out, future) in enumerate(zip(requests, queues, futures, strict=True)):
                    if first:
                        yield chunk(index, {**first, "finish_reason": None})
                    sent, stopped = "", False
                    while (text := await out.get()) is not None:
                        candidate = sent + text
                        cut = min((candidate.index(s) for s in request.stop if s and s in candidate), default=None)
                        if cut is not None:  # a stop string: send what precedes it, then finish
                            if cut > len(sent):
                                yield chunk(index, {**piece(candidate[len(sent) : cut]), "finish_reason": None})
                            stopped = True
                            request.cancel.set()  # nothing after the stop string is wanted
                            break
                        sent = candidate
                        yield chunk(index, {**piece(text), "finish_reason": None})
                    result = await asyncio.wrap_future(future)
                    results.append(result)
                    yield chunk(index, {**piece(""), "finish_reason": "stop" if stopped else result.finish_reason})
                if usage:
                    yield chunk(None, usage=_usage(results, prompts=1))
            except Exception as e:  # noqa: BLE001 — the stream has begun: the error goes in the stream
                error = {"message": f"generation failed: {type(e).__name__}: {e}", "type": "server_error"}
                yield "data: " + json.dumps({"error": error}) + "\n\n"
            finally:
                for request in requests:
                    request.cancel.set()
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


def _usage(results: list[Result], prompts: int) -> dict:
    """OpenAI's usage: each prompt counted once however many choices it has (results are grouped by
    prompt, the same number per prompt), every generated token counted."""
    per_prompt = len(results) // prompts
    prompt = sum(r.prompt_tokens for r in results[::per_prompt])
    completion = sum(r.completion_tokens for r in results)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _mean_logprob(result: Result) -> float:
    """best_of's ranking: the highest log-probability per token."""
    return sum(lp for _, lp, _ in result.logprobs) / len(result.logprobs) if result.logprobs else float("-inf")
