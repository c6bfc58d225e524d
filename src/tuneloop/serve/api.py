"""The OpenAI-compatible HTTP API (FastAPI): /v1/models, /v1/chat/completions, /v1/completions.

`model` picks the base model or an adapter; `adapter_scale` (an extra body field; the openai
client sends it with `extra_body`) sets that adapter's strength for one request. Every request
parameter is honoured or refused by name (serve/params.py): structured outputs, log-probabilities,
several choices, penalties and streamed usage included. Errors use the OpenAI error shape: an
unknown model is a 404, a malformed request a 400, never a 500.
"""

from __future__ import annotations

import contextlib

from fastapi import FastAPI
from fastapi import Request as HttpRequest
from fastapi.exceptions import RequestValidationError

from tuneloop.serve import chat, completions
from tuneloop.serve.access import ApiKeys
from tuneloop.serve.engine import ServedModels
from tuneloop.serve.errors import ApiError, error_response, invalid_body
from tuneloop.serve.state import ServerState

DEFAULT_MAX_BODY_BYTES = 1 << 20  # 1 MiB: far above any prompt that fits the context
DEFAULT_MAX_UPLOAD_BYTES = 512 << 20  # a training file (POST /v1/files): OpenAI's own limit is 512 MB
UPLOADS = "/v1/files"


def create_app(
    engine: ServedModels,
    batcher,
    api_key: str | ApiKeys | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    fine_tuning=None,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
) -> FastAPI:
    """`batcher`: anything with submit(request, streamer) -> Future and close(); the vLLM engine is its own.
    `api_key`: one key, or ApiKeys (several, each its own owner). `max_body_bytes`: a larger request
    is refused (413) before it is read; uploads to /v1/files may be up to `max_upload_bytes`.
    `fine_tuning`: a started finetuning.scheduler.FineTuning, which adds OpenAI's Files and
    Fine-tuning APIs and serves the models its jobs make."""
    keys = api_key if isinstance(api_key, ApiKeys) else ApiKeys([api_key] if api_key else [])

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        # Here, not after uvicorn.run returns: on SIGTERM uvicorn re-raises the signal once the server
        # has stopped, which ends the process before any code after run() (vLLM's engine processes
        # would outlive it).
        batcher.close()
        if fine_tuning is not None:
            fine_tuning.close()

    app = FastAPI(title="tuneloop serve", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.server = ServerState(engine, batcher, fine_tuning)
    app.state.fine_tuning = fine_tuning
    app.include_router(chat.router)
    app.include_router(completions.router)
    if fine_tuning is not None:
        app.include_router(fine_tuning.router)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc: RequestValidationError):
        return invalid_body(exc)

    @app.exception_handler(ApiError)
    async def _api_error(request, exc: ApiError):
        return error_response(exc.status, exc.message, exc.code, exc.param)

    @app.middleware("http")
    async def _auth_and_size(request: HttpRequest, call_next):
        owner = keys.owner(request.headers.get("authorization", ""))
        if owner is None:
            return error_response(401, "missing or wrong API key (Authorization: Bearer ...)", "invalid_api_key")
        request.state.owner = owner
        limit = max_upload_bytes if fine_tuning is not None and request.url.path == UPLOADS else max_body_bytes
        length = request.headers.get("content-length")
        too_large = error_response(413, f"the request body is over {limit} bytes", "request_too_large")
        if length is not None and (not length.isdigit() or int(length) > limit):
            return too_large
        if length is None and request.method == "POST" and len(await request.body()) > limit:
            return too_large  # a chunked body (no length given); Starlette replays it to the endpoint
        return await call_next(request)

    @app.get("/v1/models")
    async def models(request: HttpRequest):
        state: ServerState = app.state.server
        return {
            "object": "list",
            "data": [
                {"id": name, "object": "model", "created": 0, "owned_by": "tuneloop"}
                for name in engine.model_names()
                if state.visible(name, request.state.owner)
            ],
        }

    return app
