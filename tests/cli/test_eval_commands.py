"""End to end: tuneloop eval, compare, rate, ratings and models compare on the tiny model."""

import json

import pytest

from conftest import SHARED, tuneloop, write_jsonl, write_tickets


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model):
    work = tmp_path_factory.mktemp("evalcmd")
    write_tickets(work / "d.jsonl", 60)
    (work / "c.yaml").write_text(
        f"model: {tiny_model}\ndata: {{path: d.jsonl, max_seq_len: 256}}\n"
        "train: {epochs: 2, batch_size: 8, learning_rate: 2.0e-2}\n"
    )
    result = tuneloop("train", "c.yaml", cwd=work)
    assert result.returncode == 0, result.stdout + result.stderr
    [run] = (work / "runs").iterdir()
    return work, run


def test_eval_writes_per_example_results(trained):
    work, run = trained
    result = tuneloop("eval", str(run), "--max-examples", "4", cwd=work)
    assert result.returncode == 0, result.stdout + result.stderr
    record = json.loads((run / "evals" / "test.json").read_text())
    assert record["metric"] == "json_fields" and record["n"] == 9 and len(record["examples"]) == 4
    assert {"loss", "perplexity", "field_accuracy", "valid_json"} <= record["metrics"].keys()
    assert {"prompt", "reference", "output", "valid_json"} <= record["examples"][0].keys()


def test_eval_on_other_data_with_a_chosen_metric(trained):
    work, run = trained
    write_tickets(work / "extra.jsonl", 3, start=100)
    result = tuneloop(
        "eval", str(run), "--data", "extra.jsonl", "--metric", "exact_match", "--sample", "--seed", "3", cwd=work
    )
    assert result.returncode == 0, result.stdout + result.stderr
    record = json.loads((run / "evals" / "extra.json").read_text())
    assert record["metric"] == "exact_match" and record["n"] == 3 and record["eval_config"]["sample"] is True


def test_eval_measures_what_the_fine_tune_cost_at_a_scale(trained):
    work, run = trained
    quiz = [{"question": f"{i} plus 1?", "choices": ["one", "two", "three"], "answer": i % 3} for i in range(6)]
    write_jsonl(work / "quiz.jsonl", quiz)
    args = ("eval", str(run), "--max-examples", "2", "--general", "quiz.jsonl", "--scale", "0.5")
    result = tuneloop(*args, cwd=work)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "what the fine-tune cost the model" in result.stdout and "quiz acc_norm" in result.stdout
    record = json.loads((run / "evals" / "test-scale0.5.json").read_text())
    assert record["scale"] == 0.5 and record["general"]["sets"]["quiz"]["acc"]["n"] == 6
    assert record["general"]["leakage"]["n"] == 40 and record["general"]["drift"]["n"] == 40
    bad = tuneloop("eval", str(run), "--general", "nowhere.jsonl", cwd=work)
    assert bad.returncode == 2 and "nowhere.jsonl: no such file" in bad.stderr
    # a `train` run has no eval.json: --scale auto cannot be read from it, and says why
    auto = tuneloop("export", str(run), "--scale", "auto", cwd=work)
    assert auto.returncode == 2 and "--scale auto needs a finished run's eval.json" in auto.stderr


def test_eval_bad_data_names_file_row_and_field(trained):
    work, run = trained
    (work / "bad.jsonl").write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    result = tuneloop("eval", str(run), "--data", "bad.jsonl", cwd=work)
    assert result.returncode == 2 and "bad.jsonl:1" in result.stderr


def test_compare_base_then_rate_and_rank(trained, tiny_model):
    work, run = trained
    result = tuneloop(
        "compare", "base", str(run), "--max-examples", "4", "--resamples", "200", "--judge", str(tiny_model), cwd=work
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "95% interval" in result.stdout and "McNemar" in result.stdout and "per example" in result.stdout
    [record_file] = (run / "compare").iterdir()
    record = json.loads(record_file.read_text())
    assert record["a"] == "base" and record["b"] == run.name and record["n"] == 4
    assert record["wins"] + record["ties"] + record["losses"] == 4
    assert len(record["judge"]["pairs"]) == 4 and "both orders agreed" in result.stdout

    result = tuneloop("rate", str(record_file), "--runs-dir", "runs", cwd=work, stdin="1\nclearer\nt\n\nq\n")
    assert result.returncode == 0, result.stdout + result.stderr
    ratings = [json.loads(x) for x in (work / "runs" / "ratings.jsonl").read_text().splitlines()]
    assert [r["winner"] for r in ratings][1:] == ["tie"] and ratings[0]["comment"] == "clearer"
    assert ratings[0]["winner"] == ("a" if ratings[0]["shown_first"] == "a" else "b")  # "1" = the one shown first
    result = tuneloop("ratings", "show", "runs", cwd=work)
    assert result.returncode == 0 and "Bradley" in result.stdout and "2 ratings" in result.stdout
    # The non-tie rating becomes a preference pair that `tuneloop data` reads as such.
    result = tuneloop("ratings", "export", "runs", "-o", "prefs.jsonl", cwd=work)
    assert result.returncode == 0 and "1 preference pairs" in result.stdout and "1 ties" in result.stdout
    [pair] = [json.loads(x) for x in (work / "prefs.jsonl").read_text().splitlines()]
    winner = ratings[0]["winner"]
    assert pair["chosen"] == ratings[0][f"output_{winner}"] and pair["prompt"] == ratings[0]["prompt"]
    result = tuneloop("data", "check", "prefs.jsonl", "--no-tokens", cwd=work)
    assert "format preference" in result.stdout


def test_compare_needs_a_run(trained):
    work, _ = trained
    result = tuneloop("compare", "base", "base", cwd=work)
    assert result.returncode == 2 and "at least one side must be a run" in result.stderr


def test_models_compare(tmp_path, tiny_model, smollm2_folder):
    from tuneloop.models.tiny import build_tiny_model

    other = build_tiny_model(tmp_path / "other", smollm2_folder, seed=1, hidden=32)
    rows = [json.loads(line) for line in (SHARED / "gsm8k" / "train.jsonl").read_text().splitlines()[:6]]
    write_jsonl(tmp_path / "g.jsonl", [{"prompt": r["question"], "completion": r["answer"]} for r in rows])
    out = tmp_path / "m.json"
    result = tuneloop(
        "models",
        "compare",
        str(tiny_model),
        str(other),
        "--data",
        "g.jsonl",
        "--show",
        "2",
        "--max-new-tokens",
        "4",
        "--out",
        str(out),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    record = json.loads(out.read_text())
    assert [m["model"] for m in record["models"]] == [str(tiny_model), str(other)]
    for m in record["models"]:
        assert m["zero_shot_loss"] > 5 and len(m["answers"]) == 2 and m["seconds_per_prompt"] > 0
    assert record["models"][0]["parameters"] > record["models"][1]["parameters"]  # hidden 64 vs 32
    too_many = tuneloop("models", "compare", *[str(tiny_model)] * 6, "--data", "g.jsonl", cwd=tmp_path)
    assert too_many.returncode == 2 and "1 to 5 models" in too_many.stderr


def test_full_fine_tune_evaluates_and_exports(tmp_path, tiny_model):
    write_tickets(tmp_path / "d.jsonl", 40)
    (tmp_path / "f.yaml").write_text(
        f"model: {tiny_model}\ndata: {{path: d.jsonl, max_seq_len: 256}}\n"
        "train: {method: full, epochs: 1, batch_size: 8, learning_rate: 1.0e-3}\n"
    )
    assert tuneloop("train", "f.yaml", cwd=tmp_path).returncode == 0
    [run] = (tmp_path / "runs").iterdir()
    assert (run / "model").is_dir() and not (run / "adapter").exists()
    result = tuneloop("eval", str(run), "--max-examples", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads((run / "evals" / "test.json").read_text())["n"] == 6
    refused = tuneloop("export", str(run), "--scale", "0.5", cwd=tmp_path)
    assert refused.returncode == 2 and "LoRA adapters" in refused.stderr
    exported = tuneloop("export", str(run), cwd=tmp_path)
    assert exported.returncode == 0, exported.stdout + exported.stderr
    assert (run / "export" / "merged" / "config.json").is_file()


def test_compare_two_runs_on_the_same_split(trained):
    work, run = trained
    (work / "c2.yaml").write_text(
        (work / "c.yaml").read_text().replace("learning_rate: 2.0e-2", "learning_rate: 5.0e-3")
    )
    assert tuneloop("train", "c2.yaml", cwd=work).returncode == 0
    [other] = (work / "runs").glob("c2-*")
    result = tuneloop("compare", str(run), str(other), "--max-examples", "3", "--resamples", "100", cwd=work)
    assert result.returncode == 0, result.stdout + result.stderr
    record = json.loads(next((other / "compare").iterdir()).read_text())
    assert (record["a"], record["b"], record["n"]) == (run.name, other.name, 3)

    write_tickets(work / "e.jsonl", 60, start=200)
    (work / "c3.yaml").write_text((work / "c.yaml").read_text().replace("d.jsonl", "e.jsonl"))
    assert tuneloop("train", "c3.yaml", cwd=work).returncode == 0
    [third] = (work / "runs").glob("c3-*")
    mismatch = tuneloop("compare", str(run), str(third), cwd=work)
    assert mismatch.returncode == 2 and "different test splits" in mismatch.stderr and "--data" in mismatch.stderr
