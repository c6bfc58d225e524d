"""Does DPO on top of an SFT run help? banking77 intents: SFT, then DPO on the SFT model's own mistakes.

    .venv/bin/python bench/preference_banking77.py   # ~30 min alone, 2 cores; bench/results/preference_banking77.json

Three disjoint sets of banking77 rows: SFT rows, preference rows and held-out rows. SmolLM2-135M
is fine-tuned on the SFT rows (`tuneloop run`). The SFT model then answers the preference rows;
each becomes a pair with the correct intent as chosen and, as rejected, the SFT model's own wrong
answer (a hard negative) or, where it was right, another intent drawn at random. A DPO run
(`train.method: dpo`, `train.init_from` the SFT run) learns from the pairs. Then, as a user
would, the doctor's next config for the DPO run is run once (`follow_the_doctor`). Recorded for
each preference run: validation preference accuracy before and after (run.json), the doctor's
verdict, and held-out accuracy of the SFT parent against it with a paired-bootstrap interval
(`tuneloop compare`).

    .venv/bin/python bench/preference_banking77.py --follow /tmp/preference-XXXX   # the last step alone,
                                                                                   # on an earlier run's folder
"""

from __future__ import annotations

import csv
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from environment import save
from rich.console import Console

import tuneloop
from tuneloop.config import config_from_dict
from tuneloop.models.generate import generate_answers
from tuneloop.runs import RunDir
from tuneloop.runs.sides import load_side

BANKING77 = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "banking77" / "train.csv"
SYSTEM = "Classify the banking customer's message into one intent label. Answer with the label only."
SIZES = {"sft": 1200, "preference": 600, "held_out": 400}
SFT = {"train": {"epochs": 2, "learning_rate": 1e-3, "batch_size": 16}, "eval": {"batch_size": 32, "max_examples": 150}}
DPO = {
    "train": {"method": "dpo", "beta": 0.1, "epochs": 2, "learning_rate": 1e-4, "batch_size": 8},
    "eval": {"batch_size": 32, "max_examples": 150},
}


def chat(text: str, label: str) -> dict:
    return {"messages": [{"role": "user", "content": text}, {"role": "assistant", "content": label}]}


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="preference-"))
    with BANKING77.open(encoding="utf-8") as f:
        rows = [(r["text"], r["category"]) for r in csv.DictReader(f)]
    random.Random(0).shuffle(rows)
    sft_rows = rows[: SIZES["sft"]]
    pref_rows = rows[SIZES["sft"] : SIZES["sft"] + SIZES["preference"]]
    held_out = rows[SIZES["sft"] + SIZES["preference"] : sum(SIZES.values())]
    labels = sorted({label for _, label in rows})
    for name, part in (("sft", sft_rows), ("held_out", held_out)):
        (work / f"{name}.jsonl").write_text("".join(json.dumps(chat(t, c)) + "\n" for t, c in part))
    common = {"runs_dir": str(work / "runs"), "lora": {"r": 16, "alpha": 32}}
    data = {"system_prompt": SYSTEM, "max_seq_len": 256, "dedup": "exact"}

    t = time.perf_counter()
    sft = tuneloop.run(
        config_from_dict({**common, **SFT, "run_name": "sft", "data": {**data, "path": str(work / "sft.jsonl")}}),
        console=Console(stderr=True),
    )
    sft_seconds = time.perf_counter() - t

    # The SFT model's own answers on the preference rows: its mistakes are the rejected answers.
    side = load_side(str(sft.path), RunDir(sft.path).config())
    prompts = [[{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}] for text, _ in pref_rows]
    answers = generate_answers(
        side.model,
        side.tokenizer,
        prompts,
        max_new_tokens=16,
        batch_size=32,
        autocast_dtype=side.precision.autocast_dtype,
    )
    rng = random.Random(1)
    pairs, hard = [], 0
    for (text, label), answer in zip(pref_rows, answers):
        wrong = answer.strip()
        if wrong and wrong != label:
            hard += 1
        else:
            wrong = rng.choice([x for x in labels if x != label])
        pairs.append({"prompt": text, "chosen": label, "rejected": wrong})
    (work / "prefs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    del side

    t = time.perf_counter()
    dpo_config = {
        **common,
        **DPO,
        "run_name": "dpo",
        "data": {**data, "path": str(work / "prefs.jsonl")},
        "train": {**DPO["train"], "init_from": str(sft.path)},
    }
    dpo = tuneloop.run(config_from_dict(dpo_config), console=Console(stderr=True))
    dpo_seconds = time.perf_counter() - t

    result = {
        "data": {**SIZES, "labels": len(labels), "hard_negatives": hard, "random_negatives": len(pairs) - hard},
        "settings": {"sft": SFT, "dpo": DPO},
        "work": str(work),
        "sft": {
            "run": sft.path.name,
            "seconds": round(sft_seconds, 1),
            "test": RunDir(sft.path).evaluation()["finetuned"]["metrics"].get("accuracy"),
        },
        "dpo": {**preference_run(sft.path, dpo.path, work), "seconds": round(dpo_seconds, 1)},
    }
    save("preference_banking77", result)
    follow_the_doctor(work)


CHANGED = ("beta", "learning_rate", "epochs", "sft_weight")


def preference_run(sft_path: Path, run_path: Path, work: Path) -> dict:
    """What a preference run did: its preference accuracy, the doctor's verdict, and held-out accuracy
    against its SFT parent."""
    comparison = tuneloop.compare(
        str(sft_path), str(run_path), data=work / "held_out.jsonl", console=Console(stderr=True)
    )
    accuracy = comparison.result["metrics"]["accuracy"]
    diagnosis = tuneloop.diagnose(run_path)
    return {
        "run": run_path.name,
        "train": {k: v for k, v in RunDir(run_path).config().train.model_dump(mode="json").items() if k in CHANGED},
        "validation_preference_accuracy": RunDir(run_path).info().get("preference_accuracy"),
        "verdict": diagnosis.verdict,
        "recommended": {r.param: r.to for r in diagnosis.recommendations if r.applied},
        "held_out_accuracy": {
            "n": comparison.result["n"],
            "sft": accuracy["a"],
            "preference_run": accuracy["b"],
            "difference": accuracy["difference"],
            "ci95": accuracy["ci"],
            "p_value": accuracy["p_value"],
            "mcnemar": comparison.result.get("mcnemar"),
        },
    }


def follow_the_doctor(work: Path) -> None:
    """Run the doctor's next config for the DPO run once, and record it beside the first."""
    path = Path(__file__).resolve().parent / "results" / "preference_banking77.json"
    result = json.loads(path.read_text())
    runs = work / "runs"
    sft = runs / result["sft"]["run"]
    dpo = runs / result["dpo"]["run"]
    if "held_out_accuracy" in result:  # recorded before preference_run() existed: measure it the same way
        result["dpo"] = {**preference_run(sft, dpo, work), "seconds": result["dpo"]["seconds"]}
        del result["held_out_accuracy"]
    next_config = tuneloop.diagnose(dpo).next_config
    next_config.update(run_name="dpo-next", runs_dir=str(runs))
    t = time.perf_counter()
    follow = tuneloop.run(config_from_dict(next_config), console=Console(stderr=True))
    seconds = round(time.perf_counter() - t, 1)
    record = {k: v for k, v in result.items() if k not in ("benchmark", "date", "git_commit", "hardware", "packages")}
    record["doctor_follow_up"] = {**preference_run(sft, follow.path, work), "seconds": seconds}
    save("preference_banking77", record)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--follow"]:
        follow_the_doctor(Path(sys.argv[2]))
    else:
        main()
