"""The dashboard in a real browser: Debian's chromium driven by Playwright against the app on localhost.

Run with `-m browser` (CI does; it needs /usr/bin/chromium: `apt-get install chromium`)."""

import json
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def dashboard(ui_store):
    import uvicorn

    from tuneloop.ui import create_app

    work, runs = ui_store
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launched = []
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(work / "runs", launcher=launched.append), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", work, runs, launched
    server.should_exit = True
    thread.join(timeout=10)


def test_browse_open_a_run_see_its_chart_and_rate(dashboard, tmp_path):
    from playwright.sync_api import sync_playwright

    url, work, runs, _ = dashboard
    if not shutil.which("chromium"):
        pytest.fail("chromium is not installed: apt-get install chromium (the browser tests need it)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(url + "/")
        assert page.locator("tr.run-row").count() == 2
        page.screenshot(path=str(tmp_path / "runs.png"))

        page.click(f"text={runs['good'].name}")
        page.wait_for_selector("#loss .main-svg")  # Plotly drew the chart, from the locally served script
        assert page.locator("#loss .scatterlayer .trace").count() == 2  # training and validation loss
        page.wait_for_selector("#metric .main-svg")  # the task metric of continuous evaluation, charted
        title = page.evaluate("document.getElementById('metric').layout.title.text")
        assert title.startswith("task metric: field_accuracy")  # the chart says what it is
        assert page.locator("#metric .scatterlayer .trace").count() >= 1
        assert page.locator("#verdict").inner_text() in ("healthy", "underfitting", "undertrained", "overfitting")
        page.screenshot(path=str(tmp_path / "run.png"), full_page=True)

        page.goto(url + f"/rate?run={runs['good'].name}")
        prompt = page.locator("#prompt").inner_text()
        page.fill("input[name=comment]", "from the browser")
        page.click("#choose-1")
        page.wait_for_selector("#ratings")
        assert "1 ratings" in page.content()
        page.screenshot(path=str(tmp_path / "rate.png"))
        browser.close()
    [rating] = [
        json.loads(x)
        for x in (work / "runs" / "ratings.jsonl").read_text().splitlines()
        if json.loads(x)["comment"] == "from the browser"
    ]
    assert rating["prompt"] == prompt and rating["winner"] in ("a", "b")


def test_train_on_the_ratings_made_in_the_browser(dashboard, tmp_path):
    """Rate every answer of a run in the page, then one click: a preference file and a DPO run launched."""
    import yaml
    from playwright.sync_api import sync_playwright

    from tuneloop.eval.ratings import add_rating

    url, work, runs, launched = dashboard
    run = runs["good"].name
    for i in range(10):  # earlier ratings, made in the terminal (`tuneloop rate`): 9 test answers alone are too few
        add_rating(
            work / "runs",
            prompt=f"earlier {i}",
            model_a="base",
            model_b=run,
            output_a="x",
            output_b=f"y{i}",
            winner="b",
        )
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(url + f"/rate?run={run}")
        rated = []
        while page.locator("#prompt").count():
            rated.append(page.locator("#prompt").inner_text())
            page.click("#choose-2")
            page.wait_for_load_state()
        page.goto(url + "/rate")
        page.select_option("#train-run", run)
        page.click("#train-on-ratings")
        page.wait_for_load_state()
        browser.close()
    [config_file] = launched
    config = yaml.safe_load(config_file.read_text())
    assert config["train"]["method"] == "dpo" and config["train"]["init_from"].endswith(run)
    pairs = [json.loads(x) for x in Path(config["data"]["path"]).read_text(encoding="utf-8").splitlines()]
    assert {p["prompt"] for p in pairs} >= set(rated) and len(rated) >= 1


def test_run_page_curves_update_while_training(dashboard):
    """A running run's page polls metrics.jsonl: appended points appear without a reload."""
    import shutil as sh

    from playwright.sync_api import sync_playwright

    url, work, runs, _ = dashboard
    live = work / "runs" / "live-20990101-000000"
    sh.copytree(runs["good"], live)
    info = json.loads((live / "run.json").read_text())
    # Running in a live process (this one): a "running" run whose process is gone reads as interrupted.
    (live / "run.json").write_text(json.dumps({**info, "id": live.name, "status": "running", "pid": os.getpid()}))
    lines = (live / "metrics.jsonl").read_text().splitlines()
    train_lines = [x for x in lines if "train_loss" in x]
    (live / "metrics.jsonl").write_text("\n".join(train_lines[:3]) + "\n")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(url + f"/runs/{live.name}")
        page.wait_for_selector("#loss .main-svg")
        assert page.evaluate("document.getElementById('loss').data[0].x.length") == 3
        with open(live / "metrics.jsonl", "a") as f:  # training goes on
            f.write("\n".join(train_lines[3:6]) + "\n")
        page.wait_for_function("document.getElementById('loss').data[0].x.length === 6", timeout=10_000)
        info["status"] = "finished"
        (live / "run.json").write_text(json.dumps({**info, "id": live.name}))
        page.wait_for_function("document.getElementById('status').textContent === 'finished'", timeout=10_000)
        browser.close()
    sh.rmtree(live)
