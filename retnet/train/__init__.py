"""Training: token-row data, the trainer (one GPU or several via torchrun), checkpoints and resume,
and the same-size Transformer baseline the RetNet is compared against."""

from .baseline import TransformerConfig, TransformerForCausalLM, transformer_config_like
from .data import MixedBatches, TokenRows, pack_stream
from .trainer import TrainConfig, Trainer, lr_at

__all__ = ["MixedBatches", "TokenRows", "pack_stream", "Trainer", "TrainConfig", "lr_at",
           "TransformerConfig", "TransformerForCausalLM", "transformer_config_like"]
