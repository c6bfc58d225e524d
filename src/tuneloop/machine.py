"""What this machine is: the key of every measurement tuneloop caches per machine (the plan's
calibration, whether bf16 pays). A different processor, core count or torch measures again."""

from __future__ import annotations

import os
import platform


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
