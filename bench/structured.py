"""Structured outputs on the quickstart's held-out tickets: what json_schema buys the base model and the
fine-tuned adapter, and what constraining costs in tokens/s.

    .venv/bin/python bench/structured.py                 # trains the quickstart first (~5 min on 2 cores)
    .venv/bin/python bench/structured.py --run runs/X    # an existing quickstart run

Each side answers the run's test split through the server's engine (serve/engine.py, the transformers
backend, greedy, batches of 24, max_tokens 128) with and without `response_format: json_schema`
(the tickets' schema, strict, as a user would write it from the system prompt). Scored with the run's
own metric (json_fields: field accuracy, valid-JSON rate, exact match). Tokens/s is generated tokens
over wall time of the same rows, so constrained and unconstrained compare like with like; the
ratio is the constraint's cost.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from environment import save
from rich.console import Console

import tuneloop
from tuneloop.cli import quiet_libraries
from tuneloop.config import load_config
from tuneloop.eval.metrics import score
from tuneloop.runs import RunDir
from tuneloop.serve import Engine, resolve_adapter
from tuneloop.serve.controls import RowControls
from tuneloop.serve.engine import Request

ROOT = Path(__file__).resolve().parents[1]
BATCH, MAX_TOKENS = 24, 128
TICKET_SCHEMA = {
    "type": "object",
    "properties": {
        "category": {"enum": ["billing", "shipping", "returns", "account", "technical", "product_question"]},
        "priority": {"enum": ["low", "medium", "high", "urgent"]},
        "product": {"type": ["string", "null"]},
        "order_id": {"type": ["string", "null"]},
        "refund_requested": {"type": "boolean"},
    },
    "required": ["category", "priority", "product", "order_id", "refund_requested"],
    "additionalProperties": False,
}
FORMAT = {"type": "json_schema", "json_schema": {"name": "ticket", "schema": TICKET_SCHEMA, "strict": True}}


def answer(engine: Engine, model: str, prompts: list[list[int]], constrained: bool) -> tuple[list[str], float, int]:
    grammar = engine.compile_format(FORMAT) if constrained else None
    texts, tokens, t = [], 0, time.perf_counter()
    for i in range(0, len(prompts), BATCH):
        requests = [
            Request(model, p, MAX_TOKENS, temperature=0.0, controls=RowControls(grammar=grammar))
            for p in prompts[i : i + BATCH]
        ]
        for r in engine.generate(requests):
            texts.append(r.text)
            tokens += r.completion_tokens
    return texts, time.perf_counter() - t, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a finished quickstart run (default: train one)")
    args = parser.parse_args()
    quiet_libraries()
    with tempfile.TemporaryDirectory() as tmp:
        if args.run is None:
            config = load_config(ROOT / "examples" / "quickstart" / "quickstart.yaml", ["eval.general=none"])
            config.runs_dir = Path(tmp) / "runs"
            run = RunDir(tuneloop.run(config, console=Console(), evaluate=False).path)
        else:
            run = RunDir(args.run)
        config = run.config()
        engine = Engine(config.model, [resolve_adapter("tuned", str(run.path))])
        test = run.read_split("test")
        prompts = [engine.chat_ids(e.prompt) for e in test]
        references = [e.answer for e in test]
        sides = {}
        for model in (config.model, "tuned"):
            for constrained in (False, True):
                texts, seconds, tokens = answer(engine, model, prompts, constrained)
                metrics, _ = score("json_fields", texts, references)
                name = f"{'base' if model == config.model else 'finetuned'}{'_json_schema' if constrained else ''}"
                sides[name] = {
                    "field_accuracy": round(metrics["field_accuracy"], 4),
                    "valid_json": round(metrics["valid_json"], 4),
                    "exact_match": round(metrics["exact_match"], 4),
                    "seconds": round(seconds, 1),
                    "tokens": tokens,
                    "tokens_per_second": round(tokens / seconds, 1),
                    "example": texts[0],
                }
                print(name, {k: v for k, v in sides[name].items() if k != "example"}, flush=True)
    cost = {
        side: round(sides[f"{side}_json_schema"]["tokens_per_second"] / sides[side]["tokens_per_second"], 3)
        for side in ("base", "finetuned")
    }
    save(
        "structured",
        {
            "run": str(run.path),
            "test_rows": len(test),
            "schema": TICKET_SCHEMA,
            "sides": sides,
            "constrained_over_plain_tokens_per_second": cost,
        },
        extra_packages=("xgrammar",),
    )


if __name__ == "__main__":
    main()
