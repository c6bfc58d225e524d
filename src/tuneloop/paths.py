"""Where tuneloop keeps files that outlive a run: converted models and other caches."""

import os
from pathlib import Path


def tuneloop_home() -> Path:
    """TUNELOOP_HOME, default ~/.cache/tuneloop. Created on first use."""
    home = Path(os.environ.get("TUNELOOP_HOME") or Path.home() / ".cache" / "tuneloop")
    home.mkdir(parents=True, exist_ok=True)
    return home
