"""POST /v1/completions: text in, its continuation out; several prompts, echo, best_of and
log-probabilities in OpenAI's legacy shape."""

from __future__ import annotations

import asyncio
import time
import uuid

from fastapi import APIRouter, Depends
from fastapi import Request as HttpRequest

from tuneloop.serve.bodies import CompletionBody, check_body
from tuneloop.serve.engine import Result, ServedModels
from tuneloop.serve.errors import ApiError
from tuneloop.serve.state import ServerState, mean_logprob, server_state, usage_of
from tuneloop.serve.streaming import stream

router = APIRouter()


@router.post("/v1/completions")
async def completions(body: CompletionBody, http: HttpRequest, server: ServerState = Depends(server_state)):
    check_body(body, "completions", server.engine.backend)
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    if not prompts:
        raise ApiError(400, "prompt: give at least one prompt", param="prompt")
    if not all(prompts):
        raise ApiError(400, "prompt: an empty prompt gives the model nothing to continue", param="prompt")
    n, best_of = body.n or 1, body.best_of or body.n or 1
    # best_of > n ranks the samples by log-probability: computed even when not returned
    logprobs = body.logprobs if body.logprobs is not None else (0 if best_of > n else None)
    per_prompt = [
        server.requests(
            body,
            await server.tokenize(server.engine.text_ids, p),
            body.max_tokens or 16,
            best_of,
            logprobs,
            owner=http.state.owner,
        )
        for p in prompts
    ]
    rid, created = f"cmpl-{uuid.uuid4().hex[:24]}", int(time.time())
    if body.stream:
        if len(prompts) > 1:
            raise ApiError(400, "stream one prompt at a time", param="prompt")
        echo = prompts[0] if body.echo else ""
        return stream(
            server,
            per_prompt[0],
            rid,
            created,
            "text_completion",
            lambda text: {"text": text, "logprobs": None},
            first={"text": echo, "logprobs": None} if echo else None,
            usage=bool(body.stream_options and body.stream_options.include_usage),
        )
    # every prompt's choices at once: the batcher batches them together
    flat = await asyncio.gather(*(server.answer(r, http) for requests in per_prompt for r in requests))
    answered = [flat[i : i + best_of] for i in range(0, len(flat), best_of)]
    choices = []
    for prompt, results in zip(prompts, answered, strict=True):
        kept = sorted(results, key=mean_logprob, reverse=True)[:n] if best_of > n else results
        for r in kept:
            choices.append(
                {
                    "index": len(choices),
                    "text": (prompt if body.echo else "") + r.text,
                    "finish_reason": r.finish_reason,
                    "logprobs": None if body.logprobs is None else _logprobs(server.engine, r),
                }
            )
    return {
        "id": rid,
        "object": "text_completion",
        "created": created,
        "model": body.model,
        "choices": choices,
        "usage": usage_of([r for results in answered for r in results], prompts=len(prompts)),
    }


def _logprobs(engine: ServedModels, result: Result) -> dict:
    tokens = [engine.token_text(t)[0] for t, _, _ in result.logprobs]
    offsets = [sum(len(t) for t in tokens[:i]) for i in range(len(tokens))]
    return {
        "tokens": tokens,
        "token_logprobs": [lp for _, lp, _ in result.logprobs],
        "top_logprobs": [{engine.token_text(t)[0]: lp for t, lp in alt} for _, _, alt in result.logprobs],
        "text_offset": offsets,
    }
