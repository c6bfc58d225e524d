"""What keeps another web site from driving the dashboard: a page on any site can make the browser
POST to http://127.0.0.1:8080/launch, and a DNS-rebinding site can even read the answers.

- Host: only the names the dashboard serves under (localhost by default); a rebinding site's own
  name is refused, reads included.
- Writes (POST): a foreign Origin is refused, and every form carries a per-start CSRF token that
  another site cannot read.
- With an API key (`tuneloop ui --api-key`, as Jupyter's token), writes also need the key: opening
  any page once with `?key=KEY` sets it as a cookie for this browser.
- No framing (clickjacking): X-Frame-Options and CSP frame-ancestors.
"""

from __future__ import annotations

import hmac
import secrets
from urllib.parse import urlsplit

from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse

LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
KEY_COOKIE = "tuneloop_key"
SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def _hostname(value: str) -> str:
    return (urlsplit(f"//{value}").hostname or "").lower()


class Guard:
    def __init__(self, hosts: set[str] | frozenset[str] = LOCAL_HOSTS, api_key: str | None = None):
        self.hosts = {h.lower().strip("[]") for h in hosts}
        self.api_key = api_key
        self.csrf = secrets.token_urlsafe(32)  # new at every start: a page from before a restart must reload

    def check_write(self, request: Request, form_token: str | None) -> None:
        """Raise unless `request` may change something: same origin, the form token, the API key if set."""
        origin = request.headers.get("origin")
        if origin and _hostname(urlsplit(origin).netloc) not in self.hosts:
            raise HTTPException(403, f"cross-site request from {origin} refused")
        token = form_token or request.headers.get("x-csrf-token") or ""
        if not hmac.compare_digest(token.encode(), self.csrf.encode()):
            raise HTTPException(403, "missing or stale form token; reload the page")
        if self.api_key:
            scheme, _, bearer = request.headers.get("authorization", "").partition(" ")
            given = bearer.strip() if scheme.lower() == "bearer" else request.cookies.get(KEY_COOKIE, "")
            if not hmac.compare_digest(given.encode(), self.api_key.encode()):
                raise HTTPException(401, "this dashboard needs its API key: open it with ?key=KEY")

    async def middleware(self, request: Request, call_next):
        if _hostname(request.headers.get("host", "")) not in self.hosts:
            return JSONResponse(
                {"error": "unknown Host header; open the dashboard at its own address"}, status_code=400
            )
        key = request.query_params.get("key")
        response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        if key and self.api_key and hmac.compare_digest(key.encode(), self.api_key.encode()):
            response.set_cookie(KEY_COOKIE, key, httponly=True, samesite="strict")
        return response
