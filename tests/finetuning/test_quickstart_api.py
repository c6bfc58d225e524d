"""The quickstart through OpenAI's fine-tuning API on SmolLM2-135M: a cookbook-style script with only
base_url changed, then the held-out test rows answered by the ft: model through /v1/chat/completions
and scored with the quickstart's metric (about 6 minutes on 2 cores)."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
from test_openai_api import free_port, wait

from conftest import QUICKSTART


@pytest.mark.slow
def test_quickstart_through_the_openai_api(tmp_path):
    import tuneloop
    from tuneloop.eval.metrics import score
    from tuneloop.runs import RunDir

    # The quickstart's config is the server's job config: its settings for every job, its data.path ignored.
    server = tuneloop.server(
        port=free_port(), fine_tuning=tmp_path / "data", job_config=QUICKSTART / "quickstart.yaml"
    ).start()
    try:
        client = openai.OpenAI(base_url=server.url, api_key="unused")  # bound to localhost: no keys
        t0 = time.monotonic()
        with open(QUICKSTART / "tickets.jsonl", "rb") as f:
            training_file = client.files.create(file=f, purpose="fine-tune")
        job = client.fine_tuning.jobs.create(
            model="smollm2-135m-instruct", training_file=training_file.id, suffix="triage"
        )
        job = wait(client, job.id, timeout=1200)
        minutes = (time.monotonic() - t0) / 60
        assert job.status == "succeeded", job.error

        run = RunDir(next((tmp_path / "data" / "runs").glob(f"triage-{job.id}-*")))
        test = run.read_split("test")
        max_tokens = run.config().eval.max_new_tokens

        def answer(example) -> str:
            reply = client.chat.completions.create(
                model=job.fine_tuned_model, messages=example.prompt, max_tokens=max_tokens, temperature=0
            )
            return reply.choices[0].message.content

        with ThreadPoolExecutor(16) as pool:  # concurrent requests share the server's batches
            answers = list(pool.map(answer, test))
        through_api = score("json_fields", answers, [e.answer for e in test])[0]["field_accuracy"]
        evaluation = run.evaluation()
        print(
            json.dumps(
                {
                    "minutes_upload_to_succeeded": round(minutes, 1),
                    "test_rows": len(test),
                    "field_accuracy_through_api": round(through_api, 3),
                    "field_accuracy_eval_json": evaluation["finetuned"]["metrics"]["field_accuracy"],
                    "base_field_accuracy": evaluation["base"]["metrics"]["field_accuracy"],
                }
            )
        )
        # The served adapter answers as the run's own evaluation did (bf16 batches may change a few answers).
        assert through_api == pytest.approx(evaluation["finetuned"]["metrics"]["field_accuracy"], abs=0.05)
        assert through_api > evaluation["base"]["metrics"]["field_accuracy"] + 0.5
    finally:
        server.stop()
