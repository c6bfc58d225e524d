"""One base model, many LoRA adapters, one process: the transformers serving backend.

Every adapter is loaded once (multilora.py). A batch may mix adapters, the bare base model and
adapter strengths freely: each row gets its own adapter, scaled by a multiplier of its LoRA
scaling — the adapter's default set at start, or the request's `adapter_scale`. Requests share a
batch when they decode the same way (see batcher.py).

Only the batcher's worker thread calls `generate`, so the model is never used concurrently.
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from tuneloop.data.conversation import render
from tuneloop.eval.scale_curve import recommended_scale
from tuneloop.models import choose_precision, load_model, load_tokenizer, resolve_model
from tuneloop.models.generate import contiguous_lm_head, left_padded
from tuneloop.models.precision import default_device
from tuneloop.runs import RunDir
from tuneloop.serve.controls import ControlsProcessor, Grammars, RowControls, token_logprobs
from tuneloop.serve.multilora import MultiLora


@dataclass(frozen=True)
class AdapterSpec:
    name: str
    path: Path  # a PEFT adapter folder (adapter_config.json)
    scale: float = 1.0  # default multiplier of the adapter's LoRA scaling
    base_model: str | None = None  # the model the run trained on, when known

    def config(self) -> dict:
        """PEFT's adapter_config.json."""
        return json.loads((self.path / "adapter_config.json").read_text())


# Below this a temperature divides the logits into infinities: it means greedy, as in OpenAI's API.
MIN_TEMPERATURE = 1e-5


@dataclass
class Request:
    model: str  # the base model's name or an adapter's
    prompt_ids: list[int]
    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    adapter_scale: float | None = None  # None: the adapter's default
    ignore_eos: bool = False  # generate exactly max_tokens (vLLM's option; throughput benchmarks use it)
    controls: RowControls = field(default_factory=RowControls)  # response_format, logit_bias, penalties
    logprobs: int | None = None  # None: none; k: each token's log-probability and the k likeliest alternatives
    # Set when the client has gone: a queued request is skipped, a running one stops at its next token.
    cancel: threading.Event = field(default_factory=threading.Event, compare=False, repr=False)

    @property
    def greedy(self) -> bool:
        return self.temperature < MIN_TEMPERATURE

    def decoding(self) -> tuple:
        """Requests that decode differently cannot share one generate() call."""
        return (self.ignore_eos, *(("greedy",) if self.greedy else ("sample", self.temperature, self.top_p, self.seed)))


@dataclass
class Result:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" | "length"
    # Request.logprobs: per answer token (token, log-probability, [(alternative, log-probability)])
    logprobs: list[tuple[int, float, list[tuple[int, float]]]] | None = None


def resolve_adapter(name: str, target: str, scale: float = 1.0) -> AdapterSpec:
    """`target` is a run directory (its adapter/) or a PEFT adapter folder."""
    path = Path(target)
    base_model = None
    run = RunDir(path)
    if (run.adapter_dir / "adapter_config.json").is_file():
        base_model = run.config().model if run.config_file.is_file() else None
        path = run.adapter_dir
    if not (path / "adapter_config.json").is_file():
        raise FileNotFoundError(
            f"adapter {name!r}: {target} is neither a run directory with adapter/ nor a PEFT "
            "adapter folder (no adapter_config.json)"
        )
    if not math.isfinite(scale) or scale < 0:
        raise ValueError(f"adapter {name!r}: scale must be a finite number >= 0, not {scale}")
    return AdapterSpec(name, path.resolve(), scale, base_model)


def parse_adapter(spec: str) -> AdapterSpec:
    """NAME=RUN_OR_PATH[@SCALE], as `tuneloop serve --adapter` takes it; SCALE `auto` is the scale
    the run's scale curve measured (eval/scale_curve.py)."""
    name, sep, target = spec.partition("=")
    if not sep or not name or not target:
        raise ValueError(f"--adapter {spec!r}: expected NAME=RUN_DIR or NAME=RUN_DIR@SCALE")
    scale = 1.0
    if "@" in target:
        target, _, raw = target.rpartition("@")
        try:
            scale = recommended_scale(RunDir(Path(target))) if raw == "auto" else float(raw)
        except ValueError as e:
            why = str(e) if raw == "auto" else f"scale {raw!r} is not a number"
            raise ValueError(f"--adapter {spec!r}: {why}") from None
    return resolve_adapter(name, target, scale)


def base_model_for(model: str | None, adapters: list[AdapterSpec]) -> str:
    """`model`, else the model the adapters' runs trained on (they must agree): one server, one base model."""
    from tuneloop.config import DEFAULT_MODEL

    trained_on = {a.base_model for a in adapters if a.base_model}
    if model is None and len(trained_on) > 1:
        raise ValueError(
            f"the adapters were trained on different models ({', '.join(sorted(trained_on))}); "
            "one server serves one base model: pass --model"
        )
    chosen = model or (trained_on.pop() if trained_on else DEFAULT_MODEL)
    for a in adapters:
        if a.base_model and a.base_model != chosen:
            raise ValueError(f"adapter {a.name!r} was trained on {a.base_model}, not {chosen}")
    return chosen


class ServedModels:
    """What every backend shares: the base model's name and tokenizer, the adapters, how a request's
    model name and adapter strength resolve, and the context length."""

    def __init__(self, model: str, adapters: list[AdapterSpec], tokenizer, max_positions: int | None):
        self.base_name = model
        self.tokenizer = tokenizer
        self.max_positions = max_positions
        self.vocab_size = len(tokenizer)  # the model's logits may be wider: backends set it from the config
        self.adapters = {a.name: a for a in adapters}
        clash = {self.base_name, "base"} & set(self.adapters)
        if clash:
            raise ValueError(f"adapter name {clash.pop()!r} is the base model's name; choose another")
        self._grammars = None

    @property
    def grammars(self) -> Grammars:
        """xgrammar's tables for this tokenizer, built on the first structured request (~0.1 s)."""
        if self._grammars is None:
            self._grammars = Grammars(self.tokenizer, self.vocab_size)
        return self._grammars

    def compile_format(self, response_format: dict):
        """What the backend's decoding needs to enforce a response_format (SchemaError if it cannot)."""
        return self.grammars.compile(response_format)

    def compile_tools(self, tools: list[dict]):
        return self.grammars.compile_tools(tools)

    def token_text(self, token: int) -> tuple[str, bytes]:
        """A token as OpenAI's logprobs show it: its text, and its bytes (a token may hold part of a
        character: xgrammar's decoded vocabulary has the exact bytes; without it, the decoded text's)."""
        try:
            raw = self.grammars.decoded(token)
        except ImportError:
            raw = self.tokenizer.decode([token]).encode()
        return raw.decode("utf-8", errors="backslashreplace"), raw

    def model_names(self) -> list[str]:
        return [self.base_name, *self.adapters]

    def add_adapter(self, spec: AdapterSpec) -> None:
        """Serve one more adapter from now on (a finished fine-tuning job): no restart."""
        if spec.name in (self.base_name, "base"):
            raise ValueError(f"adapter name {spec.name!r} is the base model's name; choose another")
        self._load_adapter(spec)
        self.adapters[spec.name] = spec

    def remove_adapter(self, name: str) -> None:
        """Stop serving an adapter; a request already decoding with it finishes first."""
        if name not in self.adapters:
            raise KeyError(name)
        del self.adapters[name]
        self._unload_adapter(name)

    def _load_adapter(self, spec: AdapterSpec) -> None:
        raise ValueError(f"the {self.backend} backend serves the adapters it started with; restart it with this one")

    def _unload_adapter(self, name: str) -> None:
        pass

    def adapter_of(self, name: str) -> str | None:
        """The adapter a model name selects (None: the base model); KeyError if unknown."""
        if name in (self.base_name, "base"):
            return None
        if name in self.adapters:
            return name
        raise KeyError(name)

    def scale_of(self, request: Request) -> float:
        adapter = self.adapter_of(request.model)
        if adapter is None:
            return 1.0
        return self.adapters[adapter].scale if request.adapter_scale is None else request.adapter_scale

    def chat_ids(self, messages: list[dict], tools: list[dict] | None = None) -> list[int]:
        """The prompt as training rendered it (data/conversation.py): the model's chat template, with
        tools and tool calls written out where the template has no syntax for them (`messages` hold
        tool calls as {name, arguments}). A template that drops part of a message is an error: the
        model would answer a conversation the client did not send."""
        text = render(self.tokenizer, messages, tools, generation_prompt=True)
        for i, m in enumerate(messages):
            if m.get("content") and m["content"].strip() not in text:
                raise ValueError(f"messages[{i}]: this model's chat template drops {m['role']!r} messages")
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def text_ids(self, prompt: str) -> list[int]:
        return self.tokenizer(prompt)["input_ids"]


class Cancelled(StoppingCriteria):
    """Ends the rows whose client has gone; generate() returns when every row has ended."""

    def __init__(self, events: list[threading.Event]):
        self.events = events

    def __call__(self, input_ids, scores, **kwargs) -> torch.Tensor:
        return torch.tensor([e.is_set() for e in self.events], device=input_ids.device)


class Engine(ServedModels):
    """The transformers backend: batches of requests through `generate()`, adapters mixed per row."""

    backend = "transformers"

    def __init__(self, model: str, adapters: list[AdapterSpec], *, precision: str = "auto", device: str | None = None):
        self.device = device or default_device()
        self.precision = choose_precision(precision, self.device)
        folder = resolve_model(model)
        base = load_model(folder, self.precision, self.device, inference=True)
        super().__init__(model, adapters, load_tokenizer(folder), getattr(base.config, "max_position_embeddings", None))
        self.model = base.eval()
        self.lora = MultiLora(base, {a.name: a.path for a in adapters}, self.precision.dtype, self.device)
        self.vocab_size = base.config.vocab_size

    def _load_adapter(self, spec: AdapterSpec) -> None:
        self.lora.add(spec.name, spec.path)

    def _unload_adapter(self, name: str) -> None:
        self.lora.remove(name)

    @torch.inference_mode()
    def generate(self, requests: list[Request], streamer=None) -> list[Result]:
        """One generate() call for requests that share decoding settings (adapters and strengths may differ)."""
        first = requests[0]
        pad = self.tokenizer.pad_token_id
        ids, mask = left_padded([r.prompt_ids for r in requests], pad)
        width = ids.shape[1]
        kwargs = {
            "max_new_tokens": max(r.max_tokens for r in requests),
            "pad_token_id": pad,
            "eos_token_id": self.tokenizer.eos_token_id,
            "streamer": streamer,
        }
        if first.ignore_eos:
            kwargs["min_new_tokens"] = kwargs["max_new_tokens"]
        if first.greedy:
            kwargs["do_sample"] = False
        else:
            kwargs.update(do_sample=True, temperature=first.temperature, top_p=first.top_p)
            if first.seed is not None:
                torch.manual_seed(first.seed)
        kwargs["stopping_criteria"] = StoppingCriteriaList([Cancelled([r.cancel for r in requests])])
        if any(r.controls.active for r in requests):
            kwargs["logits_processor"] = [
                ControlsProcessor([r.controls for r in requests], width, self.grammars if self._grammars else None)
            ]
        wants_logprobs = any(r.logprobs is not None for r in requests)
        if wants_logprobs:  # the raw logits of every step: batch x vocabulary floats per step
            kwargs.update(output_logits=True, return_dict_in_generate=True)
        adapters = [self.adapter_of(r.model) for r in requests]
        strengths = [self.scale_of(r) for r in requests]
        autocast = self.precision.autocast_dtype
        with (
            self.lora.rows(adapters, strengths),
            torch.autocast(self.device, dtype=autocast, enabled=autocast is not None),
            contiguous_lm_head(self.model),
        ):
            out = self.model.generate(input_ids=ids.to(self.device), attention_mask=mask.to(self.device), **kwargs)
        sequences = out.sequences if wants_logprobs else out
        logits = torch.stack(out.logits, dim=1) if wants_logprobs else None  # batch x steps x vocabulary
        return [
            self._result(r, sequences[row, width:].tolist(), None if logits is None else logits[row])
            for row, r in enumerate(requests)
        ]

    def _result(self, r: Request, tokens: list[int], logits: torch.Tensor | None = None) -> Result:
        eos = self.tokenizer.eos_token_id
        finish = "length"
        if eos in tokens[: r.max_tokens] and not r.ignore_eos:
            tokens, finish = tokens[: tokens.index(eos)], "stop"
        tokens = tokens[: r.max_tokens]
        generated = len(tokens)  # usage counts what was generated, a stop string's tokens included
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        cut = min((text.index(s) for s in r.stop if s and s in text), default=None)
        if cut is not None:
            text, finish = text[:cut], "stop"
            # the tokens that made the text kept (the stop string's own tokens go)
            while tokens and len(self.tokenizer.decode(tokens, skip_special_tokens=True)) > cut:
                tokens = tokens[:-1]
        logprobs = None if r.logprobs is None else token_logprobs(logits, tokens, r.logprobs) if tokens else []
        return Result(text, len(r.prompt_ids), generated, finish, logprobs)
