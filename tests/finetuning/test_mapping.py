"""The fine-tuning API's pieces without a server: OpenAI's hyperparameters -> tuneloop's config, API keys,
and what a restarted server does with a job whose worker is gone."""

from __future__ import annotations

import types

import pytest

from tuneloop.finetuning.hyperparameters import JobRequest, RequestProblem, check_request, job_config, split_batch
from tuneloop.finetuning.scheduler import FineTuning, job_defaults
from tuneloop.serve.access import LOCAL_OWNER, ApiKeys, owner_id


@pytest.mark.parametrize(
    "batch, micro, accumulation", [(1, 1, 1), (8, 8, 1), (16, 16, 1), (24, 12, 2), (32, 16, 2), (17, 1, 17)]
)
def test_an_effective_batch_is_split_into_micro_steps(batch, micro, accumulation):
    assert split_batch(batch) == (micro, accumulation)


@pytest.mark.parametrize(
    "request_fields, expected",
    [
        ({}, {"method": "lora", "epochs": "auto", "batch_size": "auto", "learning_rate_multiplier": 1.0}),
        ({"hyperparameters": {"n_epochs": 3, "batch_size": 32}}, {"epochs": 3, "batch_size": 16, "accumulation": 2}),
        ({"hyperparameters": {"learning_rate_multiplier": 0.5}}, {"learning_rate_multiplier": 0.5}),
        ({"hyperparameters": {"n_epochs": "auto", "batch_size": "auto"}}, {"epochs": "auto", "batch_size": "auto"}),
        ({"seed": 7}, {"seed": 7, "data_seed": 7}),
        ({"method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.3}}}}, {"method": "dpo", "beta": 0.3}),
        ({"method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": "auto"}}}}, {"beta": 0.1}),
        ({"method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}}}, {"epochs": 2}),
    ],
)
def test_openai_hyperparameters_map_onto_the_config(tmp_path, request_fields, expected):
    request = JobRequest(model="m", training_file="file-1", **request_fields)
    check_request(request)
    config = job_config(request, job_defaults(None), tmp_path / "t.jsonl", None, tmp_path / "runs", "ft-x")
    t = config.train
    got = {
        "method": t.method,
        "epochs": t.epochs,
        "batch_size": t.batch_size,
        "accumulation": t.gradient_accumulation,
        "learning_rate_multiplier": t.learning_rate_multiplier,
        "seed": t.seed,
        "data_seed": config.data.seed,
        "beta": t.beta,
    }
    assert {k: got[k] for k in expected} == expected
    assert config.data.path == tmp_path / "t.jsonl" and config.run_name == "ft-x"


@pytest.mark.parametrize(
    "request_fields, param",
    [
        ({"method": {"type": "reinforcement"}}, "method.type"),
        ({"integrations": [{"type": "wandb"}]}, "integrations"),
        (
            {
                "hyperparameters": {"n_epochs": 1},
                "method": {"type": "supervised", "supervised": {"hyperparameters": {}}},
            },
            "method",
        ),
        ({"metadata": {"k" * 65: "v"}}, "metadata"),
    ],
)
def test_what_has_no_equivalent_is_refused_by_name(request_fields, param):
    with pytest.raises(RequestProblem) as refused:
        check_request(JobRequest(model="m", training_file="file-1", **request_fields))
    assert refused.value.param == param


def test_the_job_config_file_gives_every_job_its_settings(tmp_path):
    (tmp_path / "general.jsonl").write_text("")
    (tmp_path / "job.yaml").write_text(
        "data: {path: ignored.jsonl, max_seq_len: 200}\ntrain: {epochs: 2}\neval: {general: [general.jsonl]}\n"
    )
    defaults = job_defaults(tmp_path / "job.yaml")
    assert "path" not in defaults["data"] and defaults["data"]["max_seq_len"] == 200
    assert defaults["eval"]["general"] == [str(tmp_path / "general.jsonl")]  # resolved against the file's folder
    request = JobRequest(model="m", training_file="file-1")
    config = job_config(request, defaults, tmp_path / "t.jsonl", tmp_path / "v.jsonl", tmp_path / "runs", "ft")
    assert (config.train.epochs, config.data.validation_path) == (2, tmp_path / "v.jsonl")


def test_api_keys(tmp_path):
    (tmp_path / "keys").write_text("# comment\n\nalpha\n beta \n")
    keys = ApiKeys.gather("gamma", tmp_path / "keys", environ={"TUNELOOP_API_KEYS": "delta,"})
    assert keys.keys == ["gamma", "alpha", "beta", "delta"]
    assert keys.owner("Bearer beta") == owner_id("beta") != keys.owner("Bearer alpha")
    assert keys.owner("Bearer nope") is None and keys.owner("") is None and keys.owner("Basic alpha") is None
    assert ApiKeys([]).owner("") == LOCAL_OWNER
    (tmp_path / "empty").write_text("# none\n")
    with pytest.raises(ValueError, match="no keys"):
        ApiKeys.gather(None, tmp_path / "empty", environ={})


def _service(tmp_path):
    engine = types.SimpleNamespace(base_name="tiny", tokenizer=None)  # recover() needs the name only
    return FineTuning(tmp_path, engine, job_defaults(None))


def _running_job(service, run_dir=None):
    job = {"id": "ftjob-1", "status": "running", "created_at": 1, "training_file": "f", "validation_file": None}
    service.store.add_job("local", job, "", "ft:tiny::ftjob-1")
    service.store.update("ftjob-1", worker={"pid": 2**22 + 12345, "host": "elsewhere"})  # gone
    if run_dir is not None:
        from tuneloop.finetuning.store import write_json

        write_json(service.store.job_dir("ftjob-1") / "progress.json", {"run_dir": str(run_dir)})


def test_a_lost_worker_without_a_checkpoint_fails_with_the_reason(tmp_path):
    service = _service(tmp_path)
    _running_job(service)
    service.recover()
    job = service.store.record("ftjob-1")["job"]
    assert job["status"] == "failed" and job["error"]["code"] == "server_restarted"
    assert "before its first checkpoint" in job["error"]["message"]


def test_a_lost_worker_with_a_checkpoint_is_queued_to_resume(tmp_path):
    service = _service(tmp_path)
    checkpoint = tmp_path / "run" / "checkpoints" / "checkpoint-4"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text("{}")
    (checkpoint / "adapter_model.safetensors").write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")
    _running_job(service, tmp_path / "run")
    service.recover()
    record = service.store.record("ftjob-1")
    assert record["job"]["status"] == "queued" and record["resume_run"] == str(tmp_path / "run")
    assert service.store.events("ftjob-1")[0]["message"].endswith("resuming from checkpoint-4")


def test_a_worker_that_finished_while_the_server_was_down_is_recorded(tmp_path):
    from tuneloop.finetuning.store import write_json

    service = _service(tmp_path)
    _running_job(service)
    error = {"code": "training_failed", "message": "RuntimeError: out of memory"}
    write_json(service.store.job_dir("ftjob-1") / "outcome.json", {"status": "failed", "error": error})
    service.recover()
    job = service.store.record("ftjob-1")["job"]
    assert job["status"] == "failed" and job["error"]["message"] == "RuntimeError: out of memory"
