"""Probes of the dashboard from another web site, a rebinding DNS name and a careless user: no write
without the page's own token and origin, no data path outside the configured folders, and a damaged
run shown as damaged while the others still list."""

import json
import shutil

import pytest
from fastapi.testclient import TestClient

from tuneloop.ui import create_app


@pytest.fixture()
def dashboard(ui_store, tmp_path):
    work, runs = ui_store
    launched = []
    app = create_app(
        work / "runs", presets=[work / "preset.yaml"], launcher=launched.append, hosts={"testserver"}, data_roots=[work]
    )
    client = TestClient(app)
    return client, app.state.guard.csrf, launched, work, runs


def _launch(client, work, csrf, **extra):
    data = {"preset": str(work / "preset.yaml"), "train.epochs": "1", **({"csrf": csrf} if csrf else {}), **extra}
    return client.post("/launch", data=data, follow_redirects=False, headers=extra.pop("headers", {}))


@pytest.mark.parametrize(
    "csrf, headers, status",
    [
        ("own", {}, 303),
        (None, {}, 403),  # a form from another site has no token
        ("stale-token", {}, 403),
        ("own", {"origin": "https://evil.example"}, 403),
        ("own", {"host": "evil.example"}, 400),  # DNS rebinding: the page's own name is not ours
    ],
)
def test_writes_need_the_pages_token_and_origin(dashboard, csrf, headers, status):
    client, token, launched, work, _ = dashboard
    data = {"preset": str(work / "preset.yaml"), "train.epochs": "1"}
    if csrf:
        data["csrf"] = token if csrf == "own" else csrf
    response = client.post("/launch", data=data, headers=headers, follow_redirects=False)
    assert response.status_code == status, response.text
    assert len(launched) == (1 if status == 303 else 0)


def test_reads_from_a_rebinding_name_are_refused_and_pages_cannot_be_framed(dashboard):
    client, *_ = dashboard
    assert client.get("/api/runs", headers={"host": "evil.example:8080"}).status_code == 400
    page = client.get("/")
    assert (
        page.headers["x-frame-options"] == "DENY"
        and "frame-ancestors 'none'" in page.headers["content-security-policy"]
    )


def test_an_api_key_guards_writes_and_is_set_by_visiting_with_it(ui_store):
    work, _ = ui_store
    launched = []
    app = create_app(
        work / "runs",
        presets=[work / "preset.yaml"],
        launcher=launched.append,
        hosts={"testserver"},
        api_key="k3y",
        data_roots=[work],
    )
    client, csrf = TestClient(app), app.state.guard.csrf
    data = {"preset": str(work / "preset.yaml"), "csrf": csrf}
    assert client.post("/launch", data=data, follow_redirects=False).status_code == 401
    assert client.get("/", params={"key": "k3y"}).status_code == 200  # sets the cookie
    assert client.post("/launch", data=data, follow_redirects=False).status_code == 303 and len(launched) == 1


def test_the_launch_form_reads_data_only_under_its_roots(dashboard, tmp_path):
    client, csrf, launched, work, _ = dashboard
    outside = tmp_path / "elsewhere.jsonl"
    outside.write_text("{}\n")
    page = client.post("/launch", data={"preset": str(work / "preset.yaml"), "data": str(outside), "csrf": csrf})
    assert page.status_code == 200 and "outside the folders this dashboard reads" in page.text and not launched
    inside = client.post(
        "/launch",
        data={"preset": str(work / "preset.yaml"), "data": str(work / "d.jsonl"), "csrf": csrf},
        follow_redirects=False,
    )
    assert inside.status_code == 303 and len(launched) == 1


def test_an_invalid_form_value_is_a_form_error(dashboard):
    client, csrf, launched, work, _ = dashboard
    page = client.post("/launch", data={"preset": str(work / "preset.yaml"), "train.epochs": "[", "csrf": csrf})
    assert page.status_code == 200 and "not valid YAML" in page.text and not launched


@pytest.mark.parametrize("damage", ["torn-metrics", "eval-without-metric", "run-json"])
def test_a_damaged_run_is_listed_as_damaged_and_the_others_still_list(dashboard, damage):
    client, _, _, work, runs = dashboard
    copy = work / "runs" / f"damaged-{damage}"
    shutil.copytree(runs["slow"], copy)
    try:
        if damage == "torn-metrics":
            (copy / "metrics.jsonl").write_text('{"step": 1, "train_loss": 2.0}\n{"ste\n{"step": 3}\n')
        elif damage == "eval-without-metric":
            evaluation = json.loads((copy / "eval.json").read_text())
            del evaluation["metric"]
            (copy / "eval.json").write_text(json.dumps(evaluation))
        else:
            (copy / "run.json").write_text('{"status": "fin')
        listed = {r["id"]: r for r in client.get("/api/runs").json()}
        assert listed[copy.name]["status"] == "damaged" and listed[copy.name]["error"]
        assert {runs["slow"].name, runs["good"].name} <= listed.keys()
        assert client.get("/").status_code == 200
    finally:
        shutil.rmtree(copy)


def test_a_rating_token_out_of_range_or_repeated_is_refused(dashboard):
    client, csrf, _, work, runs = dashboard
    ratings = work / "runs" / "ratings.jsonl"
    before = ratings.read_bytes() if ratings.exists() else None  # the store is shared with test_app.py
    try:
        run = runs["good"].name
        assert client.post("/rate", data={"token": f"{run}|-1|0", "choice": "1", "csrf": csrf}).status_code == 400
        page = client.get("/rate", params={"run": run}).text
        token = page.split('name="token" value="')[1].split('"')[0]
        first = client.post("/rate", data={"token": token, "choice": "1", "csrf": csrf}, follow_redirects=False)
        again = client.post("/rate", data={"token": token, "choice": "2", "csrf": csrf}, follow_redirects=False)
        assert first.status_code == 303 and again.status_code == 409
    finally:
        if before is None:
            ratings.unlink(missing_ok=True)
        else:
            ratings.write_bytes(before)
