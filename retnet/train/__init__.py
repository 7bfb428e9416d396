"""Training: token-row data, the trainer (one GPU or several via torchrun), checkpoints and resume."""

from .data import MixedBatches, TokenRows, pack_stream
from .trainer import TrainConfig, Trainer, lr_at

__all__ = ["MixedBatches", "TokenRows", "pack_stream", "Trainer", "TrainConfig", "lr_at"]
