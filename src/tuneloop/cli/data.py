"""`tuneloop data ...`: check, clean, dedup, split, stats, augment — each writes new files, never the source."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from tuneloop.cli import quiet_libraries, reported

data_app = typer.Typer(no_args_is_help=True, help="Prepare data: check, clean, dedup, split, stats, augment.")
console = Console()
err = Console(stderr=True)

File = Annotated[Path, typer.Argument(help="A data file (JSONL, JSON, CSV, TSV, Parquet) or a folder of them.")]
OptionalFile = Annotated[Path | None, typer.Argument(help="A data file or folder; default: the config's data.path.")]
Config = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="Take the data settings, model and max_seq_len from a "
        "run config, to check exactly what `tuneloop run` will see.",
    ),
]
Format = Annotated[
    str,
    typer.Option(
        "--format",
        help="auto, messages, prompt_completion, input_output, alpaca, sharegpt, text, preference or "
        "openai_preference.",
    ),
]
Prompt = Annotated[str | None, typer.Option("--prompt", help="Column template for the prompt, e.g. '{text}'.")]
Completion = Annotated[
    str | None, typer.Option("--completion", help="Column template for the answer, e.g. '{category}'.")
]
System = Annotated[str | None, typer.Option("--system", help="System prompt for rows that have none.")]
Label = Annotated[str, typer.Option("--label", help="auto, none, or the field holding the class label.")]
Model = Annotated[
    str | None, typer.Option("--model", help="Model whose tokenizer counts tokens [default: smollm2-135m-instruct].")
]
MaxLen = Annotated[
    int | None, typer.Option("--max-seq-len", help="Longest example allowed, in tokens [default: 1024].")
]
Threshold = Annotated[float, typer.Option("--threshold", help="Near-duplicate MinHash Jaccard similarity.")]
Seed = Annotated[int, typer.Option("--seed")]


def _columns(prompt: str | None, completion: str | None) -> dict | None:
    if prompt is None and completion is None:
        return None
    if prompt is None or completion is None:
        raise typer.BadParameter("--prompt and --completion go together")
    return {"prompt": prompt, "completion": completion}


@contextmanager
def _errors():
    """Bad data or options end with a clear message and exit status 2, never a traceback."""
    from tuneloop.data import DataError
    from tuneloop.models import ModelNotFound

    with reported(DataError, ModelNotFound, ValueError, OSError):
        yield


def _settings(
    file: Path | None,
    config: Path | None,
    fmt: str,
    prompt,
    completion,
    system,
    label: str,
    model: str | None,
    max_seq_len: int | None,
) -> dict:
    """Command-line options, filled in from a run config where given; the options win."""
    from tuneloop.config import DEFAULT_MODEL, DataConfig, load_config

    cfg = load_config(config) if config else None
    data = cfg.data if cfg else DataConfig(path=file or Path("."))
    if file is None and cfg is None:
        raise ValueError("give a data FILE, or --config with a data.path")
    columns = _columns(prompt, completion) or (data.columns.model_dump() if data.columns else None)
    return {
        "path": file or data.path,
        "fmt": fmt if fmt != "auto" else data.format,
        "columns": columns,
        "system_prompt": system or data.system_prompt,
        "label": label if label != "auto" else data.label,
        "model": model or (cfg.model if cfg else DEFAULT_MODEL),
        "max_seq_len": max_seq_len or data.max_seq_len,
        "train_on": data.train_on,
    }


def _tokenizer(model: str):
    from tuneloop.models import load_tokenizer, resolve_model

    quiet_libraries()
    return load_tokenizer(resolve_model(model))


def _load(file: Path, fmt: str, prompt, completion, system, label: str = "auto"):
    from tuneloop.data import load_examples_strict

    columns = _columns(prompt, completion)
    return load_examples_strict(file, fmt=fmt, columns=columns, system_prompt=system, label=label)


def _output_suffix(file: Path) -> str:
    return file.suffix if file.is_file() else ".jsonl"


def _write_log(path: Path, entries: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries), encoding="utf-8")


@data_app.command()
def check(
    file: OptionalFile = None,
    config: Config = None,
    fmt: Format = "auto",
    prompt: Prompt = None,
    completion: Completion = None,
    system: System = None,
    label: Label = "auto",
    model: Model = None,
    max_seq_len: MaxLen = None,
    train_on: Annotated[
        str | None,
        typer.Option(
            "--train-on", help="all_assistant, last_assistant or all [default: the config's, else all_assistant]."
        ),
    ] = None,
    no_tokens: Annotated[bool, typer.Option("--no-tokens", help="Skip the token checks (no tokenizer).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Lint a data file: every error and warning with its row and field, and one example as the model
    sees it with the learned tokens marked. Exit status 1 when there are errors."""
    from tuneloop import api
    from tuneloop.data import check_data

    with _errors():  # a ConfigError is a ValueError: reported the same way
        s = _settings(file, config, fmt, prompt, completion, system, label, model, max_seq_len)
        tokenizer = None if no_tokens else _tokenizer(s["model"])
        report = check_data(
            s["path"],
            fmt=s["fmt"],
            columns=s["columns"],
            system_prompt=s["system_prompt"],
            label=s["label"],
            tokenizer=tokenizer,
            max_seq_len=None if no_tokens else s["max_seq_len"],
            train_on=train_on or s["train_on"],
        )
        if config and report.ok:  # a grpo run's graders, tried on the reference answers
            report.errors += api.check_graders(config)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    else:
        if report.preview:
            _print_preview(report.preview)
        for p in report.errors:
            typer.echo(f"error: {p}")
        for p in report.warnings:
            typer.echo(f"warning: {p}")
        verdict = "[green]ok[/green]" if report.ok else "[red]errors[/red]"
        console.print(
            f"{report.path}: {verdict} · format {report.format} · {report.rows} rows, "
            f"{report.valid_rows} valid · {len(report.errors)} error(s), {len(report.warnings)} warning(s)"
        )
    raise typer.Exit(0 if report.ok else 1)


def _print_preview(shown: dict) -> None:
    from rich.text import Text

    from tuneloop.data.conversation import marked

    terminal = console.is_terminal  # no colours in a pipe or a log: the learned spans are marked «» instead
    how = "" if terminal else " (marked «»)"
    console.print(
        f"[bold]{shown['file']}:{shown['row']}[/bold] as the model sees it: [bold green]learned[/bold green] "
        f"{shown['learned_tokens']} of {shown['tokens']} tokens{how}, the rest is context:"
    )
    if not terminal:
        console.print(marked(shown, "«", "»"), markup=False, highlight=False, soft_wrap=True)
        return
    text, at = Text(), 0
    for lo, hi in shown["spans"]:
        text.append(shown["text"][at:lo], style="dim")
        text.append(shown["text"][lo:hi], style="bold green")
        at = hi
    text.append(shown["text"][at:], style="dim")
    console.print(text, markup=False, highlight=False)


@data_app.command()
def clean(
    file: File,
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the cleaned copy.")],
    redact_pii: Annotated[
        bool,
        typer.Option(
            "--redact-pii", help="Replace emails, phone numbers, card numbers and IP addresses with placeholders."
        ),
    ] = False,
    log: Annotated[Path | None, typer.Option("--log", help="Row log (default: OUT.log.jsonl).")] = None,
    fmt: Format = "auto",
    prompt: Prompt = None,
    completion: Completion = None,
) -> None:
    """Normalise unicode, whitespace and markup; drop unusable rows; optionally redact PII. Logs every change."""
    from tuneloop.data import clean_file, refuse_overwriting

    log = log or out.with_name(out.name + ".log.jsonl")
    with _errors():
        refuse_overwriting(file, [out, log])
        summary = clean_file(file, out, fmt=fmt, columns=_columns(prompt, completion), redact_pii=redact_pii)
    _write_log(log, summary.log)
    console.print(f"{summary.rows_in} rows → {summary.kept} kept, {summary.dropped} dropped, {summary.changed} changed")
    if summary.changes:
        console.print("changes: " + ", ".join(f"{k} {v}" for k, v in sorted(summary.changes.items())))
    if redact_pii:
        console.print("redacted: " + (", ".join(f"{k} {v}" for k, v in sorted(summary.pii.items())) or "nothing"))
    console.print(f"wrote {out}; row log {log}")


@data_app.command()
def dedup(
    file: File,
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the deduplicated copy.")],
    threshold: Threshold = 0.8,
    exact_only: Annotated[bool, typer.Option("--exact-only", help="Skip near-duplicate detection.")] = False,
    log: Annotated[Path | None, typer.Option("--log", help="Cluster log (default: OUT.log.jsonl).")] = None,
    fmt: Format = "auto",
    prompt: Prompt = None,
    completion: Completion = None,
    system: System = None,
) -> None:
    """Remove exact and near duplicates (MinHash LSH over word shingles); keeps the first row of each cluster."""
    from tuneloop.data import find_duplicates, refuse_overwriting, write_records

    log = log or out.with_name(out.name + ".log.jsonl")
    with _errors():
        refuse_overwriting(file, [out, log])
        data = _load(file, fmt, prompt, completion, system, label="none")
        examples = data.examples
        result = find_duplicates([e.text for e in examples], threshold=threshold, near=not exact_only)
        write_records(out, [examples[i].record for i in result.keep])
    _write_log(log, result.cluster_log(examples))
    exact = sum(d.kind == "exact" for d in result.duplicates)
    console.print(
        f"{len(examples)} rows → {len(result.keep)} kept; dropped {exact} exact and "
        f"{len(result.duplicates) - exact} near duplicates in {len(result.clusters)} clusters"
    )
    console.print(f"wrote {out}; clusters in {log}")


@data_app.command()
def split(
    file: File,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for train/validation/test files.")],
    validation: Annotated[float, typer.Option("--validation", help="Fraction (< 1) or rows (>= 1).")] = 0.1,
    test: Annotated[float, typer.Option("--test", help="Fraction (< 1) or rows (>= 1).")] = 0.15,
    seed: Seed = 42,
    stratify: Annotated[bool, typer.Option(help="Keep the label mix in each split when rows have labels.")] = True,
    leakage: Annotated[
        str, typer.Option("--leakage", help="near, exact or none: remove train rows that duplicate a held-out row.")
    ] = "near",
    threshold: Threshold = 0.8,
    fmt: Format = "auto",
    prompt: Prompt = None,
    completion: Completion = None,
    system: System = None,
    label: Label = "auto",
) -> None:
    """Seeded train/validation/test split, stratified by label, with a leakage check."""
    from tuneloop.data import refuse_overwriting, split_examples, write_records

    suffix = _output_suffix(file)
    with _errors():
        refuse_overwriting(
            file, [out / f"{name}{suffix}" for name in ("train", "validation", "test")] + [out / "removed.jsonl"]
        )
        data = _load(file, fmt, prompt, completion, system, label)
        splits = split_examples(
            data.examples,
            validation,
            test,
            seed=seed,
            stratify=stratify,
            leakage=leakage,
            threshold=threshold,
            file=str(file),
        )
        for name, part in splits.items():
            write_records(out / f"{name}{suffix}", [e.record for e in part])
    _write_log(out / "removed.jsonl", splits.removed)
    stratified = "stratified by label" if stratify and data.has_labels else "not stratified"
    console.print(" · ".join(f"{name} {len(part)}" for name, part in splits.items()) + f" ({stratified})")
    console.print(f"leakage check: removed {len(splits.removed)} train row(s) (listed in {out / 'removed.jsonl'})")
    console.print(f"wrote {out}/train{suffix}, validation{suffix}, test{suffix}")


@data_app.command()
def stats(
    file: OptionalFile = None,
    config: Config = None,
    fmt: Format = "auto",
    prompt: Prompt = None,
    completion: Completion = None,
    system: System = None,
    label: Label = "auto",
    model: Model = None,
    max_seq_len: MaxLen = None,
    plot: Annotated[Path | None, typer.Option("--plot", help="Write the token-length histogram (PNG).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the profile as JSON.")] = False,
) -> None:
    """Profile the data: sizes, token lengths, per-role lengths, labels, duplicates, warnings."""
    from tuneloop.data import find_duplicates, load_examples_strict, profile, refuse_overwriting, token_lengths

    with _errors():
        s = _settings(file, config, fmt, prompt, completion, system, label, model, max_seq_len)
        if plot:
            refuse_overwriting(s["path"], [plot])
        data = load_examples_strict(
            s["path"], fmt=s["fmt"], columns=s["columns"], system_prompt=s["system_prompt"], label=s["label"]
        )
        tokenizer = _tokenizer(s["model"])
        lengths = token_lengths(data.examples, tokenizer, s["train_on"])
        report = {
            "path": str(s["path"]),
            "format": data.format,
            **profile(
                data.examples, tokenizer, lengths, find_duplicates([e.text for e in data.examples]), s["max_seq_len"]
            ),
        }
    if plot:
        from tuneloop.report.plots import token_histogram_png

        plot.write_bytes(token_histogram_png(lengths.total, s["max_seq_len"]))
    if as_json:
        typer.echo(json.dumps(report, indent=2, ensure_ascii=False))
        return
    _print_profile(report)
    if plot:
        console.print(f"histogram: {plot}")


def _print_profile(report: dict) -> None:
    console.print(f"[bold]{report['path']}[/bold] · format {report['format']} · {report['rows']} rows")
    table = Table("tokens", *[k for k in report["tokens"] if k != "count"])
    table.add_row("whole example", *[str(v) for k, v in report["tokens"].items() if k != "count"])
    table.add_row("learned", *[str(v) for k, v in report["trainable_tokens"].items() if k != "count"])
    for role, p in report.get("tokens_by_role", {}).items():
        table.add_row(role, *[str(v) for k, v in p.items() if k != "count"])
    console.print(table)
    if "assistant_turns_per_example" in report:
        turns = report["assistant_turns_per_example"]
        console.print("assistant turns per row: " + ", ".join(f"{n}: {rows} rows" for n, rows in turns.items()))
    if "labels" in report:
        top = list(report["labels"].items())
        console.print(
            f"labels: {len(top)} · imbalance {report['imbalance_ratio']}x · most {top[:3]} · least {top[-3:]}"
        )
    d = report["duplicates"]
    console.print(f"duplicates: {d['exact']} exact, {d['near']} near ({100 * d['rate']:.1f}%)")
    for w in report["warnings"]:
        console.print(f"[yellow]warning[/yellow]: {w['message']} [{w['code']}]")


@data_app.command()
def augment(
    file: File,
    out: Annotated[Path, typer.Option("--out", "-o", help="Originals, then the new rows (marked 'augmented').")],
    method: Annotated[str, typer.Option("--method", help="eda, paraphrase or backtranslate.")] = "eda",
    copies: Annotated[int, typer.Option("--copies", help="New rows per row (eda).", min=1)] = 1,
    alpha: Annotated[float, typer.Option("--alpha", help="Share of words each EDA edit touches.")] = 0.1,
    seed: Seed = 0,
    model: Annotated[
        str, typer.Option("--model", help="Model for paraphrase / backtranslate.")
    ] = "smollm2-135m-instruct",
    language: Annotated[str, typer.Option("--language", help="Pivot language for backtranslate.")] = "French",
    fmt: Format = "auto",
    prompt: Prompt = None,
    completion: Completion = None,
    system: System = None,
) -> None:
    """Make extra training rows from the prompts (answers are never changed). Split keeps them out of
    validation and test."""
    from tuneloop.data import refuse_overwriting, write_records
    from tuneloop.data.augment import augment, augmented_rows

    log = out.with_name(out.name + ".rejected.jsonl")
    with _errors():
        refuse_overwriting(file, [out, log])
        examples = _load(file, fmt, prompt, completion, system, label="none").examples
        if method != "eda":
            quiet_libraries()
        with console.status(f"{method} of {len(examples)} prompts" + (f" with {model}" if method != "eda" else "")):
            new, rejected = augment(
                examples, method, copies=copies, alpha=alpha, seed=seed, model=model, language=language
            )
        write_records(out, augmented_rows(examples, new))
    console.print(f"{len(examples)} rows + {len(new)} augmented ({method}) → {out}")
    if rejected:
        _write_log(log, rejected)
        console.print(
            f"{len(rejected)} rewrites rejected (unchanged, another language, or length off by more than 2x): {log}"
        )
