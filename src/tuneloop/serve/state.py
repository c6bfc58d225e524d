"""The server's state and what every endpoint does with a request body: check it, turn it into the
engine's Requests (one per choice), and wait for their results, cancelling them if the client goes."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from fastapi import Request as HttpRequest

from tuneloop.serve.bodies import MAX_SEED, ChatBody, RequestBody
from tuneloop.serve.controls import RowControls, SchemaError
from tuneloop.serve.engine import Request, Result, ServedModels
from tuneloop.serve.errors import ApiError


@dataclass
class ServerState:
    """`batcher`: anything with submit(request, streamer) -> Future and close(); the vLLM engine is its own."""

    engine: ServedModels
    batcher: object
    fine_tuning: object = None  # finetuning.scheduler.FineTuning: its ft: models are their owners' only

    def visible(self, model: str, owner: str) -> bool:
        return self.fine_tuning is None or self.fine_tuning.visible(model, owner)

    def grammar(self, body: RequestBody, forced: list[dict] | None):
        """The constraint of a response_format, or of tool_choice required / named (one of `forced`)."""
        if not isinstance(body, ChatBody) or not (body.response_format or forced):
            return None
        param = "tool_choice" if forced else "response_format"
        if forced and body.response_format and body.response_format.get("type") != "text":
            raise ApiError(400, "response_format: not with a forced tool call (tool_choice)", param="response_format")
        try:
            return self.engine.compile_tools(forced) if forced else self.engine.compile_format(body.response_format)
        except SchemaError as e:
            raise ApiError(400, str(e), "invalid_response_format", param) from None
        except ImportError:
            why = "constrained decoding needs xgrammar: pip install --no-deps xgrammar apache-tvm-ffi"
            raise ApiError(400, f"{param}: {why}", "unsupported_parameter", param) from None

    def controls(self, body: RequestBody, grammar=None) -> RowControls:
        bias = {int(t): b for t, b in (body.logit_bias or {}).items()}
        vocabulary = len(self.engine.tokenizer)
        if any(t >= vocabulary for t in bias):
            raise ApiError(400, f"logit_bias: token ids must be below {vocabulary}", param="logit_bias")
        return RowControls(grammar, bias or None, body.presence_penalty or 0.0, body.frequency_penalty or 0.0)

    def requests(
        self,
        body: RequestBody,
        prompt_ids: list[int],
        max_tokens: int,
        choices: int,
        logprobs: int | None,
        grammar=None,
        owner: str = "local",
    ) -> list[Request]:
        """One Request per choice; choice i samples with seed + i, so n choices differ and repeat.
        `owner`: the API key's; another key's fine-tuned model is not found."""
        try:
            self.engine.adapter_of(body.model)
            if not self.visible(body.model, owner):
                raise KeyError(body.model)
        except KeyError:
            raise ApiError(
                404,
                f"model {body.model!r} not found; available: "
                f"{', '.join(n for n in self.engine.model_names() if self.visible(n, owner))}",
                "model_not_found",
                "model",
            ) from None
        if body.adapter_scale is not None and self.engine.adapter_of(body.model) is None:
            raise ApiError(400, "adapter_scale applies to an adapter, not the base model", param="adapter_scale")
        if self.engine.max_positions and len(prompt_ids) + max_tokens > self.engine.max_positions:
            raise ApiError(
                400,
                f"prompt ({len(prompt_ids)} tokens) + max_tokens ({max_tokens}) exceeds the model's "
                f"context of {self.engine.max_positions} tokens",
                "context_length_exceeded",
                "max_tokens",
            )
        stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
        controls = self.controls(body, grammar)
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

    async def tokenize(self, fn, value) -> list[int]:
        """Off the event loop (a long prompt tokenizes for a while); a template error is the client's."""
        try:
            return await asyncio.to_thread(fn, value)
        except ValueError as e:
            raise ApiError(400, str(e), param="messages") from None

    async def answer(self, request: Request, http: HttpRequest):
        """The result of a non-streaming request; if the client goes away first, its generation is
        cancelled (the batcher skips it, or stops its row), so abandoned work does not hold the server."""
        future = asyncio.wrap_future(self.batcher.submit(request))
        while True:
            done, _ = await asyncio.wait({future}, timeout=0.25)
            if done:
                return future.result()
            if await http.is_disconnected():
                request.cancel.set()
                raise ApiError(499, "the client closed the request")


def server_state(http: HttpRequest) -> ServerState:
    """The endpoints' dependency: the state create_app put on the app."""
    return http.app.state.server


def usage_of(results: list[Result], prompts: int) -> dict:
    """OpenAI's usage: each prompt counted once however many choices it has (results are grouped by
    prompt, the same number per prompt), every generated token counted."""
    per_prompt = len(results) // prompts
    prompt = sum(r.prompt_tokens for r in results[::per_prompt])
    completion = sum(r.completion_tokens for r in results)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def mean_logprob(result: Result) -> float:
    """best_of's ranking: the highest log-probability per token."""
    return sum(lp for _, lp, _ in result.logprobs) / len(result.logprobs) if result.logprobs else float("-inf")
