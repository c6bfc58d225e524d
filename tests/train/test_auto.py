import pytest
from transformers import LlamaConfig

from conftest import tiny_run_config
from tuneloop.train.auto import auto_batch_size, auto_epochs, auto_learning_rate
from tuneloop.train.memory import activation_bytes_per_token


@pytest.mark.parametrize(
    "n_train, epochs", [(10, 10), (30, 4), (34, 3), (500, 3), (8333, 3), (10_000, 2), (30_000, 1), (3, 25)]
)
def test_auto_epochs_follow_dataset_size(n_train, epochs):
    assert auto_epochs(n_train) == epochs


@pytest.mark.parametrize(
    "method, effective_batch, lr",
    [
        ("lora", 8, 2e-4),  # the guides' usual LoRA rate, given for batches of ~8
        ("lora", 16, 4e-4),  # linear above 8: measured on banking77 (LOG.md)
        ("lora", 2, 2e-4),  # below 8 unchanged: not measured
        ("lora", 128, 1e-3),  # capped at the top of the guides' range
        ("full", 8, 2e-5),  # full fine-tuning moves every weight: its own range
        ("full", 32, 5e-5),
        ("dpo", 16, 4e-4),  # preference methods adapt LoRA weights
    ],
)
def test_auto_learning_rate_scales_with_the_effective_batch(method, effective_batch, lr):
    assert auto_learning_rate(method, effective_batch) == pytest.approx(lr)


SMOLLM2 = LlamaConfig(hidden_size=576, num_hidden_layers=30, num_attention_heads=9)


@pytest.mark.parametrize(
    "n_train, seq_len, free_gib, batch",
    [
        (354, 170, 20, 16),  # quickstart-sized: data and memory allow the cap
        (100, 170, 20, 4),  # 100 rows: at most 1/20 of the set
        (10_000, 256, 4, 4),  # ~240 MB of activations per 256-token example; a quarter of 4 GiB holds 4
        (10_000, 1024, 2, 1),  # eager attention's scores grow with length squared
        (10_000, 4096, 0.5, 1),  # never below 1
    ],
)
def test_auto_batch_size_from_memory_and_data(n_train, seq_len, free_gib, batch):
    assert auto_batch_size(n_train, seq_len, SMOLLM2, free_gib * 2**30) == batch


def test_activation_estimate_is_pinned():
    # 30 layers x 576 x (34 + 5 x 9 x 170 / 576) bytes per token
    assert activation_bytes_per_token(SMOLLM2, 170) == pytest.approx(30 * 576 * (34 + 5 * 9 * 170 / 576))


def test_auto_values_are_resolved(tmp_path, tiny_model, tokenizer):
    from tuneloop.data import Example, Splits
    from tuneloop.train.auto import resolve_auto

    config = tiny_run_config(
        tmp_path,
        tiny_model,
        epochs="auto",
        batch_size="auto",
        learning_rate="auto",
        gradient_accumulation=16,
        eval_every=0,
    )
    config.eval.max_new_tokens = "auto"
    answers = ["a", "a longer answer of several words"]
    train = [
        Example([{"role": "user", "content": "q"}, {"role": "assistant", "content": answers[i % 2]}], i + 1)
        for i in range(32)
    ]
    resolved = resolve_auto(config, Splits(train, [], []), {"tokens": {"p95": 60}}, tiny_model, "cpu", tokenizer)[0]
    # 32 rows: ceil(100 / 32) epochs; batch at most 1/20 of the rows; ~10 evaluations over 8 steps;
    # the learning rate from the effective batch, 1 x 16 accumulated
    train_ = resolved.train
    assert (train_.epochs, train_.batch_size, train_.eval_every, train_.learning_rate) == (4, 1, 1, 4e-4)
    assert resolved.train.precision in ("bf16", "fp32") and config.train.epochs == "auto"  # the input is not changed
    # OpenAI's learning_rate_multiplier multiplies the rate auto chose, and is folded into it
    config.train.learning_rate_multiplier = 0.5
    scaled = resolve_auto(config, Splits(train, [], []), {"tokens": {"p95": 60}}, tiny_model, "cpu", tokenizer)[0]
    assert (scaled.train.learning_rate, scaled.train.learning_rate_multiplier) == (2e-4, 1.0)
    # a config written for supervised training, run as grpo, carries an SFT-sized rate: said before the run
    config.train.method, config.train.learning_rate, config.train.batch_size = "grpo", 8e-4, 4
    config.train.compile = "auto"
    rl, notes = resolve_auto(config, Splits(train, [], []), {"tokens": {"p95": 60}}, tiny_model, "cpu", tokenizer)
    assert any("over twice the top of grpo's usual range" in n for n in notes)
    assert rl.train.compile is False  # sampling recompiles compiled layers every token: grpo trains eager
    # the longest answer in tokens x 1.25 + 8: a label task does not generate 128 tokens
    longest = len(tokenizer(answers[1], add_special_tokens=False)["input_ids"])
    assert resolved.eval.max_new_tokens == -(-5 * longest // 4) + 8 < 128


@pytest.mark.parametrize(
    "requested, bf16_instructions, speedup, precision, noted",
    [
        ("auto", True, 0.58, "fp32", True),  # bf16 instructions that do not pay: fp32, and why
        ("auto", True, 3.0, "bf16", False),
        ("auto", False, None, "fp32", False),  # no bf16 instructions: nothing to explain
        ("fp32", True, 3.0, "fp32", False),  # asked for
    ],
)
def test_fp32_on_a_cpu_with_bf16_instructions_says_why(
    tmp_path, tiny_model, tokenizer, monkeypatch, requested, bf16_instructions, speedup, precision, noted
):
    from tuneloop.data import Example, Splits
    from tuneloop.models import precision as precision_mod
    from tuneloop.train import auto

    monkeypatch.setattr(precision_mod, "cpu_has_bf16_instructions", lambda: bf16_instructions)
    monkeypatch.setattr(precision_mod, "bf16_speedup", lambda: speedup)
    monkeypatch.setattr(precision_mod, "cpu_has_fast_bf16", precision_mod.cpu_has_fast_bf16.__wrapped__)
    config = tiny_run_config(tmp_path, tiny_model, precision=requested)
    rows = [Example([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], i + 1) for i in range(8)]
    resolved, notes = auto.resolve_auto(
        config, Splits(rows, [], []), {"tokens": {"p95": 8}}, tiny_model, "cpu", tokenizer
    )
    assert resolved.train.precision == precision
    assert any(n.startswith(f"fp32: bf16 products run at {speedup}") for n in notes) is noted
