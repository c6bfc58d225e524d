"""A job request (POST /v1/fine_tuning/jobs) and the tuneloop config it trains with.

The mapping, OpenAI -> tuneloop (the server's job config, `--job-config`, gives every other value):

    model                              the served base model (or an `ft:` model of yours: train.init_from)
    training_file / validation_file    data.path / data.validation_path (without one, validation_size
                                       rows of the training file; a test split is always held out, so
                                       the job is evaluated against the base model as `tuneloop run` is)
    method.type supervised             train.method: lora
    method.type dpo                    train.method: dpo
    n_epochs                           train.epochs
    batch_size B                       the effective batch: train.batch_size x train.gradient_accumulation
                                       (B itself up to 16; above, its largest divisor up to 16 x the rest)
    learning_rate_multiplier           train.learning_rate_multiplier (x tuneloop's own rate for the batch)
    beta (dpo)                         train.beta
    "auto" (any of them)               tuneloop's auto value for this data on this machine
    seed                               train.seed and data.seed
    suffix                             the model name ft:<base>:<suffix>:<job-id>; the run's name
    metadata                           kept with the job; GET /v1/fine_tuning/jobs?metadata[k]=v filters

Refused by name, not ignored: any other hyperparameter, `integrations` (tuneloop logs to
TensorBoard, MLflow or W&B offline through the job config's train.report_to), method `reinforcement`
(OpenAI's rows for it carry no reference answer; tuneloop's grpo, run as a config, takes OpenAI's
grader objects), and a base model this server does not serve.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from tuneloop.config import RunConfig, config_from_dict

MAX_MICRO_BATCH = 16


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


Auto = Literal["auto"]


class Hyperparameters(_Strict):
    n_epochs: Annotated[int, Field(ge=1, le=50)] | Auto | None = None
    batch_size: Annotated[int, Field(ge=1, le=256)] | Auto | None = None
    learning_rate_multiplier: Annotated[float, Field(gt=0, le=10)] | Auto | None = None


class DpoHyperparameters(Hyperparameters):
    beta: Annotated[float, Field(gt=0, le=2)] | Auto | None = None


class _Supervised(_Strict):
    hyperparameters: Hyperparameters | None = None


class _Dpo(_Strict):
    hyperparameters: DpoHyperparameters | None = None


class Method(_Strict):
    type: Literal["supervised", "dpo", "reinforcement"]
    supervised: _Supervised | None = None
    dpo: _Dpo | None = None
    reinforcement: dict | None = None


class JobRequest(_Strict):
    model: str
    training_file: str
    validation_file: str | None = None
    suffix: str | None = Field(None, max_length=64, pattern=r"^[A-Za-z0-9_-]*$")
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    metadata: dict[str, str] | None = Field(None, max_length=16)
    hyperparameters: Hyperparameters | None = None
    method: Method | None = None
    integrations: list[dict] | None = None

    def method_type(self) -> str:
        return self.method.type if self.method else "supervised"

    def chosen(self) -> Hyperparameters:
        """The hyperparameters asked for: method's, else the legacy top-level ones."""
        inner = getattr(self.method, self.method.type, None) if self.method else None
        if inner is not None and inner.hyperparameters is not None:
            return inner.hyperparameters
        return self.hyperparameters or Hyperparameters()


class RequestProblem(ValueError):
    def __init__(self, message: str, param: str):
        super().__init__(message)
        self.param = param


def check_request(request: JobRequest) -> None:
    """What the schema cannot say; each refusal names its parameter."""
    if request.method_type() == "reinforcement":
        raise RequestProblem(
            "method.type reinforcement: not through this API yet: OpenAI's reinforcement rows hold no reference "
            "answer (their fields feed the grader), and tuneloop's grpo trains on rows that have one; run "
            "train.method: grpo with grpo.graders (your OpenAI grader objects are accepted there)",
            "method.type",
        )
    if request.integrations:
        raise RequestProblem(
            "integrations: not available; the server's job config can log to TensorBoard, MLflow or W&B offline "
            "(train.report_to)",
            "integrations",
        )
    inner = getattr(request.method, request.method.type, None) if request.method else None
    if request.hyperparameters and inner is not None and inner.hyperparameters is not None:
        raise RequestProblem("give hyperparameters in method only (the top-level ones are OpenAI's legacy)", "method")
    if request.method and request.method.type == "supervised" and request.method.dpo is not None:
        raise RequestProblem("method.dpo given with method.type supervised", "method.dpo")
    for key, value in (request.metadata or {}).items():
        if len(key) > 64 or len(value) > 512:
            raise RequestProblem("metadata: keys up to 64 characters, values up to 512", "metadata")


def split_batch(batch: int) -> tuple[int, int]:
    """(micro-batch, accumulation) for an effective batch: whole, up to MAX_MICRO_BATCH per step."""
    if batch <= MAX_MICRO_BATCH:
        return batch, 1
    micro = max(d for d in range(1, MAX_MICRO_BATCH + 1) if batch % d == 0)
    return micro, batch // micro


def job_config(
    request: JobRequest,
    defaults: dict,
    training_path,
    validation_path,
    runs_dir,
    run_name: str,
    init_from=None,
) -> RunConfig:
    """The job's RunConfig: the server's job config (`defaults`, a config dict) with the request's
    values over it. A value the schema refuses is a RequestProblem naming the parameter."""
    raw = {key: dict(value) if isinstance(value, dict) else value for key, value in defaults.items()}
    data, train = dict(raw.get("data") or {}), dict(raw.get("train") or {})
    data["path"] = str(training_path)
    data["validation_path"] = str(validation_path) if validation_path else None
    train["method"] = "dpo" if request.method_type() == "dpo" else "lora"
    if init_from is not None:
        train["init_from"] = str(init_from)
    h = request.chosen()
    if h.n_epochs is not None:
        train["epochs"] = h.n_epochs
    if h.batch_size == "auto":
        train["batch_size"], train["gradient_accumulation"] = "auto", 1
    elif h.batch_size is not None:
        train["batch_size"], train["gradient_accumulation"] = split_batch(h.batch_size)
    if h.learning_rate_multiplier not in (None, "auto"):
        train["learning_rate_multiplier"] = h.learning_rate_multiplier
    beta = getattr(h, "beta", None)
    if beta is not None:
        train["beta"] = 0.1 if beta == "auto" else beta
    if request.seed is not None:
        train["seed"] = data["seed"] = request.seed
    raw.update(data=data, train=train, runs_dir=str(runs_dir), run_name=run_name)
    try:
        return config_from_dict(raw, source="the job")
    except ValueError as e:
        raise RequestProblem(str(e), "hyperparameters") from None


def reported_hyperparameters(config: RunConfig, request: JobRequest) -> dict:
    """The job's hyperparameters as OpenAI reports them before training: the job's config values
    (the request's over the server's job config), "auto" where tuneloop settles them for the data
    (resolved_hyperparameters replaces them once it has)."""
    t = config.train
    out = {
        "n_epochs": t.epochs,
        "batch_size": "auto" if t.batch_size == "auto" else t.batch_size * t.gradient_accumulation,
        "learning_rate_multiplier": t.learning_rate_multiplier,
    }
    if request.method_type() == "dpo":
        out["beta"] = t.beta
    return out


def resolved_hyperparameters(resolved: RunConfig, reported: dict) -> dict:
    """Once the run has settled its auto values (its config.yaml): epochs and batch as trained."""
    t = resolved.train
    epochs = int(t.epochs) if float(t.epochs) == int(t.epochs) else t.epochs
    return {**reported, "n_epochs": epochs, "batch_size": t.batch_size * t.gradient_accumulation}
