"""The price of a reinforcement (GRPO) run's steps: it is generation-bound.

Each optimizer step samples its answers (train.batch_size x gradient_accumulation of them, whole
groups of grpo.num_generations per prompt), scores them, then runs the forward and backward of each
micro-batch of prompt + answer, and a frozen reference's forward when grpo.beta > 0. Sampling is
priced as evaluation's generation is (estimate.py's `_generation`): a start that learned the task
(train.init_from) writes answers as long as the references, with a chance per row of running to the
limit; the base model runs to the limit. Prompts are drawn at random, so each round's prompt width
is priced at the widest likely among its prompts.
"""

from __future__ import annotations

import math

from tuneloop.plan.calibrate import Calibration


def rl_step_seconds(
    calib: Calibration,
    steps: int,
    completions: int,
    micro_batch: int,
    prompt_width: int,
    stops: int,
    limit: int,
    ends: float,
    reference: bool,
) -> tuple[float, int, int]:
    """(seconds, trained tokens, decoding steps) of `steps` optimizer steps of `completions` answers
    each, sampled from prompts `prompt_width` wide: with probability `ends` every answer of a round
    ends by `stops` tokens, else the round runs to `limit`."""
    sampling = ends * calib.generate_seconds(completions, prompt_width, stops) + (1 - ends) * calib.generate_seconds(
        completions, prompt_width, limit
    )
    answer = ends * stops + (1 - ends) * limit
    row = prompt_width + round(answer)
    micro_steps = math.ceil(completions / micro_batch)
    training = micro_steps * calib.step_seconds(micro_batch, row, micro_batch * round(answer))
    if reference:  # the frozen reference's log-probabilities of the same rows
        training += micro_steps * calib.validation_seconds(micro_batch, row)
    return steps * (sampling + training), steps * completions * row, round(steps * answer)
