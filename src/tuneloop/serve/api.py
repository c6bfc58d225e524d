"""The OpenAI-compatible HTTP API (FastAPI): /v1/models, /v1/chat/completions, /v1/completions.

`model` picks the base model or an adapter; `adapter_scale` (an extra body field; the openai
client sends it with `extra_body`) sets that adapter's strength for one request. Every request
parameter is honoured or refused by name (serve/params.py): structured outputs, log-probabilities,
several choices, penalties and streamed usage included. Errors use the OpenAI error shape: an
unknown model is a 404, a malformed request a 400, never a 500.
"""

from __future__ import annotations

import contextlib
import hmac

from fastapi import FastAPI
from fastapi import Request as HttpRequest
from fastapi.exceptions import RequestValidationError

from tuneloop.serve import chat, completions
from tuneloop.serve.engine import ServedModels
from tuneloop.serve.errors import ApiError, error_response, invalid_body
from tuneloop.serve.state import ServerState

DEFAULT_MAX_BODY_BYTES = 1 << 20  # 1 MiB: far above any prompt that fits the context


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
    app.state.server = ServerState(engine, batcher)
    app.include_router(chat.router)
    app.include_router(completions.router)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc: RequestValidationError):
        return invalid_body(exc)

    @app.exception_handler(ApiError)
    async def _api_error(request, exc: ApiError):
        return error_response(exc.status, exc.message, exc.code, exc.param)

    @app.middleware("http")
    async def _auth_and_size(request: HttpRequest, call_next):
        if api_key:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
                return error_response(401, "missing or wrong API key (Authorization: Bearer ...)", "invalid_api_key")
        length = request.headers.get("content-length")
        too_large = error_response(413, f"the request body is over {max_body_bytes} bytes", "request_too_large")
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

    return app
