"""`tuneloop ui`: the dashboard."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tuneloop.cli import console, quiet_libraries


def ui(
    runs_dir: Annotated[Path, typer.Option("--runs-dir", help="The run store.")] = Path("runs"),
    host: Annotated[str, typer.Option("--host", help="127.0.0.1: this machine only.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port")] = 8080,
) -> None:
    """Web dashboard: runs, live loss curves, the doctor, comparison, evaluation, rating, launching runs."""
    import uvicorn

    from tuneloop.ui import create_app

    quiet_libraries()
    console.print(f"tuneloop dashboard over {runs_dir.resolve()}: http://{host}:{port}/", soft_wrap=True)
    uvicorn.run(create_app(runs_dir), host=host, port=port, log_level="warning")
