"""API keys: none (this machine only), one (`--api-key`), or many (a file, one per line, or
TUNELOOP_API_KEYS, comma-separated). Each key is its own owner: the fine-tuning API shows a key only
the files, jobs and fine-tuned models it made. Keys are compared in constant time, and only their
digest is ever written down (as the owner id)."""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

LOCAL_OWNER = "local"  # the owner of everything when the server takes no keys


def owner_id(key: str) -> str:
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:16]


class ApiKeys:
    def __init__(self, keys: list[str]):
        self.keys = [k for k in (k.strip() for k in keys) if k]

    @classmethod
    def gather(cls, key: str | None = None, keys_file: Path | None = None, environ=os.environ) -> ApiKeys:
        """`--api-key`, `--api-keys-file` and TUNELOOP_API_KEYS together."""
        keys = [key] if key else []
        if keys_file is not None:
            try:
                lines = Path(keys_file).read_text(encoding="utf-8").splitlines()
            except OSError as e:
                raise ValueError(f"--api-keys-file {keys_file}: {e.strerror}") from None
            listed = [ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
            if not listed:
                raise ValueError(f"--api-keys-file {keys_file}: no keys in it (one per line)")
            keys += listed
        keys += environ.get("TUNELOOP_API_KEYS", "").split(",")
        return cls(keys)

    def __bool__(self) -> bool:
        return bool(self.keys)

    def owner(self, authorization: str) -> str | None:
        """The owner of the bearer token in an Authorization header; None when it is no key of ours."""
        if not self.keys:
            return LOCAL_OWNER
        scheme, _, token = authorization.partition(" ")
        token = token.strip().encode()
        if scheme.lower() != "bearer":
            return None
        found = [k for k in self.keys if hmac.compare_digest(token, k.encode())]
        return owner_id(found[0]) if found else None
