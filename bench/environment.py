"""What every benchmark result records: hardware, package versions, commit, date."""

from __future__ import annotations

import contextlib
import json
import os
import platform
from datetime import datetime
from pathlib import Path

from tuneloop.models.precision import cpu_flags
from tuneloop.runs.store import git_commit, package_versions

RESULTS = Path(__file__).resolve().parent / "results"
DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def banking77_per_intent(n: int, seed: int = 0) -> list[dict]:
    """`n` seeded messages of each of banking77's 77 intents, from ../shared/datasets (rows: text, category)."""
    import csv
    import random
    from collections import defaultdict

    by_label: dict[str, list[dict]] = defaultdict(list)
    with open(DATASETS / "banking77" / "train.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            by_label[row["category"]].append(row)
    rng = random.Random(seed)
    return [r for label in sorted(by_label) for r in rng.sample(by_label[label], n)]


def hardware() -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = None
    with contextlib.suppress(ValueError, OSError):
        memory = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    return {
        "cpu": cpu,
        # The model name does not tell a Xeon with AMX from a VM that hides it, and tuneloop's
        # precision (bf16 or fp32) follows them (models/precision.py).
        "cpu_matmul_flags": [f for f in ("amx_bf16", "avx512_bf16", "avx512f") if f in cpu_flags()],
        "cores": os.cpu_count(),
        "memory_gib": memory,
        "gpu": gpu(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def gpu() -> str | None:
    """The CUDA device's name and memory, when there is one (None on the CPU machines)."""
    import torch

    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    return f"{props.name}, {props.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}"


def save(name: str, result: dict, extra_packages: tuple[str, ...] = ()) -> Path:
    from importlib.metadata import PackageNotFoundError, version

    packages = package_versions()
    for p in extra_packages:
        try:
            packages[p] = version(p)
        except PackageNotFoundError:
            packages[p] = None
    record = {
        "benchmark": name,
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "hardware": hardware(),
        "packages": packages,
        **result,
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path
