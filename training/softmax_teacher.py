"""The source Transformer, computed from a converted model's own weights: the teacher for uptraining.

A model converted by `retnet.convert.llama_gguf` holds the Llama weights unchanged (q/k rows in
the rotary layout our `apply_rotary` uses, k/v repeated per query head). Running each layer with
causal softmax attention (PyTorch SDPA) instead of retention, with no output norm and no gate,
is therefore the original Transformer; tests check it against transformers' LlamaForCausalLM.

`teacher_forward(model, ids, capture=True)` also returns each layer's attention input (after the
pre-norm) and attention output, which stage 1 of training/uptrain.py matches layer by layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from retnet.rotary import apply_rotary


def _base_linear(module, x: Tensor) -> Tensor:
    """The linear layer's frozen base weight only (a LoRA wrapper exposes .base)."""
    base = getattr(module, "base", module)
    return F.linear(x, base.weight)


def softmax_attention(retention, x: Tensor, positions: Tensor, heads_only: bool = False) -> Tensor:
    """Causal softmax attention with a retention module's base q/k/v/o weights: x [B, T, D] -> [B, T, D]
    (with heads_only, the per-head outputs [B, T, H, V] before o_proj)."""
    cfg = retention.cfg
    B, T, _ = x.shape
    H, K, V = cfg.num_heads, cfg.head_k_dim, cfg.head_v_dim
    q = _base_linear(retention.q_proj, x).view(B, T, H, K)
    k = _base_linear(retention.k_proj, x).view(B, T, H, K)
    v = _base_linear(retention.v_proj, x).view(B, T, H, V)
    inv_freq = retention._inv_freq.on(x.device)
    q = apply_rotary(q, positions, inv_freq, cfg.rotary_style)
    k = apply_rotary(k, positions, inv_freq, cfg.rotary_style)
    o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True,
                                       scale=K**-0.5)
    o = o.transpose(1, 2)
    if heads_only:
        return o
    return _base_linear(retention.o_proj, o.reshape(B, T, H * V))


@torch.no_grad()
def teacher_forward(model, input_ids: Tensor, capture: bool = False, at: Tensor | None = None):
    """Logits [B, T, vocab] of the Transformer behind `model`; with capture, also a list of
    (attention input, attention output) per layer, both [B, T, hidden]. With `at` ([B] positions),
    only the logits at those positions, [B, vocab] (batched decoding of right-padded rows)."""
    B, T = input_ids.shape
    positions = torch.arange(T, device=input_ids.device).expand(B, T)
    x = model.embed(input_ids)
    if model.config.embed_scale != 1.0:
        x = x * model.config.embed_scale
    pairs = []
    for layer in model.layers:
        h = layer.retention_norm(x)
        a = softmax_attention(layer.retention, h, positions)
        if capture:
            pairs.append((h, a))
        x = x + a
        x = x + layer.ffn(layer.ffn_norm(x))
    if at is not None:
        x = x[torch.arange(B, device=x.device), at]
    logits = model.lm_head(model.final_norm(x))
    return (logits, pairs) if capture else logits
