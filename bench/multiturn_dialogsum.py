"""Does learning every assistant turn help? Multi-turn DialogSum, trained on all turns vs the last one.

    .venv/bin/python bench/multiturn_dialogsum.py     # ~25 min alone on 2 cores; bench/results/multiturn_dialogsum.json

Each DialogSum dev row becomes a two-exchange conversation: the user pastes the dialogue and asks
what it is about (the assistant answers with the topic), then asks for a summary (the summary).
Two SmolLM2-135M runs with the same data, split, seed and settings differ only in
`data.train_on`. Both are then scored on the same validation rows: the loss averaged over all
assistant turns, and over the last turn (the summary) alone; and each run's test split gives
ROUGE-L of the summary, base vs fine-tuned, from `tuneloop run`'s own evaluation.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from environment import save
from rich.console import Console

import tuneloop
from tuneloop.config import config_from_dict
from tuneloop.eval.loss import answer_loss
from tuneloop.runs import RunDir
from tuneloop.runs.sides import load_side

DIALOGSUM = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "dialogsum" / "dev.jsonl"
MAX_DIALOGUE_CHARS = 2000  # keeps every row under max_seq_len; the longest few dialogues are left out (counted)
SETTINGS = {
    "data": {"max_seq_len": 768, "validation_size": 60, "test_size": 60, "seed": 7},
    "lora": {"r": 16, "alpha": 32},
    "train": {"epochs": 1, "learning_rate": 5e-4, "batch_size": 8, "scheduler": "cosine", "warmup_ratio": 0.05},
    "eval": {"batch_size": 16, "max_examples": 40},
}


def conversation(row: dict) -> dict:
    return {
        "messages": [
            {
                "role": "user",
                "content": f"Here is a conversation:\n\n{row['dialogue']}\n\nWhat is it about, in a few words?",
            },
            {"role": "assistant", "content": row["topic"]},
            {"role": "user", "content": "Summarize it in one or two sentences."},
            {"role": "assistant", "content": row["summary"]},
        ]
    }


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="multiturn-"))
    rows = [json.loads(line) for line in DIALOGSUM.read_text(encoding="utf-8").splitlines() if line.strip()]
    kept = [r for r in rows if len(r["dialogue"]) <= MAX_DIALOGUE_CHARS]
    data = work / "dialogsum_multiturn.jsonl"
    data.write_text("".join(json.dumps(conversation(r)) + "\n" for r in kept), encoding="utf-8")
    runs = {}
    for train_on in ("all_assistant", "last_assistant"):
        config = config_from_dict(
            {
                **SETTINGS,
                "runs_dir": str(work / "runs"),
                "run_name": train_on,
                "data": {**SETTINGS["data"], "path": str(data), "train_on": train_on},
            }
        )
        t = time.perf_counter()
        run = tuneloop.run(config, console=Console(stderr=True))
        seconds = time.perf_counter() - t
        rundir = RunDir(run.path)
        validation = rundir.read_split("validation")
        side = load_side(str(run.path), rundir.config())
        losses = {
            scope: answer_loss(
                side.model,
                side.tokenizer,
                validation,
                batch_size=8,
                autocast_dtype=side.precision.autocast_dtype,
                train_on=scope,
            )["loss"]
            for scope in ("all_assistant", "last_assistant")
        }
        evaluation = rundir.evaluation()
        report = rundir.data_report()
        runs[train_on] = {
            "run": run.path.name,
            "seconds": round(seconds, 1),
            "learned_tokens": report["total_trainable_tokens"],
            "validation_rows": len(validation),
            "validation_loss_all_turns": losses["all_assistant"],
            "validation_loss_last_turn": losses["last_assistant"],
            "test_rougeL": {
                "base": evaluation["base"]["metrics"].get("rougeL"),
                "finetuned": evaluation["finetuned"]["metrics"].get("rougeL"),
            },
            "test_rougeL_interval": (evaluation.get("comparison") or {}).get("metrics", {}).get("rougeL"),
        }
        print(json.dumps({train_on: runs[train_on]}, indent=1), flush=True)
    every, last = runs["all_assistant"], runs["last_assistant"]
    save(
        "multiturn_dialogsum",
        {
            "data": {"source": str(DIALOGSUM.name), "rows": len(kept), "left_out_long": len(rows) - len(kept)},
            "settings": SETTINGS,
            "runs": runs,
            "ratios": {
                # < 1: training on every turn gives the lower loss
                "all_turns_loss": every["validation_loss_all_turns"] / last["validation_loss_all_turns"],
                "last_turn_loss": every["validation_loss_last_turn"] / last["validation_loss_last_turn"],
            },
            "bar": "all_turns_loss < 1 and last_turn_loss <= 1.02",
        },
    )


if __name__ == "__main__":
    main()
