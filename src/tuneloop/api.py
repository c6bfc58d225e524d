"""The Python API: everything the CLI does, as functions that return typed results.

    import tuneloop

    run = tuneloop.run("examples/quickstart/quickstart.yaml", ["train.epochs=2"])
    run.evaluation["finetuned"]["metrics"]      # eval.json: base vs fine-tuned on the test split
    run.diagnose().verdict                       # the doctor
    run.evaluate(data="more.jsonl").metrics      # `tuneloop eval`
    tuneloop.compare("base", run).result         # `tuneloop compare`
    tuneloop.autotune("config.yaml", max_minutes=25).best
    server = tuneloop.server({"support": run}).start()  # OpenAI-compatible, in the background

Each CLI command is a few lines over these; the dashboard reads what they write in `runs/`.
Progress goes to `console` (rich); results come back as values, never only printed.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from rich.console import Console

from tuneloop.config import RunConfig, apply_overrides, load_config
from tuneloop.doctor import Diagnosis, diagnose_run
from tuneloop.eval.general import general_rows as general_rows  # the CLI and the dashboard show these rows
from tuneloop.eval.held_out import Comparison, Evaluation, compare_runs, evaluate_run
from tuneloop.eval.scale_curve import recommended_scale
from tuneloop.pipeline import RunResult, resume_loop, run_loop
from tuneloop.runs import RunDir
from tuneloop.serve.export import Export, export_run
from tuneloop.tune import Autotune, SweepResult

RunLike = str | Path | RunDir | RunResult


class Run:
    """A run directory under `runs/`, as an object: what it holds, and what can be done with it."""

    def __init__(self, path: str | Path, result: RunResult | None = None):
        self.dir = RunDir(Path(path))
        if not self.dir.info_file.is_file():
            raise FileNotFoundError(f"{path}: not a run directory (no run.json)")
        self._result = result

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, status={self.status!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    path = property(lambda self: self.dir.path)
    id = property(lambda self: self.dir.id)
    status = property(lambda self: self.dir.status())  # `interrupted` when a running run's process is gone
    info = property(lambda self: self.dir.info())
    config = property(lambda self: self.dir.config())
    metrics = property(lambda self: self.dir.read_metrics())
    evaluation = property(lambda self: self.dir.evaluation())  # None for `train` runs and unfinished ones

    @property
    def general(self) -> dict | None:
        """What the fine-tune cost the model (eval.json's `general`): leakage, general score, drift."""
        return (self.evaluation or {}).get("general")

    @property
    def adapter_scale(self) -> float:
        """The adapter scale measured to keep the task gain with the least general loss (`--scale auto`)."""
        return recommended_scale(self.dir)

    @property
    def timings(self) -> dict[str, float]:
        return self._result.timings if self._result else self.dir.info().get("timings", {})

    def diagnose(self) -> Diagnosis:
        """The doctor's verdict, findings, recommendations and next config (the one computed at the end
        of this run when this object ran it)."""
        if self._result is not None and self._result.diagnosis is not None:
            return self._result.diagnosis
        return diagnose_run(self.path)

    def evaluate(
        self,
        data: str | Path | None = None,
        *,
        general: str | list[str | Path] | None = None,
        console: Console | None = None,
        **settings,
    ) -> Evaluation:
        """`tuneloop eval`: this run on its test split or on `data`. `settings`: metric, max_examples,
        sample, temperature, seed. `general` ("default" or files): also what the fine-tune cost the
        model against its base model (Evaluation.general)."""
        return evaluate_run(self.path, data, status=_status(console), general=general, **settings)

    def compare(self, other: RunLike = "base", data: str | Path | None = None, **options) -> Comparison:
        """`tuneloop compare other self`: this run is B, `other` (default: its base model) is A."""
        return compare(other, self, data, **options)

    def export(
        self,
        out: str | Path | None = None,
        *,
        scale: float | str = 1.0,
        gguf: bool = False,
        gguf_type: str = "f16",
        console: Console | None = None,
    ) -> Export:
        """`tuneloop export`: adapter, merged model, optionally GGUF, each checked."""
        return export_run(
            self.dir, Path(out) if out else None, scale=scale, gguf=gguf, gguf_type=gguf_type, status=_status(console)
        )


def config_from(config: RunConfig | str | Path, overrides: list[str] | tuple = ()) -> RunConfig:
    """A RunConfig from a config file with `section.key=value` overrides, or as given."""
    if isinstance(config, RunConfig):
        return apply_overrides(config, list(overrides)) if overrides else config
    return load_config(config, list(overrides))


def run(
    config: RunConfig | str | Path,
    overrides: list[str] | tuple = (),
    *,
    evaluate: bool = True,
    console: Console | None = None,
    callbacks=(),
) -> Run:
    """`tuneloop run` (`evaluate=False`: `tuneloop train`): data, training, evaluation, report, the
    doctor's verdict, in a new run directory."""
    result = run_loop(config_from(config, overrides), console or Console(), callbacks=callbacks, evaluate=evaluate)
    return Run(result.run.path, result)


def resume(run_dir: RunLike, *, console: Console | None = None) -> Run:
    """`tuneloop resume`: continue a killed run from its last checkpoint."""
    result = resume_loop(_path(run_dir), console or Console())
    return Run(result.run.path, result)


def open_run(path: RunLike) -> Run:
    return Run(_path(path))


def diagnose(path: RunLike) -> Diagnosis:
    """`tuneloop diagnose`: a run directory, or a bare metrics.jsonl in the same format."""
    return diagnose_run(_path(path))


def check_graders(config: RunConfig | str | Path, overrides: list[str] | tuple = ()) -> list:
    """For a run that learns from rewards (train.method: grpo): each of grpo.graders scores the first
    reference answers of the data, and every grader that fails or punishes a right answer is a data
    Problem naming it and the row (`tuneloop data check --config`). [] for the other methods."""
    from tuneloop.data.prepare import load_from_config
    from tuneloop.eval.evaluate import metric_for
    from tuneloop.eval.graders import grader_problems
    from tuneloop.train.methods import method_of

    config = config_from(config, overrides)
    if method_of(config).learns_from != "prompts":
        return []
    examples = load_from_config(config.data).examples
    return grader_problems(config.grpo.graders, metric_for(examples, config.eval), examples, str(config.data.path))


def compare(
    a: RunLike, b: RunLike, data: str | Path | None = None, *, console: Console | None = None, **options
) -> Comparison:
    """`tuneloop compare`: A vs B (each `base` or a run) on the first run's test split or `data`.
    `options`: metric, max_examples, resamples, judge, judge_model, rubric."""
    return compare_runs(_spec(a), _spec(b), data, status=_status(console), **options)


def autotune(
    config: RunConfig | str | Path,
    overrides: list[str] | tuple = (),
    *,
    max_runs: int | None = None,
    max_minutes: float | None = None,
    select: str = "auto",
    max_general_drop: float | None = None,
    console: Console | None = None,
) -> Autotune:
    """`tuneloop autotune`: run, diagnose, apply the doctor's advice, rerun, within the budget (4 runs
    when neither is given), then test base, first and best run once. `max_general_drop`: the points of
    general loss (leakage rise + general score drop) a run may cost and still be kept as the best."""
    from tuneloop.tune import autotune as run_autotune

    if max_runs is None and max_minutes is None:
        max_runs = 4
    return run_autotune(
        config_from(config, overrides),
        max_runs=max_runs,
        max_minutes=max_minutes,
        select=select,
        console=console or Console(),
        max_general_drop=max_general_drop,
    )


def sweep(
    config: RunConfig | str | Path,
    overrides: list[str] | tuple = (),
    *,
    trials: int | None = None,
    storage: str | None = None,
    study: str | None = None,
    timeout_minutes: float | None = None,
    console: Console | None = None,
) -> SweepResult:
    """`tuneloop sweep`: Optuna over the config's `sweep:` search space."""
    from tuneloop.tune import sweep as run_sweep

    return run_sweep(
        config_from(config, overrides),
        trials=trials,
        storage=storage,
        study_name=study,
        timeout_minutes=timeout_minutes,
        console=console or Console(),
    )


class Server:
    """`tuneloop serve`, made by `tuneloop.server(...)` (`tuneloop.serve` is the serving package) and
    not yet listening: `run()` blocks (the CLI), `start()` serves from a background thread (a
    notebook) until `stop()`."""

    def __init__(self, app, engine, why: str, host: str, port: int, keyed: bool = False):
        import uvicorn

        self.app, self.engine, self.why = app, engine, why
        self.keyed = keyed  # API keys required
        self.url = f"http://{host}:{port}/v1"
        self._server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
        self._thread: threading.Thread | None = None

    def run(self) -> None:
        self._server.run()

    def start(self, timeout: float = 60.0) -> Server:
        import time

        self._thread = threading.Thread(target=self._server.run, name="tuneloop-serve", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start at {self.url}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def server(
    adapters: dict[str, RunLike] | list[str] = (),
    *,
    model: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    api_keys_file: str | Path | None = None,
    precision: str = "auto",
    max_batch: int = 16,
    backend: str = "auto",
    deterministic: bool = False,
    max_body_bytes: int = 1 << 20,
    fine_tuning: str | Path | None = None,
    job_config: str | Path | None = None,
    max_jobs: int = 1,
) -> Server:
    """`tuneloop serve`: one base model and many LoRA adapters behind an OpenAI-compatible API. `adapters`: {name: run
    or adapter folder}, or the CLI's NAME=RUN[@SCALE] strings. The base model defaults to the one the
    adapters' runs trained on.

    `fine_tuning`: a data directory; the server then also speaks OpenAI's Files and Fine-tuning APIs
    (tuneloop/finetuning/), trains each job in a worker process (`max_jobs` at a time) with
    `job_config`'s settings under the request's, and serves the `ft:` models without a restart.
    Keys: `api_key`, `api_keys_file` (one per line) and TUNELOOP_API_KEYS; each key sees only its own
    jobs, files and models. Serving fine-tuning beyond this machine requires keys."""
    from tuneloop.serve import create_app
    from tuneloop.serve.access import ApiKeys
    from tuneloop.serve.backends import open_engine
    from tuneloop.serve.engine import base_model_for, parse_adapter, resolve_adapter

    specs = (
        [resolve_adapter(name, str(_path(target))) for name, target in adapters.items()]
        if isinstance(adapters, dict)
        else [parse_adapter(s) for s in adapters]
    )
    keys = ApiKeys.gather(api_key, Path(api_keys_file) if api_keys_file else None)
    if deterministic:  # one request per generate() call: nothing else in the batch can change an answer
        if backend == "vllm":
            raise ValueError(
                "--deterministic decodes requests one at a time on the transformers backend; vLLM batches by itself"
            )
        backend, max_batch = "transformers", 1
    if fine_tuning is not None:
        if backend == "vllm":
            raise ValueError("--fine-tuning adds each finished job's adapter while serving: --backend transformers")
        if host not in ("127.0.0.1", "localhost", "::1") and not keys:
            raise ValueError(
                f"--fine-tuning on {host}: give API keys (--api-key, --api-keys-file or TUNELOOP_API_KEYS)"
            )
        backend = "transformers"
    engine, batcher, why = open_engine(
        base_model_for(model, specs), specs, backend=backend, precision=precision, max_batch=max_batch
    )
    service = None
    if fine_tuning is not None:
        from tuneloop.finetuning.scheduler import FineTuning, job_defaults

        defaults = job_defaults(Path(job_config) if job_config else None)
        service = FineTuning(Path(fine_tuning), engine, defaults, max_jobs=max_jobs).start()
    app = create_app(engine, batcher, keys, max_body_bytes, fine_tuning=service)
    return Server(app, engine, why, host, port, keyed=bool(keys))


def _path(run: RunLike) -> Path:
    if isinstance(run, (RunDir, RunResult)):
        return (run.run if isinstance(run, RunResult) else run).path
    return Path(run)


def _spec(side: Any) -> str:
    return "base" if side == "base" else str(_path(side))


def _status(console: Console | None):
    from contextlib import nullcontext

    return console.status if console is not None else (lambda message: nullcontext())
