"""`tuneloop eval` and `tuneloop compare`: a run's task metrics on held-out data, and A/B between runs or base."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from tuneloop.cli import console, fail, quiet_libraries, reported

Data = Annotated[
    Path | None,
    typer.Option(
        "--data", help="Evaluate on this file (read with the run's data settings) instead of the run's test split."
    ),
]
Metric = Annotated[
    str | None,
    typer.Option(
        "--metric",
        help="auto, exact_match, final_number, classification, generation, json_fields, tool_calls or module:function.",
    ),
]


def eval_(
    run: Annotated[Path, typer.Argument(help="A finished run directory.")],
    data: Data = None,
    metric: Metric = None,
    max_examples: Annotated[int | None, typer.Option("--max-examples", min=1)] = None,
    sample: Annotated[bool, typer.Option("--sample", help="Sample (temperature, seed) instead of greedy.")] = False,
    temperature: Annotated[float | None, typer.Option("--temperature")] = None,
    seed: Annotated[int | None, typer.Option("--seed")] = None,
    scale: Annotated[
        float,
        typer.Option("--scale", min=0.0, help="The LoRA adapter's strength (0.5: alpha x 0.5), as serve applies it."),
    ] = 1.0,
    general: Annotated[
        list[str] | None,
        typer.Option(
            "--general",
            help="Also measure what the fine-tune cost the model against its base model: `default` (shipped "
            "ARC-Easy and PIQA samples) or JSONL files (multiple choice, prompt/completion, or generic "
            "instructions); repeatable. Leakage and drift on generic instructions come with it.",
        ),
    ] = None,
) -> None:
    """Task metrics of a fine-tuned run on its test split or on --data: loss, and the metric that fits the task."""
    from tuneloop import api

    quiet_libraries()
    with reported(*_ERRORS()):
        result = api.open_run(run).evaluate(
            data,
            console=console,
            metric=metric,
            max_examples=max_examples,
            sample=sample,
            temperature=temperature,
            seed=seed,
            general=None if not general else "default" if general == ["default"] else general,
            scale=scale,
        )
    table = Table("metric", "value", title=f"{result.run} · {result.data} · {result.n} examples")
    for key, value in result.metrics.items():
        table.add_row(key, f"{value:.4f}")
    console.print(table)
    if result.general:
        from tuneloop.cli import print_general

        print_general(result.general)
    console.print(f"per-example results: {result.path}", soft_wrap=True)


def compare(
    a: Annotated[str, typer.Argument(help="`base` or a run directory.")],
    b: Annotated[str, typer.Argument(help="`base` or a run directory.")],
    data: Data = None,
    metric: Metric = None,
    max_examples: Annotated[int | None, typer.Option("--max-examples", min=1)] = None,
    resamples: Annotated[int, typer.Option("--resamples", min=100, help="Bootstrap resamples.")] = 1000,
    show: Annotated[int, typer.Option("--show", help="Regressions to print.")] = 5,
    judge: Annotated[
        str | None,
        typer.Option(
            "--judge",
            help="Also let a judge pick the better answer of each "
            "pair (both orders): a model tuneloop loads, or an "
            "OpenAI-compatible URL.",
        ),
    ] = None,
    judge_model: Annotated[str | None, typer.Option("--judge-model", help="The endpoint's model name.")] = None,
    rubric: Annotated[str | None, typer.Option("--rubric", help="What the judge looks for.")] = None,
) -> None:
    """A/B on one test set: each metric with a paired-bootstrap interval, McNemar, win/tie/loss, regressions first."""
    from tuneloop import api

    quiet_libraries()
    with reported(*_ERRORS()):
        c = api.compare(
            a,
            b,
            data,
            console=console,
            metric=metric,
            max_examples=max_examples,
            resamples=resamples,
            judge=judge,
            judge_model=judge_model,
            rubric=rubric,
        )
    result = c.result
    table = Table(
        "metric",
        c.a,
        c.b,
        "B - A",
        f"{int(result['confidence'] * 100)}% interval",
        "p",
        title=f"{c.a} (A) vs {c.b} (B) · {len(c.examples)} examples · {c.metric}",
    )
    for key, s in result["metrics"].items():
        table.add_row(
            key,
            f"{s['a']:.4f}",
            f"{s['b']:.4f}",
            f"{s['difference']:+.4f}",
            f"[{s['ci'][0]:+.4f}, {s['ci'][1]:+.4f}]" if s["ci"] else "-",
            f"{s['p_value']:.3f}" if s["p_value"] is not None else "-",
        )
    console.print(table)
    if "wins" in result:
        console.print(
            f"per example: B better on {result['wins']}, tied on {result['ties']}, worse on {result['losses']}"
        )
    if "mcnemar" in result:
        m = result["mcnemar"]
        console.print(
            f"McNemar: only A right {m['only_a_correct']}, only B right {m['only_b_correct']}, p = {m['p_value']:.3g}"
        )
    for i in result.get("regressions", [])[:show]:
        e = c.examples[i]
        console.print(
            f"[red]worse[/red] row {e['source_row']}: {e['prompt'][:100]!r}\n"
            f"   reference {e['reference'][:100]!r}\n   A {e['a']['output'][:100]!r}\n"
            f"   B {e['b']['output'][:100]!r}"
        )
    if "judge" in result:
        j = result["judge"]
        console.print(
            f"judge {j['judge']}: B better on {j['b_wins']}, tied {j['ties']}, A better on {j['a_wins']}; "
            f"both orders agreed on {j['position_consistency']:.0%} of pairs"
        )
        rate = j["b_win_rate"]
        if rate["n"]:
            console.print(
                f"judge's win rate of B (ties half): {rate['rate']:.2f}, 95% interval "
                f"[{rate['ci'][0]:.2f}, {rate['ci'][1]:.2f}] over {rate['n']} pairs"
            )
    console.print(f"written: {c.path}", soft_wrap=True)


def _ERRORS():
    """What a bad run directory, data file, model or option raises: one line, exit status 2."""
    from tuneloop.config import ConfigError
    from tuneloop.data import DataError
    from tuneloop.models import ModelNotFound

    return ConfigError, DataError, ModelNotFound, FileNotFoundError, ValueError


def rate(
    comparison: Annotated[
        Path, typer.Argument(help="A comparison written by `tuneloop compare` (RUN/compare/A-vs-B-test.json).")
    ],
    runs_dir: Annotated[Path, typer.Option("--runs-dir", help="Where ratings.jsonl lives.")] = Path("runs"),
    seed: Annotated[int, typer.Option("--seed", help="Seeds the left/right order.")] = 0,
) -> None:
    """Rate two models' answers side by side (order shuffled, names hidden): 1, 2, t(ie), s(kip), q(uit)."""
    import random

    from tuneloop.eval.ratings import add_rating, blind_winner, read_ratings, summarize

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
        console.print(
            f"[bold]prompt[/bold]\n{ex['prompt']}\n\n[bold]1[/bold]\n{first['output']}\n\n"
            f"[bold]2[/bold]\n{second['output']}\n"
        )
        answer = typer.prompt("better: 1, 2, t(ie), s(kip), q(uit)").strip().lower()[:1]
        if answer == "q":
            break
        if answer not in ("1", "2", "t"):
            continue
        winner = blind_winner("tie" if answer == "t" else answer, flip)
        comment = typer.prompt("comment (optional)", default="", show_default=False)
        add_rating(
            runs_dir,
            prompt=ex["prompt"],
            model_a=names[0],
            model_b=names[1],
            output_a=ex["a"]["output"],
            output_b=ex["b"]["output"],
            winner=winner,
            comment=comment,
            shown_first="b" if flip else "a",
            source=str(comparison),
        )
    _print_ratings(summarize(read_ratings(runs_dir)))


ratings_app = typer.Typer(
    invoke_without_command=True,
    no_args_is_help=False,
    help="Side-by-side ratings: the ranking (default), or export them as preference pairs for DPO.",
)
RunsDir = Annotated[Path, typer.Argument(help="The run store holding ratings.jsonl.")]


@ratings_app.callback()
def ratings(ctx: typer.Context) -> None:
    """Win rates and the Bradley–Terry ranking of ./runs (`show DIR` for another store), or `export`."""
    if ctx.invoked_subcommand is None:
        show(Path("runs"))


@ratings_app.command()
def show(runs_dir: RunsDir = Path("runs")) -> None:
    """Win rates and the Bradley–Terry (Elo-scale) ranking from every stored side-by-side rating."""
    from tuneloop.eval.ratings import read_ratings, summarize

    _print_ratings(summarize(read_ratings(runs_dir)))


@ratings_app.command("export")
def export_ratings(
    runs_dir: RunsDir = Path("runs"),
    out: Annotated[Path, typer.Option("--out", "-o", help="The preference file to write (JSONL).")] = Path(
        "preferences.jsonl"
    ),
) -> None:
    """Write the ratings as prompt/chosen/rejected pairs, ready for `train.method: dpo`."""
    from tuneloop.data import refuse_overwriting
    from tuneloop.eval.ratings import preference_pairs, ratings_file, read_ratings

    with reported(ValueError, OSError):
        refuse_overwriting(ratings_file(runs_dir), [out])
        pairs, summary = preference_pairs(read_ratings(runs_dir))
        if not pairs:
            raise ValueError(f"{ratings_file(runs_dir)}: no rating prefers one answer ({summary['dropped']})")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs), encoding="utf-8")
    dropped = ", ".join(f"{n} {why.replace('_', ' ')}" for why, n in summary["dropped"].items() if n) or "none"
    console.print(f"{summary['ratings']} ratings → {summary['pairs']} preference pairs in {out} (dropped: {dropped})")


def _print_ratings(summary: dict) -> None:
    table = Table(
        "model",
        "Elo (Bradley–Terry)",
        "wins",
        "ties",
        "losses",
        "win rate",
        "95% interval",
        title=f"{summary['ratings']} ratings",
    )
    for r in summary["ranking"]:
        m = summary["models"][r["model"]]
        lo, hi = m["win_rate_ci"]
        table.add_row(
            r["model"],
            f"{r['elo']:.0f}",
            str(m["wins"]),
            str(m["ties"]),
            str(m["losses"]),
            f"{m['win_rate']:.2f}",
            f"[{lo:.2f}, {hi:.2f}]",
        )
    console.print(table)
