"""OpenAI's error shape: {"error": {message, type, param, code}}; an ApiError raised anywhere in a
request becomes one."""

from __future__ import annotations

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

TYPES = {"str", "int", "float", "list", "dict", "bool"}  # pydantic's union branches in an error's location


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None):
        self.status, self.message, self.code, self.param = status, message, code, param


def error_response(status: int, message: str, code: str | None = None, param: str | None = None) -> JSONResponse:
    return JSONResponse(
        status_code=status,
        content={
            "error": {
                "message": message,
                "type": "invalid_request_error" if status < 500 else "server_error",
                "param": param,
                "code": code,
            }
        },
    )


def invalid_body(exc: RequestValidationError) -> JSONResponse:
    """A body that failed validation, as OpenAI's error shape naming the field."""
    first = exc.errors()[0]
    if first["type"] == "json_invalid":  # loc is ("body", <character position>)
        position = first["loc"][-1]
        reason = (first.get("ctx") or {}).get("error", "invalid JSON")
        return error_response(400, f"the body is not valid JSON at character {position}: {reason}")
    # loc names the field, then pydantic's union branches ("str", "function-after[...]"): keep the field.
    param = ".".join(str(p) for p in first["loc"][1:] if isinstance(p, int) or (p.isidentifier() and p not in TYPES))
    return error_response(400, f"{param or 'body'}: {first['msg']}", param=param or None)
