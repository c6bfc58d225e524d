"""Continuous evaluation: the task metric on a fixed validation sample at every evaluation.

Loss says how likely the reference answers are; users judge a run by its answers (field
accuracy, accuracy, ROUGE). At each evaluation the model answers a seeded sample of the
validation split (up to `train.metric_rows` rows, batched, greedy) and the run's task metric
scores the answers. The Trainer logs the result next to eval_loss as `eval_<key>` (e.g.
`eval_field_accuracy`) with its standard error `eval_<key>_se`, so the doctor can tell a change
from noise. At the last evaluation, when the budget allows, a sample of the training split is
scored too (`train_<key>`): a model that cannot even answer its training questions lacks capacity.
With `eval.general` on, each scoring also answers `train.leakage_rows` generic instructions and
logs the share answered in the task's form as `eval_leakage` (LeakageProbe): the other side of the
balance, at every point of the curve, so `train.select_best: balance` and the doctor can pick the
evaluation that learned the task without the behaviour leaking (eval/general.py, doctor/balance.py).

Cost. Generation is slow on a CPU: 47 quickstart answers (~45 tokens each) take ~11-14 s on
2 cores, as long as ~10 training steps; the per-step cost of cached decoding is mostly
framework overhead, so it scales with batches x answer length more than with model size. The
budget (`train.metric_budget`, 15% of training time by default) is kept by skipping the metric
at evaluations that would exceed it. The first evaluation always scores it (it measures the
cost) and so does the last (it is the saved model's score): a run with only a couple of
minutes of training can therefore go over the budget by about one scoring.
"""

from __future__ import annotations

import math
import random
import time
from contextlib import contextmanager

import torch
from transformers import TrainerCallback

from tuneloop.config import HEADLINE, LOWER_IS_BETTER, ConfigError, EvalConfig, RunConfig
from tuneloop.data import Example, Splits
from tuneloop.eval.evaluate import generate_and_score, metric_for
from tuneloop.eval.general import ANSWER_TOKENS, load_suite, task_form
from tuneloop.models.generate import generate_answers
from tuneloop.models.precision import Precision
from tuneloop.runs import RunDir

TRAIN_SAMPLE_ROWS = 32  # the capacity check: enough to tell 0.5 from 0.95, cheap next to the validation sample
# select_best: balance considers the evaluations whose task metric is within this share of the best
# so far: the scale curve's 95% of the gain (eval.scale_keep), with the base model's metric taken as 0,
# since the base is not scored during training (it is 0 on the quickstart and banking77).
BALANCE_BAND = 0.05


def sample_rows(examples: list[Example], rows: int, seed: int) -> list[Example]:
    """A fixed, seeded sample: the same rows at every evaluation, so the curve compares like with like."""
    if len(examples) <= rows:
        return list(examples)
    return [examples[i] for i in sorted(random.Random(seed).sample(range(len(examples)), rows))]


@contextmanager
def answering(model):
    """Generation inside training. Cached decoding runs ~30% faster with SDPA than with training's
    eager attention (pipeline's test evaluation measured it); training's choice is restored after.
    fork_rng: generation seeds the global generator, and training's data order and dropout must not
    depend on when (or whether) the metric was scored."""
    training_attention = model.config._attn_implementation
    model.set_attn_implementation("sdpa")
    device = next(model.parameters()).device
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            yield
    finally:
        model.set_attn_implementation(training_attention)


class LeakageProbe:
    """Behaviour leakage during training: the first `rows` generic instructions of the general suite,
    answered greedily (ANSWER_TOKENS, one batch), counted when an answer takes the task's form
    (eval/general.py's task_form, from the training answers). Its share and standard error are
    logged as eval_leakage(_se). Cost: one batch of 20 short answers per scoring, ~3 s for
    SmolLM2-135M on 2 cores, within train.metric_budget with the task metric's scoring."""

    def __init__(self, instructions: list[str], task_answers: list[str], tokenizer, precision: Precision):
        self.prompts = [[{"role": "user", "content": p}] for p in instructions]
        self.form, self.in_form = task_form(task_answers)
        self.tokenizer, self.precision = tokenizer, precision

    def __call__(self, model) -> dict[str, float]:
        answers = generate_answers(
            model,
            self.tokenizer,
            self.prompts,
            max_new_tokens=ANSWER_TOKENS,
            batch_size=len(self.prompts),
            autocast_dtype=self.precision.autocast_dtype,
        )
        share = sum(map(self.in_form, answers)) / len(answers)
        return {"eval_leakage": share, "eval_leakage_se": round(math.sqrt(share * (1 - share) / len(answers)), 5)}


def leakage_probe(config: RunConfig, train: list[Example], tokenizer, precision: Precision) -> LeakageProbe | None:
    """The probe where it can run: train.leakage_rows > 0, and an eval.general suite with instructions."""
    if config.train.leakage_rows == 0 or config.eval.general == "none":
        return None
    instructions = load_suite(config.eval.general).instructions[: config.train.leakage_rows]
    return LeakageProbe(instructions, [e.answer for e in train], tokenizer, precision) if instructions else None


class TaskEvaluator(TrainerCallback):
    """Called by the trainer inside each validation pass (CompletionLossTrainer.evaluation_loop);
    a callback only to know when training started and when it ended."""

    def __init__(
        self,
        validation: list[Example],
        train: list[Example],
        tokenizer,
        config: EvalConfig,
        precision: Precision,
        *,
        rows: int,
        budget: float,
        seed: int,
        probe: LeakageProbe | None = None,
    ):
        self.sample = sample_rows(validation, rows, seed)
        self.probe = probe
        self.train_sample = sample_rows(train, min(rows, TRAIN_SAMPLE_ROWS), seed)
        self.metric = metric_for(self.sample, config)
        # A custom metric's key is the first name it returns, known after its first scoring.
        self.key = HEADLINE.get(self.metric)
        self.tokenizer, self.config, self.precision, self.budget = tokenizer, config, precision, budget
        self.seconds = 0.0  # spent generating and scoring
        self.last_cost = None  # seconds of the latest scoring of the validation sample
        self.scored_steps: list[int] = []
        # each scoring's seconds, the training sample's included (the plan prices each; LOG.md)
        self.scoring_seconds: list[float] = []
        self.skipped_steps: list[int] = []
        self._started = None

    @property
    def greater_is_better(self) -> bool:
        return self.key not in LOWER_IS_BETTER

    def on_train_begin(self, args, state, control, **kwargs):
        self._started = time.perf_counter()

    def __call__(self, model, state) -> dict[str, float]:
        """`eval_<key>` (and its standard error) for the model as it is now, or {} when this
        evaluation is skipped to stay within the time budget."""
        final = state.global_step >= state.max_steps
        if not (final or self._affordable()):
            self.skipped_steps.append(state.global_step)
            return {}
        t = time.perf_counter()
        out = self._score(model, self.sample, "eval")
        if self.probe is not None:
            with answering(model):
                out.update(self.probe(model))
        self.last_cost = time.perf_counter() - t
        if final and self.train_sample and self._affordable(len(self.train_sample) / len(self.sample)):
            out.update(self._score(model, self.train_sample, "train"))
        spent = time.perf_counter() - t
        self.seconds += spent
        self.scored_steps.append(state.global_step)
        self.scoring_seconds.append(round(spent, 2))
        return out

    def _affordable(self, share: float = 2.0) -> bool:
        """Within budget after `share` more scorings of the validation sample (2: this one, and one
        kept in reserve for the last evaluation, which always runs)."""
        if self.last_cost is None or self._started is None or self.budget >= 1:
            return True  # the first evaluation measures what one costs; a budget of 1 scores every one
        training = time.perf_counter() - self._started - self.seconds
        return self.seconds + share * self.last_cost <= self.budget * training

    def _score(self, model, examples: list[Example], prefix: str) -> dict[str, float]:
        with answering(model):
            scored = generate_and_score(
                model, self.tokenizer, examples, self.config, self.precision, metric=self.metric
            )
        self.key = self.key or next(iter(scored["metrics"]))
        out = {f"{prefix}_{self.key}": float(scored["metrics"][self.key])}
        scores = [e["score"] for e in scored["per_example"] if "score" in e]
        if len(scores) > 1:
            mean = sum(scores) / len(scores)
            sd = math.sqrt(sum((s - mean) ** 2 for s in scores) / (len(scores) - 1))
            out[f"{prefix}_{self.key}_se"] = round(sd / math.sqrt(len(scores)), 5)
        return out

    def summary(self, train_seconds: float) -> dict:
        """For run.json: what continuous evaluation scored and what it cost."""
        return {
            "metric": self.metric,
            "key": self.key,
            "rows": len(self.sample),
            "train_rows": len(self.train_sample),
            "max_new_tokens": self.config.max_new_tokens,
            "scored_steps": self.scored_steps,
            "scoring_seconds": self.scoring_seconds,
            "skipped_steps": self.skipped_steps,
            "leakage_rows": len(self.probe.prompts) if self.probe else 0,
            **({"leakage_form": self.probe.form} if self.probe else {}),
            "seconds": round(self.seconds, 1),
            "share_of_training": round(self.seconds / max(1e-9, train_seconds - self.seconds), 3),
            "budget": self.budget,
        }


def balance_keeps(kept: tuple[float, float] | None, current: tuple[float, float], best: float, sign: int) -> bool:
    """`select_best: balance`'s rule, applied at each evaluation as it comes (so the doctor, replaying
    it over a finished run's curve, names the step a rerun with the same seed keeps). `kept`,
    `current`: (task metric, leakage); `best`: the best task metric so far, current included.
    Within BALANCE_BAND of the best, the least leakage wins, then the better metric; kept weights
    that fall out of the band give way to the current ones (then the best)."""

    def in_band(value: float) -> bool:
        return sign * (best - value) <= BALANCE_BAND * abs(best)

    if kept is None or not in_band(kept[0]):
        return True
    return in_band(current[0]) and (current[1], -sign * current[0]) < (kept[1], -sign * kept[0])


def balance_choice(points: list[tuple[int, float, float]], sign: int) -> tuple[int, float, float] | None:
    """The (step, task metric, leakage) that balance_keeps ends with over evaluations in order: the
    step a run with select_best: balance keeps (the doctor replays it over a finished run's curve)."""
    kept, best = None, None
    for step, value, leaked in points:
        best = value if best is None else max(best, value, key=lambda v: sign * v)
        if balance_keeps(kept and kept[1:], (value, leaked), best, sign):
            kept = (step, value, leaked)
    return kept


class KeepBestByMetric(TrainerCallback):
    """`train.select_best: metric`: keep the weights of the evaluation with the best task metric,
    restore them when training ends, and stop early after `patience` scored evaluations without
    improvement. Only the trainable weights are copied (a LoRA adapter: ~20 MB for SmolLM2-135M
    at rank 16), in memory, on each new best. `balance`: keep by balance_keeps instead (the
    task metric and eval_leakage); early stopping still counts evaluations without a better metric."""

    def __init__(self, evaluator: TaskEvaluator, patience: int = 0, min_delta: float = 0.0, balance: bool = False):
        self.evaluator, self.patience, self.min_delta, self.balance = evaluator, patience, min_delta, balance
        self.best_value = None
        self.best_loss = float("inf")  # validation loss at the best step: the tie-breaker
        self.best_step = None
        self.kept = None  # balance: (metric, leakage) of the kept weights
        self.kept_step = None
        self._best_weights = None
        self._since_best = 0

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
        value = (metrics or {}).get(f"eval_{self.evaluator.key}")
        if value is None or model is None:
            return
        sign = 1 if self.evaluator.greater_is_better else -1
        loss = metrics.get("eval_loss", float("inf"))
        improved = self.best_value is None or sign * (value - self.best_value) > self.min_delta
        # A tie on the metric (common on small samples) keeps the weights with the lower validation
        # loss, but is no improvement that would reset early stopping's patience.
        tie = not improved and value == self.best_value and loss < self.best_loss
        if improved or tie:
            self.best_value, self.best_loss, self.best_step = value, loss, state.global_step
        if self.balance:
            best = value if self.best_value is None else max(self.best_value, value, key=lambda v: sign * v)
            current = (value, metrics.get("eval_leakage", 0.0))
            if balance_keeps(self.kept, current, best, sign):
                self.kept, self.kept_step = current, state.global_step
                self._best_weights = self._copy(model)
        elif improved or tie:
            self.kept_step = state.global_step
            self._best_weights = self._copy(model)
        if improved:
            self._since_best = 0
        else:
            self._since_best += 1
            if self.patience and self._since_best >= self.patience:
                control.should_training_stop = True

    @staticmethod
    def _copy(model) -> dict:
        return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if self._best_weights is None or model is None or self.kept_step == state.global_step:
            return
        params = dict(model.named_parameters())
        for name, value in self._best_weights.items():
            params[name].data.copy_(value)


def continuous_evaluation(config: RunConfig, splits: Splits, tokenizer, precision: Precision) -> TaskEvaluator | None:
    """The task metric at every evaluation, where the data has one: chat rows with a validation
    split, and `train.metric_rows` > 0."""
    t = config.train
    possible = t.metric_rows > 0 and splits.validation and splits.validation[0].kind != "text"
    if not possible:
        if t.select_best in ("metric", "balance"):
            raise ConfigError(
                f"train.select_best: {t.select_best} needs continuous evaluation: prompt/answer data with a "
                "validation split, and train.metric_rows > 0"
            )
        return None
    task_rows = [e for e in splits.train if not e.replayed]  # the task's rows: data.replay's are not scored
    probe = leakage_probe(config, task_rows, tokenizer, precision)
    if t.select_best == "balance" and probe is None:
        raise ConfigError(
            "train.select_best: balance needs the leakage probe: train.leakage_rows > 0 and an eval.general "
            "suite with instructions (eval.general: default)"
        )
    return TaskEvaluator(
        splits.validation,
        task_rows,
        tokenizer,
        config.eval,
        precision,
        rows=t.metric_rows,
        budget=t.metric_budget,
        seed=t.seed,
        probe=probe,
    )


def record_selection(run: RunDir, trainer, task_eval: TaskEvaluator | None, train_seconds: float) -> None:
    """run.json: which checkpoint's weights were kept and by what (validation loss or the task
    metric), and what continuous evaluation cost."""
    stopped_early = trainer.state.global_step < trainer.state.max_steps
    if trainer.state.best_model_checkpoint:
        run.update_info(
            best_checkpoint_step=int(trainer.state.best_model_checkpoint.rsplit("-", 1)[-1]),
            selected_by="loss",
            stopped_early=stopped_early,
        )
    keeper = next((c for c in trainer.callback_handler.callbacks if isinstance(c, KeepBestByMetric)), None)
    if keeper is not None and keeper.kept_step is not None:
        run.update_info(
            best_checkpoint_step=keeper.kept_step,
            selected_by="balance" if keeper.balance else f"eval_{task_eval.key}",
            best_metric=keeper.kept[0] if keeper.balance else keeper.best_value,
            stopped_early=stopped_early,
        )
    if task_eval is not None:
        run.update_info(continuous_evaluation=task_eval.summary(train_seconds))
