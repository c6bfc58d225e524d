"""Preference tuning on the tiny model: DPO on top of an SFT run, ORPO from the base, through the real CLI."""

import json

import pytest

from conftest import stop_at, tiny_run_config, tuneloop, write_jsonl
from tuneloop.config import config_from_dict
from tuneloop.data import load_examples_strict
from tuneloop.data.tokens import token_lengths
from tuneloop.models import Precision, load_model
from tuneloop.plan.estimate import train_batches
from tuneloop.runs import RunDir
from tuneloop.train.methods import method_of

LABELS = ["card_arrival", "lost_card", "refund", "top_up"]


def preference_rows(n: int) -> list[dict]:
    return [
        {
            "prompt": f"Ticket {i}: about {LABELS[i % 4].replace('_', ' ')}",
            "chosen": LABELS[i % 4],
            "rejected": LABELS[(i + 1) % 4],
        }
        for i in range(n)
    ]


def write_config(folder, name: str, body: str) -> str:
    (folder / f"{name}.yaml").write_text(body)
    return f"{name}.yaml"


@pytest.fixture(scope="module")
def sft_and_dpo(tmp_path_factory, tiny_model):
    work = tmp_path_factory.mktemp("pref")
    sft_rows = [
        {"messages": [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["chosen"]}]}
        for r in preference_rows(40)
    ]
    write_jsonl(work / "sft.jsonl", sft_rows)
    write_jsonl(work / "prefs.jsonl", preference_rows(40))
    common = "lora: {r: 4, alpha: 8}\neval: {max_new_tokens: 4}\n"
    sft = tuneloop(
        "run",
        write_config(
            work,
            "sft",
            f"model: {tiny_model}\ndata: {{path: sft.jsonl, max_seq_len: 128, dedup: none}}\n{common}"
            "train: {epochs: 2, batch_size: 4, learning_rate: 1.0e-2, log_every: 1}\n",
        ),
        cwd=work,
    )
    assert sft.returncode == 0, sft.stdout + sft.stderr
    [sft_run] = (work / "runs").iterdir()
    dpo = tuneloop(
        "run",
        write_config(
            work,
            "dpo",
            f"model: {tiny_model}\ndata: {{path: prefs.jsonl, max_seq_len: 128, dedup: none}}\n{common}"
            f"train: {{method: dpo, init_from: {sft_run}, beta: 0.1, epochs: 2, batch_size: 4, "
            "learning_rate: 5.0e-3, log_every: 1, eval_every: 4}\n",
        ),
        cwd=work,
    )
    assert dpo.returncode == 0, dpo.stdout + dpo.stderr
    [dpo_run] = [p for p in (work / "runs").iterdir() if p.name.startswith("dpo")]
    return work, RunDir(sft_run), RunDir(dpo_run), dpo


def test_dpo_on_top_of_sft_trains_and_logs_preference_metrics(sft_and_dpo):
    _, sft, dpo, result = sft_and_dpo
    info = dpo.info()
    assert info["status"] == "finished"
    assert (
        set(info["preference_accuracy"]) == {"before", "after", "pairs"} and info["preference_accuracy"]["pairs"] == 4
    )
    records = dpo.read_metrics()
    train = [r for r in records if "train_loss" in r]
    evals = [r for r in records if "eval_loss" in r]
    assert abs(train[0]["train_loss"] - 0.6931) < 1e-3  # DPO starts at ln 2: the policy is its reference
    assert all({"train_reward_margin", "train_logp_chosen", "train_preference_accuracy"} <= r.keys() for r in train)
    assert evals and "eval_preference_accuracy" in evals[-1]
    # The adapter continued the SFT run's: same shape, and only the run's own adapter is saved.
    assert dpo.config().lora == sft.config().lora
    assert not (dpo.adapter_dir / "ref").exists()
    assert json.loads((dpo.adapter_dir / "adapter_config.json").read_text())["r"] == 4
    assert "preference_accuracy" in result.stdout or "doctor" in result.stdout


def test_compare_sft_parent_with_the_preference_run(sft_and_dpo):
    work, sft, dpo, _ = sft_and_dpo
    result = tuneloop("compare", str(sft.path), str(dpo.path), cwd=work)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "accuracy" in result.stdout


def test_diagnose_reads_a_preference_run(sft_and_dpo):
    work, _, dpo, _ = sft_and_dpo
    result = tuneloop("diagnose", str(dpo.path), cwd=work)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "preference_accuracy" in result.stdout


@pytest.mark.parametrize(
    "method, extra, starts_above",
    [
        ("orpo", "", 1.0),  # reference-free: NLL of the chosen answer plus the odds-ratio term
        ("dpo", ", sft_weight: 1.0", 0.6932),  # RPO: DPO's ln 2 start plus the NLL term
    ],
)
def test_orpo_and_rpo_train(tmp_path, tiny_model, method, extra, starts_above):
    write_jsonl(tmp_path / "prefs.jsonl", preference_rows(24))
    config = write_config(
        tmp_path,
        method,
        f"model: {tiny_model}\ndata: {{path: prefs.jsonl, max_seq_len: 128, dedup: none}}\n"
        "lora: {r: 4, alpha: 8}\neval: {max_new_tokens: 4}\n"
        f"train: {{method: {method}, epochs: 1, batch_size: 4, learning_rate: 5.0e-3, log_every: 1{extra}}}\n",
    )
    result = tuneloop("run", config, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    [run] = (tmp_path / "runs").iterdir()
    records = RunDir(run).read_metrics()
    assert any("train_reward_margin" in r for r in records)
    assert next(r["train_loss"] for r in records if "train_loss" in r) > starts_above


@pytest.mark.parametrize(
    "settings, message",
    [
        ("method: dpo, init_from: nowhere", "has no LoRA adapter"),
        ("method: full, init_from: nowhere", "init_from continues a LoRA adapter"),
    ],
)
def test_bad_init_from_is_a_clear_error(tmp_path, tiny_model, settings, message):
    write_jsonl(tmp_path / "prefs.jsonl", preference_rows(24))
    config = write_config(
        tmp_path,
        "bad",
        f"model: {tiny_model}\ndata: {{path: prefs.jsonl, max_seq_len: 128}}\ntrain: {{{settings}}}\n",
    )
    result = tuneloop("run", config, cwd=tmp_path)
    assert result.returncode == 2 and message in result.stdout + result.stderr
    assert not (tmp_path / "runs").exists()


def test_sft_data_for_dpo_names_the_missing_side(tmp_path, tiny_model):
    write_jsonl(
        tmp_path / "chats.jsonl",
        [
            {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}]}
            for i in range(20)
        ],
    )
    config = write_config(
        tmp_path, "dpo", f"model: {tiny_model}\ndata: {{path: chats.jsonl, max_seq_len: 128}}\ntrain: {{method: dpo}}\n"
    )
    result = tuneloop("run", config, cwd=tmp_path)
    assert result.returncode == 2 and "rejected" in result.stdout + result.stderr


def dpo_config(tmp_path, tiny_model, **train):
    return tiny_run_config(
        tmp_path, tiny_model, rows=preference_rows(40), **{"method": "dpo", "learning_rate": 5e-3, **train}
    )


@pytest.mark.slow  # three DPO runs (~45 s): CI runs it with the other slow end-to-end tests
def test_a_stopped_dpo_run_resumes_to_the_same_losses(tmp_path, tiny_model):
    import torch
    from rich.console import Console

    from tuneloop.pipeline import resume_loop, run_loop

    quiet = Console(quiet=True)
    straight = run_loop(dpo_config(tmp_path / "straight", tiny_model, epochs=2), quiet)
    config = dpo_config(tmp_path / "stopped", tiny_model, epochs=2)
    with pytest.raises(KeyboardInterrupt):
        run_loop(config, quiet, callbacks=[stop_at(9)])
    [path] = (tmp_path / "stopped" / "runs").iterdir()
    resumed = resume_loop(path, quiet)
    assert resumed.run.info()["resumed_from_step"] == 8
    a, b = straight.run.read_metrics(), resumed.run.read_metrics()
    for key in ("train_loss", "eval_loss", "eval_reward_margin"):
        torch.testing.assert_close(
            torch.tensor([r[key] for r in a if key in r]),
            torch.tensor([r[key] for r in b if key in r]),
            rtol=0,
            atol=1e-4,
        )


def test_dpo_early_stopping_keeps_the_best_checkpoint(tmp_path, tiny_model):
    from rich.console import Console

    from tuneloop.pipeline import run_loop

    result = run_loop(
        dpo_config(tmp_path, tiny_model, epochs=6, learning_rate=0.5, early_stopping_patience=1), Console(quiet=True)
    )
    info = result.run.info()
    assert info["stopped_early"] is True and info["best_checkpoint_step"] < 54


@pytest.mark.parametrize("method", ["dpo", "orpo"])
def test_pairs_come_in_the_batches_the_plan_prices(tmp_path, tiny_model, tokenizer, method):
    """DPO and ORPO draw length-grouped batches (train/sampler.py's PairsGroupedByLength), the ones
    plan/estimate.py prices: TRL's own draw is random, and the plan under-priced DPO by 15%."""
    rows = [
        {
            "prompt": f"Ticket {i}: " + "my card is late " * (i % 9),
            "chosen": LABELS[i % 4],
            "rejected": LABELS[(i + 1) % 4] + " or so" * (i % 5),
        }
        for i in range(30)
    ]
    examples = load_examples_strict(write_jsonl(tmp_path / "p.jsonl", rows)).examples
    config = config_from_dict(
        {
            "data": {"path": "p.jsonl", "max_seq_len": 256},
            "lora": {"r": 4, "alpha": 8},
            "train": {"method": method, "batch_size": 4, "epochs": 1},
        }
    )
    train = config.train
    trainer = method_of(method).build_trainer(
        load_model(tiny_model, Precision.fp32),
        tokenizer,
        config,
        examples[:26],
        examples[26:],
        precision=Precision.fp32,
        output_dir=tmp_path / "out",
    )
    sides = ("input_ids",) if method == "dpo" else ("chosen_input_ids", "rejected_input_ids")
    widths = [max(batch[k].shape[1] for k in sides) for batch in trainer.get_train_dataloader()]
    lengths = token_lengths(examples[:26], tokenizer).total
    batches, _ = train_batches(lengths, train.batch_size, train.gradient_accumulation, train.seed, train.epochs)
    # ORPO's rows end with one token more than the chat template's: TRL appends EOS after its closing
    # newline (not priced: one token a row)
    extra = 1 if method == "orpo" else 0
    assert widths == [max(lengths[i] for i in b) + extra for b in batches]
    assert widths[0] == max(widths)  # the widest first, as SFT's (a run that does not fit fails at once)
