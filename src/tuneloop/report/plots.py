"""Plots as PNG bytes (matplotlib, headless): loss curves and the token-length histogram."""

from __future__ import annotations

import io

from tuneloop.doctor.curves import Curves


def _axes(height: float):
    import matplotlib

    matplotlib.use("Agg")  # no display on servers; must precede pyplot
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, height), dpi=110)
    return plt, fig, ax


def _png(plt, fig, ax) -> bytes:
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def loss_curve_png(metrics: list[dict]) -> bytes:
    """The losses (a reinforcement run: its reward and spread instead) and the validation task metric."""
    plt, fig, ax = _axes(3.6)
    curves = Curves.from_metrics(metrics)
    train, val = curves.train, curves.val
    reward = [(r["step"], r["train_reward"], r.get("train_reward_std", 0.0)) for r in metrics if "train_reward" in r]
    if reward:  # GRPO: its loss is not a measure of progress; the reward of its sampled answers is
        steps, means, spread = zip(*reward)
        ax.plot(steps, means, label="reward (mean of the step's answers)", color="#3b6fb6", linewidth=1.4)
        ax.fill_between(
            steps, [m - s for m, s in zip(means, spread)], [m + s for m, s in zip(means, spread)], alpha=0.15
        )
        ax.set_ylabel("reward (± s.d. of the answers)")
    else:
        if train:
            ax.plot(*zip(*train), label="training loss", color="#3b6fb6", linewidth=1.4)
        if val:
            ax.plot(*zip(*val), label="validation loss", color="#d1495b", marker="o", markersize=3.5, linewidth=1.6)
        ax.set_ylabel("loss (completion tokens)")
    ax.set_xlabel("step")
    lines, labels = ax.get_legend_handles_labels()
    if curves.metric:  # continuous evaluation: the task metric on its own axis
        right = ax.twinx()
        steps, values = zip(*curves.metric)
        errors = [curves.metric_se.get(s, 0.0) for s in steps]
        right.errorbar(
            steps,
            values,
            yerr=errors,
            color="#2a9d5b",
            marker="s",
            markersize=4,
            linewidth=1.6,
            capsize=2,
            label=f"validation {curves.metric_key} (task metric, ± s.e.)",
        )
        if curves.train_metric:
            right.plot(
                *zip(*curves.train_metric),
                "D",
                color="#8a5a00",
                markersize=5,
                label=f"{curves.metric_key} on a training sample",
            )
        if curves.leakage:  # the other side of the balance, on the same [0, 1] axis
            right.plot(
                *zip(*curves.leakage),
                "--^",
                color="#7b3fa0",
                markersize=4,
                linewidth=1.2,
                label="behaviour leakage (share of generic prompts in the task's form)",
            )
        right.set_ylabel(f"{curves.metric_key} (higher is better)" if curves.higher_is_better else curves.metric_key)
        more_lines, more_labels = right.get_legend_handles_labels()
        lines, labels = lines + more_lines, labels + more_labels
    ax.legend(lines, labels, fontsize=8)
    return _png(plt, fig, ax)


def token_histogram_png(lengths: list[int], max_seq_len: int | None = None) -> bytes:
    plt, fig, ax = _axes(3.0)
    ax.hist(lengths, bins=min(50, max(5, len(set(lengths)))), color="#3b6fb6")
    if max_seq_len:
        ax.axvline(max_seq_len, color="#d1495b", linestyle="--", label=f"max_seq_len {max_seq_len}")
        ax.legend()
    ax.set_xlabel("tokens per example (chat template included)")
    ax.set_ylabel("examples")
    return _png(plt, fig, ax)


def validation_curves_png(curves: dict[str, list[dict]]) -> bytes:
    """Validation loss of several runs on one chart (autotune lineage, sweeps, comparisons)."""
    plt, fig, ax = _axes(3.6)
    for label, metrics in curves.items():
        val = Curves.from_metrics(metrics).val
        if val:
            ax.plot(*zip(*val), label=label, marker="o", markersize=3, linewidth=1.4)
    ax.set_xlabel("step")
    ax.set_ylabel("validation loss")
    ax.set_yscale("log")  # a diverged run's losses would flatten every other curve
    ax.legend(fontsize=8)
    return _png(plt, fig, ax)


def scale_curve_png(curve: dict) -> bytes:
    """The adapter scale curve: the validation task metric and the general loss (points) at each scale."""
    plt, fig, ax = _axes(3.0)
    points = curve["points"]
    scales = [p["scale"] for p in points]
    ax.plot(scales, [p["task"] for p in points], color="#2a9d5b", marker="s", label=f"validation {curve['metric']}")
    ax.set_xlabel("adapter scale (0 = the base model, 1 = as trained)")
    ax.set_ylabel(curve["metric"])
    right = ax.twinx()
    right.plot(scales, [p["general_loss"] for p in points], color="#b3261e", marker="o", label="general loss (points)")
    right.set_ylabel("general loss: leakage rise + score drop (points)")
    if curve.get("recommended"):
        ax.axvline(curve["recommended"]["scale"], color="#555", linestyle="--", linewidth=1, label="recommended")
    lines, labels = ax.get_legend_handles_labels()
    more_lines, more_labels = right.get_legend_handles_labels()
    ax.legend(lines + more_lines, labels + more_labels, fontsize=8)
    return _png(plt, fig, ax)


def balance_png(attempts: list[dict], limit: float | None = None) -> bytes:
    """Autotune's attempts: the validation task metric against the general loss (points), numbered."""
    plt, fig, ax = _axes(3.2)
    ax.scatter([a["general_loss"] for a in attempts], [a["metric_value"] for a in attempts], color="#3b6fb6")
    for a in attempts:
        ax.annotate(
            str(a["index"] + 1), (a["general_loss"], a["metric_value"]), textcoords="offset points", xytext=(4, 4)
        )
    if limit is not None:
        ax.axvline(limit, color="#b3261e", linestyle="--", linewidth=1, label=f"--max-general-drop {limit:g}")
        ax.legend(fontsize=8)
    ax.set_xlabel("general loss: leakage rise + general score drop (points)")
    ax.set_ylabel(f"validation {attempts[0]['metric']}")
    return _png(plt, fig, ax)
