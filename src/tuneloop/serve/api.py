"""The OpenAI-compatible HTTP API (FastAPI): /v1/models, /v1/chat/completions, /v1/completions.

`model` picks the base model or an adapter; `adapter_scale` (an extra body field; the openai
client sends it with `extra_body`) sets that adapter's strength for one request. Errors use the
OpenAI error shape: an unknown model is a 404, a malformed request a 400, never a 500.
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

from tuneloop.serve.engine import MIN_TEMPERATURE, Request, ServedModels

MAX_SEED = 2**63 - 1  # torch.manual_seed's range
TYPES = {"str", "int", "float", "list", "dict", "bool"}
DEFAULT_MAX_BODY_BYTES = 1 << 20  # 1 MiB: far above any prompt that fits the context


def _utf8(text: str) -> str:
    """JSON may carry a lone surrogate (\\ud800) that no tokenizer can encode."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"contains an unpaired surrogate at position {e.start}; send valid Unicode text") from None
    return text


Text = Annotated[str, AfterValidator(_utf8)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)  # clients send fields we do not use (user, n=1)

    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    stop: Text | list[Text] | None = None
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    stream: bool = False
    n: int = Field(1, ge=1, le=1, description="one choice per request")
    adapter_scale: float | None = Field(None, ge=0, le=4)
    ignore_eos: bool = False

    @field_validator("temperature")
    @classmethod
    def _tiny_is_greedy(cls, value: float) -> float:
        return 0.0 if value < MIN_TEMPERATURE else value


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


class CompletionBody(_Body):
    prompt: Text | list[Text]


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

    def _request(body: _Body, prompt_ids: list[int], max_tokens: int) -> Request:
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
        return Request(
            body.model,
            prompt_ids,
            max_tokens,
            body.temperature,
            body.top_p,
            stop,
            body.seed,
            body.adapter_scale,
            body.ignore_eos,
        )

    async def _tokenize(fn, value) -> list[int]:
        """Off the event loop (a long prompt tokenizes for a while); a template error is the client's."""
        try:
            return await asyncio.to_thread(fn, value)
        except ValueError as e:
            raise ApiError(400, str(e), param="messages") from None

    @app.post("/v1/chat/completions")
    async def chat(body: ChatBody, http: HttpRequest):
        request = _request(
            body,
            await _tokenize(engine.chat_ids, [m.for_template() for m in body.messages]),
            body.max_completion_tokens or body.max_tokens or 256,
        )
        rid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        if body.stream:
            return _stream(
                request,
                rid,
                created,
                "chat.completion.chunk",
                lambda text: {"delta": {"content": text}},
                first={"delta": {"role": "assistant"}},
            )
        result = await _answer(request, http)
        return {
            "id": rid,
            "object": "chat.completion",
            "created": created,
            "model": body.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": result.text},
                    "finish_reason": result.finish_reason,
                }
            ],
            "usage": _usage(result),
        }

    @app.post("/v1/completions")
    async def completions(body: CompletionBody, http: HttpRequest):
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if not prompts:
            raise ApiError(400, "prompt: give at least one prompt", param="prompt")
        if not all(prompts):
            raise ApiError(400, "prompt: an empty prompt gives the model nothing to continue", param="prompt")
        requests = [_request(body, await _tokenize(engine.text_ids, p), body.max_tokens or 16) for p in prompts]
        rid, created = f"cmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        if body.stream:
            if len(requests) > 1:
                raise ApiError(400, "stream one prompt at a time", param="prompt")
            return _stream(requests[0], rid, created, "text_completion", lambda text: {"text": text})
        results = await asyncio.gather(*(_answer(r, http) for r in requests))
        usage = {k: sum(_usage(r)[k] for r in results) for k in ("prompt_tokens", "completion_tokens", "total_tokens")}
        return {
            "id": rid,
            "object": "text_completion",
            "created": created,
            "model": body.model,
            "choices": [
                {"index": i, "text": r.text, "finish_reason": r.finish_reason, "logprobs": None}
                for i, r in enumerate(results)
            ],
            "usage": usage,
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

    def _stream(request: Request, rid: str, created: int, kind: str, piece, first: dict | None = None):
        loop = asyncio.get_running_loop()
        out: asyncio.Queue = asyncio.Queue()
        future = batcher.submit(request, streamer=DeltaStreamer(engine.tokenizer, loop, out))

        def chunk(choice: dict) -> str:
            return (
                "data: "
                + json.dumps(
                    {
                        "id": rid,
                        "object": kind,
                        "created": created,
                        "model": request.model,
                        "choices": [{"index": 0, **choice}],
                    }
                )
                + "\n\n"
            )

        async def events():
            # Every stream ends with a finish reason and [DONE], or an error event and [DONE]. A client
            # that disconnects cancels the generation (Starlette closes this generator: `finally`).
            try:
                if first:
                    yield chunk({**first, "finish_reason": None})
                sent, stopped = "", False
                while (text := await out.get()) is not None:
                    candidate = sent + text
                    cut = min((candidate.index(s) for s in request.stop if s and s in candidate), default=None)
                    if cut is not None:  # a stop string: send what precedes it, then finish
                        if cut > len(sent):
                            yield chunk({**piece(candidate[len(sent) : cut]), "finish_reason": None})
                        stopped = True
                        request.cancel.set()  # nothing after the stop string is wanted
                        break
                    sent = candidate
                    yield chunk({**piece(text), "finish_reason": None})
                result = await asyncio.wrap_future(future)
                yield chunk({**piece(""), "finish_reason": "stop" if stopped else result.finish_reason})
            except Exception as e:  # noqa: BLE001 — the stream has begun: the error goes in the stream
                error = {"message": f"generation failed: {type(e).__name__}: {e}", "type": "server_error"}
                yield "data: " + json.dumps({"error": error}) + "\n\n"
            finally:
                request.cancel.set()
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


def _usage(result) -> dict:
    return {
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "total_tokens": result.prompt_tokens + result.completion_tokens,
    }
