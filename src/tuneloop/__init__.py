"""tuneloop: a local-first workbench for fine-tuning LLMs.

The loop, one package per stage: data -> models -> train -> eval -> report, joined by the
run directory (tuneloop.runs). `tuneloop.pipeline.run_loop` runs it end to end.
"""

__version__ = "0.1.0"
