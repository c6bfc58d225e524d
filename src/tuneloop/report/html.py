"""Render report.html from what the run directory holds: config, metrics, eval results."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from tuneloop.config import LOWER_IS_BETTER
from tuneloop.eval.general import general_rows
from tuneloop.report.plots import loss_curve_png, scale_curve_png
from tuneloop.runs import RunDir

STYLE = """
body{font-family:system-ui,sans-serif;max-width:1050px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.5em} h2{font-size:1.15em;margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ddd;padding:.3em .6em;text-align:left;vertical-align:top}
th{background:#f4f4f4} .better{color:#17803d;font-weight:600} .worse{color:#b3261e;font-weight:600}
pre{white-space:pre-wrap;margin:0;font-size:.85em} .ok{background:#eef8f0} .bad{background:#fdf0ef}
.muted{color:#666;font-size:.9em}
"""


def _e(x) -> str:
    return html.escape(str(x))


def _fmt(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else _e(v)


def _data_section(report: dict | None, token_histogram: bytes | None) -> str:
    if not report:
        return ""
    tokens = report.get("tokens", {})
    facts = [
        ("rows read", report.get("rows")),
        ("format", report.get("format")),
        ("splits (after deduplication)", report.get("splits")),
        ("dropped", report.get("dropped")),
        ("duplicates", report.get("duplicates")),
        ("tokens per example", {k: v for k, v in tokens.items() if k != "count"}),
        ("learned tokens per example", {k: v for k, v in report.get("trainable_tokens", {}).items() if k != "count"}),
        ("learned tokens in total", report.get("total_trainable_tokens")),
        ("assistant turns per example (turns: rows)", report.get("assistant_turns_per_example")),
        ("tool calls", report.get("tool_calls")),
        ("labels", report.get("labels")),
        ("imbalance ratio", report.get("imbalance_ratio")),
    ]
    inline = lambda v: " · ".join(f"{k} {x}" for k, x in v.items()) if isinstance(v, dict) else v  # noqa: E731
    rows = "".join(f"<tr><td>{_e(k)}</td><td>{_e(inline(v))}</td></tr>" for k, v in facts if v not in (None, {}, []))
    warnings = "".join(
        f"<li>{_e(w['message'])} <span class='muted'>[{_e(w['code'])}]</span></li>" for w in report.get("warnings", [])
    )
    img = ""
    if token_histogram:
        png = base64.b64encode(token_histogram).decode()
        img = f'<img alt="token length histogram" src="data:image/png;base64,{png}">'
    return (
        f"<h2>Data</h2><table>{rows}</table>"
        + (f"<ul>{warnings}</ul>" if warnings else "")
        + _preview(report.get("preview"), report.get("train_on"))
        + img
    )


def _preview(shown: dict | None, train_on: str | None) -> str:
    """One training example as rendered by the chat template, its learned spans highlighted."""
    if not shown:
        return ""
    text, parts, at = shown["text"], [], 0
    for lo, hi in shown["spans"]:
        parts += [_e(text[at:lo]), f"<mark>{_e(text[lo:hi])}</mark>"]
        at = hi
    parts.append(_e(text[at:]))
    return (
        f"<h3>One training example as the model sees it</h3><p class='muted'>{_e(shown['file'])} row "
        f"{shown['row']}: {shown['learned_tokens']} of {shown['tokens']} tokens learned (highlighted; "
        f"data.train_on: {_e(train_on)}), the rest is context.</p><pre>{''.join(parts)}</pre>"
    )


def _evaluation_section(evaluation: dict | None) -> str:
    if evaluation is None:
        return (
            "<h2>Test split</h2><p class='muted'>not evaluated yet (trained with `tuneloop train`); "
            "the validation loss is in the curve above.</p>"
        )
    base, tuned = evaluation["base"]["metrics"], evaluation["finetuned"]["metrics"]
    comparison = evaluation.get("comparison") or {}
    stats = comparison.get("metrics", {})
    rows = []
    for key in tuned:
        b, t = base.get(key), tuned[key]
        delta = t - b if isinstance(b, (int, float)) and isinstance(t, (int, float)) else None
        cls = ""
        if delta:
            cls = "better" if (delta < 0 if key in LOWER_IS_BETTER else delta > 0) else "worse"
        s = stats.get(key) or {}
        ci = f"[{s['ci'][0]:+.4f}, {s['ci'][1]:+.4f}]" if s.get("ci") else ""
        p = f"{s['p_value']:.3f}" if s.get("p_value") is not None else ""
        rows.append(
            f"<tr><td>{_e(key)}</td><td>{_fmt(b)}</td><td>{_fmt(t)}</td>"
            f"<td class='{cls}'>{'' if delta is None else f'{delta:+.4f}'}</td><td>{ci}</td><td>{p}</td></tr>"
        )
    summary = ""
    if "wins" in comparison:
        summary = (
            f"<p>per example, fine-tuned against base: <b>{comparison['wins']}</b> better, "
            f"{comparison['ties']} tied, <b>{comparison['losses']}</b> worse"
        )
        if "mcnemar" in comparison:
            m = comparison["mcnemar"]
            summary += (
                f" · McNemar: only base right on {m['only_a_correct']}, only fine-tuned right on "
                f"{m['only_b_correct']}, p = {m['p_value']:.3g}"
            )
        summary += (
            f" · {int(comparison['confidence'] * 100)}% intervals from a paired bootstrap of "
            f"{comparison['resamples']} resamples</p>"
        )
    return (
        f"<h2>Test split: base model vs fine-tuned ({_e(evaluation.get('n_test', '?'))} examples, "
        f"metric: {_e(evaluation.get('metric'))})</h2>"
        "<table><tr><th>metric</th><th>base</th><th>fine-tuned</th><th>change</th><th>interval</th><th>p</th></tr>"
        f"{''.join(rows)}</table>{summary}"
        + _general_section(evaluation.get("general"), evaluation.get("scale_curve"))
        + _confusion_section(evaluation.get("confusion", {}).get("finetuned"))
        + _examples_section(evaluation, comparison)
    )


def _general_section(general: dict | None, curve: dict | None) -> str:
    """What the fine-tune cost the model: the measures, generic prompts side by side, the scale curve."""
    if not general:
        return ""
    rows = "".join(
        f"<tr><td>{_e(r['what'])}</td><td>{_e(r['base'])}</td><td>{_e(r['finetuned'])}</td>"
        f"<td class='{'worse' if r['worse'] else ''}'>{_e(r['difference'])}</td></tr>"
        for r in general_rows(general)
    )
    answers = "".join(
        f"<tr class='{'bad' if e['leaked'] else ''}'><td>{_e(e['prompt'])}</td><td><pre>{_e(e['base'])}</pre></td>"
        f"<td><pre>{_e(e['finetuned'])}</pre></td></tr>"
        for e in general["leakage"]["examples"][:8]
    )
    out = (
        "<h2>What the fine-tune cost the model (base vs fine-tuned, paired 95% intervals)</h2>"
        "<table><tr><th>measure</th><th>base</th><th>fine-tuned</th><th>difference [95%]</th></tr>"
        f"{rows}</table><p class='muted'>Generic prompts, unrelated to the task (red: answered in the task's form, "
        f"{_e(general['leakage']['form'])}):</p><table><tr><th>prompt</th><th>base</th><th>fine-tuned</th></tr>"
        f"{answers}</table>"
    )
    if curve:
        png = base64.b64encode(scale_curve_png(curve)).decode()
        r = curve.get("recommended")
        chosen = (
            f"recommended scale <b>{r['scale']:g}</b>: {r['gain_kept']:.0%} of the validation gain kept, general "
            f"loss {r['general_loss']:g} points against {r['general_loss_at_1']:g} at scale 1 "
            "(<code>tuneloop serve --adapter NAME=RUN@auto</code>, <code>tuneloop export RUN --scale auto</code>)"
            if r
            else "no scale keeps a validation gain: the adapter gained nothing there"
        )
        out += (
            f"<h2>Adapter scale, measured ({curve['rows']} validation rows, {curve['seconds']} s)</h2>"
            f"<img alt='task metric and general loss against the adapter scale' src='data:image/png;base64,{png}'>"
            f"<p>{chosen}</p>"
        )
    return out


def _examples_section(evaluation: dict, comparison: dict) -> str:
    """Regressions first (worst first), then improvements, then the rest."""
    examples = evaluation.get("examples", [])
    first = comparison.get("regressions", []) + comparison.get("improvements", [])
    order = first + [i for i in range(len(examples)) if i not in set(first)]
    regressed = set(comparison.get("regressions", []))
    rows = []
    for i in order[: evaluation.get("report_examples", 6)]:
        ex = examples[i]
        tag = "<br><span class='worse'>worse than base</span>" if i in regressed else ""
        rows.append(
            "<tr>"
            f"<td><pre>{_e(ex['prompt'])}</pre>{tag}</td><td><pre>{_e(ex['reference'])}</pre></td>"
            f"<td class='{_cell(ex['base'])}'><pre>{_e(ex['base']['output'])}</pre></td>"
            f"<td class='{_cell(ex['finetuned'])}'><pre>{_e(ex['finetuned']['output'])}</pre></td>"
            "</tr>"
        )
    if not rows:
        return ""
    return (
        "<h2>Examples side by side (regressions first)</h2><table><tr><th>prompt (last turn)</th><th>reference</th>"
        "<th>base</th><th>fine-tuned</th></tr>" + "".join(rows) + "</table>"
    )


def _cell(side: dict) -> str:
    if "correct" in side:
        return "ok" if side["correct"] else "bad"
    return ""


def _confusion_section(confusion: dict | None) -> str:
    if not confusion:
        return ""
    labels = confusion["labels"]
    head = "".join(f"<th>{_e(label)}</th>" for label in labels)
    body = "".join(
        f"<tr><th>{_e(label)}</th>"
        + "".join(f"<td class='{'ok' if j == i and v else 'bad' if v else ''}'>{v}</td>" for j, v in enumerate(row))
        + "</tr>"
        for i, (label, row) in enumerate(zip(labels, confusion["matrix"]))
    )
    return (
        "<h3>Confusion matrix, fine-tuned (rows: true label, columns: predicted)</h3>"
        f"<table><tr><th></th>{head}</tr>{body}</table>"
    )


def _lineage_section(info: dict) -> str:
    """An autotune run says where it came from: its parent and the doctor's change that made it."""
    lineage = info.get("lineage")
    if not lineage:
        return ""
    parent = Path(lineage["parent"]).name if lineage.get("parent") else "none (the config as given)"
    changes = "".join(
        f"<li>{_e(c['param'])}: {_e(c['from'])} → <b>{_e(c['to'])}</b> <span class='muted'>{_e(c['why'])}</span></li>"
        for c in lineage.get("changes", [])
    )
    return (
        f"<h2>Lineage</h2><p>autotune attempt {lineage.get('attempt', 0) + 1} · parent run {_e(parent)} · "
        f"<a href='{_e(Path(lineage['autotune']).as_uri())}/report.html'>all attempts</a></p>"
        + (f"<ul>{changes}</ul>" if changes else "")
    )


def _doctor_section(diagnosis: dict | None, next_config: Path | None) -> str:
    """The report ends where the user decides what to do next: the verdict, the findings, the
    top recommendations with their cost, and the command that runs the next config."""
    if not diagnosis:
        return ""
    findings = "".join(
        f"<li>{_e(f['message'])} <span class='muted'>({_e(f['kind'])}, confidence {f['confidence']:.1f})</span></li>"
        for f in diagnosis["findings"]
    )
    rows = "".join(
        f"<tr><td>{_e(r['param'])}</td><td>{_e(r['from'])}</td><td><b>{_e(r['to'])}</b></td><td>{_e(r['why'])}</td>"
        f"<td>{'' if r.get('minutes') is None else _e(r['minutes'])}</td><td>{'yes' if r['applied'] else ''}</td></tr>"
        for r in diagnosis["recommendations"][:TOP_RECOMMENDATIONS]
    )
    table = (
        (
            "<table><tr><th>change</th><th>from</th><th>to</th><th>why</th><th>est. training minutes</th>"
            f"<th>in next config</th></tr>{rows}</table>"
        )
        if rows
        else ""
    )
    command = f"<p>next: <code>tuneloop run {_e(next_config)}</code></p>" if next_config else ""
    return f"<h2>The doctor: {_e(diagnosis['verdict'])}</h2><ul>{findings}</ul>{table}{command}"


TOP_RECOMMENDATIONS = 5


def render_report(
    *,
    run_id: str,
    config: dict,
    info: dict,
    metrics: list[dict],
    evaluation: dict | None,
    data_report: dict | None = None,
    token_histogram: bytes | None = None,
    diagnosis: dict | None = None,
    next_config: Path | None = None,
) -> str:
    png = base64.b64encode(loss_curve_png(metrics)).decode()
    reinforcement = any("train_reward" in m for m in metrics)  # GRPO: its reward, not its loss, is the curve
    curve_title = "Training reward" if reinforcement else "Training and validation loss"
    hp = config.get("train", {}) | {f"lora.{k}": v for k, v in config.get("lora", {}).items()}
    hp_rows = "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in hp.items())
    timings = info.get("timings", {})
    timing_rows = "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)} s</td></tr>" for k, v in timings.items())
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>tuneloop run {_e(run_id)}</title>
<style>{STYLE}</style></head><body>
<h1>Run {_e(run_id)}</h1>
<p class="muted">model {_e(config.get("model"))} · data {_e(config.get("data", {}).get("path"))} ·
status {_e(info.get("status", "?"))} · precision {_e(info.get("precision", "?"))} on {_e(info.get("device", "?"))} ·
split {_e(info.get("split_sizes", {}))}</p>
{_lineage_section(info)}
<h2>{curve_title}, and the validation task metric</h2>
<img alt="loss curves and the task metric" src="data:image/png;base64,{png}">
{_evaluation_section(evaluation)}
{_data_section(data_report, token_histogram)}
<h2>Hyperparameters</h2><table>{hp_rows}</table>
<h2>Timings</h2><table>{timing_rows}</table>
{_doctor_section(diagnosis, next_config)}
</body></html>
"""


def write_run_report(run: RunDir, diagnosis: dict | None) -> None:
    """report.html from what the run directory holds, ending with the doctor's verdict."""
    next_config = run.next_config_file if run.next_config_file.exists() else None
    histogram = run.token_histogram_file.read_bytes() if run.token_histogram_file.exists() else None
    run.write_text(
        run.report_file,
        render_report(
            run_id=run.id,
            config=run.config().model_dump(mode="json"),
            info=run.info(),
            metrics=run.read_metrics(),
            evaluation=run.evaluation(),
            data_report=run.data_report(),
            token_histogram=histogram,
            diagnosis=diagnosis,
            next_config=next_config,
        ),
    )
