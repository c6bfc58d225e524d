"""orpo: preference tuning without a reference model (TRL's ORPOTrainer, length-grouped: train/orpo.py)."""

from __future__ import annotations

from tuneloop.train.methods.base import Method
from tuneloop.train.methods.dpo import PREFERENCE_SPACE
from tuneloop.train.preference import (
    after_preference_training,
    before_preference_training,
    build_preference_trainer,
    to_preference_rows,
)


def build_orpo(model, tokenizer, train_examples, validation_examples, *, train_on: str, task_eval=None, **settings):
    from trl.experimental.orpo import ORPOConfig

    from tuneloop.train.orpo import LengthGroupedORPOTrainer

    rows = [to_preference_rows(part) for part in (train_examples, validation_examples)]
    return build_preference_trainer(
        model,
        tokenizer,
        *rows,
        config_class=ORPOConfig,
        trainer_class=LengthGroupedORPOTrainer,
        method_arguments={},
        **settings,
    )


ORPO = Method(
    name="orpo",
    summary="preference tuning of a LoRA adapter without a reference model (the odds ratio's weight: train.beta)",
    build_trainer=build_orpo,
    learns_from="pairs",
    search_space=PREFERENCE_SPACE,
    knobs=frozenset({"train.beta", "train.init_from"}),
    continuous_evaluation=False,
    before_training=before_preference_training,
    after_training=after_preference_training,
    sides=2,
)
