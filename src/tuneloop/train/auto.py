"""Resolve `auto` hyperparameters from the dataset and the model, as hosted fine-tuning APIs do.

Epochs: 3 by default; more for a small training set (so a run sees at least ~100 examples),
fewer for a large one (at most ~25,000). Batch size: the largest power of two up to 16 whose
activation memory fits a quarter of the free memory, and at most 1/20 of the training set so
an epoch still has ~20 optimizer steps to learn from. Learning rate: the guides' usual one,
scaled up with the effective batch (a larger batch takes fewer, less noisy steps).
"""

from __future__ import annotations

import math
from pathlib import Path

from tuneloop.config import ConfigError, RunConfig
from tuneloop.data import Splits
from tuneloop.eval.evaluate import answer_token_budget
from tuneloop.eval.metrics import custom_metric
from tuneloop.models import choose_precision
from tuneloop.models.precision import fp32_note
from tuneloop.train.memory import MEMORY_SHARE, activation_bytes_per_token, free_memory_bytes
from tuneloop.train.methods import check_method_settings, method_of
from tuneloop.train.sft import eval_steps_for
from tuneloop.train.speed import resolve_speed

MIN_TARGET_EXAMPLES = 100
MAX_TARGET_EXAMPLES = 25_000
DEFAULT_EPOCHS = 3
MAX_EPOCHS = 25
MAX_AUTO_BATCH = 16
LR_REFERENCE_BATCH = 8  # the effective batch the guides' usual learning rates are given for


def auto_epochs(n_train: int) -> int:
    if n_train * DEFAULT_EPOCHS < MIN_TARGET_EXAMPLES:
        return min(MAX_EPOCHS, math.ceil(MIN_TARGET_EXAMPLES / n_train))
    if n_train * DEFAULT_EPOCHS > MAX_TARGET_EXAMPLES:
        return max(1, MAX_TARGET_EXAMPLES // n_train)
    return DEFAULT_EPOCHS


def auto_batch_size(n_train: int, seq_len: int, model_config, free_bytes: float) -> int:
    per_example = activation_bytes_per_token(model_config, seq_len) * seq_len
    by_memory = max(1, int(MEMORY_SHARE * free_bytes // per_example))
    by_data = max(1, n_train // 20)
    limit = min(MAX_AUTO_BATCH, by_memory, by_data)
    return 2 ** int(math.log2(limit))


def auto_learning_rate(method: str, effective_batch: int) -> float:
    """The guides' usual rate (LoRA 2e-4, full 2e-5), scaled linearly above an effective batch of 8
    (the linear scaling rule of Goyal et al., 2017), capped at the top of the method's range.

    Measured on banking77 (1 epoch, LOG.md): batch 8 at 2e-4 reached validation loss 1.900 (2.8e-4:
    1.977, 4e-4: 2.104, so 2e-4 is right there). Batch 16 at 2e-4: 2.134, 11% worse in half the
    steps; at 2.8e-4 (the square-root rule often quoted for Adam): 1.975; at 4e-4 (linear): 1.875.
    Smaller batches keep the usual rate: lowering it there was not measured. Preference methods
    (dpo, orpo) adapt LoRA weights and follow LoRA's rate."""
    chosen, scale = method_of(method), max(1.0, effective_batch / LR_REFERENCE_BATCH)
    return min(chosen.lr_range[1], chosen.lr_usual * scale)


def resolve_auto(
    config: RunConfig, splits: Splits, data_report: dict, folder, device: str, tokenizer, processes: int = 1
) -> tuple[RunConfig, list[str]]:
    """Every `auto` value settled for this data on this machine (a copy of `config`), and notes on
    the speed fallbacks taken. `processes`: data-parallel processes, each taking a batch a step."""
    from transformers import AutoConfig

    n_train = len(splits.train)
    config = config.model_copy(deep=True)
    if config.eval.max_new_tokens == "auto":  # from the answers training sees, never the test split's
        # data.replay's general rows are not the task: their long prose would raise every test answer's budget
        config.eval.max_new_tokens = answer_token_budget(
            tokenizer, [e.answer for e in splits.train + splits.validation if not e.replayed]
        )
    train = config.train
    model_config = AutoConfig.from_pretrained(folder)
    check_method_settings(config)  # as given; again below, once the batch is settled
    check_against_model(config, model_config)
    check_init_from(config, folder)
    check_preference_data(config, splits)
    tokens = data_report.get("tokens", {})
    precision = choose_precision(train.precision, device)
    precision_note = fp32_note(train.precision, device, precision)
    train.precision = precision.value
    if train.epochs == "auto":
        train.epochs = auto_epochs(n_train)
    free = free_memory_bytes(device)
    if train.batch_size == "auto":
        train.batch_size = auto_batch_size(n_train, tokens.get("p95", config.data.max_seq_len), model_config, free)
    if train.learning_rate == "auto":
        train.learning_rate = auto_learning_rate(
            train.method, train.batch_size * train.gradient_accumulation * processes
        )
    train.learning_rate, train.learning_rate_multiplier = train.learning_rate * train.learning_rate_multiplier, 1.0
    if not method_of(config).compiles and train.compile == "auto":
        train.compile = False
    notes = resolve_speed(
        train,
        device,
        model_config,
        train.batch_size,
        tokens.get("max", config.data.max_seq_len),
        free,
        train_tokens=n_train * train.epochs * tokens.get("mean", 0),
    )
    if precision_note:
        notes.insert(0, precision_note)
    method = method_of(config)
    if train.learning_rate > 2 * method.lr_range[1]:
        # Measured: grpo from the quickstart at the quickstart's SFT rate (8e-4) took the validation
        # field accuracy from 0.76 to 0.45 in 9 steps (LOG.md, #grpo).
        notes.append(
            f"train.learning_rate {train.learning_rate:g} is over twice the top of {method.name}'s usual range "
            f"({method.lr_range[0]:g}-{method.lr_range[1]:g}); a config written for another method carries its rate"
        )
    train.eval_every = eval_steps_for(train, n_train * method_of(config).samples_per_row(config))
    check_method_settings(config)  # with the batch settled
    return config, notes


def check_preference_data(config: RunConfig, splits: Splits) -> None:
    """A method that learns from pairs (dpo, orpo) needs a rejected answer in every row."""
    rows = splits.train + splits.validation + splits.test
    pairs = sum(e.rejected is not None for e in rows)
    if method_of(config).learns_from == "pairs" and pairs < len(rows):
        raise ConfigError(
            f"train.method: {config.train.method} learns from preference pairs, but {config.data.path} has "
            f"{len(rows) - pairs} rows without a rejected answer; give prompt/chosen/rejected rows (or OpenAI's "
            "input/preferred_output/non_preferred_output), e.g. from `tuneloop ratings export`"
        )


def check_init_from(config: RunConfig, folder) -> None:
    """train.init_from names a finished LoRA run on the same base model; checked before anything
    starts. The run continues that adapter, so its lora settings become this run's."""
    from tuneloop.runs import RunDir

    source = config.train.init_from
    if source is None:
        return
    parent = RunDir(source)
    if not (parent.adapter_dir / "adapter_config.json").is_file():
        raise ConfigError(f"train.init_from: {source} has no LoRA adapter (adapter/adapter_config.json)")
    parent_folder = parent.info().get("model_folder")
    if parent_folder and Path(parent_folder).resolve() != Path(folder).resolve():
        raise ConfigError(
            f"train.init_from: {source} was trained on {parent_folder}, this run's model is {folder}; "
            "an adapter only fits the base model it was trained on"
        )
    config.lora = parent.config().lora


def check_against_model(config: RunConfig, model_config) -> None:
    """What can only be checked with the model and the code in hand, checked before the run
    directory exists: LoRA's targets and rank, and a custom metric's import. Each used to fail
    after minutes (the metric only after training) and leave a failed run behind."""
    import torch
    from transformers import AutoModelForCausalLM

    if ":" in config.eval.metric:
        try:
            custom_metric(config.eval.metric)
        except ValueError as e:
            raise ConfigError(f"eval.metric: {e}") from None
    if not method_of(config).adapter:
        return
    if config.lora.r > model_config.hidden_size:
        raise ConfigError(
            f"lora.r={config.lora.r} is larger than the model's hidden size ({model_config.hidden_size}); "
            "ranks of 4-64 are usual"
        )
    targets = config.lora.target_modules
    if targets == "all-linear":
        return
    with torch.device("meta"):  # the module tree without allocating a weight
        names = [name for name, _ in AutoModelForCausalLM.from_config(model_config).named_modules()]
    unmatched = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if unmatched:
        leaves = sorted({n.rsplit(".", 1)[-1] for n in names if n and not n.rsplit(".", 1)[-1].isdigit()})
        raise ConfigError(f"lora.target_modules: {unmatched} match no module of the model; its modules: {leaves}")
