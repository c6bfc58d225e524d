"""What a request asks of decoding beyond temperature and top_p, applied per row of a batch:
structured outputs (`response_format`), `logit_bias`, presence and frequency penalties; and the
log-probabilities of the tokens chosen (`logprobs`, `top_logprobs`).

Structured outputs use xgrammar (the constrained-decoding library vLLM and SGLang default to): a
JSON schema or "any JSON object" is compiled once per schema into a grammar over the tokenizer's
vocabulary; at each step a row's matcher fills a bitmask of the tokens that keep its answer valid,
and the others get -inf. The cost is the mask, per constrained row and step (bench/structured.py
measures it). Rows without constraints share the batch untouched.

The processor runs before generate()'s temperature and top-p (transformers puts custom processors
ahead of its sampling warpers), so a row samples among the valid tokens only.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass

import torch
from transformers import LogitsProcessor

MAX_COMPILED = 64  # schemas kept compiled; a server sees a few, a fuzzing client many
# JSON as json.dumps writes it, the form fine-tuning data is usually in: no free whitespace (a small
# model let loose on whitespace can spend its whole max_tokens on newlines, and the answer is then
# cut, invalid), and json.dumps' separators, so a constrained model writes what it was trained on.
JSON_STYLE = {"any_whitespace": False, "separators": (", ", ": ")}


class SchemaError(ValueError):
    """A response_format that cannot be compiled; the message names the part."""


class Grammars:
    """xgrammar's view of one tokenizer, and the grammars compiled for it (cached by schema)."""

    def __init__(self, tokenizer, vocab_size: int):
        import xgrammar as xgr

        self.xgr = xgr
        self.info = xgr.TokenizerInfo.from_huggingface(
            tokenizer, vocab_size=vocab_size, stop_token_ids=[tokenizer.eos_token_id]
        )
        self.compiler = xgr.GrammarCompiler(self.info, max_threads=1)
        self.vocab_size = vocab_size
        self._compiled: dict[str, object] = {}
        self._lock = threading.Lock()  # requests compile on the server's threads, decode on the batcher's

    def compile(self, response_format: dict):
        """The compiled grammar of an OpenAI response_format (None for {"type": "text"})."""
        grammar = self.format_grammar(response_format)
        return None if grammar is None else self._compile(grammar)

    def compile_tools(self, tools: list[dict]):
        return self._compile(self.tool_grammar(tools))

    def format_grammar(self, response_format: dict):
        """The grammar of {"type": "json_object"} or {"type": "json_schema", "json_schema": {"name",
        "schema", "strict"}}, as xgrammar's Grammar (str() of it is EBNF, which vLLM takes too)."""
        kind = response_format.get("type")
        if kind == "text":
            return None
        if kind == "json_object":
            return self.xgr.Grammar.from_json_schema('{"type": "object"}', strict_mode=False, **JSON_STYLE)
        if kind != "json_schema":
            raise SchemaError(f"response_format.type: {kind!r} is not one of text, json_object, json_schema")
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), dict):
            raise SchemaError("response_format.json_schema: give {name, schema, strict}")
        try:
            # strict: no properties beyond the schema's, as OpenAI's strict mode requires them declared
            return self.xgr.Grammar.from_json_schema(
                json.dumps(spec.get("schema", {})), strict_mode=bool(spec.get("strict")), **JSON_STYLE
            )
        except RuntimeError as e:  # xgrammar reports where the schema went wrong
            reason = str(e).split("] ", 1)[-1].split(": ", 1)[-1]
            raise SchemaError(f"response_format.json_schema.schema: {reason}") from None

    def tool_grammar(self, tools: list[dict]):
        """One call of one of `tools`, as tuneloop trains calls on templates without tool syntax
        (data/example.py's call_text): <tool_call>, {"name": ..., "arguments": {...}} valid against the
        tool's parameters, </tool_call>."""
        xgr, calls = self.xgr, []
        for tool in tools:
            function = tool.get("function") or {}
            schema = {
                "type": "object",
                "properties": {
                    "name": {"const": function.get("name")},
                    "arguments": function.get("parameters") or {"type": "object"},
                },
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
            try:
                calls.append(xgr.Grammar.from_json_schema(schema, strict_mode=False, **JSON_STYLE))
            except RuntimeError as e:
                reason = str(e).split("] ", 1)[-1]
                raise SchemaError(f"tools: {function.get('name')!r}'s parameters: {reason}") from None
        return xgr.Grammar.concat(
            xgr.Grammar.from_ebnf('root ::= "<tool_call>\\n"'),
            xgr.Grammar.union(*calls),
            xgr.Grammar.from_ebnf('root ::= "\\n</tool_call>"'),
        )

    def _compile(self, grammar):
        key = str(grammar)  # the EBNF: equal grammars compile once
        with self._lock:
            if key not in self._compiled:
                if len(self._compiled) >= MAX_COMPILED:
                    self._compiled.pop(next(iter(self._compiled)))
                self._compiled[key] = self.compiler.compile_grammar(grammar)
            return self._compiled[key]

    def decoded(self, token: int) -> bytes:
        return bytes(self.info.decoded_vocab[token])


@dataclass
class RowControls:
    """One row's controls: its compiled grammar (or None), logit bias {token: bias}, penalties."""

    grammar: object = None
    logit_bias: dict[int, float] | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0

    @property
    def active(self) -> bool:
        return bool(self.grammar is not None or self.logit_bias or self.presence_penalty or self.frequency_penalty)


class ControlsProcessor(LogitsProcessor):
    """The rows' controls on one generate() call. `width`: the padded prompt's length, where each
    row's answer starts. OpenAI's penalties: logit -= frequency x count + presence x (count > 0),
    counted over the answer's tokens so far."""

    def __init__(self, rows: list[RowControls], width: int, grammars: Grammars | None):
        self.rows, self.width, self.grammars = rows, width, grammars
        self.matchers = {i: grammars.xgr.GrammarMatcher(r.grammar) for i, r in enumerate(rows) if r.grammar is not None}
        self.bitmask = grammars.xgr.allocate_token_bitmask(len(rows), grammars.vocab_size) if self.matchers else None
        # each row's bias as (token ids, values), built once for the call rather than at every step
        self.bias = {
            i: (torch.tensor(list(r.logit_bias)), torch.tensor(list(r.logit_bias.values())))
            for i, r in enumerate(rows)
            if r.logit_bias
        }

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        answer = input_ids[:, self.width :]
        for i, r in enumerate(self.rows):
            if i in self.bias:
                ids, values = self.bias[i]
                scores[i, ids.to(scores.device)] += values.to(scores.device, scores.dtype)
            if (r.presence_penalty or r.frequency_penalty) and answer.shape[1]:
                counts = torch.bincount(answer[i], minlength=scores.shape[1])[: scores.shape[1]].to(scores.dtype)
                scores[i] -= r.frequency_penalty * counts + r.presence_penalty * (counts > 0).to(scores.dtype)
        rows = []
        for i, matcher in self.matchers.items():
            if answer.shape[1] and not matcher.is_terminated():
                matcher.accept_token(int(answer[i, -1]))
            # A terminated matcher's row has ended (its stop token accepted): generate() pads it from now on.
            if not matcher.is_terminated():
                matcher.fill_next_token_bitmask(self.bitmask, i)
                rows.append(i)
        if rows:
            self.grammars.xgr.apply_token_bitmask_inplace(
                scores, self.bitmask.to(scores.device), vocab_size=self.grammars.vocab_size, indices=rows
            )
        return scores


def token_logprobs(
    logits: torch.Tensor, tokens: list[int], top: int
) -> list[tuple[int, float, list[tuple[int, float]]]]:
    """Per generated token of one row: (token, its log-probability, the `top` most likely (token,
    log-probability)), from the model's raw logits at each step (before temperature, penalties and
    constraints: the model's own distribution, as vLLM reports it by default)."""
    logprobs = torch.log_softmax(logits[: len(tokens)].float(), dim=-1)
    chosen = logprobs.gather(1, torch.tensor(tokens).unsqueeze(1)).squeeze(1).tolist()
    if top:
        values, ids = logprobs.topk(top, dim=-1)
        alternatives = [list(zip(i.tolist(), v.tolist(), strict=True)) for i, v in zip(ids, values, strict=True)]
    else:
        alternatives = [[] for _ in tokens]
    return list(zip(tokens, chosen, alternatives, strict=True))
