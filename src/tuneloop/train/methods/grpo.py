"""grpo: reinforcement fine-tuning of a LoRA adapter with graders (TRL's GRPOTrainer, train/grpo.py).

It learns from prompts: each row's answer is the reference the graders score against, never a
target to imitate. Start it from a supervised run (`train.init_from`) that already writes the
task's form: from the base model, a group of answers that all score 0 teaches nothing.
"""

from __future__ import annotations

from tuneloop.config import ConfigError, RunConfig
from tuneloop.train.methods.base import Method, adapter_settings


def build_grpo(
    model,
    tokenizer,
    config: RunConfig,
    train_examples,
    validation_examples,
    *,
    precision,
    output_dir,
    callbacks=(),
    device: str = "cpu",
    task_eval=None,
):
    from tuneloop.eval.evaluate import metric_for
    from tuneloop.eval.graders import GraderError, build_graders
    from tuneloop.train.grpo import build_grpo_trainer, to_prompt_rows

    task = [e for e in train_examples if not e.replayed]
    try:
        graders = build_graders(
            config.grpo.graders, metric_for(validation_examples or task, config.eval), [e.answer for e in task]
        )
    except GraderError as e:
        raise ConfigError(str(e)) from None
    return build_grpo_trainer(
        model,
        tokenizer,
        to_prompt_rows(train_examples),
        to_prompt_rows(validation_examples),
        graders=graders,
        grpo=config.grpo,
        max_completion_length=completion_tokens(config),
        train=config.train,
        lora=config.lora,
        precision=precision,
        output_dir=output_dir,
        callbacks=callbacks,
        device=device,
        task_eval=task_eval,
    )


def completion_tokens(config: RunConfig) -> int:
    """grpo.max_completion_length, or (auto) what the references need: eval.max_new_tokens, resolved."""
    limit = config.grpo.max_completion_length
    return config.eval.max_new_tokens if limit == "auto" else limit


def grpo_settings(config: RunConfig) -> None:
    """What grpo cannot take, checked once train/auto.py has settled the batch: packing, groups split
    across optimizer steps, and graders that cannot be built (an import, a template, an expression)."""
    from tuneloop.eval.graders import GraderError, build_graders

    adapter_settings(config)
    train, grpo = config.train, config.grpo
    if train.packing:
        raise ConfigError("train.packing: grpo trains on the answers it samples, not on packed rows")

    if isinstance(train.batch_size, int):
        completions = train.batch_size * train.gradient_accumulation
        if completions % grpo.num_generations and grpo.num_generations % completions:
            raise ConfigError(
                f"grpo.num_generations ({grpo.num_generations}) and the effective batch ({completions} answers: "
                "train.batch_size x gradient_accumulation) must divide one another: a step holds whole groups"
            )
    try:
        build_graders(grpo.graders, "exact_match", [])
    except GraderError as e:
        raise ConfigError(str(e)) from None


GRPO = Method(
    name="grpo",
    summary="reinforcement fine-tuning of a LoRA adapter: sampled answers rewarded by graders (the task metric)",
    build_trainer=build_grpo,
    learns_from="prompts",
    # RL steps are noisy and compound: the usual LoRA SFT rates (2e-4) collapse a policy in tens of steps.
    lr_range=(5e-6, 1e-4),
    lr_usual=2e-5,
    search_space={
        "train.learning_rate": {"low": 5e-6, "high": 1e-4, "log": True},
        "grpo.num_generations": {"choices": [4, 8]},
        "grpo.beta": {"choices": [0.0, 0.04]},
    },
    knobs=frozenset(
        {"grpo.num_generations", "grpo.temperature", "grpo.beta", "grpo.max_completion_length", "train.init_from"}
    ),
    reference_forward=lambda config: config.grpo.beta > 0,
    samples_per_row=lambda config: config.grpo.num_generations,
    validation_loss=False,
    # Sampling runs the layers at a new length every token: compiled layers hit dynamo's recompile
    # limit in the first step and trained at 60 tokens/s against 160 eager (LOG.md, #grpo).
    compiles=False,
    learns_answer_ends=lambda config: config.train.init_from is not None,
    check=grpo_settings,
)
