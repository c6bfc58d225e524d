"""orpo: preference tuning without a reference model (TRL's ORPOTrainer, length-grouped: train/orpo.py)."""

from __future__ import annotations

from tuneloop.config import RunConfig
from tuneloop.train.methods.base import Method
from tuneloop.train.methods.dpo import PREFERENCE_SPACE
from tuneloop.train.preference import after_preference_training, before_preference_training, build_preference_trainer


def build_orpo(model, tokenizer, config: RunConfig, train_examples, validation_examples, **settings):
    from trl.experimental.orpo import ORPOConfig

    from tuneloop.train.orpo import LengthGroupedORPOTrainer

    return build_preference_trainer(
        model,
        tokenizer,
        config,
        train_examples,
        validation_examples,
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
