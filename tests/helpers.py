"""Test helpers: tiny models with weights large enough that every form's errors would show, a byte tokenizer."""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from retnet import RetNetConfig, RetNetForCausalLM


def make_model(seed: int = 0, dtype=torch.float64, std: float = 0.3, **overrides) -> RetNetForCausalLM:
    torch.manual_seed(seed)
    cfg = RetNetConfig.from_preset("tiny", **overrides)
    model = RetNetForCausalLM(cfg)
    model.reset_parameters(std=std)
    with torch.no_grad():  # norm weights away from 1 so that a missing weight would be caught
        for p in model.parameters():
            if p.dim() == 1:
                p.uniform_(0.5, 1.5)
    return model.to(dtype).eval()


def byte_tokenizer() -> Tokenizer:
    """Byte-level tokenizer with no merges: one token per byte, so characters can split across tokens."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok
