"""GRPO (group relative policy optimisation) on TRL's GRPOTrainer, rewarded by graders (eval/graders.py).

Each step samples `grpo.num_generations` answers per prompt, scores each with the graders (the run's
task metric by default), and moves the policy towards the answers that scored above their group's
mean. A group whose answers all score the same teaches nothing: the doctor watches for that.

Validation is tuneloop's continuous evaluation (the task metric on validation rows, greedy), not
GRPO's own sampled evaluation: that would cost a training step's generation per evaluation, and
the greedy task metric is what the run is judged by (and what reward hacking leaves flat).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from tuneloop.config import ConfigError, GrpoConfig, LoraConfig, TrainConfig
from tuneloop.data import Example
from tuneloop.eval.graders import Grader, GraderError
from tuneloop.models.precision import Precision
from tuneloop.train.sft import adapter_config, eval_steps_for, trainer_arguments


def to_prompt_rows(examples: list[Example]):
    """TRL's conversational prompt rows, each with the reference row the graders read (as JSON: rows
    of different shapes share one Arrow column)."""
    from datasets import Dataset

    return Dataset.from_list(
        [
            {
                "prompt": [{"role": m["role"], "content": m["content"]} for m in e.prompt],
                "row": json.dumps({**e.record, "reference": e.answer}, ensure_ascii=False, default=str),
            }
            for e in examples
        ]
    )


def reward_functions(graders: list[Grader]) -> tuple[list, list[float]]:
    """One TRL reward function per grader (TRL logs each as rewards/<name>), and their weights,
    normalised so the reward stays in [0, 1]."""

    def function(grader: Grader):
        def score(prompts, completions, row, **kwargs) -> list[float]:
            out = []
            for prompt, completion, raw in zip(prompts, completions, row):
                answer = completion[-1]["content"] if isinstance(completion, list) else completion
                try:
                    out.append(grader.score(prompt, answer, json.loads(raw)))
                except GraderError:
                    raise
                except Exception as e:  # name the grader: TRL's trace would not
                    raise GraderError(f"grader {grader.name!r} failed on an answer: {type(e).__name__}: {e}") from e
            return out

        score.__name__ = grader.name.replace(":", "_").replace(".", "_")
        return score

    total = sum(g.weight for g in graders)
    return [function(g) for g in graders], [g.weight / total for g in graders]


def build_grpo_trainer(
    model,
    tokenizer,
    train_rows,
    val_rows,
    *,
    graders: list[Grader],
    grpo: GrpoConfig,
    max_completion_length: int,
    train: TrainConfig,
    lora: LoraConfig,
    precision: Precision,
    output_dir: Path,
    callbacks=(),
    device: str = "cpu",
    task_eval=None,
):
    from transformers import PrinterCallback
    from trl import GRPOConfig

    from tuneloop.train.task_eval import KeepBestByMetric

    completions = train.batch_size * train.gradient_accumulation  # per optimizer step
    if completions % grpo.num_generations and grpo.num_generations % completions:
        raise ConfigError(
            f"grpo.num_generations ({grpo.num_generations}) and the effective batch ({completions} answers: "
            "train.batch_size x gradient_accumulation) must divide one another: a step holds whole groups"
        )
    eval_steps = eval_steps_for(train, len(train_rows) * grpo.num_generations)  # steps count answers
    rewards, weights = reward_functions(graders)
    arguments = trainer_arguments(train, output_dir, eval_steps, device, keep_best=False)
    args = GRPOConfig(
        **arguments,
        num_generations=grpo.num_generations,
        # A generation round holds whole groups and whole optimizer steps.
        generation_batch_size=math.lcm(completions, grpo.num_generations),
        max_completion_length=max_completion_length,
        temperature=grpo.temperature,
        beta=grpo.beta,
        reward_weights=weights,
        bf16=precision.autocast_dtype is not None,
        log_completions=False,
    )
    callbacks = list(callbacks)
    if task_eval is not None:
        callbacks += [task_eval]
        if train.select_best != "loss":  # keep the weights of the best held-out metric, not the last ones
            callbacks += [
                KeepBestByMetric(
                    task_eval,
                    train.early_stopping_patience,
                    train.early_stopping_min_delta,
                    balance=train.select_best == "balance",
                )
            ]
    elif train.early_stopping_patience:
        raise ConfigError(
            "train.early_stopping_patience with grpo stops on the task metric: it needs train.metric_rows"
        )
    trainer = scored_grpo_trainer()(
        model=model,
        reward_funcs=rewards,
        args=args,
        train_dataset=train_rows,
        eval_dataset=val_rows,
        processing_class=tokenizer,
        peft_config=adapter_config(model, lora),
        callbacks=callbacks,
        task_eval=task_eval,
    )
    trainer.remove_callback(PrinterCallback)
    return trainer


def scored_grpo_trainer():
    """The trainer class (made on use: TRL's GRPO module loads when a GRPO run starts, not with tuneloop)."""
    from transformers import Trainer
    from trl import GRPOTrainer

    class TaskScoredGRPOTrainer(GRPOTrainer):
        """GRPO whose evaluation is the task metric of continuous evaluation (see the module's docstring)."""

        def __init__(self, *args, task_eval=None, **kwargs):
            super().__init__(*args, **kwargs)
            self.task_eval = task_eval

        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
            metrics = {}
            if self.task_eval is not None and self.is_world_process_zero():
                metrics = self.task_eval(self.model, self.state)
            if metrics:  # Trainer's log: GRPO's own would fold the steps' pending reward metrics into this record
                Trainer.log(self, metrics)
            self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
            return metrics

    return TaskScoredGRPOTrainer
