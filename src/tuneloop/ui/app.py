"""`tuneloop ui`: a local web dashboard over the run store (FastAPI, server-rendered pages, Plotly
served from the installed package: no CDN, the machine may be offline).

Pages: runs (filter, sort, pick runs to compare), a run (live curves, the doctor, evaluation,
data), compare (overlaid curves, config diff, metrics with significance), rate (blind side by
side), launch (a preset plus hyperparameters, each with the guides' hint). Runs are launched as
`tuneloop run` subprocesses, so a run outlives the dashboard.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import yaml
from fastapi import Depends, FastAPI, Form, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from tuneloop.config import ConfigError, LoraConfig, TrainConfig, headline, load_config
from tuneloop.data.split import MIN_EXAMPLES
from tuneloop.doctor.curves import Curves
from tuneloop.eval.ratings import add_rating, blind_winner, preference_pairs, read_ratings, summarize
from tuneloop.ui import store
from tuneloop.ui.guard import LOCAL_HOSTS, Guard

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
COLUMNS = [
    ("id", "run"),
    ("status", "status"),
    ("model", "model"),
    ("data", "data"),
    ("method", "method"),
    ("learning_rate", "learning rate"),
    ("epochs", "epochs"),
    ("batch", "effective batch"),
    ("lora_r", "LoRA r"),
    ("best_val_loss", "best val loss"),
    ("metric_value", "test metric"),
    ("verdict", "doctor"),
]
# The knobs the guides name, in their order; the hint is the config schema's own description.
LAUNCH_FIELDS = [
    "train.method",
    "train.learning_rate",
    "train.epochs",
    "train.batch_size",
    "train.gradient_accumulation",
    "train.scheduler",
    "train.warmup_ratio",
    "train.weight_decay",
    "train.early_stopping_patience",
    "lora.r",
    "lora.alpha",
    "lora.dropout",
]
PRESETS = Path(__file__).resolve().parents[1] / "presets"  # package data: there in any install


def launch_subprocess(config_file: Path) -> None:
    log = config_file.with_suffix(".log").open("w")
    subprocess.Popen(
        [sys.executable, "-m", "tuneloop.cli", "run", str(config_file)],
        stdout=log,
        stderr=log,
        cwd=config_file.parent,
        start_new_session=True,
    )


def create_app(
    runs_dir: Path,
    presets: list[Path] | None = None,
    launcher=launch_subprocess,
    *,
    hosts: set[str] | frozenset[str] = LOCAL_HOSTS,
    api_key: str | None = None,
    data_roots: list[Path] | None = None,
) -> FastAPI:
    """`hosts`: the names the dashboard is served under (guard.py). `data_roots`: the folders the
    launch form may read data from (default: the working directory and the run store's parent);
    an empty list allows any path."""
    runs_dir = runs_dir.resolve()
    presets = presets if presets is not None else sorted(PRESETS.glob("*/*.yaml"))
    roots = [Path.cwd().resolve(), runs_dir.parent] if data_roots is None else [r.resolve() for r in data_roots]
    guard = Guard(hosts, api_key)
    app = FastAPI(title="tuneloop", docs_url=None, redoc_url=None)
    app.state.guard = guard
    app.middleware("http")(guard.middleware)

    def page(request: Request, name: str, **context):
        return TEMPLATES.TemplateResponse(request, name, {"csrf": guard.csrf, **context})

    async def writable(request: Request) -> None:
        """A dependency of every POST: same-origin, with the form token (and the API key if set)."""
        guard.check_write(request, (await request.form()).get("csrf"))

    def get_run(run_id: str):
        run = store.find(runs_dir, run_id)
        if run is None:
            raise HTTPException(404, f"no run {run_id!r} in {runs_dir}")
        return run

    @app.get("/static/plotly.min.js")
    def plotly_js():
        import plotly

        return FileResponse(
            Path(plotly.__file__).parent / "package_data" / "plotly.min.js", media_type="application/javascript"
        )

    @app.get("/", response_class=HTMLResponse)
    def runs_page(request: Request, q: str = "", status: str = "", sort: str = "id", desc: int = 1):
        rows = [store.safe_summary(r) for r in store.runs(runs_dir)]
        rows = [
            r
            for r in rows
            if (not status or r["status"] == status)
            and (not q or q.lower() in f"{r['id']} {r['model']} {r['data']}".lower())
        ]
        if sort in dict(COLUMNS):
            present = [r for r in rows if r[sort] is not None]
            rows = sorted(present, key=lambda r: r[sort], reverse=bool(desc)) + [r for r in rows if r[sort] is None]
        return page(
            request,
            "runs.html",
            rows=rows,
            columns=COLUMNS,
            q=q,
            status=status,
            sort=sort,
            desc=desc,
            runs_dir=runs_dir,
        )

    @app.get("/runs/{run_id}", response_class=HTMLResponse)
    def run_page(request: Request, run_id: str):
        run = store.detail(get_run(run_id))
        return page(request, "run.html", run=run, config_yaml=yaml.safe_dump(run["config"], sort_keys=False))

    @app.get("/api/runs")
    def api_runs():
        return [store.safe_summary(r) for r in store.runs(runs_dir)]

    @app.get("/api/runs/{run_id}")
    def api_run(run_id: str):
        run = get_run(run_id)
        return {"id": run.id, "status": store.status(run), "metrics": store.read_metrics(run)}

    @app.post("/runs/{run_id}/next", dependencies=[Depends(writable)])
    def launch_next(run_id: str):
        run = store.detail(get_run(run_id))
        diagnosis = run["diagnosis"]
        if not diagnosis or not diagnosis["next_config"] or not diagnosis["recommendations"]:
            raise HTTPException(400, "the doctor has no change to recommend for this run")
        config = dict(diagnosis["next_config"], run_name=f"{run_id.rsplit('-', 2)[0]}-next", runs_dir=str(runs_dir))
        return _launch(config, f"{run_id}-next")

    @app.get("/compare", response_class=HTMLResponse)
    def compare_page(request: Request, run: list[str] = Query([])):
        if not run:
            return page(request, "compare.html", ids=[], error=None)
        if not 2 <= len(run) <= 5:
            return page(request, "compare.html", ids=[], error=f"pick 2 to 5 runs, not {len(run)}")
        runs = [get_run(r) for r in run]
        details = [store.detail(r) for r in runs]
        curves = []
        for d in details:
            val = Curves.from_metrics(d["metrics"]).val
            curves.append({"name": d["id"], "x": [s for s, _ in val], "y": [v for _, v in val]})
        table = []
        for d, s in zip(details, (store.summary(r, d["metrics"]) for r, d in zip(runs, details))):
            sig = None
            if d is not details[0] and details[0]["evaluation"] and d["evaluation"]:
                result = store.significance(details[0]["evaluation"], d["evaluation"])
                sig = result["metrics"].get(headline(d["evaluation"]["metric"])) if result else None
            table.append({**s, "significance": sig})
        return page(
            request,
            "compare.html",
            ids=run,
            curves=curves,
            table=table,
            error=None,
            diff=store.config_diff({d["id"]: d["config"] for d in details}),
        )

    @app.get("/rate", response_class=HTMLResponse)
    def rate_page(request: Request, run: str = ""):
        summary = summarize(read_ratings(runs_dir))
        evaluated = _rateable()
        if not run:
            return page(request, "rate.html", run=None, runs=evaluated, example=None, summary=summary, error=None)
        examples = (store.read_json(get_run(run).eval_file) or {}).get("examples", [])
        rated = {r["prompt"] for r in read_ratings(runs_dir) if {r["model_a"], r["model_b"]} == {"base", run}}
        todo = [
            i
            for i, e in enumerate(examples)
            if e["prompt"] not in rated and e["base"]["output"] != e["finetuned"]["output"]
        ]
        if not todo:
            return page(request, "rate.html", run=run, runs=evaluated, example=None, summary=summary, error=None)
        i = todo[0]
        flip = random.Random(f"{run}:{i}").random() < 0.5  # random order, stable across reloads
        e = examples[i]
        first, second = (
            (e["finetuned"]["output"], e["base"]["output"]) if flip else (e["base"]["output"], e["finetuned"]["output"])
        )
        return page(
            request,
            "rate.html",
            run=run,
            runs=evaluated,
            example=e,
            first=first,
            second=second,
            token=f"{run}|{i}|{int(flip)}",
            remaining=len(todo),
            total=len(examples),
            summary=summary,
            error=None,
        )

    @app.post("/rate", dependencies=[Depends(writable)])
    def rate_submit(token: str = Form(...), choice: str = Form(...), comment: str = Form("")):
        try:
            run, index, flip = token.rsplit("|", 2)
            if int(index) < 0:
                raise IndexError(index)
            e = (store.read_json(get_run(run).eval_file) or {})["examples"][int(index)]
        except (ValueError, KeyError, IndexError, TypeError):
            raise HTTPException(400, "unknown example") from None
        if any(
            r["prompt"] == e["prompt"] and {r["model_a"], r["model_b"]} == {"base", run} for r in read_ratings(runs_dir)
        ):
            raise HTTPException(409, "this example is rated already")
        try:  # side a is the base model, b the fine-tuned one; the page showed b first when flipped
            winner = blind_winner(choice, flip == "1")
        except ValueError as e:
            raise HTTPException(400, str(e)) from None
        add_rating(
            runs_dir,
            prompt=e["prompt"],
            model_a="base",
            model_b=run,
            output_a=e["base"]["output"],
            output_b=e["finetuned"]["output"],
            winner=winner,
            comment=comment,
            shown_first="b" if flip == "1" else "a",
            source=f"dashboard:{run}",
        )
        return RedirectResponse(f"/rate?run={run}", status_code=303)

    @app.post("/ratings/train", dependencies=[Depends(writable)])
    def train_on_ratings(request: Request, run: str = Form(...)):
        """The ratings of `run`'s answers as preference pairs, and a DPO run on top of `run` that
        learns from them (same base model, data settings and adapter)."""
        parent = get_run(run)
        pairs, counted = preference_pairs([r for r in read_ratings(runs_dir) if run in (r["model_a"], r["model_b"])])
        if len(pairs) < MIN_EXAMPLES:
            summary = summarize(read_ratings(runs_dir))
            error = (
                f"{len(pairs)} preference pairs from the ratings of {run} (dropped: {counted['dropped']}); "
                f"a run needs at least {MIN_EXAMPLES}: rate more answers"
            )
            return page(request, "rate.html", run=None, runs=_rateable(), example=None, summary=summary, error=error)
        folder = runs_dir / "launched"
        folder.mkdir(parents=True, exist_ok=True)
        data = folder / f"ratings-{run}-{datetime.now():%Y%m%d-%H%M%S}.jsonl"
        data.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs), encoding="utf-8")
        config = parent.config().model_dump(mode="json")
        config["data"] = {
            **config["data"],
            "path": str(data),
            "format": "preference",
            "columns": None,
            "label": "none",
        }
        # DPO moves a model that already answers: a tenth of the SFT learning rate is the usual start.
        lr = config["train"]["learning_rate"]  # a finished run's config is resolved: always a number
        config["train"] = {**config["train"], "method": "dpo", "init_from": str(parent.path), "learning_rate": lr / 10}
        config.update(run_name=f"{run.rsplit('-', 2)[0]}-dpo", runs_dir=str(runs_dir))
        return _launch(config, f"{run}-dpo")

    def _rateable() -> list[str]:
        return [r.id for r in store.runs(runs_dir) if r.eval_file.is_file()]

    @app.get("/launch", response_class=HTMLResponse)
    def launch_page(request: Request, error: str | None = None):
        return page(request, "launch.html", presets=[str(p) for p in presets], fields=_fields(), error=error)

    @app.post("/launch", dependencies=[Depends(writable)])
    async def launch_submit(request: Request):
        """Launch, or with action=plan show what the run would take (tuneloop plan) and keep the form."""
        form = dict(await request.form())
        form.pop("csrf", None)
        action = form.pop("action", "launch")
        preset = Path(form.pop("preset", ""))
        if preset not in presets:
            raise HTTPException(400, f"unknown preset {preset}")

        def again(**shown):
            return page(
                request, "launch.html", presets=[str(p) for p in presets], fields=_fields(), values=form, **shown
            )

        overrides = [f"{k}={v}" for k, v in form.items() if v.strip() and k in LAUNCH_FIELDS]
        if form.get("model", "").strip():
            overrides.append(f"model={form['model'].strip()}")
        if form.get("data", "").strip():
            data = Path(form["data"].strip()).expanduser().resolve()
            if roots and not any(data.is_relative_to(r) for r in roots):
                allowed = ", ".join(map(str, roots))
                return again(
                    error=f"data file {data}: outside the folders this dashboard reads ({allowed}); "
                    "start it with --data-root to allow another"
                )
            overrides.append(f"data.path={data}")
        try:
            config = load_config(preset, overrides)
        except ConfigError as e:
            return again(error=str(e))
        config.runs_dir = runs_dir
        if action == "plan":
            from tuneloop.data import DataError
            from tuneloop.plan import plan_config

            try:  # loads the data and, the first time for a model, measures this machine (seconds)
                planned = await run_in_threadpool(plan_config, config)
            except (ConfigError, DataError) as e:
                return again(error=str(e))
            return again(plan=planned.lines(), selected=str(preset))
        return _launch(config.model_dump(mode="json"), config.run_name or "run")

    def _launch(config: dict, name: str):
        folder = runs_dir / "launched"
        folder.mkdir(parents=True, exist_ok=True)
        config_file = folder / f"{name}-{datetime.now():%Y%m%d-%H%M%S}.yaml"
        config_file.write_text(yaml.safe_dump(config, sort_keys=False))
        launcher(config_file)
        return RedirectResponse("/", status_code=303)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException):
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code)

    return app


def _fields() -> list[dict]:
    out = []
    for key in LAUNCH_FIELDS:
        section, name = key.split(".")
        field = (TrainConfig if section == "train" else LoraConfig).model_fields[name]
        out.append({"key": key, "default": field.default, "hint": field.description or ""})
    return out
