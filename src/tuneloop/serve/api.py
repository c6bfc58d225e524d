"""The OpenAI-compatible HTTP API (FastAPI): /v1/models, /v1/chat/completions, /v1/completions.

`model` picks the base model or an adapter; `adapter_scale` (an extra body field; the openai
client sends it with `extra_body`) sets that adapter's strength for one request. Errors use the
OpenAI error shape: an unknown model is a 404, a malformed request a 400, never a 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from typing import Literal

from fastapi import FastAPI
from fastapi import Request as HttpRequest
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from transformers.generation.streamers import BaseStreamer

from tuneloop.serve.engine import Request, ServedModels


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")  # clients send fields we do not use (user, n=1, ...)

    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    n: int = Field(1, ge=1, le=1, description="one choice per request")
    adapter_scale: float | None = Field(None, ge=0, le=4)
    ignore_eos: bool = False


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatBody(_Body):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)


class CompletionBody(_Body):
    prompt: str | list[str]


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


def create_app(engine: ServedModels, batcher, api_key: str | None = None) -> FastAPI:
    """`batcher`: anything with submit(request, streamer) -> Future and close(); the vLLM engine is its own."""

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
        param = ".".join(str(p) for p in first["loc"] if p != "body")
        return _error(400, f"{param or 'body'}: {first['msg']}", param=param or None)

    @app.exception_handler(ApiError)
    async def _api_error(request, exc: ApiError):
        return _error(exc.status, exc.message, exc.code, exc.param)

    @app.middleware("http")
    async def _auth(request: HttpRequest, call_next):
        if api_key and request.headers.get("authorization") != f"Bearer {api_key}":
            return _error(401, "missing or wrong API key (Authorization: Bearer ...)", "invalid_api_key")
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

    @app.post("/v1/chat/completions")
    async def chat(body: ChatBody):
        request = _request(
            body,
            engine.chat_ids([m.model_dump() for m in body.messages]),
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
        result = await asyncio.wrap_future(batcher.submit(request))
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
    async def completions(body: CompletionBody):
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if not prompts:
            raise ApiError(400, "prompt: give at least one prompt", param="prompt")
        requests = [_request(body, engine.text_ids(p), body.max_tokens or 16) for p in prompts]
        rid, created = f"cmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        if body.stream:
            if len(requests) > 1:
                raise ApiError(400, "stream one prompt at a time", param="prompt")
            return _stream(requests[0], rid, created, "text_completion", lambda text: {"text": text})
        results = await asyncio.gather(*(asyncio.wrap_future(batcher.submit(r)) for r in requests))
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
                    break
                sent = candidate
                yield chunk({**piece(text), "finish_reason": None})
            result = await asyncio.wrap_future(future)
            yield chunk({**piece(""), "finish_reason": "stop" if stopped else result.finish_reason})
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


def _usage(result) -> dict:
    return {
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "total_tokens": result.prompt_tokens + result.completion_tokens,
    }
