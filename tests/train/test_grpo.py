"""train.method: grpo on the tiny model: a run from an SFT parent trains, logs its reward curves beside the
held-out task metric, and is evaluated and diagnosed as every run is."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from conftest import tiny_run_config

QUIET = Console(quiet=True)


@pytest.fixture(scope="module")
def sft_parent(tmp_path_factory, tiny_model):
    from tuneloop.pipeline import run_loop

    config = tiny_run_config(tmp_path_factory.mktemp("parent"), tiny_model, epochs=2)
    return run_loop(config, QUIET).run.path


def grpo_config(tmp_path, tiny_model, parent, **grpo):
    config = tiny_run_config(
        tmp_path, tiny_model, method="grpo", init_from=str(parent), learning_rate=1e-4, batch_size=4, epochs=1
    )
    config.grpo = config.grpo.model_copy(update={"num_generations": 4, "max_completion_length": 6, **grpo})
    return config


def test_grpo_run_from_an_sft_parent(tmp_path, tiny_model, sft_parent):
    from tuneloop.pipeline import run_loop
    from tuneloop.runs import RunDir

    result = run_loop(grpo_config(tmp_path, tiny_model, sft_parent, graders=["task_metric", "format"]), QUIET)
    run = RunDir(result.run.path)
    records = run.read_metrics()
    rewarded = [r for r in records if "train_reward" in r]
    assert rewarded and {"train_reward_std", "train_flat_groups", "train_completion_length"} <= set(rewarded[0])
    assert all(0.0 <= r["train_reward"] <= 1.0 for r in rewarded)
    # 32 train prompts x 4 answers, 4 answers a step: 32 steps, each prompt's group in one step
    assert max(r["step"] for r in records) == 32
    assert any("eval_exact_match" in r or "eval_field_accuracy" in r for r in records)  # continuous evaluation
    assert (run.adapter_dir / "adapter_model.safetensors").is_file()
    assert result.evaluation["finetuned"]["metrics"]  # the test split, base against fine-tuned
    assert result.diagnosis.summary["objective"] == "reinforcement"


def test_grpo_from_the_base_model_has_no_signal(tmp_path, tiny_model):
    """The tiny base model never writes a rewarded JSON answer: every group scores 0, and the doctor
    says so and points at a supervised start."""
    from tuneloop.pipeline import run_loop

    config = tiny_run_config(tmp_path, tiny_model, method="grpo", learning_rate=1e-4, batch_size=4, epochs=1)
    config.grpo = config.grpo.model_copy(update={"num_generations": 4, "max_completion_length": 4})
    result = run_loop(config, QUIET)
    diagnosis = result.diagnosis
    assert diagnosis.verdict == "underfitting" and "no_signal" in {f.name for f in diagnosis.findings}
    assert any(r.param == "train.init_from" for r in diagnosis.recommendations)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"num_generations": 3}, "must divide one another"),
        ({"graders": ["nowhere:grade"]}, "cannot import"),
        ({"graders": []}, "at least one grader"),
    ],
)
def test_grpo_config_errors_before_the_run(tmp_path, tiny_model, sft_parent, change, message):
    from tuneloop.config import ConfigError
    from tuneloop.pipeline import run_loop

    with pytest.raises(ConfigError, match=message):
        run_loop(grpo_config(tmp_path, tiny_model, sft_parent, **change), QUIET)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_prompt_rows_carry_the_reference_row(tiny_model):
    from tuneloop.data import Example
    from tuneloop.train.grpo import to_prompt_rows

    example = Example(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}], 1, record={"id": 7}
    )
    [row] = to_prompt_rows([example])
    assert row["prompt"] == [{"role": "user", "content": "hi"}]
    assert json.loads(row["row"]) == {"id": 7, "reference": "hello"}


@pytest.mark.parametrize(
    "graders, problem",
    [
        ('["task_metric", "format"]', None),
        ('["task_metric", "zero_grader:grade"]', "it would punish the right answer"),
        ('[{type: string_check, reference: "{{item.nothing}}"}]', "the row has no 'nothing'"),
        ('["nowhere:grade"]', "cannot import"),
    ],
)
def test_graders_are_tried_on_the_reference_answers(tmp_path, tiny_model, monkeypatch, graders, problem):
    import tuneloop
    from conftest import write_tickets

    write_tickets(tmp_path / "d.jsonl", 30)
    (tmp_path / "zero_grader.py").write_text("def grade(prompt, answer, row):\n    return 0.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "grpo.yaml").write_text(
        f"model: {tiny_model}\ndata: {{path: d.jsonl, max_seq_len: 384}}\ntrain: {{method: grpo}}\n"
        f"grpo: {{graders: {graders}}}\n"
    )
    problems = tuneloop.check_graders(tmp_path / "grpo.yaml")
    assert [problem] == [None] if problem is None else [p for p in problems if problem in p.message], problems


def test_data_check_fails_on_a_grader_that_punishes_the_reference(tmp_path, tiny_model):
    from conftest import tuneloop, write_tickets

    write_tickets(tmp_path / "d.jsonl", 30)
    (tmp_path / "zero_grader.py").write_text("def grade(prompt, answer, row):\n    return 0.0\n")
    (tmp_path / "grpo.yaml").write_text(
        f"model: {tiny_model}\ndata: {{path: d.jsonl, max_seq_len: 384}}\ntrain: {{method: grpo}}\n"
        "grpo: {graders: [task_metric, zero_grader:grade]}\n"
    )
    result = tuneloop("data", "check", "--config", "grpo.yaml", "--no-tokens", cwd=tmp_path)
    assert result.returncode == 1 and "zero_grader:grade scores this row's reference answer 0.00" in result.stdout
