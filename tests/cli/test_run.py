"""End to end: the real `tuneloop run` command on the tiny model."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import QUICKSTART, SHARED, tuneloop, write_jsonl, write_tickets
from tuneloop.runs import RunDir


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_model):
    work = tmp_path_factory.mktemp("e2e")
    write_tickets(work / "tickets.jsonl", 60)
    (work / "tiny.yaml").write_text(f"""
model: {tiny_model}
data: {{path: tickets.jsonl, max_seq_len: 256}}
lora: {{r: 8, alpha: 16}}
train: {{epochs: 4, learning_rate: 2.0e-2, batch_size: 8, log_every: 1, eval_every: 3}}
eval: {{max_new_tokens: 8, batch_size: 16}}
""")
    result = tuneloop("run", "tiny.yaml", "--set", "train.warmup_ratio=0.0", cwd=work)
    assert result.returncode == 0, result.stdout + result.stderr
    [run] = (work / "runs").iterdir()
    return run, result


def test_run_directory_contract(finished_run):
    run, _ = finished_run
    for name in (
        "config.yaml",
        "metrics.jsonl",
        "eval.json",
        "report.html",
        "run.json",
        "adapter/adapter_config.json",
        "data/train.jsonl",
        "data/validation.jsonl",
        "data/test.jsonl",
    ):
        assert (run / name).is_file(), name
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "finished" and info["split_sizes"] == {"train": 45, "validation": 6, "test": 9}
    config = (run / "config.yaml").read_text()
    assert "eval_every: 3" in config and "warmup_ratio: 0.0" in config and "precision: " in config


def test_metrics_stream_and_training_loss_falls(finished_run):
    run, _ = finished_run
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if "train_loss" in r]
    evals = [r for r in records if "eval_loss" in r]
    assert all({"step", "epoch"} <= r.keys() for r in records)
    assert len(train) >= 10 and len(evals) >= 3
    assert all("learning_rate" in r and "grad_norm" in r and r["tokens_per_second"] > 0 for r in train)
    first, last = sum(r["train_loss"] for r in train[:3]) / 3, sum(r["train_loss"] for r in train[-3:]) / 3
    assert last < first - 1.0, (first, last)  # a random 2-layer model starts at ln(49152) = 10.8
    assert evals[-1]["eval_loss"] < evals[0]["eval_loss"]


def test_eval_and_report(finished_run):
    run, result = finished_run
    evaluation = json.loads((run / "eval.json").read_text())
    assert evaluation["metric"] == "json_fields" and evaluation["n_test"] == 9
    assert evaluation["finetuned"]["metrics"]["loss"] < evaluation["base"]["metrics"]["loss"]
    assert len(evaluation["examples"]) == 9 and {"base", "finetuned", "reference"} <= evaluation["examples"][0].keys()
    report = (run / "report.html").read_text()
    assert "data:image/png;base64," in report and "fine-tuned" in report and "http" not in report.split("<body>")[1]
    assert "field_accuracy" in result.stdout and "report:" in result.stdout


def test_continuous_evaluation_logs_the_task_metric_next_to_the_loss(finished_run):
    run, _ = finished_run
    evals = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if "eval_loss" in line]
    scored = [r for r in evals if "eval_field_accuracy" in r]
    assert scored[0] is evals[0] and scored[-1] is evals[-1]  # the first and the last are always scored
    assert all(0 <= r["eval_field_accuracy"] <= 1 and r["eval_field_accuracy_se"] >= 0 for r in scored)
    assert all(r["eval_loss_se"] > 0 for r in evals)
    info = json.loads((run / "run.json").read_text())
    ce = info["continuous_evaluation"]
    assert ce["metric"] == "json_fields" and ce["rows"] == 6 and ce["scored_steps"][-1] == evals[-1]["step"]
    assert ce["seconds"] > 0 and ce["share_of_training"] > 0
    assert info["selected_by"] == "eval_field_accuracy" and info["best_checkpoint_step"] in ce["scored_steps"]
    config = (run / "config.yaml").read_text()
    assert "max_new_tokens: 8" in config  # the config's own value; auto is resolved from the answers (test_engine)


def test_the_run_ends_with_the_doctor_and_a_ready_next_config(finished_run, tmp_path):
    run, result = finished_run
    assert "doctor: " in result.stdout and "next: tuneloop run " in result.stdout
    assert "keep the weights from step" in result.stdout
    report = (run / "report.html").read_text()
    assert "<h2>The doctor: " in report and "est. training minutes" in report
    assert report.index("The doctor:") > report.index("Timings")  # at the end, where the reader decides
    import yaml

    from tuneloop.config import config_from_dict, get_key

    diagnosis = json.loads(tuneloop("diagnose", str(run), "--json", cwd=tmp_path).stdout)
    assert diagnosis["recommendations"] and all("minutes" in r for r in diagnosis["recommendations"])
    # next.yaml is the run's config with exactly the applied recommendations, and a valid config
    now, nxt = (yaml.safe_load((run / name).read_text()) for name in ("config.yaml", "next.yaml"))
    applied = {r["param"]: r["to"] for r in diagnosis["recommendations"] if r["applied"]}
    assert applied and all(get_key(nxt, k) == v for k, v in applied.items())
    assert all(get_key(now, k) != v for k, v in applied.items())
    config_from_dict(nxt)


def test_adapter_loads_with_peft(finished_run, tiny_model):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    run, _ = finished_run
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), run / "adapter")
    assert any("lora_A" in name for name, _ in model.named_parameters())


def test_bad_data_fails_with_file_row_and_field(tmp_path, tiny_model):
    data = tmp_path / "d.jsonl"
    good = json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})
    bad = json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ""}]})
    data.write_text("\n".join([good] * 5 + [bad] + [good] * 10) + "\n")
    before = data.read_bytes()
    (tmp_path / "c.yaml").write_text(f"model: {tiny_model}\ndata: {{path: d.jsonl}}\n")
    result = tuneloop("run", "c.yaml", cwd=tmp_path)
    assert result.returncode == 2
    assert f"{data}:6: messages[1].content: is empty [empty_content]" in result.stderr
    assert "Traceback" not in result.stderr
    assert data.read_bytes() == before and not (tmp_path / "runs").exists()


def test_bad_config_fails_with_did_you_mean(tmp_path):
    (tmp_path / "c.yaml").write_text("data: {path: d.jsonl}\ntrain: {epoch: 2}\n")
    result = tuneloop("run", "c.yaml", cwd=tmp_path)
    assert result.returncode == 2 and "train.epoch: unknown key (did you mean 'epochs'?)" in result.stderr


@pytest.mark.slow
def test_quickstart_on_smollm2(tmp_path):
    """The README's main job: fine-tuned clearly beats the base model on the test split (minutes)."""
    runs = tmp_path / "runs"
    # ~6.5 min on 2 cores (its adapter scale curve included), ~9 with a first calibration: room for both
    result = tuneloop(
        "run", str(QUICKSTART / "quickstart.yaml"), "--set", f"runs_dir={runs}", cwd=tmp_path, timeout=1500
    )
    assert result.returncode == 0, result.stdout + result.stderr
    [run] = runs.iterdir()
    evaluation = json.loads((run / "eval.json").read_text())
    base, tuned = evaluation["base"]["metrics"], evaluation["finetuned"]["metrics"]
    assert tuned["field_accuracy"] >= base["field_accuracy"] + 0.5
    assert tuned["loss"] < 0.5 * base["loss"]
    # The other side of the balance: after one epoch the adapter answers most generic prompts in JSON
    # (36 of 40 in bench/results/balance.json; the base model 1), and the doctor says so, with the cure.
    leakage = evaluation["general"]["leakage"]
    assert leakage["finetuned"] >= 0.5 and leakage["low"] > 0 and leakage["base"] <= 0.1
    assert [p["scale"] for p in evaluation["scale_curve"]["points"]] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert "behaviour leakage" in result.stdout and "data.replay" in result.stdout
    assert "replay: 0.2" in (run / "next.yaml").read_text()


def test_run_on_csv_columns_with_dedup_and_stratified_labels(tmp_path, tiny_model):
    """banking77's CSV through a column mapping: duplicates logged, labels stratified, exact-match metric."""
    import csv

    with open(SHARED / "banking77" / "train.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    rows = [r for r in rows if r["category"] == "card_arrival"][:40] + [
        r for r in rows if r["category"] == "exchange_rate"
    ][:40]
    rows.append(rows[7])  # an exact copy: must be dropped and listed
    with open(tmp_path / "b.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, ["text", "category"])
        w.writeheader()
        w.writerows(rows)
    (tmp_path / "c.yaml").write_text(f"""
model: {tiny_model}
data:
  path: b.csv
  columns: {{prompt: "{{text}}", completion: "{{category}}"}}
  system_prompt: Classify the intent.
  test_size: 20
  max_seq_len: 128
train: {{epochs: 1, batch_size: 16, learning_rate: 1.0e-2}}
eval: {{max_new_tokens: 4}}
""")
    result = tuneloop("run", "c.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    [run] = (tmp_path / "runs").iterdir()
    dropped = [json.loads(line) for line in (run / "data" / "dropped.jsonl").read_text().splitlines()]
    assert {
        "file": str(tmp_path / "b.csv"),
        "row": 81,
        "reason": "exact_duplicate",
        "duplicate_of": {"file": str(tmp_path / "b.csv"), "row": 8},
        "similarity": 1.0,
    } in dropped
    report = json.loads((run / "data" / "report.json").read_text())
    assert report["format"] == "columns" and report["splits"]["test"] == 20
    assert set(report["labels_by_split"]["test"]) == {"card_arrival", "exchange_rate"}
    train_row = json.loads((run / "data" / "train.jsonl").read_text().splitlines()[0])
    assert train_row["messages"][0] == {"role": "system", "content": "Classify the intent."} and "label" in train_row
    evaluation = json.loads((run / "eval.json").read_text())
    assert evaluation["metric"] == "classification"  # labelled data: accuracy, per-class F1, confusion matrix
    assert {"accuracy", "macro_f1", "f1/card_arrival", "f1/exchange_rate"} <= evaluation["finetuned"]["metrics"].keys()
    assert evaluation["confusion"]["finetuned"]["labels"][:2] == ["card_arrival", "exchange_rate"]
    assert sum(map(sum, evaluation["confusion"]["finetuned"]["matrix"])) == 20
    assert "mcnemar" in evaluation["comparison"] and "accuracy" in evaluation["comparison"]["metrics"]
    report = (run / "report.html").read_text()
    assert "token length histogram" in report and "Confusion matrix" in report and "McNemar" in report


def test_run_on_plain_text_reports_loss_and_perplexity(tmp_path, tiny_model):
    dialogues = [
        json.loads(line)["summary"] for line in (SHARED / "dialogsum" / "dev.jsonl").read_text().splitlines()[:40]
    ]
    write_jsonl(tmp_path / "t.jsonl", [{"text": d} for d in dialogues])
    (tmp_path / "c.yaml").write_text(
        f"model: {tiny_model}\ndata: {{path: t.jsonl, max_seq_len: 256}}\ntrain: {{epochs: 1, batch_size: 8}}\n"
    )
    result = tuneloop("run", "c.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    [run] = (tmp_path / "runs").iterdir()
    evaluation = json.loads((run / "eval.json").read_text())
    assert evaluation["metric"] == "loss" and evaluation["examples"] == []
    assert evaluation["finetuned"]["metrics"]["perplexity"] > 1


def test_resume_command_continues_a_stopped_run(tmp_path, tiny_model):
    from rich.console import Console
    from transformers import TrainerCallback

    from tuneloop.config import config_from_dict
    from tuneloop.pipeline import run_loop

    class StopAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 5:
                raise KeyboardInterrupt

    write_tickets(tmp_path / "t.jsonl", 40)
    config = config_from_dict(
        {
            "model": str(tiny_model),
            "runs_dir": str(tmp_path / "runs"),
            "run_name": "r",
            "data": {"path": str(tmp_path / "t.jsonl"), "max_seq_len": 256},
            "train": {"epochs": 2, "batch_size": 4, "eval_every": 2},
            "eval": {"max_new_tokens": 4},
        }
    )
    with pytest.raises(KeyboardInterrupt):
        run_loop(config, Console(quiet=True), callbacks=[StopAt()])
    [run] = (tmp_path / "runs").iterdir()
    result = tuneloop("resume", str(run), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "from step 4" in result.stdout and json.loads((run / "run.json").read_text())["status"] == "finished"
    again = tuneloop("resume", str(run), cwd=tmp_path)
    assert again.returncode == 2 and "has finished; nothing to resume" in again.stderr


@pytest.fixture(scope="module")
def train_config(tmp_path_factory, tiny_model):
    work = tmp_path_factory.mktemp("train")
    write_tickets(work / "t.jsonl", 60)
    (work / "c.yaml").write_text(
        f"model: {tiny_model}\ndata: {{path: t.jsonl, max_seq_len: 256}}\n"
        "train: {epochs: 2, batch_size: 4, eval_every: 3, learning_rate: 1.0e-2}\n"
    )
    return work


def test_train_command_trains_without_evaluating(train_config):
    result = tuneloop("train", "c.yaml", "--set", "runs_dir=single", cwd=train_config)
    assert result.returncode == 0, result.stdout + result.stderr
    [run] = (train_config / "single").iterdir()
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "trained" and info["processes"] == 1 and not (run / "eval.json").exists()
    assert (run / "adapter" / "adapter_config.json").exists() and "not evaluated yet" in (
        run / "report.html"
    ).read_text()
    assert "trained: best validation loss" in result.stdout


def test_train_runs_distributed_with_two_processes(train_config):
    """The real data-parallel path (gloo on CPU), as accelerate launch runs it on GPUs."""
    import shutil

    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    result = subprocess.run(
        [torchrun, "--nproc_per_node", "2", "-m", "tuneloop.cli", "train", "c.yaml", "--set", "runs_dir=ddp"],
        cwd=train_config,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    [run] = (train_config / "ddp").iterdir()  # one run directory, written by the main process only
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "trained" and info["processes"] == 2
    single = json.loads(next((train_config / "single").iterdir()).joinpath("run.json").read_text())
    train_steps = [r["step"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]
    assert max(train_steps) == 12  # 45 rows, batch 4 on each of 2 processes, 2 epochs: half the steps
    assert single["split_sizes"] == info["split_sizes"]
    losses = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    first = next(r["train_loss"] for r in losses if "train_loss" in r)
    assert 9 < first < 12  # the whole-batch mean, not one process's share (ln 49152 = 10.8 at the start)


def test_diagnose_a_run_and_a_bare_metrics_file(finished_run, tmp_path):
    run, _ = finished_run
    result = tuneloop("diagnose", str(run), "--json", "--plot", str(tmp_path / "c.png"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    d = json.loads(result.stdout)
    assert d["verdict"] in ("healthy", "overfitting", "underfitting", "diverging", "undertrained")
    assert {"verdict", "findings", "recommendations", "next_config"} <= d.keys()
    assert all({"kind", "evidence", "confidence"} <= f.keys() for f in d["findings"])
    assert all({"param", "from", "to", "why"} <= r.keys() for r in d["recommendations"])
    assert d["next_config"]["train"]["epochs"] > 0 and (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    # A bare metrics.jsonl: the hyperparameters are unknown, so no next_config
    (tmp_path / "m.jsonl").write_text((run / "metrics.jsonl").read_text())
    bare = json.loads(tuneloop("diagnose", str(tmp_path / "m.jsonl"), "--json", cwd=tmp_path).stdout)
    # (the run directory's verdict may differ: it also weighs eval.json's base-vs-fine-tuned test results)
    from tuneloop.doctor import diagnose_metrics

    curves_only = diagnose_metrics(RunDir(run).read_metrics())
    assert bare["verdict"] == curves_only.verdict and bare["next_config"] is None
    human = tuneloop("diagnose", str(run), cwd=tmp_path)
    assert d["verdict"] in human.stdout and "train " in human.stdout
    missing = tuneloop("diagnose", str(tmp_path / "nowhere"), cwd=tmp_path)
    assert missing.returncode == 2 and "no metrics.jsonl" in missing.stderr


@pytest.mark.slow
def test_doctor_verdicts_on_real_training(tmp_path, tiny_model):
    """Deliberately broken runs on the tiny model get the right verdicts (about 2 minutes)."""
    from rich.console import Console

    from tuneloop.config import config_from_dict
    from tuneloop.doctor import diagnose_path
    from tuneloop.pipeline import run_loop

    rows = QUICKSTART.joinpath("tickets.jsonl").read_text().splitlines()
    cases = {  # verdict: (rows, train settings)
        "overfitting": (40, {"method": "full", "epochs": 30, "learning_rate": 3e-3, "batch_size": 4}),
        "underfitting": (80, {"epochs": 2, "learning_rate": 1e-7, "batch_size": 4}),
        "diverging": (80, {"method": "full", "epochs": 2, "learning_rate": 5.0, "batch_size": 4, "max_grad_norm": 1e6}),
        "healthy": (160, {"epochs": 3, "learning_rate": 2e-2, "batch_size": 8}),
    }
    for verdict, (n, train) in cases.items():
        write_jsonl(tmp_path / f"{verdict}.jsonl", rows[:n])
        config = config_from_dict(
            {
                "model": str(tiny_model),
                "runs_dir": str(tmp_path / verdict),
                "run_name": verdict,
                "data": {"path": str(tmp_path / f"{verdict}.jsonl"), "max_seq_len": 256},
                # The curves alone: with the task metric on, the doctor rightly calls the
                # "healthy" tiny run capacity-limited (it never writes valid JSON).
                "train": {"log_every": 1, "warmup_ratio": 0.0, "metric_rows": 0, **train},
            }
        )
        result = run_loop(config, Console(quiet=True), evaluate=False)
        diagnosis, _ = diagnose_path(result.run.path)
        assert diagnosis.verdict == verdict, [f.message for f in diagnosis.findings]
