"""The other side of the balance: what the fine-tune cost the model, read from eval.json's `general`
(eval/general.py) and `scale_curve` (eval/scale_curve.py).

Findings (kind `forgetting`, beside the verdict on the curves, since a run can be healthy on its
task and still over-specialised):
  behaviour_leakage  more generic prompts answered in the task's form than the base model did,
                     beyond noise (the paired interval excludes zero)
  general_ability    the multiple-choice general score fell beyond noise
  drift              the base model's own answers became DRIFT nats per token less likely, beyond noise
A run that gained on its task and lost nothing measurable gets a `balance_kept` note saying so.
From the curves (eval_leakage, train/task_eval.py's LeakageProbe): `balance_checkpoint`, an earlier
evaluation that kept the task metric within 5% of the best and leaked less than the saved weights,
beyond noise. Recommendations are measured where they can be: the adapter scale from the scale
curve; the checkpoint with the best balance (train.select_best: balance); fewer epochs and a lower
learning rate as alternatives that retrain.
"""

from __future__ import annotations

import math

from tuneloop.doctor.curves import Curves
from tuneloop.doctor.diagnose import NOISE_Z, Finding
from tuneloop.eval.general import beyond_noise
from tuneloop.train.task_eval import BALANCE_BAND, balance_choice

# Drift that counts as forgetting: the base model's answers ~1.65x less likely per token (e^0.5).
# Every fine-tune moves the distribution a little, measurably on 40 prompts; this is the size the
# guides' "too specialised" means, not noise (SmolLM2 runs in bench/results/balance.json).
DRIFT = 0.5


def balance_findings(general: dict | None, scale_curve: dict | None = None) -> list[Finding]:
    if not general:
        return []
    leakage, score, drift = general["leakage"], general.get("score"), general["drift"]
    found = []
    if beyond_noise(leakage, +1):
        example = next((e for e in leakage["examples"] if e["leaked"]), None)
        n = leakage["n"]
        found.append(
            Finding(
                "forgetting",
                {
                    "leaked": round(leakage["finetuned"] * n),
                    "base_leaked": round(leakage["base"] * n),
                    "prompts": n,
                    "form": leakage["form"],
                    "difference": [round(leakage["low"], 3), round(leakage["high"], 3)],
                    **({"example": {k: example[k] for k in ("prompt", "base", "finetuned")}} if example else {}),
                },
                0.9,
                f"behaviour leakage: {round(leakage['finetuned'] * n)} of {n} generic prompts answered as "
                f"{leakage['form']} (base model: {round(leakage['base'] * n)})"
                + (f', e.g. "{example["prompt"]}" -> "{_short(example["finetuned"])}"' if example else ""),
                name="behaviour_leakage",
            )
        )
    if beyond_noise(score, -1):
        found.append(
            Finding(
                "forgetting",
                {k: round(score[k], 1) for k in ("base", "finetuned", "difference", "low", "high")} | {"n": score["n"]},
                0.8,
                f"general ability fell: {score['base']:.1f} -> {score['finetuned']:.1f} points "
                f"({score['difference']:+.1f}, 95% interval [{score['low']:+.1f}, {score['high']:+.1f}], "
                f"{score['n']} multiple-choice items)",
                name="general_ability",
            )
        )
    if beyond_noise(drift, +1) and drift["difference"] >= DRIFT:
        found.append(
            Finding(
                "forgetting",
                {k: round(drift[k], 3) for k in ("base", "finetuned", "difference", "low", "high")},
                0.7,
                f"drift: the base model's own answers to generic prompts cost {drift['difference']:+.2f} nats "
                f"per token more under the fine-tuned model ({drift['base']:.2f} -> {drift['finetuned']:.2f})",
                name="drift",
            )
        )
    if found and scale_curve:
        found.append(_scale_finding(scale_curve))
    if not found:
        found.append(
            Finding(
                "balance_kept",
                {
                    "leakage": [round(leakage["base"], 3), round(leakage["finetuned"], 3)],
                    "score_difference": None if not score else round(score["difference"], 1),
                    "drift": round(drift["difference"], 3) if drift["difference"] is not None else None,
                },
                0.8,
                "nothing measurable lost: generic prompts answered as the base model answers them "
                f"(leakage {round(leakage['finetuned'] * leakage['n'])} of {leakage['n']})"
                + (f", general score {score['difference']:+.1f} points, within noise" if score else ""),
            )
        )
    return found


def _scale_finding(curve: dict) -> Finding:
    """What the measured scale curve says: a weaker adapter that keeps the gain, or that none does."""
    r, metric = curve["recommended"], curve["metric"]
    if r is None:
        return Finding(
            "adapter_scale",
            {"points": curve["points"], "keep": curve["keep"], "scale": None},
            0.9,
            f"measured: the adapter gained nothing on the validation {metric} at scale 1 over the base model, "
            "so no scale keeps a gain",
        )
    evidence = {"points": curve["points"], "keep": curve["keep"], **r}
    if r["scale"] < 1.0:
        return Finding(
            "adapter_scale",
            evidence,
            0.9,
            f"measured: at adapter scale {r['scale']:g} the validation {metric} is {r['task']:.3f} "
            f"({r['gain_kept']:.0%} of the gain; {r['task_at_1']:.3f} at 1) and the general loss "
            f"{r['general_loss']:g} points ({r['general_loss_at_1']:g} at 1)",
        )
    base = curve["points"][0]["task"]
    weaker = ", ".join(
        f"{p['scale']:g}: {p['task']:.3f} ({(p['task'] - base) / (r['task_at_1'] - base):.0%} of the gain), "
        f"general loss {p['general_loss']:g}"
        for p in curve["points"]
        if 0 < p["scale"] < 1 and p["task"] is not None
    )
    return Finding(
        "adapter_scale",
        evidence,
        0.9,
        f"measured: no weaker adapter scale keeps {curve['keep']:.0%} of the validation {metric} gain "
        f"(at 1: {r['task_at_1']:.3f}, general loss {r['general_loss_at_1']:g}; {weaker}): the cure must retrain",
    )


def balance_checkpoint(c: Curves, info: dict | None) -> list[Finding]:
    """The evaluation `train.select_best: balance` keeps (its rule replayed over this run's curve), when
    it is not the saved one and leaked less than the saved weights did, beyond noise."""
    leakage = dict(c.leakage)
    points = [(step, value, leakage[step]) for step, value in c.metric if step in leakage]
    if len(points) < 2:
        return []
    kept = balance_choice(points, c.sign)
    by_step = {p[0]: p for p in points}
    saved = by_step.get((info or {}).get("best_checkpoint_step"), points[-1])
    (step, value, leaked), (s_step, s_value, s_leaked) = kept, saved
    se = math.hypot(c.leakage_se.get(step, 0.0), c.leakage_se.get(s_step, 0.0))
    if step == s_step or s_leaked - leaked <= NOISE_Z * max(se, 1e-9):
        return []
    key = c.metric_key
    return [
        Finding(
            "balance_checkpoint",
            {
                "step": step,
                "value": round(value, 4),
                "leakage": round(leaked, 3),
                "saved_step": s_step,
                "saved_value": round(s_value, 4),
                "saved_leakage": round(s_leaked, 3),
                "band": BALANCE_BAND,
            },
            0.8,
            f"measured during training: at step {step} the validation {key} was {value:.3f} (within "
            f"{BALANCE_BAND:.0%} of the best so far) with {leaked:.0%} of generic prompts answered in the task's "
            f"form; the saved weights (step {s_step}: {s_value:.3f}) leak {s_leaked:.0%}",
        )
    ]


def _short(text: str, n: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"
