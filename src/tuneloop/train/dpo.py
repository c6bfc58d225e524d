"""TRL's DPOTrainer with two per-step costs of a CPU run removed (LOG.md has the profile), its
pairs in length-grouped batches (train/sampler.py).

1. The LM head on the answer tokens only (train/label_head.py): TRL's fused head projects every
   position onto the vocabulary when Triton is not there.
2. No copy of every adapter input to fp32 under bf16 autocast: PEFT casts a LoRA layer's input to
   the adapter's dtype, and autocast casts it back to bf16 for the matmul (train/loss.py's
   AdapterInputCastingOff, shared with SFT).
"""

from __future__ import annotations

import torch
from peft import PeftModel
from trl import DPOTrainer

from tuneloop.train.label_head import add_label_only_head
from tuneloop.train.loss import AdapterInputCastingOff
from tuneloop.train.sampler import PairsGroupedByLength


class LabelHeadDPOTrainer(PairsGroupedByLength, AdapterInputCastingOff, DPOTrainer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)  # puts TRL's fused head on the policy and the reference
        policy = self.model.get_base_model() if isinstance(self.model, PeftModel) else self.model
        for model in (policy, self.ref_model):
            if model is not None:
                add_label_only_head(model)

    @property
    def autocast_dtype(self) -> torch.dtype | None:  # the Trainer's own autocast (args.bf16)
        return torch.bfloat16 if self.args.bf16 else None

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        with self._adapter_input_casting_off(model):
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
