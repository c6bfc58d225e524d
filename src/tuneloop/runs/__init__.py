"""The run directory: the one on-disk contract between tuneloop's stages."""

from tuneloop.runs.store import RunDir

__all__ = ["RunDir"]
