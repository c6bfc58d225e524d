"""Turn a verdict into concrete config changes, each with a one-sentence why.

With the run's config the changes are absolute (`train.learning_rate` 2e-4 → 1e-4); with a bare
metrics.jsonl the hyperparameters are unknown and the changes are relative ("x0.5").
`next_config` is the run's config with every change applied that is a config key; the adapter
scale is an inference-time change and stays a recommendation only.

A healthy run still gets what could improve its result next: more epochs when the validation
loss or metric was still improving at the end, else a larger adapter or other step sizes.
Every change carries its cost: the estimated training minutes of a run with it, scaled from the
run's own measured training time (so on this machine, at this data size).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace

import yaml

from tuneloop.config import config_from_dict, get_key, set_key
from tuneloop.doctor.diagnose import Diagnosis
from tuneloop.train.methods import method_of

MAX_RANK = 64
MAX_EPOCHS = 10
MIN_UNDERFIT_RANK = 8  # doubling a rank-2 adapter to 4 barely adds capacity
# Measured cost of a change, per training step (LOG.md): LoRA dropout's masks cost ~35% of a CPU
# step; the rank barely matters on CPU (the LoRA products are overhead-bound, not FLOP-bound).
DROPOUT_STEP_COST = 1.35
REPLAY = 0.2  # data.replay the doctor proposes against behaviour leakage (bench/results/balance.json)


def estimated_minutes(train_seconds: float | None, config: dict | None, changes: dict) -> float | None:
    """Training minutes of a run of `config` with `changes`, from the run's own training time:
    time scales with the epochs and (grpo, generation-bound) with the answers sampled per prompt, and
    LoRA dropout's masks add DROPOUT_STEP_COST per step."""
    if not train_seconds or not config:
        return None
    epochs_now, epochs_next = (
        get_key(config, "train.epochs"),
        changes.get("train.epochs", get_key(config, "train.epochs")),
    )
    factor = epochs_next / epochs_now if isinstance(epochs_now, (int, float)) and epochs_now > 0 else 1.0
    replay_now = get_key(config, "data.replay") or 0  # replay adds this share of rows to every epoch
    factor *= (1 + (changes.get("data.replay", replay_now) or 0)) / (1 + replay_now)
    generations_now = get_key(config, "grpo.num_generations")  # changed only for grpo runs
    if isinstance(generations_now, int) and isinstance(changes.get("grpo.num_generations"), int):
        factor *= changes["grpo.num_generations"] / generations_now
    dropout_now = get_key(config, "lora.dropout") or 0
    dropout_next = changes.get("lora.dropout", dropout_now) or 0
    if dropout_next and not dropout_now:
        factor *= DROPOUT_STEP_COST
    elif dropout_now and not dropout_next:
        factor /= DROPOUT_STEP_COST
    return round(train_seconds * factor / 60, 1)


@dataclass(frozen=True)
class Recommendation:
    param: str  # dotted config key, e.g. "train.learning_rate"; "serve.adapter_scale" is for inference
    from_: object  # the current value, or None when unknown
    to: object  # the new value, or a relative change such as "x0.5" when the current value is unknown
    why: str
    applied: bool = True  # part of next_config; False for alternatives and inference-time changes
    minutes: float | None = None  # estimated training minutes of a run with this change (None: unknown)

    @property
    def relative(self) -> bool:
        """A relative change ("x0.5"): the current value is unknown, so it cannot be applied."""
        return isinstance(self.to, str) and self.to[:1] == "x"

    def to_dict(self) -> dict:  # "from" is a Python keyword, hence the field's trailing underscore
        return {
            "param": self.param,
            "from": self.from_,
            "to": self.to,
            "why": self.why,
            "applied": self.applied,
            "minutes": self.minutes,
        }


def recommend(diagnosis: Diagnosis, config: dict | None) -> Diagnosis:
    """Fill in diagnosis.recommendations and diagnosis.next_config."""
    get = (lambda key: get_key(config, key)) if config else (lambda key: None)
    if diagnosis.summary.get("objective") == "preference":
        changes = _preference(diagnosis, get)
    elif diagnosis.summary.get("objective") == "reinforcement":
        changes = _reinforcement(diagnosis, get)
    else:
        changes = {
            "overfitting": _overfitting,
            "underfitting": _underfitting,
            "diverging": _diverging,
            "undertrained": _undertrained,
            "healthy": _healthy,
        }[diagnosis.verdict](diagnosis, get)
    changes = _balance(diagnosis, get, changes)
    seconds = diagnosis.summary.get("train_seconds")
    changes = [
        replace(r, minutes=estimated_minutes(seconds, config, {r.param: r.to}))
        if (r.param.split(".")[0] in ("train", "lora", "grpo") or r.param == "data.replay") and not r.relative
        else r
        for r in changes
    ]
    diagnosis.recommendations = changes
    if config is not None:
        next_config = copy.deepcopy(config)
        applied = {r.param: r.to for r in changes if r.applied and not r.relative}
        for param, value in applied.items():
            set_key(next_config, param, value)
        diagnosis.next_config = next_config
        diagnosis.summary["next_run_minutes"] = estimated_minutes(seconds, config, applied)
    return diagnosis


def next_config_yaml(diagnosis: Diagnosis) -> str | None:
    """next.yaml's text when the doctor changes anything in the config, else None. Validated as
    `tuneloop run` will read it: a recommendation outside the schema is a doctor bug that must
    surface here, not as a next config that fails later."""
    if diagnosis.next_config is None or not any(r.applied for r in diagnosis.recommendations):
        return None
    config_from_dict(diagnosis.next_config, source="the doctor's next config")
    return yaml.safe_dump(diagnosis.next_config, sort_keys=False)


def _scale(value, factor: float, label: str):
    """value x factor when value is known, else the relative change as text."""
    return label if value is None else _round(value * factor)


def _overfitting(d: Diagnosis, get) -> list[Recommendation]:
    """Applied: early stopping at the best validation loss, and regularisation. Cutting the epochs
    to the best one is listed but not applied: measured on real runs (LOG.md, bench/results/
    doctor_followup.json) it made the next run worse, because a shorter cosine schedule decays the
    learning rate before the model reaches the point the long run had. Early stopping keeps the
    schedule, stops a couple of evaluations past the best point and restores it. A run that
    already stops early gets a lower learning rate instead."""
    best_epoch = d.summary.get("best_epoch")
    epochs = get("train.epochs")
    patience = get("train.early_stopping_patience")
    out = []
    if not patience:
        out.append(
            Recommendation(
                "train.early_stopping_patience",
                patience,
                2,
                "stop when validation loss stops improving and keep the best checkpoint: the "
                "epochs past it only memorise the training set",
                applied=patience is not None,
            )
        )
    out.append(
        Recommendation(
            "train.learning_rate",
            get("train.learning_rate"),
            _scale(get("train.learning_rate"), 0.5, "x0.5"),
            ("" if patience else "alternative: ")
            + "smaller steps fit the training set more slowly and generalise better",
            applied=bool(patience) and get("train.learning_rate") is not None,
        )
    )
    if (get("train.weight_decay") or 0) < 0.01:
        out.append(
            Recommendation(
                "train.weight_decay",
                get("train.weight_decay"),
                0.05,
                "weight decay (0.01-0.1) keeps the weights small, a classic regulariser",
                applied=get("train.weight_decay") is not None,
            )
        )
    if _method(get).adapter and (get("lora.dropout") or 0) < 0.1:
        out.append(
            Recommendation(
                "lora.dropout",
                get("lora.dropout"),
                0.1,
                "dropout on the adapter's input makes it rely less on any one feature",
                applied=get("lora.dropout") is not None,
            )
        )
    if best_epoch:
        out.append(
            Recommendation(
                "train.epochs",
                epochs,
                max(1, math.ceil(best_epoch)),
                f"alternative: validation loss was lowest around epoch {best_epoch:g}; fewer "
                "epochs save time, though a shorter schedule also lowers the learning rate sooner",
                applied=False,
            )
        )
    out.append(
        Recommendation(
            "train.gradient_accumulation",
            get("train.gradient_accumulation"),
            _scale(get("train.gradient_accumulation"), 2, "x2"),
            "alternative: a larger effective batch averages out noise the model would memorise",
            applied=False,
        )
    )
    if _method(get).adapter:
        out.append(
            Recommendation(
                "serve.adapter_scale",
                1.0,
                0.5,
                "without retraining: serve this adapter at half strength (alpha x 0.5) to soften it",
                applied=False,
            )
        )
    out.append(
        Recommendation(
            "data",
            None,
            "more, more diverse examples",
            "more varied data is the most reliable cure for memorisation",
            applied=False,
        )
    )
    return out


def _underfitting(d: Diagnosis, get) -> list[Recommendation]:
    out = []
    epochs = get("train.epochs")
    out.append(
        Recommendation(
            "train.epochs",
            epochs,
            _round(min(MAX_EPOCHS, epochs * 2)) if epochs else "x2",
            "the loss had not come down: the model needs more passes over the data",
        )
    )
    lr = get("train.learning_rate")
    method = _method(get)
    low, high = method.lr_range
    if lr is None or lr < high:
        to = _round(min(high, lr * 2 if lr >= low else max(lr * 2, method.lr_usual))) if lr else "x2"
        out.append(
            Recommendation(
                "train.learning_rate",
                lr,
                to,
                "a short run needs larger steps to move the weights far enough"
                + (
                    f" (below the guides' range, {low:g}-{high:g}: to their usual {method.lr_usual:g})"
                    if lr is not None and lr < low
                    else ""
                ),
                applied=lr is not None,
            )
        )
    if _method(get).adapter:
        r = get("lora.r")
        new_r = min(MAX_RANK, max(MIN_UNDERFIT_RANK, r * 2)) if r else "x2"
        out.append(Recommendation("lora.r", r, new_r, "a higher-rank adapter can express more of the task (rank 4-64)"))
        alpha = get("lora.alpha")
        out.append(
            Recommendation(
                "lora.alpha",
                alpha,
                2 * new_r if isinstance(new_r, int) else "x2",
                "keep alpha at least the rank so the adapter's update is not scaled down",
            )
        )
    accumulation = get("train.gradient_accumulation")
    if accumulation is None or accumulation > 1:
        out.append(
            Recommendation(
                "train.gradient_accumulation",
                accumulation,
                max(1, accumulation // 2) if accumulation else "x0.5",
                "a smaller effective batch gives more optimizer steps per epoch",
            )
        )
    out.append(
        Recommendation(
            "data",
            None,
            "more in-domain examples",
            "the model may not have seen enough of the task to pick it up",
            applied=False,
        )
    )
    return out


def _diverging(d: Diagnosis, get) -> list[Recommendation]:
    lr = get("train.learning_rate")
    high = _method(get).lr_range[1]
    out = [
        Recommendation(
            "train.learning_rate",
            lr,
            _round(min(lr * 0.3, high)) if lr else "x0.3",
            "a learning rate this high overshoots: the loss climbs or explodes instead of falling",
            applied=lr is not None,
        )
    ]
    if (get("train.warmup_ratio") or 0) < 0.1 and get("train.warmup_steps") is None:
        out.append(
            Recommendation(
                "train.warmup_ratio",
                get("train.warmup_ratio"),
                0.1,
                "a gradual warm-up avoids large early updates while the adapter is random",
                applied=get("train.warmup_ratio") is not None,
            )
        )
    clip = get("train.max_grad_norm")
    out.append(
        Recommendation(
            "train.max_grad_norm",
            clip,
            _round(min(clip * 0.5, 1.0)) if clip else "x0.5",
            "tighter gradient clipping caps the size of any single update",
            applied=clip is not None,
        )
    )
    return out


def _healthy(d: Diagnosis, get) -> list[Recommendation]:
    """Nothing is wrong; what could still raise the result. With headroom (the best validation
    loss or metric at the end), more of the same training; on a plateau, a larger adapter first
    (nearly free on CPU), then other step sizes and longer training as alternatives."""
    epochs, lr = get("train.epochs"), get("train.learning_rate")
    out = []
    headroom = next((f for f in d.findings if f.kind == "still_improving"), None)
    if headroom:
        what = "validation " + (headroom.evidence["metric"] if headroom.evidence.get("by") == "metric" else "loss")
        out.append(
            Recommendation(
                "train.epochs",
                epochs,
                _round(min(MAX_EPOCHS, epochs * 2)) if epochs else "x2",
                f"could improve: {what} was still improving when training ended; twice the epochs "
                "continue the climb (the best checkpoint is kept if it turns)",
                applied=epochs is not None,
            )
        )
    if _method(get).adapter:
        r, alpha = get("lora.r"), get("lora.alpha")
        new_r = min(MAX_RANK, r * 2) if r else "x2"
        if r is None or r < MAX_RANK:
            main = not headroom and r is not None
            out.append(
                Recommendation(
                    "lora.r",
                    r,
                    new_r,
                    ("could improve: " if main else "alternative: ")
                    + "a higher-rank adapter can express more of the task",
                    applied=main,
                )
            )
            out.append(
                Recommendation(
                    "lora.alpha",
                    alpha,
                    2 * new_r if isinstance(new_r, int) else "x2",
                    "keep alpha at 2 x rank so the larger adapter's update keeps its scale",
                    applied=main and alpha is not None,
                )
            )
    low, high = _method(get).lr_range
    if lr is not None and lr < high:
        out.append(
            Recommendation(
                "train.learning_rate",
                lr,
                _round(min(high, lr * 2)),
                "alternative: larger steps reach a better point in the same number of epochs",
                applied=False,
            )
        )
    if not headroom:
        out.append(
            Recommendation(
                "train.epochs",
                epochs,
                _round(min(MAX_EPOCHS, epochs * 1.5)) if epochs else "x1.5",
                "alternative: longer training, with the best checkpoint kept",
                applied=False,
            )
        )
    if lr is not None and lr > low:
        out.append(
            Recommendation(
                "train.learning_rate",
                lr,
                _round(max(low, lr * 0.5)),
                "alternative: smaller steps settle into a finer minimum",
                applied=False,
            )
        )
    return out


def _undertrained(d: Diagnosis, get) -> list[Recommendation]:
    epochs = get("train.epochs")
    return [
        Recommendation(
            "train.epochs",
            epochs,
            _round(min(MAX_EPOCHS, epochs * 1.5)) if epochs else "x1.5",
            "validation loss was still falling steeply when training stopped: train for longer",
            applied=epochs is not None,
        )
    ]


def _reinforcement(d: Diagnosis, get) -> list[Recommendation]:
    """GRPO's knobs (doctor/rl.py's findings): the group size and temperature (the signal), the
    learning rate and beta (how far the policy moves), and where it starts (train.init_from)."""
    lr, shapes = get("train.learning_rate"), {f.name for f in d.findings}
    generations, temperature, beta = get("grpo.num_generations"), get("grpo.temperature"), get("grpo.beta")
    smaller_steps = Recommendation(
        "train.learning_rate",
        lr,
        _scale(lr, 0.5, "x0.5"),
        "smaller steps move the policy less per step",
        applied=lr is not None,
    )
    warmer = Recommendation(
        "grpo.temperature",
        temperature,
        _round(min(2.0, temperature + 0.2)) if temperature else "x1.2",
        "sampling at a higher temperature makes a group's answers differ more",
        applied=temperature is not None,
    )
    out = []
    if d.verdict == "diverging":
        return [
            replace(smaller_steps, to=_scale(lr, 0.3, "x0.3"), why="the loss or the reward became NaN: steps too large")
        ]
    if "no_signal" in shapes:
        never = (d.summary.get("last_reward") or 0) < 0.05
        if never and not get("train.init_from"):
            out.append(
                Recommendation(
                    "train.init_from",
                    None,
                    "a supervised run of this data",
                    "no answer is ever rewarded: train with method lora first, then start grpo from that run",
                    applied=False,
                )
            )
        out += [
            Recommendation(
                "grpo.num_generations",
                generations,
                min(64, generations * 2) if generations else "x2",
                "more answers per prompt make a group with different scores likelier: a signal to learn from",
                applied=generations is not None,
            ),
            warmer,
        ]
    if shapes & {"reward_hacking", "length_runaway", "kl_runaway"}:
        out.append(smaller_steps)
        if beta is not None and beta < 0.04 and "kl_runaway" not in shapes:
            out.append(
                Recommendation(
                    "grpo.beta",
                    beta,
                    0.04,
                    "a KL penalty holds the policy near where it started, where the held-out metric was",
                )
            )
        if "length_runaway" in shapes:
            out.append(
                Recommendation(
                    "grpo.graders",
                    get("grpo.graders"),
                    "add format",
                    "reward the answers' form, so a long answer that games the metric scores less",
                    applied=False,
                )
            )
    if "collapse" in shapes:
        out += [r for r in (smaller_steps, warmer) if r.param not in {o.param for o in out}]
    if d.verdict == "healthy":
        epochs = get("train.epochs")
        out.append(
            Recommendation(
                "train.epochs",
                epochs,
                _round(epochs * 2) if epochs else "x2",
                "the held-out metric rose with the reward: more passes over the prompts may raise it further",
                applied=False,
            )
        )
    return out


def _preference(d: Diagnosis, get) -> list[Recommendation]:
    """DPO / ORPO's knobs: beta (how far from the reference), the learning rate, the epochs."""
    lr, beta, epochs = get("train.learning_rate"), get("train.beta"), get("train.epochs")
    if d.verdict == "diverging":
        return [
            Recommendation(
                "train.learning_rate",
                lr,
                _scale(lr, 0.3, "x0.3"),
                "preference losses blow up at SFT-sized learning rates; DPO usually runs at 5e-7 to 5e-5",
                applied=lr is not None,
            )
        ]
    if d.verdict == "overfitting":  # chosen_collapse
        out = []
        if "train.sft_weight" in _method(get).knobs and not get("train.sft_weight"):
            out.append(
                Recommendation(
                    "train.sft_weight",
                    get("train.sft_weight"),
                    1.0,
                    "a supervised loss on the chosen answers (RPO) holds their likelihood up while DPO widens the "
                    "margin",
                )
            )
        out += [
            Recommendation(
                "train.beta",
                beta,
                _round(min(beta * 2, 1.0)) if beta else "x2",
                "a higher beta keeps the model closer to the reference, so it cannot drop the good answers' "
                "likelihood to widen the margin",
                applied=beta is not None,
            ),
            Recommendation(
                "train.learning_rate",
                lr,
                _scale(lr, 0.5, "x0.5"),
                "smaller steps slow the collapse of the chosen answers' likelihood",
                applied=lr is not None,
            ),
        ]
        if isinstance(epochs, (int, float)) and epochs > 1:
            out.append(Recommendation("train.epochs", epochs, epochs - 1, "stop before the collapse sets in"))
        return out
    if d.verdict == "underfitting":  # at_chance
        return [
            Recommendation(
                "train.learning_rate",
                lr,
                _scale(lr, 3, "x3"),
                "the preference accuracy never left chance: the updates are too small to separate the pairs",
                applied=lr is not None,
            ),
            Recommendation(
                "train.epochs",
                epochs,
                epochs + 1 if isinstance(epochs, (int, float)) else "+1",
                "more passes over the pairs",
                applied=isinstance(epochs, (int, float)),
            ),
        ]
    return []


def _balance(d: Diagnosis, get, changes: list[Recommendation]) -> list[Recommendation]:
    """When the run cost the model its general behaviour (doctor/balance.py): the adapter scale the
    scale curve measured, in place of the unmeasured half strength; fewer epochs and a lower
    learning rate as alternatives that retrain. The verdict's own changes stay as they are. An earlier
    evaluation with a better balance (the leakage curve) gets train.select_best: balance, applied: it
    costs nothing, and the same seed retraces the run to that evaluation's weights."""
    checkpoint = next((f for f in d.findings if f.kind == "balance_checkpoint"), None)
    out = list(changes)
    if checkpoint is not None and get("train.select_best") != "balance":
        e = checkpoint.evidence
        out.insert(
            max((i + 1 for i, r in enumerate(out) if r.applied), default=0),
            Recommendation(
                "train.select_best",
                get("train.select_best"),
                "balance",
                f"keep the checkpoint with the best balance, measured: step {e['step']} kept the validation "
                f"metric at {e['value']:g} ({e['saved_value']:g} saved) and leaked {e['leakage']:.0%} of generic "
                f"prompts ({e['saved_leakage']:.0%} saved); same training, other weights kept",
                applied=get("train.select_best") is not None,
            ),
        )
    if not d.has("forgetting"):
        return out
    what = " and ".join(f.message.split(":")[0] for f in d.findings if f.kind == "forgetting")
    measured = next((f for f in d.findings if f.kind == "adapter_scale"), None)
    out = [r for r in out if not (r.param == "serve.adapter_scale" and measured)]
    if measured and (measured.evidence["scale"] or 1.0) < 1.0:
        e = measured.evidence
        out.insert(
            0,
            Recommendation(
                "serve.adapter_scale",
                1.0,
                e["scale"],
                f"{what}: measured, scale {e['scale']:g} keeps {e['gain_kept']:.0%} of the validation gain and "
                f"cuts the general loss from {e['general_loss_at_1']:g} to {e['general_loss']:g} points "
                f"(tuneloop serve --scale auto, tuneloop export --scale auto)",
                applied=False,
            ),
        )
    replay = get("data.replay")
    if not replay and d.has("behaviour_leakage") and _method(get).learns_from == "answers":
        # right after the verdict's own applied changes: shown among the top ones, as next.yaml applies it
        at = max((i + 1 for i, r in enumerate(out) if r.applied), default=0)
        out.insert(
            at,
            Recommendation(
                "data.replay",
                replay,
                REPLAY,
                f"{what}: mix the base model's own answers to generic prompts into training "
                f"({REPLAY:.0%} of the rows), so it keeps answering unrelated prompts as it did",
                applied=replay is not None,
            ),
        )
    epochs, lr = get("train.epochs"), get("train.learning_rate")
    if not any(r.param == "train.epochs" and r.applied for r in out) and (epochs is None or epochs > 1):
        out.append(
            Recommendation(
                "train.epochs",
                epochs,
                _round(max(1, epochs / 2)) if epochs else "x0.5",
                f"alternative for {what}: fewer passes over the task specialise the model less",
                applied=False,
            )
        )
    low, _ = _method(get).lr_range
    if lr is None or lr > low:
        out.append(
            Recommendation(
                "train.learning_rate",
                lr,
                _round(max(low, lr * 0.5)) if lr else "x0.5",
                f"alternative for {what}: smaller steps move the weights less far from the base model",
                applied=False,
            )
        )
    return out


def _method(get):
    """The run's method (LoRA when the config is not at hand)."""
    return method_of(get("train.method") or "lora")


def _round(value):
    if isinstance(value, float):
        return float(f"{value:.3g}")
    return value
