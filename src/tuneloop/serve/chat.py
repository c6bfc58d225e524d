"""POST /v1/chat/completions: messages in, the assistant's answer out, with its tool calls parsed
(serve/tools.py), its log-probabilities, and as many choices as asked."""

from __future__ import annotations

import asyncio
import time
import uuid

from fastapi import APIRouter, Depends
from fastapi import Request as HttpRequest

from tuneloop.serve.bodies import ChatBody, check_body
from tuneloop.serve.engine import Result, ServedModels
from tuneloop.serve.errors import ApiError
from tuneloop.serve.state import ServerState, server_state, usage_of
from tuneloop.serve.streaming import stream
from tuneloop.serve.tools import ToolError, ToolPlan, openai_messages_to_internal, plan_tools, split_calls

router = APIRouter()


@router.post("/v1/chat/completions")
async def chat(body: ChatBody, http: HttpRequest, server: ServerState = Depends(server_state)):
    check_body(body, "chat", server.engine.backend)
    try:
        tools = plan_tools(body.tools, body.tool_choice)
        messages = openai_messages_to_internal([m.for_template() for m in body.messages])
    except ToolError as e:
        raise ApiError(400, str(e), param=e.param) from None
    if body.stream and tools.shown:
        raise ApiError(400, "tools: not with stream on this server yet; ask without stream", param="tools")
    top = (body.top_logprobs or 0) if body.logprobs else None
    requests = server.requests(
        body,
        await server.tokenize(lambda m: server.engine.chat_ids(m, tools.shown), messages),
        body.max_completion_tokens or body.max_tokens or 256,
        body.n or 1,
        top,
        server.grammar(body, tools.forced),
        owner=http.state.owner,
    )
    rid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
    if body.stream:
        return stream(
            server,
            requests,
            rid,
            created,
            "chat.completion.chunk",
            lambda text: {"delta": {"content": text}},
            first={"delta": {"role": "assistant", "content": ""}},
            usage=bool(body.stream_options and body.stream_options.include_usage),
        )
    results = await asyncio.gather(*(server.answer(r, http) for r in requests))
    return {
        "id": rid,
        "object": "chat.completion",
        "created": created,
        "model": body.model,
        "choices": [
            {"index": i, **_message(server.engine, r, tools, body.parallel_tool_calls is not False, top)}
            for i, r in enumerate(results)
        ],
        "usage": usage_of(results, prompts=1),
    }


def _message(engine: ServedModels, result: Result, tools: ToolPlan, parallel: bool, top: int | None) -> dict:
    """A chat choice: the answer, its tool calls parsed out where the request offered tools."""
    content, calls = split_calls(result.text, tools.names) if tools.shown else (result.text, [])
    message = {"role": "assistant", "content": content, "refusal": None}
    if calls:
        message["tool_calls"] = calls if parallel else calls[:1]
    return {
        "message": message,
        "logprobs": None if top is None else {"content": _logprobs(engine, result), "refusal": None},
        "finish_reason": "tool_calls" if calls else result.finish_reason,
    }


def _logprobs(engine: ServedModels, result: Result) -> list[dict]:
    def entry(token: int, logprob: float) -> dict:
        text, raw = engine.token_text(token)
        return {"token": text, "logprob": logprob, "bytes": list(raw)}

    return [
        {**entry(token, logprob), "top_logprobs": [entry(t, lp) for t, lp in alternatives]}
        for token, logprob, alternatives in result.logprobs
    ]
