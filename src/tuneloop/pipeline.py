"""`tuneloop run`: data -> auto values -> LoRA fine-tune -> evaluate base vs fine-tuned -> report,
in one run directory.

Read top to bottom, this is the loop. Each stage is a plain function from its own package;
this module only orders them and records what happened in `runs/<id>/`.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from tuneloop.config import ConfigError, RunConfig, dump_config
from tuneloop.data import Splits
from tuneloop.data.prepare import prepare_data
from tuneloop.doctor import Diagnosis, diagnose_run
from tuneloop.doctor.live import LiveDoctor
from tuneloop.doctor.recommend import next_config_yaml
from tuneloop.eval.base_vs_tuned import evaluate_base_and_finetuned
from tuneloop.eval.general import GeneralDataError, Suite, load_suite
from tuneloop.models import load_tokenizer, resolve_model
from tuneloop.models.precision import Precision, default_device
from tuneloop.models.trainable import load_for_training
from tuneloop.plan.history import record_run
from tuneloop.report import write_run_report
from tuneloop.report.plots import token_histogram_png
from tuneloop.runs import RunDir
from tuneloop.train import MetricsWriter, TrainingProgress
from tuneloop.train.auto import resolve_auto
from tuneloop.train.callbacks import FollowFreeCores, ReturnFreeMemory, TrainingClock
from tuneloop.train.interrupt import interrupt_on_sigterm
from tuneloop.train.methods import Job, method_of
from tuneloop.train.replay import with_replay
from tuneloop.train.speed import compile_layers
from tuneloop.train.task_eval import continuous_evaluation, record_selection
from tuneloop.train.trackers import check_trackers, run_trackers


@dataclass
class RunResult:
    run: RunDir
    evaluation: dict | None  # eval.json; None for `tuneloop train` and the non-main processes
    timings: dict[str, float]
    diagnosis: Diagnosis | None = None  # the doctor's verdict on the finished run


def run_loop(
    config: RunConfig, console: Console | None = None, callbacks=(), evaluate: bool = True, info: dict | None = None
) -> RunResult:
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
        raise ConfigError(
            "under accelerate launch / torchrun use `tuneloop train`; `tuneloop run` evaluates on a single process"
        )
    main = state.is_main_process
    console = console if main and console else Console(quiet=not main)
    t0 = time.perf_counter()
    check_trackers(config.train.report_to)

    # 1. Data: every row checked before anything is created; a bad file fails here, loudly.
    # Duplicates and train rows that leak a held-out row are dropped and listed with a reason.
    with state.main_process_first():  # the first use converts the model; one process does it
        folder = resolve_model(config.model)
    tokenizer = load_tokenizer(folder)
    prepared = prepare_data(config.data, tokenizer)
    general = general_suite(config) if evaluate else None  # a bad file fails here, before the run exists
    if config.data.replay:  # general rows mixed into train (train/replay.py): the cure for forgetting
        with state.main_process_first(), console.status("data.replay: the base model's answers to generic prompts"):
            prepared.splits, prepared.report["replay"] = with_replay(
                config, prepared.splits, folder, tokenizer, default_device()
            )
    timings = {"data": _lap(t0)}

    # 2. What "auto" means for this data on this machine, decided by the main process (free
    # memory differs between processes) and recorded in the run directory.
    config, speed_notes = _from_main(
        state,
        resolve_auto(config, prepared.splits, prepared.report, folder, device, tokenizer, state.num_processes)
        if main
        else None,
    )
    run = RunDir(_from_main(state, RunDir.create(config.runs_dir, config.run_name or "run").path if main else None))
    if main:
        _record_start(run, config, prepared, folder, device, state.num_processes, evaluate, speed_notes, info or {})
    _announce(console, run, config, prepared, device, state.num_processes, speed_notes)
    if main:  # minutes and memory before the first step (plan/): the same lines as `tuneloop plan`
        _plan(console, run, config, prepared.splits, tokenizer, folder, device, state.num_processes, evaluate)

    # 3-5. Train, evaluate, report.
    job = Job(run, config, prepared.splits, folder, tokenizer, device, evaluate, general=general)
    return _train_and_evaluate(job, console, timings, t0, callbacks)


def general_suite(config: RunConfig) -> Suite:
    """eval.general's suite; a file that cannot be read is a config error."""
    try:
        return load_suite(config.eval.general)
    except GeneralDataError as e:
        raise ConfigError(f"eval.general: {e}") from None


def resume_loop(run_path, console: Console | None = None, callbacks=()) -> RunResult:
    """Continue a killed or stopped run from its last checkpoint, with the same data and config.

    The Trainer restores weights, optimizer, scheduler and RNG states and skips the batches
    already seen, so the result matches an uninterrupted run with the same seed.
    """
    console = console or Console()
    t0 = time.perf_counter()
    run = RunDir(Path(run_path))
    point = run.resume_point()  # the newest intact checkpoint, or why there is none
    for note in point.notes:
        console.print(f"[yellow]{note}[/yellow]")
    info, checkpoint = point.info, point.checkpoint
    config = run.config()
    splits = Splits(*(run.read_split(name) for name in ("train", "validation", "test")))
    folder = resolve_model(config.model)
    step = int(checkpoint.name.split("-")[-1])
    # The killed process may have logged past its last checkpoint, or died mid-line.
    if run.truncate_metrics(after_step=step):
        console.print(f"[yellow]{run.metrics_file}: left out a damaged last line[/yellow]")
    run.update_info(status="running", resumed_from_step=step, error=None)
    console.print(f"[bold]resume[/bold] {run.path} from step {step}")
    job = Job(
        run,
        config,
        splits,
        folder,
        load_tokenizer(folder),
        info.get("device", default_device()),
        info.get("evaluate", True),
        resume_from=checkpoint,
        general=general_suite(config) if info.get("evaluate", True) else None,
    )
    return _train_and_evaluate(job, console, {}, t0, callbacks)


def _train_and_evaluate(job: Job, console: Console, timings: dict, t0: float, callbacks=()) -> RunResult:
    from accelerate import PartialState

    main = PartialState().is_main_process
    run, config, test = job.run, job.config, job.splits.test
    precision = Precision(config.train.precision)
    method = method_of(config)  # train/methods/: its trainer, its hooks around training
    try:
        # 3. Train, with the task metric measured at each evaluation where the method scores it.
        t = time.perf_counter()
        init_from = config.train.init_from
        adapter = RunDir(init_from).adapter_dir if init_from else None
        model, counts = load_for_training(
            job.folder, config.train, precision, job.device, adapter, every_weight=not method.adapter
        )
        if counts:
            console.print(
                f"full fine-tuning: {counts['trainable']:,} trainable, {counts['frozen']:,} frozen parameters"
            )
        task_eval = (
            continuous_evaluation(config, job.splits, job.tokenizer, precision)
            if method.continuous_evaluation
            else None
        )
        with run_trackers(run.path, config.train.report_to), interrupt_on_sigterm():
            trainer = _trainer(job, model, precision, console, task_eval, callbacks)
            base = method.before_training(job, trainer, console, main)  # full: the base model's test side
            trainer.train(resume_from_checkpoint=str(job.resume_from) if job.resume_from else None)
        method.after_training(job, trainer, console, main)
        trainer.save_model(str(run.weights_dir(not method.adapter)))  # the main process writes; all must call it
        timings["train"] = _lap(t)
        if not main:
            return RunResult(run, None, timings)
        record_selection(run, trainer, task_eval, timings["train"])

        # 4. Evaluate the base and the fine-tuned model on the test split, once.
        evaluation = None
        if job.evaluate:
            t = time.perf_counter()
            evaluation = evaluate_base_and_finetuned(
                trainer.model,
                job.tokenizer,
                test,
                config.eval,
                precision,
                base,
                status=console.status,
                train_on=config.data.train_on,
                general=job.general,
                task_answers=[e.answer for e in job.splits.train if not e.replayed],
                model_folder=job.folder,
                validation=job.splits.validation if method.adapter else None,
            )
            run.write_json(run.eval_file, evaluation)
            timings["evaluate"] = _lap(t)
            if "scale_curve" in evaluation:  # measured only when the run lost general ability: its own part
                timings["scale_curve"] = evaluation["scale_curve"]["seconds"]
                timings["evaluate"] = round(timings["evaluate"] - timings["scale_curve"], 1)
        timings["total"] = _lap(t0)
        shutil.rmtree(run.checkpoints_dir, ignore_errors=True)  # finished: the weights are saved; free the disk
        run.finish("finished" if job.evaluate else "trained", timings=timings)
        record_run(run.path)  # what its parts took against their price: the next plan's correction

        # 5. The doctor's verdict, with next.yaml (its next config, ready for `tuneloop run`) when it
        # changes anything; then the report, which ends with the verdict.
        diagnosis = diagnose_run(run.path)
        if (next_yaml := next_config_yaml(diagnosis)) is not None:
            run.write_text(run.next_config_file, next_yaml)
        write_run_report(run, diagnosis.to_dict())
    except BaseException as e:  # Ctrl-C and SIGTERM too: the run directory must say it did not finish
        if main:
            with contextlib.suppress(OSError):  # a full disk may not let even this be written
                status = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
                run.finish(status, error=f"{type(e).__name__}: {e}", resumable=run.last_checkpoint() is not None)
        if (os_error := _as_os_error(e)) is not None:
            raise os_error from e
        raise
    return RunResult(run, evaluation, timings, diagnosis)


def _trainer(job: Job, model, precision: Precision, console: Console, task_eval, callbacks):
    """TRL's trainer with tuneloop's callbacks: metrics.jsonl, the live doctor, the progress bar."""
    config = job.config
    writer = MetricsWriter(job.run)
    doctor = LiveDoctor(job.run, stop=config.train.doctor == "stop") if config.train.doctor != "off" else None
    progress = TrainingProgress(console, writer, doctor, task_eval)
    ours = [writer, *([doctor] if doctor else []), progress, TrainingClock(job.run), *callbacks]
    if job.device == "cpu":  # share the cores (tuneloop/cpu.py) and the memory with whatever else runs
        ours += [FollowFreeCores(job.run), ReturnFreeMemory()]
    trainer = method_of(config).build_trainer(
        model,
        job.tokenizer,
        config,
        job.splits.train,
        job.splits.validation,
        task_eval=task_eval,
        precision=precision,
        output_dir=job.run.checkpoints_dir,
        callbacks=ours,
        device=job.device,
    )
    if config.train.compile:
        compile_layers(trainer.model)
    return trainer


def _record_start(
    run: RunDir,
    config: RunConfig,
    prepared,
    folder,
    device: str,
    processes: int,
    evaluate: bool,
    speed_notes: list[str],
    info: dict,
) -> None:
    """The resolved config, the exact splits, the data profile and what is dropped, before training."""
    run.write_text(run.config_file, dump_config(config))
    for name, part in prepared.splits.items():
        run.write_split(name, part)
    run.write_json(run.data_report_file, prepared.report)
    run.write_jsonl(run.dropped_file, prepared.dropped)
    run.write_bytes(run.token_histogram_file, token_histogram_png(prepared.lengths.total, config.data.max_seq_len))
    run.start(
        model=config.model,
        model_folder=str(folder),
        data=str(config.data.path),
        device=device,
        precision=config.train.precision,
        split_sizes={name: len(part) for name, part in prepared.splits.items()},
        processes=processes,
        evaluate=evaluate,
        speed_notes=speed_notes,
        **info,
    )


def _announce(
    console: Console, run: RunDir, config: RunConfig, prepared, device: str, processes: int, speed_notes: list[str]
) -> None:
    t, splits = config.train, prepared.splits
    times = f" x {processes} processes" if processes > 1 else ""
    console.print(
        f"[bold]run[/bold] {run.path}  ·  {config.model} ({t.precision} on {device}{times})  ·  "
        f"train {len(splits.train)} / validation {len(splits.validation)} / test {len(splits.test)}  ·  "
        f"{t.epochs:g} epochs, batch {t.batch_size} x {t.gradient_accumulation} accumulation{times} = "
        f"{t.batch_size * t.gradient_accumulation * processes} effective"
    )
    for note in speed_notes:
        console.print(f"[yellow]{note}[/yellow]")
    if prepared.dropped:
        d = prepared.report["dropped"]
        console.print(
            f"data: dropped {d['duplicates']} duplicate(s) and {d['leakage']} train row(s) that "
            f"duplicated a held-out row; listed in {run.dropped_file}"
        )


def _plan(console, run: RunDir, config, splits: Splits, tokenizer, folder, device, processes: int, evaluate: bool):
    if processes > 1:
        console.print(f"plan: not estimated for {processes} processes (tuneloop plan measures one)")
        return
    from tuneloop.plan import plan_resolved

    with console.status("plan: measuring this machine for this model (first run only)"):
        plan = plan_resolved(config, splits, tokenizer, folder, device, evaluate=evaluate)
    for line in plan.lines():
        console.print(line, highlight=False)
    run.update_info(plan=plan.to_dict())


def _as_os_error(e: BaseException) -> OSError | None:
    """safetensors (Rust) reports a full disk as a plain Exception "... (os error 28)"; as an
    OSError the CLI reports it in one line, like every other failed write."""
    found = re.search(r"\(os error (\d+)\)", str(e)) if not isinstance(e, OSError) else None
    return OSError(int(found.group(1)), f"writing the weights: {os.strerror(int(found.group(1)))}") if found else None


def _from_main(state, value):
    """The main process's value, on every process."""
    if state.num_processes == 1:
        return value
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([value], from_process=0)[0]


def _lap(t: float) -> float:
    return round(time.perf_counter() - t, 1)
