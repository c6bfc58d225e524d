"""`tuneloop run`: data -> LoRA fine-tune -> evaluate base vs fine-tuned -> report, in one run directory.

Read top to bottom, this is the loop. Each stage is a plain function from its own package;
this module only orders them and records what happened in `runs/<id>/`.
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from rich.console import Console
from transformers import EarlyStoppingCallback

from tuneloop.config import ConfigError, RunConfig, dump_config, load_config
from tuneloop.data import Example, Splits
from tuneloop.data.prepare import prepare_data
from tuneloop.doctor import Diagnosis, diagnose_run
from tuneloop.doctor.live import LiveDoctor
from tuneloop.eval.compare import compare_outputs
from tuneloop.eval.evaluate import generate_and_score, generation_set
from tuneloop.models import choose_precision, load_model, load_tokenizer, resolve_model
from tuneloop.models.precision import Precision, default_device
from tuneloop.models.trainable import freeze, set_model_dropout
from tuneloop.report import render_report
from tuneloop.report.plots import token_histogram_png
from tuneloop.runs import RunDir
from tuneloop.train import MetricsWriter, TrainingProgress, build_trainer, to_prompt_completion
from tuneloop.train.auto import auto_batch_size, auto_epochs, free_memory_bytes
from tuneloop.train.sft import eval_steps_for
from tuneloop.train.speed import compile_layers, resolve_speed
from tuneloop.train.task_eval import KeepBestByMetric, TaskEvaluator


@dataclass
class RunResult:
    run: RunDir
    evaluation: dict
    timings: dict[str, float]
    diagnosis: Diagnosis | None = None  # the doctor's verdict on the finished run


def run_loop(config: RunConfig, console: Console | None = None, callbacks=(), evaluate: bool = True,
             info: dict | None = None) -> RunResult:
    """The loop. `callbacks`: extra transformers TrainerCallbacks (custom logging, a sweep's
    pruning, or a test that stops a run). `evaluate=False` is `tuneloop train`: stop after
    training and validation. `info`: extra fields for run.json (an autotune run's lineage).

    Under `accelerate launch` every process runs this: all prepare the same data (it is
    deterministic) and train their shard; only the main process writes the run directory.
    """
    from accelerate import PartialState

    device = default_device()
    # Initialises torch.distributed when launched by accelerate or torchrun; on CPU it must be
    # told (cpu=True), or every process believes it is alone.
    state = PartialState(cpu=device == "cpu")
    if evaluate and state.num_processes > 1:
        # Test-set generation runs on one process; the others would wait in collective ops.
        raise ConfigError("under accelerate launch / torchrun use `tuneloop train`; `tuneloop run` evaluates on "
                          "a single process")
    main = state.is_main_process
    console = console or Console()
    if not main:
        console = Console(quiet=True)
    t0 = time.perf_counter()
    _check_trackers(config.train.report_to)

    # 1. Data: every row checked before anything is created; a bad file fails here, loudly.
    # Duplicates and train rows that leak a held-out row are dropped and listed with a reason.
    with state.main_process_first():  # the first use converts the model; one process does it
        folder = resolve_model(config.model)
    tokenizer = load_tokenizer(folder)
    prepared = prepare_data(config.data, tokenizer)
    splits = prepared.splits
    timings = {"data": _lap(t0)}

    # 2. Resolve what "auto" means for this data on this machine, and record it. Free memory
    # differs between processes, so the main process decides for all.
    config, speed_notes = _from_main(state, resolve_auto(config, splits, prepared.report, folder, device, tokenizer)
                                     if main else None)
    run = RunDir(_from_main(state, RunDir.create(config.runs_dir, config.run_name or "run").path if main else None))
    sizes = {name: len(part) for name, part in splits.items()}
    if main:
        run.write_text(run.config_file, dump_config(config))
        for name, part in splits.items():
            run.write_split(name, part)
        run.write_json(run.data_report_file, prepared.report)
        run.write_jsonl(run.dropped_file, prepared.dropped)
        run.write_bytes(run.token_histogram_file, token_histogram_png(prepared.lengths.total, config.data.max_seq_len))
        run.start(model=config.model, model_folder=str(folder), data=str(config.data.path), device=device,
                  precision=config.train.precision, split_sizes=sizes, processes=state.num_processes,
                  evaluate=evaluate, speed_notes=speed_notes, **(info or {}))
    t = config.train
    processes = f" x {state.num_processes} processes" if state.num_processes > 1 else ""
    console.print(f"[bold]run[/bold] {run.path}  ·  {config.model} ({t.precision} on {device}{processes})  ·  "
                  f"train {sizes['train']} / validation {sizes['validation']} / test {sizes['test']}  ·  "
                  f"{t.epochs:g} epochs, batch {t.batch_size} x {t.gradient_accumulation} accumulation{processes} = "
                  f"{t.batch_size * t.gradient_accumulation * state.num_processes} effective")
    for note in speed_notes:
        console.print(f"[yellow]{note}[/yellow]")
    if prepared.dropped:
        d = prepared.report["dropped"]
        console.print(f"data: dropped {d['duplicates']} duplicate(s) and {d['leakage']} train row(s) that "
                      f"duplicated a held-out row; listed in {run.dropped_file}")
    return _train_and_evaluate(run, config, splits, folder, tokenizer, device, console, timings, t0, callbacks,
                               evaluate=evaluate)


def _from_main(state, value):
    """The main process's value, on every process."""
    if state.num_processes == 1:
        return value
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([value], from_process=0)[0]


def resume_loop(run_path, console: Console | None = None, callbacks=()) -> RunResult:
    """Continue a killed or stopped run from its last checkpoint, with the same data and config.

    The Trainer restores weights, optimizer, scheduler and RNG states and skips the batches
    already seen, so the result matches an uninterrupted run with the same seed.
    """
    console = console or Console()
    t0 = time.perf_counter()
    run = RunDir(Path(run_path))
    if not run.info_file.exists():
        raise FileNotFoundError(f"{run.path}: not a run directory (no run.json)")
    info = run.read_json(run.info_file)
    if info.get("status") in ("finished", "trained"):
        raise ValueError(f"{run.path}: the run has finished; nothing to resume")
    checkpoint = run.last_checkpoint()
    if checkpoint is None:
        raise ValueError(f"{run.path}: no checkpoint to resume from (none was saved before it stopped); "
                         "start it again with `tuneloop run`")
    config = load_config(run.config_file)
    splits = Splits(*(run.read_split(name) for name in ("train", "validation", "test")))
    folder = resolve_model(config.model)
    tokenizer = load_tokenizer(folder)
    step = int(checkpoint.name.split("-")[-1])
    run.truncate_metrics(after_step=step)  # the killed process may have logged past its last checkpoint
    run.update_info(status="running", resumed_from_step=step, error=None)
    console.print(f"[bold]resume[/bold] {run.path} from step {step}")
    return _train_and_evaluate(run, config, splits, folder, tokenizer, info.get("device", default_device()), console,
                               {}, t0, callbacks, resume_from=checkpoint, evaluate=info.get("evaluate", True))


def resolve_auto(config: RunConfig, splits: Splits, data_report: dict, folder, device: str,
                 tokenizer) -> tuple[RunConfig, list[str]]:
    """`auto` values settled for this data on this machine; also the notes on speed fallbacks."""
    from transformers import AutoConfig

    from tuneloop.eval.evaluate import answer_token_budget

    n_train = len(splits.train)
    config = config.model_copy(deep=True)
    if config.eval.max_new_tokens == "auto":  # from the answers training sees, never the test split's
        config.eval.max_new_tokens = answer_token_budget(tokenizer, [e.answer for e in splits.train + splits.validation])
    train = config.train
    model_config = AutoConfig.from_pretrained(folder)
    tokens = data_report.get("tokens", {})
    train.precision = choose_precision(train.precision, device).value
    if train.epochs == "auto":
        train.epochs = auto_epochs(n_train)
    free = free_memory_bytes(device)
    if train.batch_size == "auto":
        train.batch_size = auto_batch_size(n_train, tokens.get("p95", config.data.max_seq_len), model_config, free)
    notes = resolve_speed(train, device, model_config, train.batch_size, tokens.get("max", config.data.max_seq_len),
                          free, train_tokens=n_train * train.epochs * tokens.get("mean", 0))
    train.eval_every = eval_steps_for(train, n_train)
    return config, notes


def _train_and_evaluate(run: RunDir, config: RunConfig, splits: Splits, folder, tokenizer, device: str,
                        console: Console, timings: dict, t0: float, callbacks=(), resume_from=None,
                        evaluate: bool = True) -> RunResult:
    from accelerate import PartialState

    main = PartialState().is_main_process
    precision = Precision(config.train.precision)
    full = config.train.method == "full"
    evaluation = None
    try:
        t = time.perf_counter()
        # Full fine-tuning keeps fp32 master weights (AdamW on bf16 weights loses small updates);
        # the matmuls still run in bf16 under autocast.
        model = load_model(folder, Precision.fp32 if full else precision, device, config.train.quantize,
                           config.train.fused_kernels)
        if config.train.quantize == "4bit":  # QLoRA: norms in fp32, inputs that require grad
            from peft import prepare_model_for_kbit_training

            model = prepare_model_for_kbit_training(model, bool(config.train.gradient_checkpointing))
        if config.train.model_dropout is not None:
            set_model_dropout(model, config.train.model_dropout)
        if full:
            counts = freeze(model, config.train.freeze_layers, config.train.freeze_modules)
            console.print(f"full fine-tuning: {counts['trainable']:,} trainable, {counts['frozen']:,} frozen parameters")
        _local_trackers(run, config.train.report_to)
        writer = MetricsWriter(run)
        doctor = LiveDoctor(run, stop=config.train.doctor == "stop") if config.train.doctor != "off" else None
        task_eval = continuous_evaluation(config, splits, tokenizer, precision)
        trainer = build_trainer(
            model, tokenizer, to_prompt_completion(splits.train), to_prompt_completion(splits.validation),
            train=config.train, lora=config.lora, max_seq_len=config.data.max_seq_len, precision=precision,
            output_dir=run.checkpoints_dir,
            callbacks=[writer, *([doctor] if doctor else []),
                       TrainingProgress(console, writer, doctor, task_eval), *callbacks],
            device=device, task_eval=task_eval,
        )
        if config.train.compile:
            compile_layers(trainer.model)
        base = None
        if full and evaluate:  # no adapter to switch off afterwards: measure the base model before it changes
            base = evaluate_side(trainer, tokenizer, splits.test, config, precision, console, "base")
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
        trainer.remove_callback(EarlyStoppingCallback)  # it would complain about the test-set evaluations
        trainer.save_model(str(run.weights_dir(full)))  # the main process writes; all must call it
        timings["train"] = _lap(t)
        if not main:
            return RunResult(run, None, timings)
        stopped_early = trainer.state.global_step < trainer.state.max_steps
        if trainer.state.best_model_checkpoint:
            run.update_info(best_checkpoint_step=int(trainer.state.best_model_checkpoint.rsplit("-", 1)[-1]),
                            selected_by="loss", stopped_early=stopped_early)
        keeper = next((c for c in trainer.callback_handler.callbacks if isinstance(c, KeepBestByMetric)), None)
        if keeper is not None and keeper.best_step is not None:
            run.update_info(best_checkpoint_step=keeper.best_step, selected_by=f"eval_{task_eval.key}",
                            best_metric=keeper.best_value, stopped_early=stopped_early)
        if task_eval is not None:
            run.update_info(continuous_evaluation=task_eval.summary(timings["train"]))
        if evaluate:
            t = time.perf_counter()
            evaluation = evaluate_base_and_finetuned(trainer, tokenizer, splits.test, config, precision, console,
                                                     base)
            run.write_json(run.eval_file, evaluation)
            timings["evaluate"] = _lap(t)
        timings["total"] = _lap(t0)
        shutil.rmtree(run.checkpoints_dir, ignore_errors=True)  # finished: the weights are saved; free the disk
        run.finish("finished" if evaluate else "trained", timings=timings)
        # 5. The doctor's verdict and the next config, where the user looks: the report's end and
        # the terminal summary. next.yaml is ready for `tuneloop run`.
        diagnosis = diagnose_run(run.path)
        if diagnosis.next_config is not None and any(r.applied for r in diagnosis.recommendations):
            run.write_text(run.next_config_file, yaml.safe_dump(diagnosis.next_config, sort_keys=False))
        run.write_text(run.report_file, render_report(
            run_id=run.id, config=config.model_dump(mode="json"), info=run.read_json(run.info_file),
            metrics=run.read_metrics(), evaluation=evaluation, data_report=run.read_json(run.data_report_file),
            token_histogram=run.token_histogram_file.read_bytes(), diagnosis=diagnosis.to_dict(),
            next_config=run.next_config_file if run.next_config_file.exists() else None))
    except BaseException as e:  # KeyboardInterrupt too: the run directory must say it did not finish
        if main:
            run.finish("stopped" if isinstance(e, KeyboardInterrupt) else "failed", error=f"{type(e).__name__}: {e}")
        raise
    return RunResult(run, evaluation, timings, diagnosis)


def continuous_evaluation(config: RunConfig, splits: Splits, tokenizer, precision: Precision) -> TaskEvaluator | None:
    """The task metric at every evaluation (train/task_eval.py), where the data has one: chat
    rows with a validation split, and `train.metric_rows` > 0."""
    t = config.train
    possible = t.metric_rows > 0 and splits.validation and splits.validation[0].kind != "text"
    if not possible:
        if t.select_best == "metric":
            raise ConfigError("train.select_best: metric needs continuous evaluation: prompt/answer data with a "
                              "validation split, and train.metric_rows > 0")
        return None
    return TaskEvaluator(splits.validation, splits.train, tokenizer, config.eval, precision, rows=t.metric_rows,
                         budget=t.metric_budget, seed=t.seed)


def _check_trackers(report_to: list[str]) -> None:
    """A tracker that is not installed is a clear error before anything starts."""
    import importlib.util

    missing = [name for name in report_to if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(f"train.report_to: {missing} not installed; pip install {' '.join(missing)}")


def _local_trackers(run: RunDir, report_to: list[str]) -> None:
    """Point the trackers transformers integrates at the run directory, offline; the user's own
    environment variables win."""
    import os

    if "tensorboard" in report_to:
        os.environ.setdefault("TENSORBOARD_LOGGING_DIR", str(run.path / "tensorboard"))
    if "mlflow" in report_to:
        os.environ.setdefault("MLFLOW_TRACKING_URI", (run.path / "mlruns").resolve().as_uri())
    if "wandb" in report_to:
        os.environ.setdefault("WANDB_MODE", "offline")
        os.environ.setdefault("WANDB_DIR", str(run.path))


def evaluate_side(trainer, tokenizer, test: list[Example], config: RunConfig, precision: Precision,
                  console: Console, side: str) -> dict:
    """Test loss and task metric of trainer.model as it is now (`side` only labels the display)."""
    model = trainer.model
    # For cached decoding on CPU, SDPA measured ~30% faster than the eager attention used for
    # training (24 prompts x 48 tokens: 7.1 s vs 9.8 s); training's choice is restored after.
    training_attention = model.config._attn_implementation
    model.set_attn_implementation("sdpa")
    try:
        # Compiled layers (train.compile) run eagerly here: cached decoding would recompile them.
        with console.status(f"evaluating {side} model on {len(test)} test examples"), \
                torch.compiler.set_stance("force_eager"):
            loss = trainer.evaluate(eval_dataset=to_prompt_completion(test), metric_key_prefix="test")["test_loss"]
            scored = generate_and_score(model, tokenizer, test, config.eval, precision)
    finally:
        model.set_attn_implementation(training_attention)
    task = scored["metrics"] if scored["outputs"] else {"perplexity": math.exp(loss)}
    return {**scored, "metrics": {"loss": loss, **task}}


def evaluate_base_and_finetuned(trainer, tokenizer, test: list[Example], config: RunConfig, precision: Precision,
                                console: Console, base: dict | None = None) -> dict:
    """Test-split loss and task metric for the base model and the fine-tuned one.

    With LoRA one copy of the weights serves both: PEFT's disable_adapter() runs the frozen
    base model. Full fine-tuning passes `base`, measured before training changed the weights.
    """
    if base is None:
        with trainer.model.disable_adapter():
            base = evaluate_side(trainer, tokenizer, test, config, precision, console, "base")
    tuned = evaluate_side(trainer, tokenizer, test, config, precision, console, "fine-tuned")
    gen_set = generation_set(test, config.eval)
    examples = [
        {"source_row": e.row, "prompt": e.prompt[-1]["content"], "reference": e.answer,
         "base": {"output": base["outputs"][i], **base["per_example"][i]},
         "finetuned": {"output": tuned["outputs"][i], **tuned["per_example"][i]}}
        for i, e in enumerate(gen_set)
    ]
    return {
        "metric": tuned["metric"], "n_test": len(test), "n_generated": len(gen_set),
        "report_examples": config.eval.report_examples,
        "base": {"metrics": base["metrics"]},
        "finetuned": {"metrics": tuned["metrics"]},
        "examples": examples,
        **({"comparison": compare_outputs(tuned["metric"], [e.answer for e in gen_set], base, tuned),
            "confusion": {"base": base.get("confusion"), "finetuned": tuned.get("confusion")}} if gen_set else {}),
    }


def _lap(t: float) -> float:
    return round(time.perf_counter() - t, 1)
