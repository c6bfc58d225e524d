"""What this machine is: the key of every measurement tuneloop caches per machine (the plan's
calibration, whether bf16 pays). A different processor, core count or torch measures again."""

from __future__ import annotations

import hashlib
import json
import os
import platform
from pathlib import Path

from tuneloop.paths import tuneloop_home


def machine() -> dict:
    """The processor (the GPU where there is one), the cores this process may use, and torch."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else cpu
    return {"device": device, "cores": len(os.sched_getaffinity(0)), "torch": torch.__version__}


def measurement_file(key: dict, *folders: str) -> Path:
    """Where the measurement of `key` (what it depends on, machine() among it) is cached:
    TUNELOOP_HOME/calibration/<folders>/<digest of key>.json."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return tuneloop_home().joinpath("calibration", *folders, f"{digest}.json")


def save_measurement(path: Path, record: dict) -> None:
    """Write `record` whole: processes starting together may measure at once, and a reader must
    never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(path)
