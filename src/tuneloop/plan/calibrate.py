"""How fast this machine runs a model: a few seconds of measurement on first use, cached.

A training step of b rows padded to s tokens, l of them learned (the loss projects only those onto
the vocabulary, train/loss.py), takes about

    c0 + c1 * (b*s + kappa*l) + c2 * b*s^2   seconds

c0: the fixed cost of a step (optimizer, per-operator overhead); c1: the linear layers, per token;
c2: attention, per token and per token attended to; kappa: the LM head's FLOPs per learned token
over the layers' FLOPs per token, from the model's shape. c0..c2 are fitted to real steps of the
config's model, set up as the config trains it (LoRA or full, precision), at five shapes; the
process's peak memory after each gives the same form's memory model (Calibration.peak_bytes).
The same form is fitted to the no-grad forwards of the Trainer's validation pass (training's
attention kernel) and of the test evaluation (SDPA, padded rows), and generating a new token for
b rows at context length n costs g0 + g1*b + g2*b*n, measured with the adapter on (the fine-tuned
model) and off (the base model: an unmerged LoRA adds ~30% to a decoding step of SmolLM2 on CPU).
Writing a checkpoint is timed once too.

Other processes busy at plan time will slow the run. So each calibration also times a fixed
yardstick that needs no model (an MLP forward and backward at SmolLM2's width, ~0.4 s), and a plan
from a cached calibration that finds other processes busy times it again and scales every cost in
seconds by now/then (Calibration.at_speed). On an idle machine the calibration stands as measured:
there the yardstick read a VM's passing moments, not the minutes of a run. On an idle AMX Xeon VM
fresh processes read it at 0.56-1.35x the calibration's, one process 21-53 ms over a minute, and
plans scaled by it missed by that factor while unscaled ones held (LOG.md); an earlier VM's drift
from one hour to the next (1.40x) goes unseen by a plan this way, as it went mis-measured before.

The result is cached per machine (CPU, cores, torch), model and setup under TUNELOOP_HOME, so only
the first plan for a model pays for the measurement: for SmolLM2-135M on 2 cores ~10 s on an AMD
EPYC when each shape was timed once (a warm-up and three timings now), 120-130 s on an AMX Xeon VM
in bf16 (LOG.md).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import statistics
import time
from dataclasses import asdict, dataclass, replace

from tuneloop.machine import machine, measurement_file, save_measurement
from tuneloop.paths import tuneloop_home
from tuneloop.train.callbacks import peak_memory_mb
from tuneloop.train.memory import heap_bytes_in_use

# (rows, tokens, learned tokens per row): short to long, few to many, in the order of their peak
# memory (the process's peak is read after each; a smaller one after a larger reads the larger).
TRAIN_SHAPES = [(2, 32, 4), (8, 48, 4), (16, 64, 4), (8, 128, 16), (4, 256, 4)]
VALIDATION_SHAPES = [(8, 48), (16, 64), (4, 256)]
EVAL_SHAPES = [(4, 64), (16, 64), (16, 256), (4, 512)]
GENERATE_SHAPES = [(1, 32), (16, 32), (16, 256)]  # (rows, prompt tokens)
GENERATE_TOKENS = 10
LEARNED_PER_ROW = 4  # of the validation and evaluation shapes
# Each shape is timed TIMINGS times, once a round (measure()), and the fit takes every timing: a
# run's steps cost what the machine's pace gives on average. The better of two back-to-back timings
# was kept until 2026-12-01 (runs' steps then came at 1.2-1.35x their price on a 2-core VM whose
# pace moves by 20-30% within seconds), then the median of three back to back (the evaluation fit
# of one calibration read a fast spell throughout: test-loss forwards at ~0.5x their price), LOG.md.
TIMINGS = 3
TIMINGS_RULE = f"{TIMINGS} rounds, mean"  # in the cache's key: a calibration timed by another rule is measured again
# bf16 matrix products on CPU go through oneDNN, which builds kernels for each new shape and keeps
# them (its primitive cache, 1024 entries): SmolLM2 LoRA r16 kept ~16 MB per new (rows, width) of a
# training step, the same at 2x40 as at 8x300, and nothing for a shape seen before; the cache was
# full at 37 shapes, 590 MB (LOG.md). A run's batches change width every step, so its resident
# memory grows by that much beyond its widest step's (the quickstart: 477 -> 1121 MB in use over 45
# steps). fp32 products keep nothing (measured as 0 by the same two steps). New shapes measured:
NEW_SHAPES = [(2, 33), (2, 35)]  # (rows, width), none of TRAIN_SHAPES
SHAPE_CACHE_CEILING = 590 * 2**20


@dataclass
class Calibration:
    train: list[float]  # c0, c1, c2 of a training step
    validation: list[float]  # the same for the Trainer's no-grad validation forward
    evaluation: list[float]  # and for the test evaluation's (SDPA, padded rows)
    generate: list[float]  # g0, g1, g2: seconds per new token for b rows at context n
    generate_base: list[float]  # the same with the adapter switched off (= generate for full fine-tuning)
    kappa: float  # LM-head FLOPs per learned token / layer FLOPs per token
    load_seconds: float  # loading the model
    disk_bytes_per_second: float  # writing the trainable weights and the optimizer state, synced
    checkpoint_bytes_per_parameter: float  # bytes a checkpoint takes per trainable parameter
    trainable_parameters: int
    memory: list[float]  # m0..m3: the process's peak bytes in a training step (peak_bytes)
    shape_bytes: float  # what each new training batch shape leaves cached (shape_cache_bytes)
    probe_median_seconds: float  # the yardstick (speed_probe) when these were measured
    measured_with: dict  # what the numbers belong to (the cache key's parts)
    busy: bool = False  # measured while other processes held cores: too slow; measured again when idle
    speed: float = 1.0  # the yardstick's time now over then: the costs in seconds are scaled by it
    measured_at: float = 0.0  # epoch seconds: the runs it planned correct it until it is measured again (history.py)

    def at_speed(self, ratio: float) -> Calibration:
        """These costs on a machine `ratio` times as slow as when they were measured (the
        checkpoint's disk writes excepted)."""
        return replace(
            self,
            train=[c * ratio for c in self.train],
            validation=[c * ratio for c in self.validation],
            evaluation=[c * ratio for c in self.evaluation],
            generate=[c * ratio for c in self.generate],
            generate_base=[c * ratio for c in self.generate_base],
            load_seconds=self.load_seconds * ratio,
            speed=self.speed * ratio,
        )

    def step_seconds(self, rows: int, width: int, learned: int) -> float:
        return _cost(self.train, self.kappa, rows, width, learned)

    def validation_seconds(self, rows: int, width: int) -> float:
        return _cost(self.validation, self.kappa, rows, width, rows)

    def evaluation_seconds(self, rows: int, width: int) -> float:
        return _cost(self.evaluation, self.kappa, rows, width, rows)

    def generate_seconds(self, rows: int, prompt_width: int, new_tokens: int, base: bool = False) -> float:
        g0, g1, g2 = self.generate_base if base else self.generate
        context = new_tokens * prompt_width + new_tokens**2 / 2  # summed over the new tokens
        return self.evaluation_seconds(rows, prompt_width) + new_tokens * (g0 + g1 * rows) + g2 * rows * context

    def peak_bytes(self, rows: int, width: int, learned: int, activation_share: float = 1.0) -> float:
        """The process's peak memory in a training step of this shape: m0 (weights, optimizer state,
        libraries) + m1 per token + m2 per token and token attended to (eager attention keeps the
        scores) + m3 per learned token (its logits over the vocabulary). The calibration's steps
        are eager; activation_share is the part of their activations another kind of step keeps."""
        m0, m1, m2, m3 = self.memory
        return m0 + activation_share * (m1 * rows * width + m2 * rows * width**2 + m3 * learned)

    def shape_cache_bytes(self, shapes: int) -> float:
        """What the kernels built for `shapes` distinct training batch shapes hold, up to the
        cache's capacity (SHAPE_CACHE_CEILING)."""
        return min(shapes * self.shape_bytes, SHAPE_CACHE_CEILING)

    def checkpoint_seconds(self) -> float:
        return self.trainable_parameters * self.checkpoint_bytes_per_parameter / self.disk_bytes_per_second


def _cost(coef: list[float], kappa: float, rows: int, width: int, learned: int) -> float:
    c0, c1, c2 = coef
    return c0 + c1 * (rows * width + kappa * learned) + c2 * rows * width**2


def setup_of(config) -> dict:
    """The parts of a run config that change a step's cost per token (not its shape)."""
    from tuneloop.train.methods import method_of

    adapter = method_of(config).adapter
    return {
        "method": "lora" if adapter else "full",  # the calibration's key: an adapter's step, or every weight's
        "precision": config.train.precision,
        "lora_r": config.lora.r if adapter else None,
        "targets": config.lora.target_modules if adapter else None,
        "dora": config.lora.use_dora if adapter else None,
    }


# A measurement taken while other processes kept this much of a core busy is marked busy: on 2
# cores a competitor halves the speed measured. It is used until a plan finds the machine idle,
# which measures again (a sweep's parallel trials must not each pay for a new measurement).
BUSY_CORES = 0.5


def calibration(folder, config, device: str, refresh: bool = False) -> tuple[Calibration, str]:
    """The cached calibration for this machine, model and setup, measured first if there is none.
    Returns it and how it was had: "cached", "measured", or "busy" (measured, or kept from a
    measurement, while other processes were busy)."""
    from tuneloop.cpu import LoadMeter
    from tuneloop.models.precision import Precision, choose_precision

    if config.train.precision == "auto":
        config = config.model_copy(deep=True)
        config.train.precision = choose_precision("auto", device).value
    key = {"machine": machine(), "model": _model_id(folder), "setup": setup_of(config), "timings": TIMINGS_RULE}
    path = measurement_file(key)
    if path.exists() and not refresh:
        try:
            cached = Calibration(**json.loads(path.read_text()))
        except (ValueError, TypeError):  # an older or damaged file: measure again
            cached = None
        if cached is not None:
            idle = _idle()
            if idle and not cached.busy:
                return cached, "cached"
            if not idle:  # others busy now: the costs scaled to the pace they leave
                now = speed_probe(device, Precision(config.train.precision).autocast_dtype)
                return cached.at_speed(now / cached.probe_median_seconds), "busy" if cached.busy else "cached"
            # measured while busy, idle now: measured again
    meter = LoadMeter()
    result = measure(folder, config, device, key)
    others = meter.others()
    result.busy = others is not None and others >= BUSY_CORES
    save_measurement(path, asdict(result))
    return result, "busy" if result.busy else "measured"


def _idle(seconds: float = 0.2) -> bool:
    from tuneloop.cpu import LoadMeter

    meter = LoadMeter()
    time.sleep(seconds)
    others = meter.others()
    return others is None or others < BUSY_CORES


def _model_id(folder) -> str:
    """The model's name and architecture: a re-converted or edited folder is measured again."""
    from pathlib import Path

    config_file = Path(folder) / "config.json"
    text = config_file.read_text() if config_file.exists() else str(folder)
    return f"{Path(folder).name}:{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def measure(folder, config, device: str, key: dict) -> Calibration:
    import torch
    import torch.nn.functional as F
    from peft.helpers import disable_input_dtype_casting

    from tuneloop.models.precision import Precision
    from tuneloop.models.trainable import load_for_training
    from tuneloop.train.methods import method_of
    from tuneloop.train.sft import adapter_config

    precision = Precision(config.train.precision)
    probe = speed_probe(device, precision.autocast_dtype)  # and again at the end: their mean
    t = time.perf_counter()
    adapter = method_of(config).adapter
    model, _ = load_for_training(folder, config.train, precision, device, every_weight=not adapter)
    load_seconds = time.perf_counter() - t
    if (peft_config := adapter_config(model, config.lora, adapter)) is not None:
        from peft import get_peft_model

        model = get_peft_model(model, peft_config)
    kappa = _head_share(model.config)
    vocab = model.config.vocab_size
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-6)
    autocast = precision.autocast_dtype
    generator = torch.Generator().manual_seed(0)

    def batch(rows: int, width: int, learned: int = LEARNED_PER_ROW):
        ids = torch.randint(10, vocab - 1, (rows, width), generator=generator).to(device)
        keep = torch.zeros(rows, width, dtype=torch.bool, device=device)
        keep[:, -learned - 1 : -1] = True
        return ids, keep

    def forward(ids, keep, mask=None):
        with (
            torch.autocast(device, dtype=autocast, enabled=autocast is not None),
            disable_input_dtype_casting(model, active=autocast is not None),
        ):
            logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=keep, use_cache=False).logits.float()
        return F.cross_entropy(logits, ids[:, 1:][keep[:, :-1]])

    def train_step(ids, keep):
        forward(ids, keep).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def no_grad_step(ids, keep):
        with torch.no_grad():
            forward(ids, keep)

    def padded_step(ids, keep):  # the test evaluation's batches: rows of different lengths, padded
        mask = torch.ones_like(ids)
        mask[1::2, ids.shape[1] // 2 :] = 0
        with torch.no_grad():
            forward(ids, keep, mask)

    training_attention = model.config._attn_implementation

    def set_up_for(kind):  # training and validation run training's attention kernel; the test evaluation SDPA
        model.train(kind == "train")
        model.set_attn_implementation("sdpa" if kind == "evaluation" else training_attention)

    work = {  # kind: its step, and its shapes (rows, width, learned tokens) with a batch each
        "train": (train_step, [((r, w, r * n), batch(r, w, n)) for r, w, n in TRAIN_SHAPES]),
        "validation": (no_grad_step, [((r, w, r * LEARNED_PER_ROW), batch(r, w)) for r, w in VALIDATION_SHAPES]),
        "evaluation": (padded_step, [((r, w, r * LEARNED_PER_ROW), batch(r, w)) for r, w in EVAL_SHAPES]),
    }
    # A warm-up of every shape first: kernels for a new shape are built on first use.
    peaks, shape_bytes = [], 0.0
    for kind, (step, shapes) in work.items():
        set_up_for(kind)
        for _, (ids, keep) in shapes:
            step(ids, keep)
            if kind == "train":
                # the measure run.json's metrics record (train/callbacks.py): a run's peak is its
                # first, widest step's, with the same weights, optimizer state and libraries loaded
                peaks.append(peak_memory_mb() * 2**20)
        # on CUDA the kernels live in the driver and its caches, outside the allocator's peak the run reports
        if kind == "train" and device == "cpu" and (before := heap_bytes_in_use()) is not None:
            for rows, width in NEW_SHAPES:
                train_step(*batch(rows, width))
            shape_bytes = max(0.0, (heap_bytes_in_use() - before) / len(NEW_SHAPES))
    # Then every shape is timed once a round, TIMINGS rounds, and all the timings enter the fit
    # (least squares prices a shape at their mean). Not back to back, for two reasons measured on
    # this VM (LOG.md): its pace flips for seconds at a time (the same 16x150 forward, no page
    # faults, 1.09 s then 1.98 s), so timings in a row read one pace, and the evaluation shapes,
    # timed within ten seconds, read one pace for the whole fit (one r16 calibration priced a 16x150
    # test-loss forward at 1.16 s, the one before it 1.82 s); and a shape run again at once finds
    # its memory as it left it, 20-40% faster than after another shape, as a run's steps never
    # are (each batch has its own width). A run's time is the sum of its steps: the mean's business.
    timings = {kind: [] for kind in work}
    per_token, per_token_base = [], []
    prompts = [batch(rows, prompt)[0] for rows, prompt in GENERATE_SHAPES]
    for _ in range(TIMINGS):
        for kind, (step, shapes) in work.items():
            set_up_for(kind)
            timings[kind] += [(*shape, _seconds(step, device, *batch_)) for shape, batch_ in shapes]
        # Per new token: the time between decoding steps (a logits processor sees each step), so
        # neither the call's setup nor the prompt's forward is in it. The adapter on and off take
        # turns, so the base model's decoding and the fine-tuned one's read the same paces.
        for (rows, prompt), ids in zip(GENERATE_SHAPES, prompts, strict=True):
            x = [1.0, rows, rows * (prompt + GENERATE_TOKENS / 2)]
            per_token.append((x, _decode_step_times(model, ids, autocast, device)))
            if peft_config is not None:
                with model.disable_adapter():
                    per_token_base.append((x, _decode_step_times(model, ids, autocast, device)))
    save_rate, checkpoint_bytes = _save_rate(model, optimizer)

    def fit_per_token(points):
        return _least_squares([x for x, _ in points], [y for _, y in points])

    def fit(points):
        return _least_squares([[1.0, r * w + kappa * n, r * w * w] for r, w, n, _ in points], [s for *_, s in points])

    return Calibration(
        train=fit(timings["train"]),
        validation=fit(timings["validation"]),
        evaluation=fit(timings["evaluation"]),
        generate=fit_per_token(per_token),
        generate_base=fit_per_token(per_token_base or per_token),  # full fine-tuning: no adapter to switch off
        kappa=kappa,
        load_seconds=round(load_seconds, 3),
        disk_bytes_per_second=save_rate,
        checkpoint_bytes_per_parameter=checkpoint_bytes / max(1, sum(p.numel() for p in params)),
        trainable_parameters=sum(p.numel() for p in params),
        memory=_least_squares([[1.0, r * w, r * w * w, r * n] for r, w, n in TRAIN_SHAPES], peaks),
        shape_bytes=shape_bytes,
        probe_median_seconds=(probe + speed_probe(device, autocast)) / 2,
        measured_with=key,
        measured_at=time.time(),
    )


# The yardstick: one MLP block of SmolLM2-135M (576 -> 1536 -> 576) forward and backward over 256
# tokens, PROBE_PASSES times: ~0.035 s a timing on 2 cores in fp32, single timings spread 31-43 ms.
# The median of PROBE_REPEATS timings, not the best: a best-of-n falls as n grows, so the
# calibration's two probes (best of 10) read ~5% faster than a plan's one, and all six runs of a
# bench were planned 1.01-1.12x slow for it (LOG.md). Fixed whatever the model, so the cost of a
# plan stays fixed; it gauges the machine's speed now against its speed at calibration.
PROBE_SHAPE = (256, 576, 1536)
PROBE_PASSES = 4
PROBE_REPEATS = 9


def speed_probe(device: str, autocast=None) -> float:
    """Seconds of the yardstick on this machine now, in the run's precision."""
    import torch
    import torch.nn.functional as F

    tokens, hidden, inter = PROBE_SHAPE
    generator = torch.Generator().manual_seed(0)
    up = torch.randn(inter, hidden, generator=generator).div_(hidden**0.5).to(device).requires_grad_()
    down = torch.randn(hidden, inter, generator=generator).div_(inter**0.5).to(device).requires_grad_()
    x = torch.randn(tokens, hidden, generator=generator).to(device)

    def work():
        for _ in range(PROBE_PASSES):
            with torch.autocast(device, dtype=autocast, enabled=autocast is not None):
                out = F.linear(F.silu(F.linear(x, up)), down)
            out.float().square().mean().backward()

    for _ in range(3):  # warm-up: the first timings in a process are up to 25% slower
        work()
    return statistics.median(_seconds(work, device) for _ in range(PROBE_REPEATS))


def _decode_step_times(model, ids, autocast, device: str) -> float:
    """Median seconds between the decoding steps of one generate() call over `ids`."""
    import torch
    from transformers import LogitsProcessor, LogitsProcessorList

    stamps: list[float] = []

    class Stamp(LogitsProcessor):
        def __call__(self, input_ids, scores):
            if device == "cuda":
                torch.cuda.synchronize()
            stamps.append(time.perf_counter())
            return scores

    # Left-padded as evaluation's batches are (models/generate.py): with padding in the mask the
    # decoding steps take another path, measured 0.056 s against 0.078 s (16 rows, 150 tokens).
    mask = torch.ones_like(ids)
    mask[1::2, :4] = 0
    with torch.no_grad(), torch.autocast(device, dtype=autocast, enabled=autocast is not None):
        model.generate(
            input_ids=ids,
            attention_mask=mask,
            min_new_tokens=GENERATE_TOKENS,
            max_new_tokens=GENERATE_TOKENS,
            do_sample=False,
            pad_token_id=0,
            logits_processor=LogitsProcessorList([Stamp()]),
        )
    gaps = sorted(b - a for a, b in itertools.pairwise(stamps))
    return gaps[len(gaps) // 2]


def _least_squares(rows: list[list[float]], y: list[float]) -> list[float]:
    """Non-negative coefficients: a term that fits negative (noise at small sizes) is dropped and
    the rest refitted."""
    import numpy as np

    a, b = np.array(rows), np.array(y)
    cols = list(range(a.shape[1]))
    while True:
        coef, *_ = np.linalg.lstsq(a[:, cols], b, rcond=None)
        if (coef >= 0).all() or len(cols) == 1:
            out = np.zeros(a.shape[1])
            out[cols] = np.clip(coef, 0, None)
            return [float(c) for c in out]
        cols.pop(int(np.argmin(coef)))


def _save_rate(model, optimizer) -> tuple[float, int]:
    """Bytes per second of writing a checkpoint (trainable weights and optimizer state, as the
    Trainer saves them) through to the disk, and that checkpoint's size.

    Synced, because a run's checkpoints come faster than the disk takes them: a full fine-tune
    (1.6 GB of weights and Adam state) saves at every validation pass, 7 times in the bench's
    15 steps. Unsynced, one write went to the page cache at 340 MB/s; the run's seven took 88 s,
    127 MB/s, the disk's own rate once dirty pages fill (LOG.md). Saves minutes apart, which the
    page cache absorbs, are priced high by this; a LoRA checkpoint's few MB cost a fraction of a
    second either way."""
    import tempfile

    import torch

    state = {
        "weights": {n: p.detach() for n, p in model.named_parameters() if p.requires_grad},
        "optimizer": optimizer.state_dict(),
    }
    with tempfile.TemporaryDirectory(dir=tuneloop_home()) as folder:
        path = f"{folder}/checkpoint.pt"
        t = time.perf_counter()
        with open(path, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        seconds = time.perf_counter() - t
        size = os.path.getsize(path)
    return size / max(seconds, 1e-6), size


def _seconds(fn, device: str, *args) -> float:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    fn(*args)
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t


def _head_share(model_config) -> float:
    """LM-head FLOPs per projected token over the decoder layers' FLOPs per token (weights only)."""
    hidden, layers = model_config.hidden_size, model_config.num_hidden_layers
    heads = model_config.num_attention_heads
    kv_heads = getattr(model_config, "num_key_value_heads", None) or heads
    head_dim = getattr(model_config, "head_dim", None) or hidden // heads
    inter = getattr(model_config, "intermediate_size", 4 * hidden)
    attention = hidden * head_dim * (2 * heads + 2 * kv_heads)
    mlp = 3 * hidden * inter
    return model_config.vocab_size * hidden / (layers * (attention + mlp))
