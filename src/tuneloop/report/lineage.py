"""report.html of an autotune: which change led to which result, and the runs' validation curves."""

from __future__ import annotations

import base64
from pathlib import Path

from tuneloop.report.html import STYLE, _e, _fmt
from tuneloop.report.plots import balance_png, validation_curves_png
from tuneloop.runs import RunDir


def _test_section(test: dict) -> str:
    """Base model, first run and best run on the test split: touched once, after the search."""
    if not test.get("best"):
        return ""
    keys = [k for k in test["best"]["metrics"] if k in ("loss", test.get("key"))]
    rows = "".join(
        f"<tr><td>{label}</td>"
        + "".join(f"<td>{_fmt(test[label]['metrics'].get(k))}</td>" for k in keys)
        + f"<td>{_fmt(test[label].get('general_loss'))}</td></tr>"
        for label in ("base", "first", "best")
    )
    head = "".join(f"<th>{_e(k)}</th>" for k in keys) + "<th>general loss (points)</th>"
    return (
        f"<h2>Test split ({_e(test.get('n'))} examples): base model → first run → best run</h2>"
        f"<table><tr><th></th>{head}</tr>{rows}</table>"
        "<p class='muted'>runs were chosen on the validation split; the test split was evaluated once, "
        "at the end</p>"
    )


def _balance_section(tune: dict) -> str:
    """Task gain against general loss across the attempts: where the search found both kept."""
    points = [a for a in tune["attempts"] if a.get("general_loss") is not None and a.get("metric_value") is not None]
    if not points:
        return ""
    png = base64.b64encode(balance_png(points, tune.get("max_general_drop"))).decode()
    return (
        "<h2>Task against general loss, every attempt</h2>"
        f"<img alt='validation task metric against general loss' src='data:image/png;base64,{png}'>"
    )


def render_lineage(tune: dict) -> str:
    attempts = tune["attempts"]
    best = tune.get("best_run")
    ids = {a["run"]: Path(a["run"]).name for a in attempts}
    rows = []
    for a in attempts:
        change = (
            "<br>".join(
                f"{_e(s['param'])}: {_e(s['from'])} → <b>{_e(s['to'])}</b> <span class='muted'>{_e(s['why'])}</span>"
                for s in a["step"]
            )
            or "the config as given"
        )
        metric = f"{_e(a['metric'])} {_fmt(a['metric_value'])}" if a.get("metric") else ""
        rows.append(
            f"<tr class='{'ok' if a['run'] == best else ''}'><td>{a['index'] + 1}</td>"
            f"<td><a href='../../{_e(ids[a['run']])}/report.html'>{_e(ids[a['run']])}</a></td>"
            f"<td>{_e(ids.get(a['parent'], '—'))}</td><td>{change}</td><td>{_e(a['verdict'])}</td>"
            f"<td>{_fmt(a['best_val_loss'])}</td><td>{metric}</td><td>{_fmt(a.get('general_loss'))}</td>"
            f"<td>{_e(a['seconds'])} s</td></tr>"
        )
    png = base64.b64encode(
        validation_curves_png(
            {f"{a['index'] + 1}: {ids[a['run']]}": RunDir(Path(a["run"])).read_metrics() for a in attempts}
        )
    ).decode()
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>tuneloop autotune</title>
<style>{STYLE}</style></head><body>
<h1>Autotune</h1>
<p class="muted">selected by {_e(tune["select"])} · best run {_e(ids.get(best, "—"))} ·
stopped: {_e(tune["stopped_because"])}</p>
<h2>Lineage: which change led to which result</h2>
<table><tr><th>#</th><th>run</th><th>parent</th><th>change (and why)</th><th>verdict</th><th>best validation loss</th>
<th>validation metric</th><th>general loss (points)</th><th>time</th></tr>{"".join(rows)}</table>
{_balance_section(tune)}
{_test_section(tune.get("test") or {})}
<h2>Validation loss of every run</h2>
<img alt="validation curves" src="data:image/png;base64,{png}">
</body></html>
"""
