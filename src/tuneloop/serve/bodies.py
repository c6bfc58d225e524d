"""What a client may send: the chat and completions request bodies, validated field by field (a bad
value is a 400 naming the field), and the parameter table's verdict on them (serve/params.py)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from tuneloop.serve.engine import MIN_TEMPERATURE
from tuneloop.serve.errors import ApiError
from tuneloop.serve.params import ParameterError, check_parameters

MAX_SEED = 2**63 - 1  # torch.manual_seed's range
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


class RequestBody(BaseModel):
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


class ChatBody(RequestBody):
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


class CompletionBody(RequestBody):
    prompt: Text | list[Text]
    logprobs: int | None = Field(None, ge=0, le=5)
    echo: bool | None = None
    best_of: int | None = Field(None, ge=1, le=MAX_CHOICES)


def check_body(body: RequestBody, endpoint: str, backend: str) -> None:
    """The table's verdict on every parameter sent (serve/params.py), then the combinations refused."""
    try:
        check_parameters(body.model_dump(exclude_unset=True), endpoint, backend)
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
