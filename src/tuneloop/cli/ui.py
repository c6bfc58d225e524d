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
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            envvar="TUNELOOP_UI_KEY",
            help="Require this key for anything that changes state (launching runs, rating); open the "
            "dashboard once with ?key=KEY.",
        ),
    ] = None,
    allow_host: Annotated[
        list[str], typer.Option("--allow-host", help="Another name the dashboard is reached by (repeatable).")
    ] = [],
    data_root: Annotated[
        list[Path],
        typer.Option(
            "--data-root",
            help="A folder the launch form may read data from (repeatable; default: the working "
            "directory and the run store's parent).",
        ),
    ] = [],
    any_data: Annotated[
        bool, typer.Option("--any-data", help="Let the launch form read data from any path on this machine.")
    ] = False,
) -> None:
    """Web dashboard: runs, live loss curves, the doctor, comparison, evaluation, rating, launching runs.
    Only this machine's browser can change anything (Host and Origin checks, a form token); --api-key
    adds a key for that."""
    import uvicorn

    from tuneloop.ui import create_app
    from tuneloop.ui.guard import LOCAL_HOSTS

    quiet_libraries()
    hosts = set(LOCAL_HOSTS) | set(allow_host) | ({host} if host not in ("0.0.0.0", "::") else set())
    roots = [] if any_data else (data_root or None)
    app = create_app(runs_dir, hosts=hosts, api_key=api_key, data_roots=roots)
    console.print(f"tuneloop dashboard over {runs_dir.resolve()}: http://{host}:{port}/", soft_wrap=True)
    if host not in ("127.0.0.1", "localhost") and not api_key:
        console.print("[yellow]warning: listening beyond this machine without --api-key[/yellow]")
    uvicorn.run(app, host=host, port=port, log_level="warning")
