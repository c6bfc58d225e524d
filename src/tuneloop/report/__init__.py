"""The run report: one self-contained HTML file (plots embedded, no network)."""

from tuneloop.report.html import render_report, write_run_report
from tuneloop.report.plots import loss_curve_png

__all__ = ["loss_curve_png", "render_report", "write_run_report"]
