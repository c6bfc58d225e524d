"""`tuneloop eval` and `tuneloop compare`: a run's task metrics on held-out data, and A/B between runs or base."""

from __future__ import annotations

import gc
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from tuneloop.cli import console, fail, quiet_libraries, reported

Data = Annotated[Path | None, typer.Option("--data", help="Evaluate on this file (read with the run's data "
                                           "settings) instead of the run's test split.")]
Metric = Annotated[str | None, typer.Option("--metric", help="auto, exact_match, final_number, classification, "
                                            "generation, json_fields or module:function.")]


def _eval_config(config, metric, max_examples, sample, temperature, seed):
    changes = {k: v for k, v in {"metric": metric, "max_examples": max_examples, "sample": sample or None,
                                 "temperature": temperature, "seed": seed}.items() if v is not None}
    return config.eval.model_copy(update=changes)


def _examples(config, run_path: Path | None, data: Path | None):
    from tuneloop.data.prepare import load_from_config
    from tuneloop.runs import RunDir

    if data is not None:
        return load_from_config(config.data.model_copy(update={"path": data})).examples, data.stem
    return RunDir(run_path).read_split("test"), "test"


def eval_(
    run: Annotated[Path, typer.Argument(help="A finished run directory.")],
    data: Data = None,
    metric: Metric = None,
    max_examples: Annotated[int | None, typer.Option("--max-examples", min=1)] = None,
    sample: Annotated[bool, typer.Option("--sample", help="Sample (temperature, seed) instead of greedy.")] = False,
    temperature: Annotated[float | None, typer.Option("--temperature")] = None,
    seed: Annotated[int | None, typer.Option("--seed")] = None,
) -> None:
    """Task metrics of a fine-tuned run on its test split or on --data: loss, and the metric that fits the task."""
    from tuneloop.config import ConfigError
    from tuneloop.data import DataError
    from tuneloop.eval.evaluate import evaluate_model, generation_set
    from tuneloop.runs import RunDir
    from tuneloop.runs.sides import load_side
    from tuneloop.models import ModelNotFound
    from tuneloop.runs import RunDir

    quiet_libraries()
    with reported(ConfigError, DataError, ModelNotFound, FileNotFoundError, ValueError):
        config = RunDir(run).config()
        eval_config = _eval_config(config, metric, max_examples, sample, temperature, seed)
        examples, name = _examples(config, run, data)
        side = load_side(str(run), config)
    with console.status(f"evaluating {side.name} on {len(examples)} examples"):
        result = evaluate_model(side.model, side.tokenizer, examples, eval_config, side.precision)
    gen_set = generation_set(examples, eval_config)
    record = {"run": side.name, "data": str(data) if data else "test split", "n": len(examples),
              "eval_config": eval_config.model_dump(), "metric": result["metric"], "metrics": result["metrics"],
              "confusion": result.get("confusion"),
              "examples": [{"source_row": e.row, "prompt": e.prompt[-1]["content"], "reference": e.answer,
                            "output": o, **p} for e, o, p in zip(gen_set, result["outputs"], result["per_example"])]}
    out = RunDir(run).path / "evals" / f"{name}.json"
    RunDir(run).write_json(out, record)
    table = Table("metric", "value", title=f"{side.name} · {record['data']} · {len(examples)} examples")
    for key, value in result["metrics"].items():
        table.add_row(key, f"{value:.4f}")
    console.print(table)
    console.print(f"per-example results: {out}", soft_wrap=True)


def compare(
    a: Annotated[str, typer.Argument(help="`base` or a run directory.")],
    b: Annotated[str, typer.Argument(help="`base` or a run directory.")],
    data: Data = None,
    metric: Metric = None,
    max_examples: Annotated[int | None, typer.Option("--max-examples", min=1)] = None,
    resamples: Annotated[int, typer.Option("--resamples", min=100, help="Bootstrap resamples.")] = 1000,
    show: Annotated[int, typer.Option("--show", help="Regressions to print.")] = 5,
    judge: Annotated[str | None, typer.Option("--judge", help="Also let a judge pick the better answer of each "
                                              "pair (both orders): a model tuneloop loads, or an "
                                              "OpenAI-compatible URL.")] = None,
    judge_model: Annotated[str | None, typer.Option("--judge-model", help="The endpoint's model name.")] = None,
    rubric: Annotated[str | None, typer.Option("--rubric", help="What the judge looks for.")] = None,
) -> None:
    """A/B on one test set: each metric with a paired-bootstrap interval, McNemar, win/tie/loss, regressions first."""
    from tuneloop.config import ConfigError
    from tuneloop.data import DataError
    from tuneloop.eval.compare import compare_outputs
    from tuneloop.eval.evaluate import generate_and_score, generation_set, metric_for
    from tuneloop.runs import RunDir
    from tuneloop.runs.sides import load_side
    from tuneloop.models import ModelNotFound

    quiet_libraries()
    runs = [Path(s) for s in (a, b) if s != "base"]
    with reported(ConfigError, DataError, ModelNotFound, FileNotFoundError, ValueError):
        if not runs:
            raise ValueError("at least one side must be a run directory (`base` is that run's base model)")
        config = RunDir(runs[0]).config()
        eval_config = _eval_config(config, metric, max_examples, False, None, None)
        examples, name = _examples(config, runs[0], data)
        if data is None and len(runs) == 2:
            from tuneloop.runs import RunDir

            other = RunDir(runs[1]).read_split("test")
            if [e.messages for e in other] != [e.messages for e in examples]:
                raise ValueError(f"{runs[0]} and {runs[1]} have different test splits; pass --data FILE to "
                                 "compare them on one set")
        gen_set = generation_set(examples, eval_config)
        if not gen_set:
            raise ValueError("plain-text data has no prompts to answer; compare runs with `tuneloop eval` loss")
        chosen = metric_for(gen_set, eval_config)
        sides = {}
        for spec in (a, b):
            side = load_side(spec, config)
            with console.status(f"generating with {side.name} on {len(gen_set)} examples"):
                sides[spec] = (side.name, generate_and_score(side.model, side.tokenizer, gen_set, eval_config,
                                                             side.precision, metric=chosen))
            del side
            gc.collect()  # one model in memory at a time
    (name_a, side_a), (name_b, side_b) = sides[a], sides[b]
    references = [e.answer for e in gen_set]
    result = compare_outputs(chosen, references, side_a, side_b, resamples=resamples)
    table = Table("metric", name_a, name_b, "B - A", f"{int(result['confidence'] * 100)}% interval", "p",
                  title=f"{name_a} (A) vs {name_b} (B) · {len(gen_set)} examples · {chosen}")
    for key, s in result["metrics"].items():
        table.add_row(key, f"{s['a']:.4f}", f"{s['b']:.4f}", f"{s['difference']:+.4f}",
                      f"[{s['ci'][0]:+.4f}, {s['ci'][1]:+.4f}]" if s["ci"] else "-",
                      f"{s['p_value']:.3f}" if s["p_value"] is not None else "-")
    console.print(table)
    if "wins" in result:
        console.print(f"per example: B better on {result['wins']}, tied on {result['ties']}, "
                      f"worse on {result['losses']}")
    if "mcnemar" in result:
        m = result["mcnemar"]
        console.print(f"McNemar: only A right {m['only_a_correct']}, only B right {m['only_b_correct']}, "
                      f"p = {m['p_value']:.3g}")
    for i in result.get("regressions", [])[:show]:
        console.print(f"[red]worse[/red] row {gen_set[i].row}: {gen_set[i].prompt[-1]['content'][:100]!r}\n"
                      f"   reference {references[i][:100]!r}\n   A {side_a['outputs'][i][:100]!r}\n"
                      f"   B {side_b['outputs'][i][:100]!r}")
    if judge:
        from tuneloop.eval.judge import RUBRIC, judge_pairs, make_judge

        try:
            with console.status(f"judging {len(gen_set)} pairs in both orders"):
                result["judge"] = judge_pairs(make_judge(judge, judge_model), [e.prompt[-1]["content"] for e in gen_set],
                                              side_a["outputs"], side_b["outputs"], rubric or RUBRIC)
        except Exception as e:  # noqa: BLE001 — a model that will not load or an endpoint that will not answer
            fail(ValueError(f"--judge {judge}: {e}"))
        j = result["judge"]
        console.print(f"judge {j['judge']}: B better on {j['b_wins']}, tied {j['ties']}, A better on {j['a_wins']}; "
                      f"both orders agreed on {j['position_consistency']:.0%} of pairs")
    record = {"a": name_a, "b": name_b, "data": str(data) if data else "test split", **result,
              "examples": [{"source_row": e.row, "prompt": e.prompt[-1]["content"], "reference": r,
                            "a": {"output": side_a["outputs"][i], **side_a["per_example"][i]},
                            "b": {"output": side_b["outputs"][i], **side_b["per_example"][i]}}
                           for i, (e, r) in enumerate(zip(gen_set, references))]}
    out = runs[-1] / "compare" / f"{name_a}-vs-{name_b}-{name}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    console.print(f"written: {out}", soft_wrap=True)


def rate(
    comparison: Annotated[Path, typer.Argument(help="A comparison written by `tuneloop compare` "
                                               "(RUN/compare/A-vs-B-test.json).")],
    runs_dir: Annotated[Path, typer.Option("--runs-dir", help="Where ratings.jsonl lives.")] = Path("runs"),
    seed: Annotated[int, typer.Option("--seed", help="Seeds the left/right order.")] = 0,
) -> None:
    """Rate two models' answers side by side (order shuffled, names hidden): 1, 2, t(ie), s(kip), q(uit)."""
    import random

    from tuneloop.eval.ratings import add_rating, read_ratings, summarize

    try:
        record = json.loads(comparison.read_text(encoding="utf-8"))
        names, examples = (record["a"], record["b"]), record["examples"]
    except (OSError, json.JSONDecodeError, KeyError) as e:
        fail(ValueError(f"{comparison}: not a comparison from `tuneloop compare` ({e})"))
    rng = random.Random(seed)
    rated = {(r["prompt"], r["model_a"], r["model_b"]) for r in read_ratings(runs_dir)}
    for n, ex in enumerate(examples, 1):
        if (ex["prompt"], *names) in rated or ex["a"]["output"] == ex["b"]["output"]:
            continue  # rated before, or nothing to choose between
        flip = rng.random() < 0.5  # hide which model is which, and control for position bias
        first, second = (ex["b"], ex["a"]) if flip else (ex["a"], ex["b"])
        console.rule(f"example {n}/{len(examples)}")
        console.print(f"[bold]prompt[/bold]\n{ex['prompt']}\n\n[bold]1[/bold]\n{first['output']}\n\n"
                      f"[bold]2[/bold]\n{second['output']}\n")
        answer = typer.prompt("better: 1, 2, t(ie), s(kip), q(uit)").strip().lower()[:1]
        if answer == "q":
            break
        if answer not in ("1", "2", "t"):
            continue
        winner = "tie" if answer == "t" else ("b" if (answer == "1") == flip else "a")
        comment = typer.prompt("comment (optional)", default="", show_default=False)
        add_rating(runs_dir, prompt=ex["prompt"], model_a=names[0], model_b=names[1], output_a=ex["a"]["output"],
                   output_b=ex["b"]["output"], winner=winner, comment=comment, shown_first="b" if flip else "a",
                   source=str(comparison))
    _print_ratings(summarize(read_ratings(runs_dir)))


def ratings(runs_dir: Annotated[Path, typer.Argument(help="The run store.")] = Path("runs")) -> None:
    """Win rates and the Bradley–Terry (Elo-scale) ranking from every stored side-by-side rating."""
    from tuneloop.eval.ratings import read_ratings, summarize

    _print_ratings(summarize(read_ratings(runs_dir)))


def _print_ratings(summary: dict) -> None:
    table = Table("model", "Elo (Bradley–Terry)", "wins", "ties", "losses", "win rate",
                  title=f"{summary['ratings']} ratings")
    for r in summary["ranking"]:
        m = summary["models"][r["model"]]
        table.add_row(r["model"], f"{r['elo']:.0f}", str(m["wins"]), str(m["ties"]), str(m["losses"]),
                      f"{m['win_rate']:.2f}")
    console.print(table)
