"""`tuneloop eval` and `tuneloop compare` as functions: a finished run on held-out data, and an A/B
of two models (runs or `base`) on one test set. Each returns a typed result and records it in the
run directory (evals/<data>.json, compare/<a>-vs-<b>-<data>.json), written atomically."""

from __future__ import annotations

import gc
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tuneloop.config import EvalConfig, RunConfig
from tuneloop.data import Example
from tuneloop.data.prepare import load_from_config
from tuneloop.eval.compare import compare_outputs
from tuneloop.eval.evaluate import (
    evaluate_model,
    example_record,
    generate_and_score,
    generation_set,
    metric_for,
    side_record,
)
from tuneloop.eval.general import cached_base_side, compare_general, load_suite, measure_general
from tuneloop.eval.scale_curve import check_scale
from tuneloop.models import resolve_model
from tuneloop.runs import RunDir
from tuneloop.runs.sides import load_side


def _no_status(message: str):
    return nullcontext()


@dataclass
class Evaluation:
    """One model on one data set: loss, the task metric, and every example's answer and scores."""

    run: str
    data: str  # "test split" or the file evaluated
    n: int
    metric: str
    metrics: dict[str, float]
    eval_config: dict
    confusion: dict | None = None
    examples: list[dict] = field(default_factory=list)
    path: Path | None = None  # where the record was written
    general: dict | None = None  # with `general`: what the fine-tune cost the model (eval/general.py)
    scale: float = 1.0  # the LoRA adapter's strength it was evaluated at

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "path"}


@dataclass
class Comparison:
    """A vs B on the same examples: each metric with its paired-bootstrap interval and p-value,
    McNemar where answers are right or wrong, win/tie/loss, regressions, and the judge's verdict."""

    a: str
    b: str
    data: str
    metric: str
    result: dict  # compare_outputs' result (+ "judge")
    examples: list[dict] = field(default_factory=list)
    path: Path | None = None

    def to_dict(self) -> dict:
        return {"a": self.a, "b": self.b, "data": self.data, **self.result, "examples": self.examples}


def eval_settings(
    config: RunConfig,
    metric: str | None = None,
    max_examples: int | None = None,
    sample: bool = False,
    temperature: float | None = None,
    seed: int | None = None,
) -> EvalConfig:
    """The run's eval settings with the given ones changed (None: keep the run's)."""
    changes = {
        "metric": metric,
        "max_examples": max_examples,
        "sample": sample or None,
        "temperature": temperature,
        "seed": seed,
    }
    return config.eval.model_copy(update={k: v for k, v in changes.items() if v is not None})


def held_out_examples(run: RunDir, config: RunConfig, data: Path | None) -> tuple[list[Example], str]:
    """`data` read with the run's data settings, else the run's own test split; and its name."""
    if data is not None:
        return load_from_config(config.data.model_copy(update={"path": Path(data)})).examples, Path(data).stem
    return run.read_split("test"), "test"


def evaluate_run(
    run_path: str | Path,
    data: str | Path | None = None,
    *,
    status=_no_status,
    general: str | list[str | Path] | None = None,
    scale: float = 1.0,
    **settings,
) -> Evaluation:
    """A finished run on its test split or on `data`; `settings`: eval_settings' keywords. `general`
    ("default" or files, as eval.general takes them): also what the fine-tune cost the model, the
    base model against the run on those sets, leakage and drift. `scale`: the LoRA adapter's strength
    (as `tuneloop serve` and `export` apply it)."""
    run = RunDir(Path(run_path))
    config = run.config()
    eval_config = eval_settings(config, **settings)
    examples, name = held_out_examples(run, config, Path(data) if data else None)
    side = load_side(str(run.path), config)
    with adapter_scaled(side.model, scale), status(f"evaluating {side.name} on {len(examples)} examples"):
        result = evaluate_model(
            side.model, side.tokenizer, examples, eval_config, side.precision, train_on=config.data.train_on
        )
        measured = None
        if general is not None:
            with status(f"general ability, leakage and drift: base model and {side.name}"):
                measured = _general(run, config, side, general)
    gen_set = generation_set(examples, eval_config)
    if scale != 1.0:
        name = f"{name}-scale{scale:g}"
    evaluation = Evaluation(
        run=side.name,
        data=str(data) if data else "test split",
        n=len(examples),
        metric=result["metric"],
        metrics=result["metrics"],
        eval_config=eval_config.model_dump(),
        confusion=result.get("confusion"),
        examples=[{**example_record(e), **side_record(result, i)} for i, e in enumerate(gen_set)],
        path=run.eval_record_file(name),
        general=measured,
        scale=scale,
    )
    run.write_json(evaluation.path, evaluation.to_dict())
    return evaluation


def run_general(run_path: str | Path, general: str | list[str | Path] = "default") -> dict:
    """What a finished (or trained) run cost its base model on `general` (eval.json's `general` shape),
    without its test split: autotune measures every attempt so."""
    run = RunDir(Path(run_path))
    config = run.config()
    side = load_side(str(run.path), config)
    try:
        return _general(run, config, side, general)
    finally:
        del side
        gc.collect()


@contextmanager
def adapter_scaled(model, scale: float):
    """Within it, a LoRA model's adapters at `scale` times their trained strength."""
    if scale == 1.0:
        yield
        return
    check_scale(scale, lora=hasattr(model, "disable_adapter"))
    from peft.helpers import rescale_adapter_scale

    with rescale_adapter_scale(model, scale):
        yield


def _general(run: RunDir, config: RunConfig, side, spec: str | list) -> dict:
    """The base model against the run on the general suite `spec`: the base side cached, as in `tuneloop run`."""
    suite = load_suite(spec if spec in ("default", "none") else [Path(p) for p in spec])
    autocast = side.precision.autocast_dtype
    folder = resolve_model(config.model)

    def measure_base() -> dict:
        if hasattr(side.model, "disable_adapter"):  # LoRA: the same weights without the adapter
            with side.model.disable_adapter():
                return measure_general(side.model, side.tokenizer, suite, autocast_dtype=autocast)
        base = load_side("base", config)
        try:
            return measure_general(base.model, base.tokenizer, suite, autocast_dtype=autocast)
        finally:
            del base
            gc.collect()

    base = cached_base_side(folder, side.precision.value, suite, measure_base)
    tuned = measure_general(
        side.model, side.tokenizer, suite, autocast_dtype=autocast, reference_answers=base["answers"]
    )
    task_answers = [e.answer for e in run.read_split("train") if not e.replayed]
    return compare_general(suite, base, tuned, task_answers)


def compare_runs(
    a: str,
    b: str,
    data: str | Path | None = None,
    *,
    metric: str | None = None,
    max_examples: int | None = None,
    resamples: int = 1000,
    judge: str | None = None,
    judge_model: str | None = None,
    rubric: str | None = None,
    status=_no_status,
) -> Comparison:
    """A/B of `a` and `b` (each `base` or a run directory) on one set: the first run's test split,
    or `data`. Models are loaded one at a time. `judge`: also let a model or an OpenAI-compatible
    endpoint pick the better answer of each pair, in both orders."""
    runs = [RunDir(Path(s)) for s in (a, b) if s != "base"]
    if not runs:
        raise ValueError("at least one side must be a run directory (`base` is that run's base model)")
    config = runs[0].config()
    eval_config = eval_settings(config, metric, max_examples)
    examples, name = held_out_examples(runs[0], config, Path(data) if data else None)
    if data is None and len(runs) == 2:
        other = runs[1].read_split("test")
        if [e.messages for e in other] != [e.messages for e in examples]:
            raise ValueError(
                f"{runs[0].path} and {runs[1].path} have different test splits; pass --data FILE to "
                "compare them on one set"
            )
    gen_set = generation_set(examples, eval_config)
    if not gen_set:
        raise ValueError("plain-text data has no prompts to answer; compare runs with `tuneloop eval` loss")
    chosen = metric_for(gen_set, eval_config)
    names, scored = [], []
    for spec in (a, b):
        side = load_side(spec, config)
        with status(f"generating with {side.name} on {len(gen_set)} examples"):
            scored.append(
                generate_and_score(side.model, side.tokenizer, gen_set, eval_config, side.precision, metric=chosen)
            )
        names.append(side.name)
        del side
        gc.collect()  # one model in memory at a time
    references = [e.answer for e in gen_set]
    result = compare_outputs(chosen, references, scored[0], scored[1], resamples=resamples)
    if judge:
        from tuneloop.eval.judge import RUBRIC, judge_pairs, make_judge

        try:
            with status(f"judging {len(gen_set)} pairs in both orders"):
                result["judge"] = judge_pairs(
                    make_judge(judge, judge_model),
                    [e.prompt[-1]["content"] for e in gen_set],
                    scored[0]["outputs"],
                    scored[1]["outputs"],
                    rubric or RUBRIC,
                )
        except Exception as e:
            raise ValueError(f"judge {judge}: {e}") from e
    comparison = Comparison(
        a=names[0],
        b=names[1],
        data=str(data) if data else "test split",
        metric=chosen,
        result=result,
        examples=[
            {**example_record(e), "a": side_record(scored[0], i), "b": side_record(scored[1], i)}
            for i, e in enumerate(gen_set)
        ],
        path=runs[-1].comparison_file(names[0], names[1], name),
    )
    runs[-1].write_json(comparison.path, comparison.to_dict())
    return comparison
