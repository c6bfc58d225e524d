"""Tool calling through the API, rendered and parsed as training and evaluation do (data/conversation.py):
templates with tool syntax get `tools` and `tool_calls` natively; for the others (SmolLM2's), the
tools are listed in the system turn and calls are written `<tool_call>{"name", "arguments"}</tool_call>`.
So a model fine-tuned on tool data answers with `tool_calls` through the API.

`tool_choice`: `none` (the tools are not shown to the model), `auto` (the model decides; calls are
parsed out of its answer), `required` or a named function (one call forced by constrained
decoding: serve/controls.py's tool_call grammar over the allowed tools' parameter schemas).
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass

from tuneloop.eval.metrics import tool_calls_in

# a call with its tags, then any tag left over (a small model may close a call twice)
CALL_BLOCK = re.compile(r"<tool_call>.*?(?:</tool_call>|$)|</?tool_call>", re.DOTALL)


class ToolError(ValueError):
    def __init__(self, param: str, message: str):
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class ToolPlan:
    shown: list[dict] | None  # the tools the prompt lists (None: tool_choice none, or no tools)
    forced: list[dict] | None  # the tools one of which must be called (required, or the named one)

    @property
    def names(self) -> set[str]:
        return {t["function"]["name"] for t in self.shown or []}


def plan_tools(tools: list[dict] | None, tool_choice) -> ToolPlan:
    """What the request's tools and tool_choice ask for, checked as OpenAI checks them."""
    if tools is not None:
        for i, tool in enumerate(tools):
            function = tool.get("function") if isinstance(tool, dict) else None
            if tool.get("type") != "function" or not isinstance(function, dict) or not function.get("name"):
                raise ToolError(
                    f"tools[{i}]", f"tools[{i}]: each tool is {{type: function, function: {{name, parameters}}}}"
                )
    if not tools:
        if tool_choice not in (None, "none"):
            raise ToolError("tool_choice", "tool_choice: needs tools")
        return ToolPlan(None, None)
    if tool_choice in (None, "auto"):
        return ToolPlan(tools, None)
    if tool_choice == "none":
        return ToolPlan(None, None)
    if tool_choice == "required":
        return ToolPlan(tools, tools)
    name = ((tool_choice or {}).get("function") or {}).get("name") if isinstance(tool_choice, dict) else None
    named = [t for t in tools if t["function"]["name"] == name]
    if not named:
        raise ToolError("tool_choice", f"tool_choice: {name!r} is not one of the request's tools")
    return ToolPlan(tools, named)


def openai_messages_to_internal(messages: list[dict]) -> list[dict]:
    """OpenAI's assistant tool_calls ({id, type, function: {name, arguments: JSON text}}) as tuneloop's
    data holds them ({name, arguments: dict}), so the prompt renders as the training data did."""
    out = []
    for i, m in enumerate(messages):
        m = dict(m)
        calls = []
        for j, call in enumerate(m.get("tool_calls") or []):
            function = (call.get("function") or {}) if isinstance(call, dict) else {}
            arguments = function.get("arguments", "{}")
            try:
                arguments = json.loads(arguments) if isinstance(arguments, str) else arguments
            except json.JSONDecodeError as e:
                raise ToolError(
                    f"messages[{i}].tool_calls[{j}]",
                    f"messages[{i}].tool_calls[{j}].function.arguments: not valid JSON ({e.msg})",
                ) from None
            calls.append({"name": function.get("name"), "arguments": arguments})
        if calls:
            m["tool_calls"] = calls
        else:
            m.pop("tool_calls", None)
        out.append(m)
    return out


def split_calls(text: str, names: set[str]) -> tuple[str | None, list[dict]]:
    """The answer's prose, and its calls of the request's tools in OpenAI's shape."""
    calls = [
        {
            "id": f"call_{uuid.uuid4().hex[:24]}",
            "type": "function",
            "function": {"name": name, "arguments": json.dumps(arguments, ensure_ascii=False)},
        }
        for name, arguments in tool_calls_in(text)
        if name in names and arguments is not None
    ]
    if not calls:
        return text, []
    prose = CALL_BLOCK.sub("", text).strip()
    return prose or None, calls
