"""The dashboard's pages and actions over a real run store (tiny model), through FastAPI's test client."""

import json
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from tuneloop.ui import create_app


@pytest.fixture()
def client(ui_store):
    work, _ = ui_store
    launched = []
    app = create_app(work / "runs", presets=[work / "preset.yaml"], launcher=launched.append, hosts={"testserver"})
    client = TestClient(app)
    client.csrf = app.state.guard.csrf
    client.launched = launched
    return client


def test_runs_list_filters_and_sorts(client, ui_store):
    _, runs = ui_store
    page = client.get("/").text
    assert page.count("run-row") == 2 and "best val loss" in page and "underfitting" in page
    assert client.get("/", params={"q": "slow"}).text.count("run-row") == 1
    assert client.get("/", params={"status": "failed"}).text.count("run-row") == 0
    ordered = client.get("/", params={"sort": "best_val_loss", "desc": 0}).text
    assert ordered.index(runs["good"].name) < ordered.index(runs["slow"].name)
    summaries = client.get("/api/runs").json()
    assert {s["verdict"] for s in summaries} >= {"underfitting"} and all(s["status"] == "finished" for s in summaries)


def test_run_page_has_curves_doctor_evaluation_and_data(client, ui_store):
    _, runs = ui_store
    page = client.get(f"/runs/{runs['slow'].name}").text
    for needle in (
        'id="loss"',
        'id="metric"',
        "task metric:",
        "/static/plotly.min.js",
        "underfitting",
        "launch the recommended next run",
        "est. training minutes",
        "keep the weights from step",
        "Test split: base vs fine-tuned",
        "interval of the change",
        "Data",
        "learning_rate",
    ):
        assert needle in page, needle
    api = client.get(f"/api/runs/{runs['slow'].name}").json()
    assert api["status"] == "finished" and any("eval_loss" in m for m in api["metrics"])
    assert any("eval_field_accuracy" in m for m in api["metrics"])  # continuous evaluation, for the metric chart
    assert client.get("/static/plotly.min.js").headers["content-type"].startswith("application/javascript")


def test_run_page_shows_what_the_fine_tune_cost(client, ui_store):
    _, runs = ui_store
    evaluation = json.loads((runs["good"] / "eval.json").read_text())
    page = client.get(f"/runs/{runs['good'].name}").text
    assert "What the fine-tune cost the model" in page and "Generic prompts side by side" in page
    assert "general score: acc_norm over 120 items" in page and "What is the capital of France?" in page
    assert ('id="scale"' in page) == ("scale_curve" in evaluation)  # drawn exactly when it was measured


def test_unknown_runs_are_404s(client):
    assert client.get("/runs/nope").status_code == 404
    assert client.get("/api/runs/..").status_code == 404


def test_launch_the_recommended_next_run(client, ui_store):
    work, runs = ui_store
    response = client.post(f"/runs/{runs['slow'].name}/next", data={"csrf": client.csrf}, follow_redirects=False)
    assert response.status_code == 303
    [config_file] = client.launched
    config = yaml.safe_load(config_file.read_text())
    assert config["train"]["learning_rate"] == 2e-4  # the doctor's jump to the guides' usual LoRA value
    assert config["runs_dir"] == str((work / "runs").resolve())


def test_compare_overlays_diffs_and_tests_significance(client, ui_store):
    _, runs = ui_store
    page = client.get("/compare", params=[("run", runs["good"].name), ("run", runs["slow"].name)]).text
    assert "Config differences" in page and "train.learning_rate" in page and "vs " in page
    assert "], p " in page  # a bootstrap interval and p-value against the first run
    assert "pick 2 to 5 runs" in client.get("/compare", params=[("run", runs["good"].name)]).text


def test_rating_round_trip(client, ui_store):
    work, runs = ui_store
    run = runs["good"].name
    page = client.get("/rate", params={"run": run}).text
    assert 'id="answer-1"' in page and "Answer 2" in page
    token = page.split('name="token" value="')[1].split('"')[0]
    response = client.post(
        "/rate", data={"token": token, "choice": "2", "comment": "tidier", "csrf": client.csrf}, follow_redirects=False
    )
    assert response.status_code == 303
    [rating] = [json.loads(x) for x in (work / "runs" / "ratings.jsonl").read_text().splitlines()]
    flipped = token.endswith("|1")
    assert rating["winner"] == ("a" if flipped else "b") and rating["comment"] == "tidier"
    assert rating["model_a"] == "base" and rating["model_b"] == run
    assert "1 ratings" in client.get("/rate").text
    assert client.post("/rate", data={"token": "nope|0|0", "choice": "1", "csrf": client.csrf}).status_code in (
        400,
        404,
    )


def test_launch_form_validates_and_launches(client, ui_store):
    work, _ = ui_store
    page = client.get("/launch").text
    assert "train.learning_rate" in page and "LoRA: 1e-4 to 1e-3" in page  # the guides' hint beside the field
    bad = client.post(
        "/launch", data={"preset": str(work / "preset.yaml"), "train.learning_rate": "-1", "csrf": client.csrf}
    )
    assert "greater than 0" in bad.text and not client.launched
    ok = client.post(
        "/launch",
        data={"preset": str(work / "preset.yaml"), "train.epochs": "3", "lora.r": "4", "csrf": client.csrf},
        follow_redirects=False,
    )
    assert ok.status_code == 303
    config = yaml.safe_load(client.launched[0].read_text())
    assert config["train"]["epochs"] == 3 and config["lora"]["r"] == 4


def test_launch_form_plans_before_launching(client, ui_store):
    """The plan button shows minutes and memory for the form's config, keeps what was typed, and starts nothing."""
    work, _ = ui_store
    preset = str(work / "preset.yaml")
    page = client.post(
        "/launch", data={"preset": preset, "train.epochs": "2", "action": "plan", "csrf": client.csrf}
    ).text
    assert 'id="plan"' in page and "min training" in page and "GiB free" in page
    assert "2 epochs" in page and 'value="2"' in page  # the plan is of the form's values, which stay filled in
    assert not client.launched


def test_a_run_whose_process_died_shows_as_interrupted_not_running(client, ui_store, tmp_path):
    import platform
    import shutil
    import subprocess
    import sys

    work, runs = ui_store
    copy = work / "runs" / "killed-20261129-000000"
    shutil.copytree(runs["slow"], copy)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    info = json.loads((copy / "run.json").read_text())
    (copy / "run.json").write_text(json.dumps({**info, "status": "running", "pid": dead.pid, "host": platform.node()}))
    try:
        assert client.get("/api/runs/killed-20261129-000000").json()["status"] == "interrupted"
        page = client.get("/runs/killed-20261129-000000").text
        assert ">interrupted<" in page and "saved no checkpoint to resume from" in page
        assert "killed-20261129-000000" in client.get("/", params={"status": "interrupted"}).text
    finally:
        shutil.rmtree(copy)


def test_train_on_ratings_launches_a_dpo_run_that_trains(ui_store, tmp_path):
    """Ratings of a run's answers → a preference file and a DPO run on top of that run, no hand editing."""
    import shutil

    from conftest import tuneloop
    from tuneloop.eval.ratings import add_rating
    from tuneloop.runs import RunDir

    _, runs = ui_store
    store_dir = tmp_path / "runs"
    parent = shutil.copytree(runs["good"], store_dir / runs["good"].name)
    launched = []
    app = create_app(store_dir, launcher=launched.append, hosts={"testserver"})
    client = TestClient(app)
    for i in range(14):  # 12 preferences, a tie and one for another run: both left out
        add_rating(
            store_dir,
            prompt=f"ticket {i}",
            model_a="base",
            model_b=parent.name if i < 13 else "other-run",
            output_a=f"base answer {i}",
            output_b=f"tuned answer {i}",
            winner="tie" if i == 12 else ("b" if i % 3 else "a"),
        )
    too_few = client.post("/ratings/train", data={"run": "nope", "csrf": app.state.guard.csrf})
    assert too_few.status_code == 404
    response = client.post(
        "/ratings/train", data={"run": parent.name, "csrf": app.state.guard.csrf}, follow_redirects=False
    )
    assert response.status_code == 303
    [config_file] = launched
    config = yaml.safe_load(config_file.read_text())
    assert config["train"]["method"] == "dpo" and config["train"]["init_from"] == str(parent)
    pairs = [json.loads(x) for x in Path(config["data"]["path"]).read_text().splitlines()]
    assert len(pairs) == 12 and pairs[1] == {
        "prompt": "ticket 1",
        "chosen": "tuned answer 1",
        "rejected": "base answer 1",
        "ratings": 1,
    }
    result = tuneloop("run", str(config_file), cwd=tmp_path)  # what the launcher runs
    assert result.returncode == 0, result.stdout + result.stderr
    [dpo] = [p for p in store_dir.iterdir() if p.name.startswith("good-dpo")]
    assert RunDir(dpo).info()["status"] == "finished" and "preference_accuracy" in RunDir(dpo).info()


def test_train_on_too_few_ratings_says_so(client, ui_store):
    _, runs = ui_store
    page = client.post("/ratings/train", data={"run": runs["slow"].name, "csrf": client.csrf}).text
    assert "rate more answers" in page and not client.launched
