"""Plan a run before it starts: tokens, steps, minutes for training and evaluation, peak memory."""

from __future__ import annotations

from tuneloop.data import Splits
from tuneloop.plan.calibrate import Calibration, calibration
from tuneloop.plan.estimate import Plan, estimate
from tuneloop.plan.gpus import GPUS, gpu_estimate, gpu_named
from tuneloop.plan.history import corrections, part_factors

# A change of speed since the calibration worth a line in the plan (scaled only while other processes are busy).
SPEED_NOTED = 0.1


def plan_resolved(config, splits, tokenizer, folder, device: str, refresh: bool = False, evaluate: bool = True) -> Plan:
    """The plan of a config whose `auto` values are resolved (what `tuneloop run` prints at its start).
    `evaluate=False`: a run that stops after training (`tuneloop train`, autotune's runs)."""
    from transformers import AutoConfig

    from tuneloop.eval.general import base_side_file, load_suite
    from tuneloop.machine import measurement_file
    from tuneloop.train.memory import free_memory_bytes

    if not evaluate:
        splits = Splits(splits.train, splits.validation, [])
    calib, how = calibration(folder, config, device, refresh)
    cached = evaluate and base_side_file(folder, config.train.precision, load_suite(config.eval.general)).is_file()
    plan = estimate(
        config,
        splits,
        tokenizer,
        calib,
        AutoConfig.from_pretrained(folder),
        device,
        free_memory_bytes(device),
        base_general_cached=cached,
    )
    plan.calibration = {"file": measurement_file(calib.measured_with).stem, "measured_at": calib.measured_at}
    if found := corrections(plan.calibration["file"], calib.measured_at):
        plan = plan.scaled(part_factors(found))
        plan.corrections = found
        runs = max(c["runs"] for c in found.values())
        factors = ", ".join(f"{group} x{c['factor']:.2f}" for group, c in found.items())
        plan.notes.append(
            f"corrected by the last {runs} run(s) of this setup on this machine, their real seconds over "
            f"this calibration's: {factors}"
        )
    if how == "measured":
        plan.notes.append("this machine was calibrated for this model now; later plans reuse it")
    elif how == "busy":
        plan.notes.append(
            "other processes were busy while this machine was measured: the minutes may be too many "
            "(the next plan on an idle machine measures again)"
        )
    if abs(calib.speed - 1) >= SPEED_NOTED:
        pace = f"{calib.speed:.2f}x as slow" if calib.speed > 1 else f"{1 / calib.speed:.2f}x as fast"
        plan.notes.append(
            f"other processes are busy: this machine runs {pace} now as when calibrated; the minutes are scaled to now"
        )
    return plan


def plan_config(config, refresh: bool = False, evaluate: bool = True) -> Plan:
    """`tuneloop plan CONFIG`: the data loaded and checked as `tuneloop run` would, `auto` resolved."""
    from tuneloop.data.prepare import prepare_data
    from tuneloop.models import load_tokenizer, resolve_model
    from tuneloop.models.precision import default_device
    from tuneloop.train.auto import resolve_auto

    device = default_device()
    folder = resolve_model(config.model)
    tokenizer = load_tokenizer(folder)
    prepared = prepare_data(config.data, tokenizer)
    config, _ = resolve_auto(config, prepared.splits, prepared.report, folder, device, tokenizer)
    return plan_resolved(config, prepared.splits, tokenizer, folder, device, refresh, evaluate)


__all__ = ["GPUS", "Calibration", "Plan", "gpu_estimate", "gpu_named", "plan_config", "plan_resolved"]
