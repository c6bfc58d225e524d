"""tuneloop: a local-first workbench for fine-tuning LLMs.

The loop, one package per stage: data -> models -> train -> eval -> report, joined by the run
directory (tuneloop.runs); `tuneloop.pipeline` orders the stages. The public API (tuneloop.api)
is available from the package itself:

    import tuneloop
    run = tuneloop.run("config.yaml")
    run.diagnose()
"""

__version__ = "0.1.0"

API = (
    "Run",
    "Server",
    "autotune",
    "check_graders",
    "compare",
    "diagnose",
    "open_run",
    "resume",
    "run",
    "server",
    "sweep",
)
__all__ = [*API, "__version__"]


def __getattr__(name: str):
    # The API imports torch and transformers (seconds); `tuneloop --help` and the data commands
    # that never train should not pay for it, so it loads on first use (PEP 562).
    if name in API:
        from tuneloop import api

        return getattr(api, name)
    raise AttributeError(f"module 'tuneloop' has no attribute {name!r}")
