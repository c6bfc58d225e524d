"""OpenAI's fine-tuning API on `tuneloop serve --fine-tuning`, driven by the official `openai` client as a
user's script drives OpenAI: only base_url (and the base model's name) differ. Jobs train the tiny model
in worker processes, about ten seconds each."""

from __future__ import annotations

import json
import os
import socket
import time

import openai
import pytest

from conftest import write_jsonl, write_tickets

TERMINAL = ("succeeded", "failed", "cancelled")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def job_config(folder, tiny_model):
    """The server's job config: the tiny model's settings every job starts from."""
    path = folder / "job.yaml"
    path.write_text(
        f"model: {tiny_model}\n"
        "data: {max_seq_len: 256, dedup: none, test_size: 4}\n"
        "lora: {r: 4, alpha: 8}\n"
        "train: {batch_size: 4, learning_rate: 1.0e-2, log_every: 1, eval_every: 2}\n"
        "eval: {max_new_tokens: 4, general: none, scale_curve: []}\n"
    )
    return path


@pytest.fixture(scope="module")
def ft(tmp_path_factory, tiny_model):
    import tuneloop

    work = tmp_path_factory.mktemp("ft")
    (work / "keys.txt").write_text("# two teams\nsecret\nother-team\n")
    server = tuneloop.server(
        model=str(tiny_model),
        port=free_port(),
        api_keys_file=work / "keys.txt",
        fine_tuning=work / "data",
        job_config=job_config(work, tiny_model),
    ).start()
    client = openai.OpenAI(base_url=server.url, api_key="secret", max_retries=0)
    try:
        yield {"client": client, "server": server, "work": work, "base": tiny_model.name}
    finally:
        server.stop()


def wait(client, job_id, until=TERMINAL, timeout=240):
    deadline = time.monotonic() + timeout
    while (job := client.fine_tuning.jobs.retrieve(job_id)).status not in until:
        assert time.monotonic() < deadline, f"job {job_id} still {job.status}"
        time.sleep(0.3)
    return job


def wait_for_metrics(client, job_id, timeout=120):
    """Until the job has logged a training step (it is training, not loading)."""
    deadline = time.monotonic() + timeout
    while not any(e.type == "metrics" for e in client.fine_tuning.jobs.list_events(job_id, limit=100)):
        assert time.monotonic() < deadline, f"job {job_id} logged no step"
        time.sleep(0.3)


def worker_pid(ft, job_id) -> int:
    return json.loads((ft["work"] / "data" / "jobs" / job_id / "job.json").read_text())["worker"]["pid"]


def upload(client, path):
    with open(path, "rb") as f:
        return client.files.create(file=f, purpose="fine-tune")


def test_supervised_job_end_to_end(ft):
    """Upload, create, follow the events to succeeded, list checkpoints, chat with the ft: model and a
    checkpoint, read the result file, list with pagination and metadata filters."""
    client = ft["client"]
    data = upload(client, write_tickets(ft["work"] / "tickets.jsonl", 40))
    assert (data.object, data.purpose, data.status, data.filename) == (
        "file",
        "fine-tune",
        "processed",
        "tickets.jsonl",
    )
    assert client.files.content(data.id).content == (ft["work"] / "tickets.jsonl").read_bytes()

    job = client.fine_tuning.jobs.create(
        model=ft["base"],
        training_file=data.id,
        suffix="triage",
        seed=7,
        metadata={"team": "support"},
        hyperparameters={"n_epochs": 2, "batch_size": 4},
    )
    assert job.status == "validating_files" and job.fine_tuned_model is None
    with pytest.raises(openai.ConflictError, match="in use"):  # a job holds its file until it ends
        client.files.delete(data.id)
    job = wait(client, job.id)
    assert job.status == "succeeded", job.error
    assert job.fine_tuned_model == f"ft:{ft['base']}:triage:{job.id}"
    assert (job.seed, job.hyperparameters.n_epochs, job.hyperparameters.batch_size) == (7, 2, 4)
    assert job.trained_tokens > 0 and job.finished_at >= job.created_at and job.estimated_finish is None

    events = client.fine_tuning.jobs.list_events(job.id, limit=200).data[::-1]  # oldest first
    messages = [e.message for e in events]
    assert messages[:3] == [
        f"Validating training file: {data.id}",
        "Files validated, moving job to queued state",
        "Fine-tuning job started",
    ]
    assert messages[-1] == "The job has successfully completed"
    metrics = [e.data for e in events if e.type == "metrics"]
    assert {"step", "train_loss", "total_steps"} <= set(metrics[0]) and any("valid_loss" in m for m in metrics)
    assert any(m.startswith("The doctor: ") or "The doctor: " in m for m in messages)  # verdict and recommendations
    page = client.fine_tuning.jobs.list_events(job.id, limit=2)
    assert len(page.data) == 2 and page.has_more
    assert client.fine_tuning.jobs.list_events(job.id, limit=2, after=page.data[-1].id).data[0].id == events[-3].id

    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert 1 <= len(checkpoints) <= 3
    newest = checkpoints[0]
    assert newest.fine_tuned_model_checkpoint == f"{job.fine_tuned_model}:ckpt-step-{newest.step_number}"
    assert newest.metrics.train_loss is not None and newest.metrics.step == newest.step_number

    served = [m.id for m in client.models.list().data]
    assert job.fine_tuned_model in served and newest.fine_tuned_model_checkpoint in served
    for model in (job.fine_tuned_model, newest.fine_tuned_model_checkpoint):
        answer = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "my parcel is late"}], max_tokens=4, temperature=0
        )
        assert answer.model == model and answer.usage.completion_tokens > 0

    csv = client.files.content(job.result_files[0]).text.splitlines()
    assert csv[0] == "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy"
    assert len(csv) - 1 == metrics[-1]["total_steps"] == 2 * 32 // 4  # a row per step: 32 train rows, batch 4

    listed = client.fine_tuning.jobs.list(metadata={"team": "support"}).data
    assert [j.id for j in listed][-1] == job.id and all(j.metadata == {"team": "support"} for j in listed)
    assert client.fine_tuning.jobs.list(metadata={"team": "nobody"}).data == []

    # the run directory is a normal tuneloop run: the doctor and the dashboard read it
    import tuneloop

    run_dir = next((ft["work"] / "data" / "runs").glob(f"triage-{job.id}-*"))
    assert tuneloop.diagnose(run_dir).verdict
    assert client.files.delete(data.id).deleted  # the job has ended: its file may go
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(data.id)


def test_dpo_job(ft, tiny_model):
    client = ft["client"]
    rows = [
        {
            "input": {"messages": [{"role": "user", "content": f"Is order {i} late?"}]},
            "preferred_output": [{"role": "assistant", "content": f"Order {i} ships tomorrow."}],
            "non_preferred_output": [{"role": "assistant", "content": "No idea."}],
        }
        for i in range(30)
    ]
    data = upload(client, write_jsonl(ft["work"] / "prefs.jsonl", rows))
    job = client.fine_tuning.jobs.create(
        model=ft["base"],
        training_file=data.id,
        method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2, "n_epochs": 1}}},
    )
    assert job.method.type == "dpo" and job.method.dpo.hyperparameters.beta == 0.2
    job = wait(client, job.id)
    assert job.status == "succeeded", job.error
    assert job.fine_tuned_model == f"ft:{ft['base']}::{job.id}"
    answer = client.chat.completions.create(
        model=job.fine_tuned_model, messages=[{"role": "user", "content": "Is order 3 late?"}], max_tokens=4
    )
    assert answer.choices[0].message.content is not None


def training_job(ft, epochs: int):
    """A job on 40 tickets, once it has logged its first training step."""
    client = ft["client"]
    data = upload(client, write_tickets(ft["work"] / f"tickets-{epochs}.jsonl", 40))
    job = client.fine_tuning.jobs.create(model=ft["base"], training_file=data.id, hyperparameters={"n_epochs": epochs})
    wait(client, job.id, until=("running",))
    wait_for_metrics(client, job.id)
    return job


def test_cancel_ends_the_worker(ft):
    client = ft["client"]
    job = training_job(ft, epochs=40)
    pid = worker_pid(ft, job.id)
    cancelled = client.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled" and cancelled.fine_tuned_model is None
    with pytest.raises(ProcessLookupError):  # the worker and its process group are gone
        os.killpg(pid, 0)
    assert client.fine_tuning.jobs.list_events(job.id).data[0].message == "Fine-tuning job cancelled"
    with pytest.raises(openai.ConflictError):
        client.fine_tuning.jobs.cancel(job.id)


def test_pause_and_resume_continue_from_the_checkpoint(ft):
    client = ft["client"]
    job = training_job(ft, epochs=4)
    paused = client.fine_tuning.jobs.pause(job.id)
    assert paused.status == "paused"
    client.fine_tuning.jobs.resume(job.id)
    job = wait(client, job.id)
    assert job.status == "succeeded", job.error
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=500).data]
    started = [m for m in messages if m.startswith("Training ")]
    assert len(started) == 2 and "from the start" in started[-1] and "from step " in started[0]


def test_refusals_name_the_parameter(ft):
    client = ft["client"]
    bad = ft["work"] / "bad.jsonl"
    good = json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]})
    bad.write_text(f"{good}\n{good}\n{{not json\n")
    with pytest.raises(openai.BadRequestError, match="line 3"):
        upload(client, bad)
    with pytest.raises(openai.BadRequestError, match="purpose"), open(bad, "rb") as f:
        client.files.create(file=f, purpose="assistants")

    data = upload(client, write_tickets(ft["work"] / "small.jsonl", 20))
    cases = [
        ({"model": "gpt-4o-mini-2024-07-18"}, "model"),
        ({"hyperparameters": {"n_epochs": 1, "warmup_steps": 3}}, "warmup_steps"),
        ({"method": {"type": "reinforcement", "reinforcement": {}}}, "reinforcement"),
        ({"integrations": [{"type": "wandb", "wandb": {"project": "p"}}]}, "integrations"),
        ({"training_file": "file-missing"}, "training_file"),
        ({"hyperparameters": {"n_epochs": 0}}, "n_epochs"),
    ]
    for change, named in cases:
        request = {"model": ft["base"], "training_file": data.id, **change}
        with pytest.raises(openai.BadRequestError, match=named):
            client.fine_tuning.jobs.create(**request)

    # a file of the wrong kind for the method fails at validation, naming the file
    job = client.fine_tuning.jobs.create(model=ft["base"], training_file=data.id, method={"type": "dpo"})
    job = wait(client, job.id)
    assert job.status == "failed" and job.error.param == "training_file" and "preference" in job.error.message


def test_keys_see_only_their_own(ft):
    client = ft["client"]
    other = openai.OpenAI(base_url=ft["server"].url, api_key="other-team", max_retries=0)
    stranger = openai.OpenAI(base_url=ft["server"].url, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        stranger.models.list()
    mine = [j for j in client.fine_tuning.jobs.list(limit=100).data if j.status == "succeeded"]
    assert mine and other.fine_tuning.jobs.list().data == [] and other.files.list().data == []
    with pytest.raises(openai.NotFoundError):
        other.fine_tuning.jobs.retrieve(mine[0].id)
    served = [m.id for m in other.models.list().data]
    assert mine[0].fine_tuned_model not in served
    with pytest.raises(openai.NotFoundError):
        other.chat.completions.create(model=mine[0].fine_tuned_model, messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.NotFoundError):
        other.models.delete(mine[0].fine_tuned_model)


def test_delete_model_stops_serving_it(ft):
    client = ft["client"]
    job = next(j for j in client.fine_tuning.jobs.list(limit=100).data if j.status == "succeeded")
    assert client.models.delete(job.fine_tuned_model).deleted
    assert job.fine_tuned_model not in [m.id for m in client.models.list().data]
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model=job.fine_tuned_model, messages=[{"role": "user", "content": "hi"}])
