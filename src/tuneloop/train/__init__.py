"""Training: LoRA supervised fine-tuning on TRL's SFTTrainer, with metrics streamed to the run directory."""

from tuneloop.train.callbacks import MetricsWriter, TrainingProgress
from tuneloop.train.sft import build_trainer, to_training_rows

__all__ = ["MetricsWriter", "TrainingProgress", "build_trainer", "to_training_rows"]
