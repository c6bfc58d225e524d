"""Server-sent events: the tokens of a streamed request pushed to the client as they are decoded."""

from __future__ import annotations

import asyncio
import json

from fastapi.responses import StreamingResponse
from transformers.generation.streamers import BaseStreamer

from tuneloop.serve.engine import Request
from tuneloop.serve.state import ServerState, usage_of


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


def stream(
    server: ServerState, requests: list[Request], rid: str, created: int, kind: str, piece, first=None, usage=False
):
    """The choices streamed one after another, each chunk carrying its choice's index (clients
    assemble choices by index); with `usage`, a last chunk with no choices and the usage, as OpenAI
    sends for stream_options.include_usage."""
    loop = asyncio.get_running_loop()
    queues = [asyncio.Queue() for _ in requests]
    futures = [
        server.batcher.submit(r, streamer=DeltaStreamer(server.engine.tokenizer, loop, q))
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
                yield chunk(None, usage=usage_of(results, prompts=1))
        except Exception as e:  # noqa: BLE001 — the stream has begun: the error goes in the stream
            error = {"message": f"generation failed: {type(e).__name__}: {e}", "type": "server_error"}
            yield "data: " + json.dumps({"error": error}) + "\n\n"
        finally:
            for request in requests:
                request.cancel.set()
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")
