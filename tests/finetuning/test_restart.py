"""A fine-tuning server killed during a job, then started again: the job ends succeeded (its worker
adopted, or resumed from its checkpoint), never stuck in `running`. The real `tuneloop serve` command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import openai
import pytest
from test_openai_api import free_port, job_config, upload, wait, wait_for_metrics

from conftest import write_tickets


class ServeProcess:
    def __init__(self, work, tiny_model, port):
        self.args = [
            sys.executable, "-m", "tuneloop.cli", "serve", "--model", str(tiny_model), "--port", str(port),
            "--api-key", "secret", "--fine-tuning", str(work / "data"),
            "--job-config", str(job_config(work, tiny_model)),
        ]  # fmt: skip
        self.work, self.port = work, port
        self.client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="secret", max_retries=0)

    def start(self):
        self.log = open(self.work / "serve.log", "ab")  # noqa: SIM115 — the server's output until kill()
        self.process = subprocess.Popen(self.args, stdout=self.log, stderr=subprocess.STDOUT, cwd=self.work)
        deadline = time.monotonic() + 120
        while True:
            try:
                self.client.models.list()
                return self
            except openai.APIConnectionError:
                assert self.process.poll() is None, (self.work / "serve.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.3)

    def kill(self):
        self.process.kill()
        self.process.wait()
        self.log.close()


def record(work, job_id) -> dict:
    return json.loads((work / "data" / "jobs" / job_id / "job.json").read_text())


def wait_for_checkpoint(client, job_id, timeout=120):
    deadline = time.monotonic() + timeout
    while not client.fine_tuning.jobs.checkpoints.list(job_id).data:
        assert time.monotonic() < deadline, "no checkpoint was saved"
        time.sleep(0.3)


@pytest.mark.slow  # three server starts and two jobs (~50 s): CI runs it with the other slow tests
def test_killed_server_adopts_or_resumes_its_jobs(tmp_path, tiny_model):
    port = free_port()
    server = ServeProcess(tmp_path, tiny_model, port).start()
    client = server.client
    data = upload(client, write_tickets(tmp_path / "tickets.jsonl", 40))
    try:
        # 1. The server dies; its worker trains on and the next server adopts it.
        first = client.fine_tuning.jobs.create(
            model=tiny_model.name, training_file=data.id, hyperparameters={"n_epochs": 3}
        )
        wait(client, first.id, until=("running",))
        wait_for_metrics(client, first.id)
        server.kill()
        server.start()
        assert client.fine_tuning.jobs.retrieve(first.id).status in ("running", "succeeded")
        assert wait(client, first.id).status == "succeeded"

        # 2. The server and the worker die (the machine went down): the job resumes from its checkpoint.
        second = client.fine_tuning.jobs.create(
            model=tiny_model.name, training_file=data.id, hyperparameters={"n_epochs": 4}
        )
        wait(client, second.id, until=("running",))
        wait_for_checkpoint(client, second.id)
        pid = record(tmp_path, second.id)["worker"]["pid"]
        server.kill()
        os.killpg(pid, signal.SIGKILL)
        server.start()
        job = wait(client, second.id)
        assert job.status == "succeeded", job.error
        messages = [e.message for e in client.fine_tuning.jobs.list_events(second.id, limit=500).data]
        assert any(
            m.startswith("The server restarted while the job trained; resuming from checkpoint-") for m in messages
        )
        assert client.chat.completions.create(
            model=job.fine_tuned_model, messages=[{"role": "user", "content": "hi"}], max_tokens=3
        ).choices
    finally:
        server.kill()
