"""The Transformer side of the speed benchmarks: a Llama with a gpt-fast-style static KV cache.

The architecture is transformers' ``LlamaForCausalLM`` (pre-norm RMSNorm, half-split rotary, SDPA
attention, SwiGLU MLP, untied LM head) and the module names are its names, so a state dict moves
between the two unchanged; tests/benchmarks/test_gpu_benchmarks.py checks that both give the same
logits. It is written out here rather than taken from transformers so that decoding gets its best
shot without a compiler: static buffers, one CUDA graph per (batch, cache size), as gpt-fast does.

    cfg = llama_like(RetNetConfig.from_preset("1.3b"))   # same vocab, width, depth; parameters within 1%
    model = Llama(cfg)
    hidden = model.forward_hidden(ids, checkpoint=True)     # training: SDPA causal (flash attention)
    cache = KVCache(model, batch, capacity)
    logits = model.prefill(ids, cache)                      # last position's logits; keys/values cached
    dec = LlamaDecoder(model, cache)                        # then dec.step(tokens) -> logits, in a graph

Decode attention reads the whole static cache with a validity mask (positions after the current one
are masked out), in one of two ways: ``"split"``, split-K ("flash-decoding") in plain tensor ops,
scores of all cached keys in one batched matmul and the weighted sum of values in S slices of the
cache summed afterwards, so that even batch 1 spreads over the whole GPU; or ``"sdpa"``, PyTorch's
scaled_dot_product_attention with a boolean mask. The decode benchmark times both and keeps the faster.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint as activation_checkpoint


@dataclass
class LlamaConfig:
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    def hf_config(self):
        """The same model as a transformers LlamaConfig."""
        from transformers import LlamaConfig as HFLlamaConfig

        return HFLlamaConfig(vocab_size=self.vocab_size, hidden_size=self.hidden_size,
                             intermediate_size=self.intermediate_size, num_hidden_layers=self.num_layers,
                             num_attention_heads=self.num_heads, num_key_value_heads=self.num_kv_heads,
                             rms_norm_eps=self.rms_norm_eps, rope_theta=self.rope_theta, tie_word_embeddings=False,
                             attention_bias=False, mlp_bias=False, max_position_embeddings=1 << 20)


def retnet_parameters(cfg) -> int:
    """Parameters of a RetNet with config `cfg` (embeddings, layers, head), without building it."""
    h = cfg.hidden_size
    per_layer = 2 * h * cfg.key_dim + h * cfg.value_dim * (3 if cfg.output_gate else 2) + 3 * h * cfg.ffn_dim + 2 * h
    if cfg.group_norm_affine:
        per_layer += cfg.value_dim if cfg.group_norm_per_head else cfg.head_v_dim
    if cfg.token_shift:
        per_layer += 3 * h
    head = 0 if cfg.tie_embeddings else cfg.vocab_size * h
    return cfg.vocab_size * h + cfg.num_layers * per_layer + h + head


def llama_parameters(cfg: LlamaConfig) -> int:
    h, d = cfg.hidden_size, cfg.head_dim
    per_layer = 2 * h * cfg.num_heads * d + 2 * h * cfg.num_kv_heads * d + 3 * h * cfg.intermediate_size + 2 * h
    return 2 * cfg.vocab_size * h + cfg.num_layers * per_layer + h


def llama_like(retnet_cfg, head_dim: int = 128, kv_heads: int | None = None) -> LlamaConfig:
    """A Llama of the RetNet's vocabulary, width and depth, heads of `head_dim` (multi-head attention
    unless `kv_heads`), and the SwiGLU width (a multiple of 128) that brings the parameter count closest."""
    h = retnet_cfg.hidden_size
    head_dim = min(head_dim, h)
    heads = h // head_dim
    kv = kv_heads or heads
    cfg = LlamaConfig(retnet_cfg.vocab_size, h, retnet_cfg.num_layers, heads, kv, 0)
    per_unit = 3 * h * cfg.num_layers  # parameters per unit of SwiGLU width
    width = (retnet_parameters(retnet_cfg) - llama_parameters(cfg)) / per_unit
    cfg.intermediate_size = max(64, 128 * round(width / 128))
    return cfg


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.variance_epsilon = eps

    def forward(self, x: Tensor) -> Tensor:
        xf = x.to(torch.float32)
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        return self.weight * xf.to(x.dtype)


def rotary(positions: Tensor, cfg: LlamaConfig, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """cos, sin [..., head_dim] for integer positions (Llama's default rotary, float32 angles)."""
    d = cfg.head_dim
    inv_freq = 1.0 / cfg.rope_theta ** (torch.arange(0, d, 2, device=positions.device, dtype=torch.float32) / d)
    freqs = positions.to(torch.float32)[..., None] * inv_freq
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def _rotate_half(x: Tensor) -> Tensor:
    a, b = x.chunk(2, dim=-1)
    return torch.cat((-b, a), dim=-1)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x [B, heads, T, D]; cos, sin [B, T, D]."""
    return x * cos[:, None] + _rotate_half(x) * sin[:, None]


class Attention(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.cfg = cfg
        h, d = cfg.hidden_size, cfg.head_dim
        self.q_proj = nn.Linear(h, cfg.num_heads * d, bias=False)
        self.k_proj = nn.Linear(h, cfg.num_kv_heads * d, bias=False)
        self.v_proj = nn.Linear(h, cfg.num_kv_heads * d, bias=False)
        self.o_proj = nn.Linear(cfg.num_heads * d, h, bias=False)

    def qkv(self, x: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        B, T, _ = x.shape
        c = self.cfg
        q = self.q_proj(x).view(B, T, c.num_heads, c.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, T, c.num_kv_heads, c.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, c.num_kv_heads, c.head_dim).transpose(1, 2)
        return apply_rotary(q, cos, sin), apply_rotary(k, cos, sin), v

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, cache: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """Causal attention over x [B, T, hidden] from position 0; with `cache` (k, v buffers
        [B, kv_heads, capacity, D]) the keys and values are also written to its first T slots."""
        B, T, _ = x.shape
        q, k, v = self.qkv(x, cos, sin)
        if cache is not None:
            cache[0][:, :, :T] = k
            cache[1][:, :, :T] = v
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                           enable_gqa=self.cfg.num_kv_heads != self.cfg.num_heads)
        return self.o_proj(o.transpose(1, 2).reshape(B, T, -1))


class MLP(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.self_attn = Attention(cfg)
        self.mlp = MLP(cfg)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, cache=None) -> Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, cache)
        return x + self.mlp(self.post_attention_layernorm(x))


class _Body(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class Llama(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.config = cfg
        self.model = _Body(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                scale = (2 * cfg.num_layers) ** -0.5 if name.endswith(("o_proj.weight", "down_proj.weight")) else 1
                nn.init.normal_(p, std=0.02 * scale)

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward_hidden(self, ids: Tensor, cache: KVCache | None = None, checkpoint: bool = False) -> Tensor:
        """Final-norm hidden states [B, T, hidden] of ids [B, T] read from position 0. With `cache`
        the keys and values are stored in it; with `checkpoint` each layer's activations are
        recomputed in the backward pass (activation checkpointing per layer)."""
        B, T = ids.shape
        x = self.model.embed_tokens(ids)
        cos, sin = rotary(torch.arange(T, device=ids.device).expand(B, T), self.config, x.dtype)
        for i, layer in enumerate(self.model.layers):
            kv = None if cache is None else (cache.k[i], cache.v[i])
            if checkpoint and torch.is_grad_enabled():
                x = activation_checkpoint(layer, x, cos, sin, kv, use_reentrant=False)
            else:
                x = layer(x, cos, sin, kv)
        if cache is not None:
            cache.pos.fill_(T)
        return self.model.norm(x)

    def forward(self, ids: Tensor) -> Tensor:
        """Logits [B, T, vocab] (tests; the benchmarks take only the logits they use)."""
        return self.lm_head(self.forward_hidden(ids))

    @torch.no_grad()
    def prefill(self, ids: Tensor, cache: KVCache) -> Tensor:
        """Read the prompt into the cache; return the logits [B, vocab] at its last position only."""
        return self.lm_head(self.forward_hidden(ids, cache)[:, -1])


class KVCache:
    """Static keys and values [B, kv_heads, capacity, head_dim] per layer, and each row's next position."""

    def __init__(self, model: Llama, batch: int, capacity: int, dtype=None, device=None):
        c = model.config
        weight = model.lm_head.weight
        dtype, device = dtype or weight.dtype, device or weight.device
        shape = (batch, c.num_kv_heads, capacity, c.head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(c.num_layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(c.num_layers)]
        self.pos = torch.zeros(batch, dtype=torch.long, device=device)
        self.batch, self.capacity = batch, capacity

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.k, *self.v))

    @torch.no_grad()
    def fill_random(self, length: int, seed: int = 0) -> None:
        """Stand-in for a prefill of `length` tokens: random keys and values, positions at `length`
        (decode cost depends on how many keys there are, not on what they are)."""
        g = torch.Generator(device=self.pos.device).manual_seed(seed)
        for t in (*self.k, *self.v):
            t[:, :, :length].normal_(0, 1, generator=g)
        self.pos.fill_(length)


def split_count(batch: int, kv_heads: int, capacity: int, target_blocks: int = 512) -> int:
    """Slices of the cache for split-K decode attention: enough (batch, head, slice) blocks to fill a
    GPU, each slice at least 256 keys, and a power of two that divides the capacity."""
    s = 1
    while batch * kv_heads * s < target_blocks and capacity % (2 * s) == 0 and capacity // (2 * s) >= 256:
        s *= 2
    return s


def decode_attention(q: Tensor, k: Tensor, v: Tensor, valid: Tensor, impl: str, splits: int) -> Tensor:
    """One query per row: q [B, H, 1, D] over the cache k, v [B, KVH, C, D] where valid [B, C]."""
    B, H, _, D = q.shape
    KVH, C = k.shape[1], k.shape[2]
    if impl == "sdpa":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=valid[:, None, None, :], enable_gqa=KVH != H)
    G = H // KVH
    qg = q.view(B, KVH, G, D)
    scores = torch.matmul(qg, k.transpose(-1, -2)).float() * D**-0.5  # [B, KVH, G, C]
    scores = scores.masked_fill(~valid[:, None, None, :], float("-inf"))
    p = scores.softmax(dim=-1).to(v.dtype)
    S = splits
    p = p.view(B, KVH, G, S, C // S).transpose(2, 3)  # [B, KVH, S, G, C/S]
    o = torch.matmul(p, v.view(B, KVH, S, C // S, D))  # [B, KVH, S, G, D]: each slice's share
    return o.float().sum(dim=2).to(q.dtype).view(B, H, 1, D)


def decode_step(model: Llama, cache: KVCache, tokens: Tensor, impl: str, splits: int) -> Tensor:
    """Read tokens [B] at each row's position into the cache; return logits [B, vocab]. Static shapes
    and no host synchronisation, so it can be captured in a CUDA graph."""
    cfg = model.config
    B = tokens.shape[0]
    pos = cache.pos
    x = model.model.embed_tokens(tokens[:, None])
    cos, sin = rotary(pos[:, None], cfg, x.dtype)
    rows = torch.arange(B, device=tokens.device)
    valid = torch.arange(cache.capacity, device=tokens.device)[None, :] <= pos[:, None]
    for i, layer in enumerate(model.model.layers):
        attn = layer.self_attn
        q, k, v = attn.qkv(layer.input_layernorm(x), cos, sin)
        cache.k[i][rows, :, pos] = k[:, :, 0]
        cache.v[i][rows, :, pos] = v[:, :, 0]
        o = decode_attention(q, cache.k[i], cache.v[i], valid, impl, splits)
        x = x + attn.o_proj(o.transpose(1, 2).reshape(B, 1, -1))
        x = x + layer.mlp(layer.post_attention_layernorm(x))
    pos.add_(1)
    return model.lm_head(model.model.norm(x))[:, 0]


class LlamaDecoder:
    """decode_step over a KVCache, captured once in a CUDA graph on CUDA (eager elsewhere)."""

    def __init__(self, model: Llama, cache: KVCache, impl: str = "split", use_graph: bool = True):
        if impl not in ("split", "sdpa"):
            raise ValueError(f"decode attention is 'split' or 'sdpa', not {impl!r}")
        self.model, self.cache, self.impl = model, cache, impl
        self.splits = split_count(cache.batch, model.config.num_kv_heads, cache.capacity)
        self.tokens = torch.zeros(cache.batch, dtype=torch.long, device=cache.pos.device)
        self.use_graph = use_graph and cache.pos.is_cuda
        self.graph = None
        self.logits = None

    def _run(self) -> Tensor:
        return decode_step(self.model, self.cache, self.tokens, self.impl, self.splits)

    @torch.no_grad()
    def step(self, tokens: Tensor) -> Tensor:
        self.tokens.copy_(tokens, non_blocking=True)
        if not self.use_graph:
            return self._run()
        if self.graph is None:
            self._capture()
        self.graph.replay()
        return self.logits

    def _capture(self) -> None:
        pos = self.cache.pos.clone()  # warm-up steps write (harmless) cache slots and move the positions
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):
                self._run()
                self.cache.pos.copy_(pos)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.logits = self._run()
        self.cache.pos.copy_(pos)
