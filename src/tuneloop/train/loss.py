"""Completion-only loss that projects onto the 49k vocabulary only where a label exists.

At SmolLM2-135M's size the LM head (576 x 49152) is a fifth of the model, and with
completion-only loss most positions are prompt and carry no label. transformers'
`logits_to_keep` accepts a boolean mask, so the head runs on the answer tokens alone.
Measured on the quickstart batch (8 x ~190 tokens, 2-core AMX CPU; see LOG.md):
TRL 1.16's tiled fused head took 4.3 s of an 8.2 s step; this path takes ~0.1 s.
"""

from __future__ import annotations

import contextlib
import gc

import torch
import torch.nn.functional as F
from peft.tuners.tuners_utils import BaseTunerLayer
from transformers.trainer_pt_utils import LengthGroupedSampler
from trl import SFTTrainer

from tuneloop.train.sampler import EpochSeededLengthGroupedSampler, sampler_seed

IGNORE = -100


class AdapterInputCastingOff:
    """Trainer mixin: PEFT's input casting switched off under the trainer's `autocast_dtype`, for
    CompletionLossTrainer here and train/dpo.py's DPO trainer."""

    _adapter_layers: tuple[object, list] | None = None  # (model, its PEFT layers), found once

    @contextlib.contextmanager
    def _adapter_input_casting_off(self, model):
        """PEFT's `disable_input_dtype_casting`, over adapter layers found once per model: PEFT's
        own walks every module on entry and on exit, ~8 ms a step on SmolLM2's 30 layers."""
        if self.autocast_dtype is None:
            yield
            return
        if self._adapter_layers is None or self._adapter_layers[0] is not model:
            self._adapter_layers = (model, [m for m in model.modules() if isinstance(m, BaseTunerLayer)])
        layers = self._adapter_layers[1]
        before = [layer.cast_input_dtype_enabled for layer in layers]
        for layer in layers:
            layer.cast_input_dtype_enabled = False
        try:
            yield
        finally:
            for layer, value in zip(layers, before, strict=True):
                layer.cast_input_dtype_enabled = value


class CompletionLossTrainer(AdapterInputCastingOff, SFTTrainer):
    """SFTTrainer with the label-position-only loss above and explicit bf16 autocast.

    `autocast_dtype` is bf16 when the base weights are bf16: LoRA weights stay fp32 (the
    optimizer sees full precision) while their matmuls run in bf16 under autocast. PEFT's
    own cast of every activation to the adapter's fp32 is switched off for the forward:
    those copies cost ~0.5 s per step and autocast casts back to bf16 anyway.

    Per-step bookkeeping that walks the model's ~2,500 modules is done once instead: a step on
    SmolLM2's 30 layers spent ~8 ms of host time on it (LOG.md), which a GPU step cannot hide.
    """

    def __init__(
        self,
        *args,
        autocast_dtype: torch.dtype | None = None,
        l1: float = 0.0,
        l2: float = 0.0,
        task_eval=None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.autocast_dtype = autocast_dtype
        self.l1, self.l2 = l1, l2
        self.task_eval = task_eval  # a TaskEvaluator: the task metric at each validation pass
        self._example_losses: list[float] = []  # per validation example, for the loss's standard error
        self._flop_parameters: int | None = None
        check_trl_internals(self)

    def train(self, *args, **kwargs):
        """The Trainer's own train(), with what exists before it hidden from Python's cyclic garbage
        collector: the Trainer starts with a full collection (accelerate's free_memory), which
        traverses every object the model, tokenizer and datasets keep alive: 0.3 s of a 22 s
        SmolLM2 run (LOG.md). gc.freeze() moves them out of the collector's sight for the run;
        unfreeze() hands them back, so a cycle among them is still collected later."""
        gc.freeze()
        try:
            return super().train(*args, **kwargs)
        finally:
            gc.unfreeze()

    def _get_train_sampler(self, train_dataset=None):
        sampler = super()._get_train_sampler(train_dataset)
        if isinstance(sampler, LengthGroupedSampler):  # the order must not depend on the global RNG (sampler.py)
            return EpochSeededLengthGroupedSampler(sampler.lengths, sampler.batch_size, sampler_seed(self.args))
        return sampler

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if model.training else "eval"
        labels = inputs["labels"]
        shifted = F.pad(labels[:, 1:], (0, 1), value=IGNORE)
        keep = shifted != IGNORE
        model_inputs = {k: v for k, v in inputs.items() if k != "labels"}
        with self._autocast(), self._adapter_input_casting_off(model):
            outputs = model(**model_inputs, logits_to_keep=keep, use_cache=False)
        logits = outputs.logits.float()  # (n_label_tokens, vocab); fp32 for a stable log-softmax
        targets = shifted[keep]
        if mode == "train":
            loss_sum = F.cross_entropy(logits, targets, reduction="sum")
        else:
            token_losses = F.cross_entropy(logits, targets, reduction="none")
            loss_sum = token_losses.sum()
            self._record_example_losses(token_losses.detach(), keep)
        # With gradient accumulation the Trainer passes the token count of the whole accumulated
        # batch, so long and short micro-batches weigh by tokens, not by micro-batch.
        denominator = num_items_in_batch if num_items_in_batch is not None else targets.numel()
        loss = loss_sum / torch.as_tensor(denominator, device=loss_sum.device).clamp(min=1)
        if num_items_in_batch is not None and self.args.average_tokens_across_devices:
            # num_items_in_batch counts the tokens of all processes while DDP averages their
            # gradients: scale back up, as Trainer.compute_loss does (it is replaced here).
            loss = loss * (self.accelerator.num_processes // self.get_tp_size())
        if mode == "train" and (self.l1 or self.l2):
            penalty = self._weight_penalty(model)
            self._log_metric(mode, "weight_penalty", penalty.item())
            # Each micro-batch's loss is summed into one optimizer step: add 1/accumulation of it.
            loss = loss + penalty / self.args.gradient_accumulation_steps

        with torch.no_grad():
            accuracy = (logits.argmax(-1) == targets).float().mean().item() if targets.numel() else 0.0
        self._log_metric(mode, "mean_token_accuracy", accuracy)
        if mode == "train":
            self._count_train_tokens(
                int(inputs["attention_mask"].sum()) if "attention_mask" in inputs else inputs["input_ids"].numel()
            )
        return (loss, outputs) if return_outputs else loss

    # The only two places tuneloop writes TRL's private state (check_trl_internals guards both):
    # SFTTrainer averages `_metrics[mode][name]` into each log, and reports `_total_train_tokens`
    # as num_tokens. compute_loss replaces SFTTrainer's, so it must feed them the same way.
    def _log_metric(self, mode: str, name: str, value: float) -> None:
        self._metrics[mode][name].append(value)

    def _count_train_tokens(self, tokens: int) -> None:
        self._total_train_tokens += tokens
        self._metrics["train"]["num_tokens"] = [self._total_train_tokens]

    def _record_example_losses(self, token_losses: torch.Tensor, keep: torch.Tensor) -> None:
        rows = keep.nonzero(as_tuple=True)[0]
        sums = torch.zeros(keep.shape[0], device=token_losses.device).index_add_(0, rows, token_losses.float())
        counts = keep.sum(dim=1)
        self._example_losses += (sums[counts > 0] / counts[counts > 0]).tolist()

    def evaluation_loop(self, *args, **kwargs):
        """The validation pass, plus what the doctor needs to judge it: the standard error of the
        loss over examples (`eval_loss_se`: a small validation set jitters), and the task metric
        of continuous evaluation (`eval_<key>`, train/task_eval.py)."""
        self._example_losses = []
        output = super().evaluation_loop(*args, **kwargs)
        losses = self._example_losses
        if len(losses) > 1:
            mean = sum(losses) / len(losses)
            sd = (sum((x - mean) ** 2 for x in losses) / (len(losses) - 1)) ** 0.5
            output.metrics["eval_loss_se"] = round(sd / len(losses) ** 0.5, 5)
        if self.task_eval is not None and self.is_world_process_zero():
            output.metrics.update(self.task_eval(self.model, self.state))
        return output

    def _weight_penalty(self, model) -> torch.Tensor:
        """L1/L2 on the trainable weights (the adapters, or everything unfrozen in full fine-tuning)."""
        params = [p for p in model.parameters() if p.requires_grad]
        l1 = sum(p.abs().sum() for p in params) if self.l1 else 0.0
        l2 = sum(p.pow(2).sum() for p in params) if self.l2 else 0.0
        return self.l1 * l1 + self.l2 * l2

    def evaluate(self, *args, **kwargs):
        # With train.compile the decoder layers are compiled for the training step; a no-grad
        # evaluation would compile new graphs (another minute on 2 cores) for a few batches.
        with torch.compiler.set_stance("force_eager"):
            return super().evaluate(*args, **kwargs)

    def floating_point_ops(self, inputs) -> int:
        """The Trainer's count for `total_flos` (6 x input tokens x non-embedding parameters), with
        the parameters counted once: the Trainer counts them by walking the model every step."""
        if self._flop_parameters is None:
            self._flop_parameters = self.model.num_parameters(exclude_embeddings=True)
        return 6 * inputs["input_ids"].numel() * self._flop_parameters

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.args.device.type, dtype=self.autocast_dtype)


def check_trl_internals(trainer) -> None:
    """Fail at once, naming the TRL version, when TRL no longer has the private state that
    CompletionLossTrainer feeds (per-mode defaultdicts of metric lists, and a token counter);
    without this a TRL upgrade would silently drop token accuracy and token counts from every log."""
    from collections import defaultdict

    import trl

    metrics = getattr(trainer, "_metrics", None)
    ok = (
        isinstance(metrics, dict)
        and all(
            isinstance(metrics.get(m), defaultdict) and metrics[m].default_factory is list for m in ("train", "eval")
        )
        and isinstance(getattr(trainer, "_total_train_tokens", None), int)
    )
    if not ok:
        raise RuntimeError(
            f"TRL {trl.__version__} changed SFTTrainer's private _metrics / _total_train_tokens, "
            "which tuneloop's CompletionLossTrainer feeds (train/loss.py); pin trl to a tested "
            "version or update compute_loss"
        )
