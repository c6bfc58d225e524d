"""The run configuration: one typed schema, loaded from YAML, recorded resolved in every run.

Every field has a default that works for a few hundred chat examples on a CPU, so a config
file only needs `data.path`. Unknown keys are errors (with a did-you-mean), because a typo
such as `learning_rte` silently falling back to a default is the worst kind of bug here.
"""

from __future__ import annotations

import copy
import difflib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

DEFAULT_MODEL = "smollm2-135m-instruct"
# Bounds past which a value is a typo, not a plan: they fail at validation instead of as an
# allocation error or a run that never ends.
MAX_EPOCHS = 1000
MAX_BATCH = 65_536
# Metric names every stage shares (eval scores them; train, doctor, report and tune rank by them).
BUILTIN_METRICS = ("exact_match", "final_number", "classification", "generation", "json_fields", "tool_calls")
# The headline number of each metric, and the per-example score used for win/tie/loss.
HEADLINE = {
    "exact_match": "exact_match",
    "final_number": "exact_match",
    "classification": "accuracy",
    "generation": "rougeL",
    "json_fields": "field_accuracy",
    "tool_calls": "tool_call_accuracy",
}
LOWER_IS_BETTER = {"loss", "perplexity"}  # every other metric: higher is better


def headline(metric: str) -> str:
    """The key a run is judged by for this kind of metric; loss for plain text and custom metrics."""
    return HEADLINE.get(metric, "loss")


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message names file and key."""


class _Section(BaseModel):
    # allow_inf_nan=False: `learning_rate: .inf` used to train "successfully" on NaN losses.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


DataFormat = Literal[
    "auto",
    "messages",
    "prompt_completion",
    "input_output",
    "alpaca",
    "sharegpt",
    "text",
    "preference",
    "openai_preference",
]


class ColumnMap(_Section):
    """Templates over a row's fields for data in no standard format, e.g. banking77's CSV:
    {prompt: "{text}", completion: "{category}"}."""

    prompt: str
    completion: str
    system: str | None = None


class DataConfig(_Section):
    path: Path = Field(description="A data file (JSONL, JSON, CSV, TSV, Parquet) or a folder of them.")
    format: DataFormat = Field("auto", description="auto: detected from the rows' keys.")
    columns: ColumnMap | None = Field(None, description="Map any columns to prompt/completion with templates.")
    system_prompt: str | None = Field(None, description="Added as the system turn to rows that have none.")
    label: str = Field(
        "auto",
        description="Class label for stratified splits: auto (short categorical answers), "
        "none, or a field name of the rows.",
    )
    clean: bool = Field(False, description="Normalise unicode, whitespace and HTML remnants before training.")
    redact_pii: bool = Field(False, description="Replace emails, phone, card numbers and IPs with placeholders.")
    dedup: Literal["near", "exact", "none"] = Field("near", description="Drop duplicate rows before splitting.")
    leakage_check: Literal["near", "exact", "none"] = Field(
        "near", description="Remove train rows that duplicate a validation or test row."
    )
    near_duplicate_threshold: float = Field(0.8, gt=0, le=1, description="MinHash Jaccard similarity.")
    validation_size: float = Field(0.1, gt=0, description="A fraction (< 1) or a number of rows (>= 1).")
    validation_path: Path | None = Field(
        None,
        description="A data file of your own validation rows (any format tuneloop reads): used whole as the "
        "validation split instead of validation_size rows of `path`.",
    )
    test_size: float = Field(0.15, gt=0, description="A fraction (< 1) or a number of rows (>= 1).")
    stratify: bool = Field(True, description="Keep the label mix in every split when rows have labels.")
    train_on: Literal["all_assistant", "last_assistant", "all"] = Field(
        "all_assistant",
        description="The tokens in the loss: every assistant turn (weight 0 leaves one out), the last "
        "one only, or the whole conversation.",
    )
    max_seq_len: int = Field(
        1024, ge=16, le=1_048_576, description="Longer examples are an error, not silently truncated."
    )
    seed: int = 42
    replay: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Mix general data into training, as this share of the training rows (0.1: one general row per "
        "ten), so the model keeps answering unrelated prompts as it did: the guides' cure for forgetting. Rows "
        "from replay_data, else the base model's own answers to shipped generic prompts (self-distillation).",
    )
    replay_data: Path | None = Field(
        None, description="A data file of general rows for data.replay (any format tuneloop reads); none: self."
    )

    @model_validator(mode="after")
    def _sizes_leave_training_data(self) -> DataConfig:
        for name in ("validation_size", "test_size"):
            size = getattr(self, name)
            if size >= 1 and size != int(size):
                raise ValueError(f"{name}={size}: a number of rows must be whole; a fraction must be below 1")
        fractions = [s for s in (self.validation_size, self.test_size) if s < 1]
        if sum(fractions) >= 0.8:
            raise ValueError("validation_size + test_size must leave at least 20% for training")
        return self


class LoraConfig(_Section):
    r: int = Field(16, ge=1, le=4096, description="Adapter rank: 4-64; higher learns more and overfits sooner.")
    alpha: float = Field(32, gt=0, description="Scale of the adapter's update (alpha/r); keep alpha >= r.")
    # 0 by default: on CPU the dropout masks cost ~35% of a training step (LOG.md). The doctor
    # recommends 0.05-0.1 when a run overfits.
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the adapter's input; 0.05-0.1 against overfitting.")
    target_modules: list[str] | Literal["all-linear"] = "all-linear"
    use_rslora: bool = Field(
        False, description="Scale by alpha/sqrt(r) instead of alpha/r, so high ranks keep learning."
    )
    use_dora: bool = Field(False, description="Weight-decomposed LoRA: often better at low rank, ~2x slower per step.")


ReportTo = Literal["tensorboard", "mlflow", "wandb"]


class TrainConfig(_Section):
    method: Literal["lora", "full", "dpo", "orpo", "grpo"] = Field(
        "lora",
        description="lora / full: supervised fine-tuning of LoRA adapters or of all the weights. dpo / orpo: "
        "preference tuning of a LoRA adapter on chosen/rejected pairs (DPO against a frozen reference, "
        "ORPO without one). grpo: reinforcement fine-tuning of a LoRA adapter, its sampled answers rewarded "
        "by graders (grpo.graders; the task metric by default), best from a supervised run (init_from).",
    )
    beta: float = Field(
        0.1,
        gt=0,
        le=10,
        description="dpo: how far the model may move from the reference (higher: less; 0.1 usual); "
        "orpo: the weight of the odds-ratio term.",
    )
    sft_weight: float = Field(
        0.0,
        ge=0,
        le=10,
        description="dpo: weight of a supervised (NLL) loss on the chosen answers added to DPO's (RPO); "
        "1.0 keeps the chosen answers likely while the margin grows.",
    )
    init_from: Path | None = Field(
        None,
        description="A finished LoRA run (runs/<id>) whose adapter training starts from: the SFT run a dpo "
        "run refines, and dpo's reference model.",
    )
    freeze_layers: int = Field(0, ge=0, description="Full fine-tuning: freeze the embeddings and the first N layers.")
    freeze_modules: list[str] = Field(
        [],
        description="Full fine-tuning: freeze parameters whose name contains any "
        "of these, e.g. [embed_tokens, lm_head].",
    )
    epochs: Annotated[float, Field(gt=0, le=MAX_EPOCHS)] | Literal["auto"] = Field(
        "auto",
        description="auto: 3, more for small datasets (at least ~100 examples seen per run), fewer for "
        "large ones (at most ~25,000), as hosted fine-tuning APIs do.",
    )
    learning_rate_multiplier: float = Field(
        1.0,
        gt=0,
        le=100,
        description="Multiplies the learning rate, auto or given (OpenAI's fine-tuning API's "
        "learning_rate_multiplier); folded into learning_rate in the resolved config.",
    )
    learning_rate: Annotated[float, Field(gt=0, le=10)] | Literal["auto"] = Field(
        "auto",
        description="LoRA: 1e-4 to 1e-3; full fine-tuning: 1e-5 to 5e-5. auto: the guides' usual rate "
        "(LoRA 2e-4, full 2e-5) for an effective batch of up to 8, scaled with larger batches.",
    )
    batch_size: Annotated[int, Field(ge=1, le=MAX_BATCH)] | Literal["auto"] = Field(
        "auto",
        description="Examples per micro-step. auto: the largest power of two up to 16 whose activations fit "
        "a quarter of free memory, and at most 1/20 of the training set.",
    )
    gradient_accumulation: int = Field(
        1,
        ge=1,
        le=MAX_BATCH,
        description="Micro-steps per optimizer step; effective batch = batch_size x gradient_accumulation.",
    )
    scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "cosine"
    warmup_ratio: float = Field(0.05, ge=0, lt=1, description="Share of steps with a linearly rising learning rate.")
    warmup_steps: int | None = Field(None, ge=0, description="Warm-up in steps; overrides warmup_ratio.")
    weight_decay: float = Field(0.0, ge=0, description="0.01-0.1 regularises against overfitting.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping; lower it if the loss spikes.")
    model_dropout: float | None = Field(
        None,
        ge=0,
        lt=1,
        description="The model's own dropout (e.g. attention dropout), where it has one; None keeps the model's value.",
    )
    neftune_noise_alpha: float | None = Field(
        None, gt=0, description="NEFTune: noise on the input embeddings during training (5-15 in the paper)."
    )
    adapter_l1: float = Field(0.0, ge=0, description="L1 penalty on trainable weights, added to the loss.")
    adapter_l2: float = Field(0.0, ge=0, description="L2 penalty on trainable weights, added to the loss.")
    packing: bool = Field(False, description="Pack several examples into each row (fewer pad tokens; best on CUDA).")
    doctor: Literal["off", "watch", "stop"] = Field(
        "watch",
        description="The doctor reads every evaluation: watch shows its verdict while training; stop also "
        "ends a clearly diverging or overfitting run and restores the best checkpoint.",
    )
    early_stopping_patience: int = Field(
        0,
        ge=0,
        description="Stop after this many evaluations without a better "
        "validation loss (0: off); the best checkpoint is restored.",
    )
    early_stopping_min_delta: float = Field(0.0, ge=0, description="Smallest drop in validation loss that counts.")
    save_every: int = Field(
        0, ge=0, description="Steps between checkpoints (for `tuneloop resume`); 0: at every evaluation."
    )
    report_to: list[ReportTo] = Field(
        [], description="Also log to these trackers (TensorBoard, MLflow, W&B offline), inside the run directory."
    )
    eval_every: int = Field(0, ge=0, description="Steps between validation-loss evaluations; 0 = about 10 per run.")
    log_every: int = Field(5, ge=1)
    seed: int = 42
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto", description="auto: bf16 base weights where the CPU/GPU multiplies bf16 natively, else fp32."
    )
    padding_free: bool = Field(
        True,
        description="On CUDA, concatenate each batch into one row (no padding); on CPU, batches are grouped by "
        "length instead, which measured faster than a dense block-diagonal mask.",
    )
    gradient_checkpointing: Literal["auto"] | bool = Field(
        "auto",
        description="Recompute activations in the backward pass: less memory, ~40% slower steps. auto: on "
        "only when a batch's estimated activations do not fit a quarter of free memory.",
    )
    quantize: Literal["none", "4bit"] = Field(
        "none",
        description="4bit: QLoRA, the frozen base in NF4 (bitsandbytes, CUDA only); elsewhere the run falls "
        "back to the usual precision and says so.",
    )
    compile: Literal["auto"] | bool = Field(
        "auto",
        description="torch.compile each decoder layer for training (~1.5x a step on CPU after a ~1 min "
        "compile). auto: on when the run trains on enough tokens to repay the compile.",
    )
    fused_kernels: bool = Field(
        True,
        description="On CUDA, Liger's fused kernels and FlashAttention-2 where they are installed; SDPA otherwise.",
    )
    metric_rows: int = Field(
        128,
        ge=0,
        description="Continuous evaluation: at each evaluation also generate answers "
        "for this many validation rows (a fixed, seeded sample) and score them with the task "
        "metric, logged as eval_<metric>. 0: off.",
    )
    metric_budget: float = Field(
        0.15,
        gt=0,
        le=1,
        description="Continuous evaluation may take at most about this "
        "share of the training time; evaluations past the budget log the loss only (the "
        "first and the last always score the metric); 1: score every evaluation.",
    )
    leakage_rows: int = Field(
        20,
        ge=0,
        description="Continuous evaluation: at each scored evaluation also answer this many of eval.general's "
        "generic instructions and count the answers in the task's form (behaviour leakage), logged as "
        "eval_leakage, so the doctor can point at the evaluation with the best balance. 0: off; off too "
        "when eval.general is none.",
    )
    select_best: Literal["auto", "loss", "metric", "balance"] = Field(
        "auto",
        description="Which checkpoint early stopping and the saved weights keep: the best validation loss; "
        "the best validation task metric; or balance: the least behaviour leakage (eval_leakage) among the "
        "evaluations within 5% of the best task metric so far. auto: metric when the task has one "
        "(continuous evaluation on), else loss.",
    )

    @field_validator("doctor", mode="before")
    @classmethod
    def _yaml_off(cls, value):
        # YAML reads a bare `off` as false: `doctor: off` must still mean "off".
        return "off" if value is False else value


class EvalConfig(_Section):
    metric: str = Field(
        "auto",
        description="auto (tool_calls when answers call tools, json_fields for JSON answers, final_number "
        "for '#### 42' answers, classification for labelled data, generation for free text, else "
        "exact_match), one of those names, or a custom metric as module:function taking "
        "(predictions, references) and returning {name: value}.",
    )
    max_new_tokens: Annotated[int, Field(ge=1, le=65_536)] | Literal["auto"] = Field(
        "auto",
        description="auto: what the references need, the longest answer in the data in tokens x 1.25 + 8 "
        "(a label task generates a few tokens, not 128).",
    )
    batch_size: int = Field(16, ge=1, le=MAX_BATCH)
    max_examples: int | None = Field(None, ge=1, description="Cap on test examples generated (loss uses all).")
    turns: Literal["last", "all"] = Field(
        "last",
        description="Which assistant turns of a multi-turn test row are evaluation points: the last, "
        "or each one (the conversation before it is the prompt).",
    )
    report_examples: int = Field(6, ge=0)
    sample: bool = Field(False, description="Sample instead of greedy decoding (with temperature, top_p, seed).")
    temperature: float = Field(0.7, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    seed: int = 0
    stop_repeating: bool = Field(
        True,
        description="End an answer that loops (one block of up to 64 tokens written 3 times, over 32+ "
        "tokens) instead of letting it, and with it its whole batch, run to max_new_tokens.",
    )
    general: Literal["default", "none"] | list[Path] = Field(
        "default",
        description="What fine-tuning costs the model, base vs fine-tuned (eval/general.py): default "
        "(shipped ARC-Easy and PIQA samples, scored by choice log-likelihood), none, or JSONL files: "
        "multiple choice (question, choices, answer), prompt/completion (scored by loss), or generic "
        "instructions (prompt). Behaviour leakage and drift on generic instructions are always measured.",
    )
    scale_curve: list[Annotated[float, Field(gt=0, lt=1)]] = Field(
        [0.25, 0.5, 0.75],
        description="Adapter scales measured (validation task metric and the general check, without retraining) "
        "when a LoRA run loses general ability beyond noise; the doctor recommends the one that keeps 95% of the "
        "gain with the least loss (--scale auto). [] skips it.",
    )

    @model_validator(mode="after")
    def _known_metric(self) -> EvalConfig:
        if self.metric != "auto" and self.metric not in BUILTIN_METRICS and ":" not in self.metric:
            raise ValueError(
                f"metric {self.metric!r}: use auto, one of {', '.join(BUILTIN_METRICS)}, or module:function"
            )
        return self


class SearchRange(_Section):
    """One searched hyperparameter: `choices`, or a range `low`..`high` (integers when both are
    whole numbers; `log` samples on a log scale, as learning rates should be)."""

    choices: list[Any] | None = None
    low: int | float | None = None
    high: int | float | None = None
    log: bool = False

    @model_validator(mode="after")
    def _one_kind(self) -> SearchRange:
        if (self.choices is None) == (self.low is None or self.high is None):
            raise ValueError("give either choices: [...] or low and high")
        if self.choices is None and self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        return self


class SweepConfig(_Section):
    trials: int = Field(20, ge=1, description="Trials in the study (finished and pruned ones count).")
    space: dict[str, SearchRange] = Field(
        {},
        description="Config key -> range, e.g. train.learning_rate: {low: 5.0e-5, high: 1.0e-3, log: true}. "
        "Empty: learning rate, LoRA rank (alpha = 2 x rank), LoRA dropout and weight decay.",
    )
    pruning: bool = Field(
        True,
        description="Stop a trial whose validation loss is worse than the median of earlier trials at the same step.",
    )
    storage: str | None = Field(
        None,
        description="Optuna storage URL; default sqlite in runs_dir/sweeps/<name>/. "
        "Point workers on several hosts at one PostgreSQL/MySQL URL to share a study.",
    )
    heartbeat_seconds: int = Field(
        60,
        ge=1,
        description="Each running trial's heartbeat; a trial silent for 3 "
        "heartbeats (its worker was killed) is marked failed and its place is taken by "
        "a new trial.",
    )
    seed: int = 42


class GrpoConfig(_Section):
    """train.method: grpo (train/grpo.py)."""

    num_generations: int = Field(
        4,
        ge=2,
        le=64,
        description="Answers sampled per prompt; each is rewarded against its group's mean. More: a clearer "
        "signal, at that many answers' generation per prompt.",
    )
    temperature: float = Field(
        1.0, gt=0, le=2, description="Sampling temperature of the answers; higher: more varied groups."
    )
    max_completion_length: Annotated[int, Field(ge=1, le=65_536)] | Literal["auto"] = Field(
        "auto",
        description="The longest answer sampled, in tokens. auto: eval.max_new_tokens (what the references need).",
    )
    beta: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Weight of the KL penalty to the reference (the init_from run, else the base model); 0 (TRL's "
        "default): no reference forward, cheaper; 0.04 holds the policy nearer its start.",
    )
    graders: list[str | dict] = Field(
        ["task_metric"],
        description="The reward, the mean of these (eval/graders.py): task_metric (the run's metric, per answer), "
        "format (the references' form: JSON, a label), module:function (prompt, answer, row) -> float, or OpenAI's "
        "grader objects (string_check, text_similarity, python, score_model, multi); {grader: ..., weight: w} "
        "weighs one.",
    )


class RunConfig(_Section):
    model: str = Field(DEFAULT_MODEL, description="Built-in name, local HF folder, or hub id.")
    data: DataConfig
    lora: LoraConfig = LoraConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    grpo: GrpoConfig = GrpoConfig()
    sweep: SweepConfig = SweepConfig()
    runs_dir: Path = Path("runs")
    run_name: str | None = Field(None, description="Prefix of the run id; defaults to the config file's stem.")

    @model_validator(mode="before")
    @classmethod
    def _completion_only_loss(cls, raw: Any) -> Any:
        # Configs (and run directories) written before data.train_on had train.completion_only_loss;
        # false meant "also learn the prompt", which is train_on: all.
        train = raw.get("train") if isinstance(raw, dict) else None
        if isinstance(train, dict) and "completion_only_loss" in train:
            train = dict(train)
            if train.pop("completion_only_loss") is False:
                raw = {**raw, "data": {"train_on": "all", **(raw.get("data") or {})}}
            raw = {**raw, "train": train}
        return raw

    @field_validator("run_name")
    @classmethod
    def _plain_name(cls, value: str | None) -> str | None:
        # The run directory is runs_dir/<run_name>-<time>: a separator or `..` would put it elsewhere.
        if value is not None and (not value.strip(".") or any(c in value for c in "/\\\0")):
            raise ValueError(f"{value!r}: a run name is a plain name, without path separators or `..`")
        return value


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML config, apply `section.key=value` overrides, validate.

    Relative paths inside the file (data.path, runs_dir) are resolved against the config
    file's folder, so a config works from any working directory.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder; give the config's YAML file") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start}); a config is a YAML file") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the config ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level, got {type(raw).__name__}")
    for item in overrides or []:
        _apply_override(raw, item)
    raw.setdefault("run_name", path.stem)
    config = config_from_dict(raw, source=str(path))
    base = path.resolve().parent
    config.data.path = _resolve(base, config.data.path).resolve()
    if config.data.validation_path:
        config.data.validation_path = _resolve(base, config.data.validation_path).resolve()
    if config.data.replay_data is not None:
        config.data.replay_data = _resolve(base, config.data.replay_data).resolve()
    if "runs_dir" in raw:
        config.runs_dir = _resolve(base, config.runs_dir).resolve()
    if isinstance(config.eval.general, list):  # the general sets, like the data, from the config's folder
        config.eval.general = [_resolve(base, p).resolve() for p in config.eval.general]
    if config.train.init_from is not None:  # runs/<id>, like the runs folder itself, from the working directory
        config.train.init_from = config.train.init_from.resolve()
    return config


def config_from_dict(raw: dict[str, Any], source: str = "<config>") -> RunConfig:
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_explain(e, source)) from None


def _resolve(base: Path, p: Path) -> Path:
    return p if p.is_absolute() else (base / p)


def _apply_override(raw: dict[str, Any], item: str) -> None:
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected KEY=VALUE, e.g. train.learning_rate=1e-4")
    key, value = item.split("=", 1)
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"override {item!r}: the value is not valid YAML ({problem})") from None
    set_key(raw, key.strip(), parsed, source=f"override {item!r}")


def get_key(raw: dict[str, Any], key: str):
    """The value at a dotted key such as `train.learning_rate`, or None."""
    node = raw
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def set_key(raw: dict[str, Any], key: str, value, source: str | None = None) -> None:
    """Set a dotted key, creating sections on the way."""
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{source or key}: {part} is not a section")
    node[parts[-1]] = value


def config_with(base: dict[str, Any], changes: dict[str, Any], source: str = "<config>", **fields) -> RunConfig:
    """A validated config: `base` (a dumped config, left unchanged) with dotted-key `changes` and
    top-level `fields` (e.g. run_name) applied."""
    raw = copy.deepcopy(base)
    for key, value in changes.items():
        set_key(raw, key, value)
    raw.update(fields)
    return config_from_dict(raw, source)


def _explain(error: ValidationError, source: str) -> str:
    """One line per key. A union such as `float | "auto"` fails once per member: merge those."""
    messages: dict[str, list[str]] = {}
    for err in error.errors():
        # Union members appear in the location as tags like "constrained-float" or "literal['auto']".
        loc = ".".join(str(p) for p in err["loc"] if not _is_union_tag(p))
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = f"unknown key{_did_you_mean(err['loc'])}"
        messages.setdefault(loc, []).append(msg)
    return "\n".join([f"{source}: invalid config"] + [f"  {loc}: {' | '.join(m)}" for loc, m in messages.items()])


def _is_union_tag(part) -> bool:
    return isinstance(part, str) and ("[" in part or part.startswith(("constrained-", "function-")))


def _did_you_mean(loc: tuple) -> str:
    model: type[BaseModel] = RunConfig
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        if field is None or not isinstance(field.annotation, type) or not issubclass(field.annotation, BaseModel):
            return ""
        model = field.annotation
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def apply_overrides(config: RunConfig, overrides: list[str]) -> RunConfig:
    """`config` with `section.key=value` overrides applied, validated again."""
    raw = config.model_dump(mode="json")
    for item in overrides:
        _apply_override(raw, item)
    return config_from_dict(raw, source="overrides")


def dump_config(config: RunConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
