"""retnet: the RetNet model library (Sun et al. 2023). Knows nothing about documents or retrieval.

    cfg = RetNetConfig.from_preset("1.3b")
    model = RetNetForCausalLM(cfg)
    logits, state = model(ids, mode="chunkwise", chunk_lengths=[120, 340, 75])
    logits, state = model(next_ids, state=state, mode="recurrent")
"""

from .checkpoint import CheckpointError, load_tokenizer
from .config import PRESETS, RetNetConfig
from .generation import SamplingConfig, TextStream, generate
from .model import CausalLMOutput, RetNetForCausalLM
from .state import RetentionState, StateMismatchError

__all__ = [
    "PRESETS", "RetNetConfig", "RetNetForCausalLM", "CausalLMOutput", "RetentionState", "StateMismatchError",
    "CheckpointError", "SamplingConfig", "TextStream", "generate", "load_tokenizer",
]
