"""dpo: preference tuning of a LoRA adapter against a frozen reference (TRL's DPOTrainer with the
label-only head, train/dpo.py); RPO's NLL term on the chosen answers with train.sft_weight."""

from __future__ import annotations

from tuneloop.config import RunConfig
from tuneloop.train.methods.base import Method
from tuneloop.train.preference import after_preference_training, before_preference_training, build_preference_trainer

# Preference tuning moves a model that already answers well: smaller steps, and beta, its leash.
PREFERENCE_SPACE = {
    "train.learning_rate": {"low": 1e-6, "high": 1e-4, "log": True},
    "train.beta": {"choices": [0.05, 0.1, 0.2, 0.5]},
}


def build_dpo(model, tokenizer, config: RunConfig, train_examples, validation_examples, **settings):
    from trl import DPOConfig

    from tuneloop.train.dpo import LabelHeadDPOTrainer

    t = config.train
    # RPO: DPO's sigmoid loss plus NLL on the chosen answers
    rpo = {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, t.sft_weight]} if t.sft_weight else {}
    return build_preference_trainer(
        model,
        tokenizer,
        config,
        train_examples,
        validation_examples,
        config_class=DPOConfig,
        trainer_class=LabelHeadDPOTrainer,
        method_arguments=rpo,
        **settings,
    )


DPO = Method(
    name="dpo",
    summary="preference tuning of a LoRA adapter against a frozen reference (the init_from run, or the base)",
    build_trainer=build_dpo,
    learns_from="pairs",
    search_space=PREFERENCE_SPACE,
    knobs=frozenset({"train.beta", "train.sft_weight", "train.init_from"}),
    continuous_evaluation=False,
    before_training=before_preference_training,
    after_training=after_preference_training,
    sides=2,
    reference_forward=lambda config: True,
    # DPO's loss compares the two answers' likelihoods; nothing in it teaches where an answer ends.
    # From the base model (no init_from) and without RPO's NLL term it writes as the base model does:
    # banking77 pairs, 22 of 24 fine-tuned rows ran to max_new_tokens (LOG.md).
    learns_answer_ends=lambda config: bool(config.train.init_from or config.train.sft_weight),
)
