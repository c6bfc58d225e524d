"""The HTTP routes of OpenAI's Files and Fine-tuning APIs, over the FineTuning service (scheduler.py).

Each route parses, calls the service and returns its object; errors use OpenAI's shape (404 for
another key's objects as for missing ones, 400 naming the parameter, 409 for an action the object's
state does not allow).
"""

from __future__ import annotations

import asyncio
import functools

from fastapi import APIRouter, Depends, File, Form, UploadFile
from fastapi import Request as HttpRequest
from fastapi.responses import Response

from tuneloop.finetuning.hyperparameters import JobRequest, RequestProblem
from tuneloop.finetuning.scheduler import Conflict, FineTuning
from tuneloop.finetuning.store import NotFound, page
from tuneloop.serve.errors import ApiError

router = APIRouter()
MAX_LIMIT = 10_000


def service(http: HttpRequest) -> FineTuning:
    return http.app.state.fine_tuning


def owner(http: HttpRequest) -> str:
    """The API key's owner id, set by the server's authentication (serve/access.py)."""
    return http.state.owner


def openai_errors(fn):
    """The service's exceptions as OpenAI's errors."""

    @functools.wraps(fn)
    async def wrapped(*args, **kwargs):
        try:
            return await fn(*args, **kwargs)
        except NotFound as e:
            raise ApiError(404, f"no such object for this API key: {e.args[0]}", "not_found") from None
        except RequestProblem as e:
            raise ApiError(400, str(e), "invalid_request", e.param) from None
        except Conflict as e:
            raise ApiError(409, str(e), "conflict", e.param) from None

    return wrapped


def _call(fn, *args):
    """Off the event loop: validation reads files, cancel and pause wait for a worker."""
    return asyncio.to_thread(fn, *args)


# Files


@router.post("/v1/files")
@openai_errors
async def upload(
    http: HttpRequest,
    file: UploadFile = File(...),
    purpose: str = Form(...),
    ft: FineTuning = Depends(service),
):
    data = await file.read()
    return await _call(ft.upload, owner(http), file.filename or "data.jsonl", data, purpose)


@router.get("/v1/files")
@openai_errors
async def list_files(
    http: HttpRequest,
    purpose: str | None = None,
    after: str | None = None,
    limit: int = MAX_LIMIT,
    order: str = "desc",
    ft: FineTuning = Depends(service),
):
    files = [f for f in ft.store.files(owner(http)) if purpose is None or f["purpose"] == purpose]
    return page(files if order == "desc" else files[::-1], after, min(limit, MAX_LIMIT))


@router.get("/v1/files/{file_id}")
@openai_errors
async def retrieve_file(file_id: str, http: HttpRequest, ft: FineTuning = Depends(service)):
    return ft.store.file(owner(http), file_id)


@router.get("/v1/files/{file_id}/content")
@openai_errors
async def file_content(file_id: str, http: HttpRequest, ft: FineTuning = Depends(service)):
    path = ft.store.file_path(owner(http), file_id)
    return Response(await asyncio.to_thread(path.read_bytes), media_type="application/octet-stream")


@router.delete("/v1/files/{file_id}")
@openai_errors
async def delete_file(file_id: str, http: HttpRequest, ft: FineTuning = Depends(service)):
    return await _call(ft.delete_file, owner(http), file_id)


# Jobs


@router.post("/v1/fine_tuning/jobs")
@openai_errors
async def create_job(body: JobRequest, http: HttpRequest, ft: FineTuning = Depends(service)):
    return await _call(ft.create_job, owner(http), body)


@router.get("/v1/fine_tuning/jobs")
@openai_errors
async def list_jobs(http: HttpRequest, after: str | None = None, limit: int = 20, ft: FineTuning = Depends(service)):
    query = http.query_params
    metadata = {k[len("metadata[") : -1]: v for k, v in query.multi_items() if k.startswith("metadata[")}
    if query.get("metadata") == "null":
        raise ApiError(400, "metadata=null: every job here has metadata or none; filter by metadata[k]=v")
    return await _call(ft.jobs, owner(http), after, min(limit, MAX_LIMIT), metadata or None)


@router.get("/v1/fine_tuning/jobs/{job_id}")
@openai_errors
async def retrieve_job(job_id: str, http: HttpRequest, ft: FineTuning = Depends(service)):
    return await _call(ft.job, owner(http), job_id)


@router.post("/v1/fine_tuning/jobs/{job_id}/{action}")
@openai_errors
async def job_action(job_id: str, action: str, http: HttpRequest, ft: FineTuning = Depends(service)):
    actions = {"cancel": ft.cancel, "pause": ft.pause, "resume": ft.resume}
    if action not in actions:
        raise ApiError(404, f"no action {action!r}; one of cancel, pause, resume", "not_found")
    return await _call(actions[action], owner(http), job_id)


@router.get("/v1/fine_tuning/jobs/{job_id}/events")
@openai_errors
async def job_events(
    job_id: str, http: HttpRequest, after: str | None = None, limit: int = 20, ft: FineTuning = Depends(service)
):
    return await _call(ft.events, owner(http), job_id, after, min(limit, MAX_LIMIT))


@router.get("/v1/fine_tuning/jobs/{job_id}/checkpoints")
@openai_errors
async def job_checkpoints(
    job_id: str, http: HttpRequest, after: str | None = None, limit: int = 10, ft: FineTuning = Depends(service)
):
    return await _call(ft.checkpoints, owner(http), job_id, after, min(limit, MAX_LIMIT))


# Models


@router.delete("/v1/models/{model:path}")
@openai_errors
async def delete_model(model: str, http: HttpRequest, ft: FineTuning = Depends(service)):
    return await _call(ft.delete_model, owner(http), model)
