"""Loss curves as PNG bytes (matplotlib, headless)."""

from __future__ import annotations

import io


def loss_curve_png(metrics: list[dict]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")  # no display on servers; must precede pyplot
    import matplotlib.pyplot as plt

    train = [(m["step"], m["train_loss"]) for m in metrics if isinstance(m.get("train_loss"), (int, float))]
    val = [(m["step"], m["eval_loss"]) for m in metrics if isinstance(m.get("eval_loss"), (int, float))]
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=110)
    if train:
        ax.plot(*zip(*train), label="training loss", color="#3b6fb6", linewidth=1.4)
    if val:
        ax.plot(*zip(*val), label="validation loss", color="#d1495b", marker="o", markersize=3.5, linewidth=1.6)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (completion tokens)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
