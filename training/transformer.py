"""A same-size Transformer baseline: GPT-style decoder-only, to compare the RetNet reader against.

Pre-norm blocks of causal softmax attention (rotary positions, head dim 64) and the
same SwiGLU FFN and RMSNorm as RetNet (retnet.layers), tied embeddings. Everything
but the sequence mixer is RetNet's, so a comparison measures retention vs attention:

    cfg = transformer_config_like(RetNetConfig.from_json("data/model/config.json"))
    model = TransformerForCausalLM(cfg)          # parameter count within 1% of the RetNet's
    logits = model(ids).logits                   # [B, T, vocab]
    answer_ids = model.generate_greedy(prompt, 48, stop_token_ids={0})

The trainer takes it with ``TrainConfig(arch="transformer", model={"like_retnet": {...}})``.
``forward`` accepts the RetNet's ``mode`` / ``chunk_size`` / ``chunk_lengths`` and ignores
them (every form of attention is the same computation), so the trainer's loss runs unchanged.

A model directory is ``config.json`` (model_type "transformer-baseline") +
``model.safetensors`` (+ ``tokenizer.json``), written by the same code as RetNet's.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from retnet.checkpoint import CONFIG_FILE, WEIGHTS_FILE, CheckpointError, read_config_dict, read_safetensors
from retnet.checkpoint import save_pretrained as save_model_directory
from retnet.config import RetNetConfig
from retnet.layers import MODES, GatedFFN, RMSNorm
from retnet.model import RetNetForCausalLM
from retnet.rotary import apply_rotary

MODEL_TYPE = "transformer-baseline"
HEAD_DIM = 64  # transformer_config_like's head size


@dataclass
class TransformerConfig:
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    ffn_dim: int
    rotary_base: float = 10000.0
    norm_eps: float = 1e-6
    tie_embeddings: bool = True
    eos_token_id: int | None = 0
    pad_token_id: int | None = 1
    max_position: int = 32768  # longest sequence (prompt + generated) the model accepts
    extra: dict = field(default_factory=dict)  # free-form provenance, e.g. the RetNet config it matches
    ffn_activation: ClassVar[str] = "swish"  # SwiGLU: what retnet.layers.GatedFFN reads

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "ffn_dim", "max_position"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"TransformerConfig.{name} must be positive, got {getattr(self, name)}")
        if self.hidden_size % self.num_heads or self.head_dim % 2:
            raise ValueError(f"hidden_size {self.hidden_size} must split into {self.num_heads} heads of an even "
                             "size (rotary embeddings rotate pairs)")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TransformerConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known - {"model_type"})
        if unknown:
            raise ValueError(f"unknown TransformerConfig fields: {unknown}")
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_json(self, path: str | Path) -> None:
        from retnet.io import atomic_write_text

        atomic_write_text(Path(path), json.dumps({"model_type": MODEL_TYPE, **self.to_dict()}, indent=2))


class KVCache:
    """Keys and values of every layer for the tokens read so far, in buffers of a fixed capacity.

    ``length`` is the number of tokens read (the next token's position). Buffers are
    allocated on a layer's first write: [B, heads, capacity, head_dim].
    """

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.length = 0
        self._keys: list[Tensor] = []
        self._values: list[Tensor] = []

    def extend(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write this layer's new k, v [B, H, T, D] after the cached ones; return all of them."""
        start, end = self.length, self.length + k.shape[2]
        if end > self.capacity:
            raise ValueError(f"KV cache holds {self.capacity} tokens; {end} do not fit")
        if layer == len(self._keys):
            shape = (k.shape[0], k.shape[1], self.capacity, k.shape[3])
            self._keys.append(k.new_empty(shape))
            self._values.append(v.new_empty(shape))
        self._keys[layer][:, :, start:end] = k
        self._values[layer][:, :, start:end] = v
        return self._keys[layer][:, :, :end], self._values[layer][:, :, :end]


class TransformerOutput(NamedTuple):
    logits: Tensor  # [B, T, vocab]
    cache: KVCache | None  # the cache passed in, now holding these tokens too


class CausalSelfAttention(nn.Module):
    """Multi-head softmax attention with half-split rotary q/k (base**(-2i/D) angles, float64)."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        h = cfg.hidden_size
        self.q_proj = nn.Linear(h, h, bias=False)
        self.k_proj = nn.Linear(h, h, bias=False)
        self.v_proj = nn.Linear(h, h, bias=False)
        self.o_proj = nn.Linear(h, h, bias=False)

    def forward(self, x: Tensor, positions: Tensor, inv_freq: Tensor, cache: KVCache | None,
                layer: int) -> Tensor:
        B, T, _ = x.shape
        H, D = self.cfg.num_heads, self.cfg.head_dim
        q = apply_rotary(self.q_proj(x).view(B, T, H, D), positions, inv_freq, "half").transpose(1, 2)
        k = apply_rotary(self.k_proj(x).view(B, T, H, D), positions, inv_freq, "half").transpose(1, 2)
        v = self.v_proj(x).view(B, T, H, D).transpose(1, 2)
        past = 0
        if cache is not None:
            past = cache.length
            k, v = cache.extend(layer, k, v)
        if past == 0:  # nothing cached: plain causal attention
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # query i (at position past + i) sees keys 0 .. past + i; one query sees everything
            mask = None if T == 1 else torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(past)
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.o_proj(o.transpose(1, 2).reshape(B, T, H * D))


class TransformerBlock(nn.Module):
    """Pre-norm residual block: x + attention(norm(x)), then x + ffn(norm(x))."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.attention_norm = RMSNorm(cfg.hidden_size, cfg.norm_eps)
        self.attention = CausalSelfAttention(cfg)
        self.ffn_norm = RMSNorm(cfg.hidden_size, cfg.norm_eps)
        self.ffn = GatedFFN(cfg)

    def forward(self, x: Tensor, positions: Tensor, inv_freq: Tensor, cache: KVCache | None, layer: int) -> Tensor:
        x = x + self.attention(self.attention_norm(x), positions, inv_freq, cache, layer)
        return x + self.ffn(self.ffn_norm(x))


class TransformerForCausalLM(nn.Module):
    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(TransformerBlock(config) for _ in range(config.num_layers))
        self.final_norm = RMSNorm(config.hidden_size, config.norm_eps)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        self.reset_parameters()

    def reset_parameters(self, std: float = 0.02) -> None:
        """The RetNet's init: small normal weights, output projections scaled down by depth."""
        RetNetForCausalLM.reset_parameters(self, std)

    @property
    def num_parameters(self) -> int:
        """Parameters counted once (a tied LM head is the embedding), as RetNetForCausalLM counts them."""
        return sum(p.numel() for p in self.parameters())

    def forward(self, input_ids: Tensor, *, cache: KVCache | None = None, mode: str | None = None,
                chunk_size: int | None = None, chunk_lengths: list[int] | None = None) -> TransformerOutput:
        """Logits for input_ids [B, T]. With ``cache``, the tokens continue the cached ones (and are
        added to it). ``mode``, ``chunk_size`` and ``chunk_lengths`` are RetNet options, accepted so
        that RetNet training code runs unchanged, and ignored: attention has one form."""
        if mode is not None and mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; choose one of {MODES}")
        return TransformerOutput(self.lm_head(self.forward_hidden(input_ids, cache)), cache)

    def forward_hidden(self, input_ids: Tensor, cache: KVCache | None = None) -> Tensor:
        """The final-norm hidden states [B, T, hidden] (what the LM head reads)."""
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [batch, time], got shape {tuple(input_ids.shape)}")
        B, T = input_ids.shape
        past = cache.length if cache is not None else 0
        if past + T > self.config.max_position:
            raise ValueError(f"{past + T} tokens exceed max_position {self.config.max_position}")
        positions = torch.arange(past, past + T, device=input_ids.device).expand(B, T)
        half = self.config.head_dim // 2
        inv_freq = self.config.rotary_base ** (-torch.arange(half, dtype=torch.float64) * 2 / self.config.head_dim)
        x = self.embed(input_ids)
        for i, layer in enumerate(self.layers):
            x = layer(x, positions, inv_freq, cache, i)
        if cache is not None:
            cache.length += T
        return self.final_norm(x)

    # -- generation --------------------------------------------------------------
    @torch.no_grad()
    def greedy_tokens(self, prompt_ids: Sequence[int], max_new_tokens: int,
                      stop_token_ids: set[int] | frozenset[int] = frozenset()) -> Iterator[int]:
        """Yield greedy tokens one at a time: the prompt is read once into a KV cache, then each
        token costs one step. A token in ``stop_token_ids`` ends generation and is not yielded.
        Stop iterating early (e.g. at a stop string) and no further step is computed."""
        if not prompt_ids:
            raise ValueError("an empty prompt gives no logits to start from; pass at least one token")
        device = self.embed.weight.device
        cache = KVCache(len(prompt_ids) + max_new_tokens)
        hidden = self.forward_hidden(torch.tensor([list(prompt_ids)], device=device), cache)
        for step in range(max_new_tokens):
            tok = int(self.lm_head(hidden[0, -1]).float().argmax())  # logits of the last token only
            if tok in stop_token_ids:
                return
            yield tok
            if step + 1 < max_new_tokens:
                hidden = self.forward_hidden(torch.tensor([[tok]], device=device), cache)

    def generate_greedy(self, prompt_ids: Sequence[int], max_new_tokens: int,
                        stop_token_ids: set[int] | frozenset[int] = frozenset()) -> list[int]:
        """The new tokens of a greedy continuation (a stop token ends it and is not included)."""
        return list(self.greedy_tokens(prompt_ids, max_new_tokens, stop_token_ids))

    # -- checkpoints ---------------------------------------------------------------
    def save_pretrained(self, path: str | Path, tokenizer=None) -> None:
        """config.json + model.safetensors (a tied LM head is not stored twice) + tokenizer.json."""
        save_model_directory(self, path, tokenizer=tokenizer)

    @classmethod
    def from_pretrained(cls, path: str | Path, device=None, dtype=None) -> TransformerForCausalLM:
        """Load a directory written by save_pretrained; CheckpointError names what is wrong."""
        path = Path(path)
        raw = read_config_dict(path, MODEL_TYPE, " (a RetNet directory loads with RetNetForCausalLM.from_pretrained)")
        try:
            cfg = TransformerConfig.from_dict(raw)
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{path / CONFIG_FILE}: {e}") from None
        source = path / WEIGHTS_FILE
        tensors = read_safetensors(source)
        with torch.device("meta"):
            model = cls(cfg)
        device = torch.device(device) if device is not None else torch.device("cpu")
        tensors = {k: v.to(device, dtype if dtype is not None and v.is_floating_point() else v.dtype)
                   for k, v in tensors.items()}
        try:
            missing, unexpected = model.load_state_dict(tensors, strict=False, assign=True)
        except RuntimeError as e:  # a shape that does not match the config
            raise CheckpointError(f"{source}: {e}") from None
        if cfg.tie_embeddings:
            missing = [k for k in missing if k != "lm_head.weight"]
            model.lm_head.weight = model.embed.weight
        if missing or unexpected:
            raise CheckpointError(f"{source}: missing keys {missing[:8]}; unexpected keys {unexpected[:8]}")
        return model.eval()


def transformer_config_like(retnet_config: RetNetConfig, **overrides) -> TransformerConfig:
    """A Transformer the size of the RetNet built from ``retnet_config``: the same vocabulary,
    width, depth, tying and special tokens, heads of 64 (fewer, wider heads for a width under
    64 or not a multiple of 64), and the FFN width that brings the parameter count to the
    RetNet's (within 0.5%: a multiple of 64 or 8 when one is that close). ``overrides`` are
    TransformerConfig fields applied last (the FFN is sized after them, unless ffn_dim is one)."""
    r = retnet_config
    heads = max(1, r.hidden_size // HEAD_DIM)
    while r.hidden_size % heads or (r.hidden_size // heads) % 2:
        heads -= 1
    base = dict(vocab_size=r.vocab_size, hidden_size=r.hidden_size, num_layers=r.num_layers, num_heads=heads,
                ffn_dim=1, rotary_base=r.rotary_base, norm_eps=r.norm_eps, tie_embeddings=r.tie_embeddings,
                eos_token_id=r.eos_token_id, pad_token_id=r.pad_token_id,
                extra={"like_retnet": r.to_dict()})
    base.update(overrides)
    if "ffn_dim" in overrides:
        return TransformerConfig(**base)
    target = _meta_parameter_count(RetNetForCausalLM, r)
    at_1 = _meta_parameter_count(TransformerForCausalLM, TransformerConfig(**base))
    per_unit = _meta_parameter_count(TransformerForCausalLM, TransformerConfig(**{**base, "ffn_dim": 2})) - at_1
    exact = 1 + (target - at_1) / per_unit
    if exact < 1:
        raise ValueError(f"a Transformer of this width and depth has more parameters than the RetNet ({target}) "
                         "even with a one-unit FFN; give fewer layers or a smaller hidden_size")
    for multiple in (64, 8, 1):
        ffn_dim = max(multiple, round(exact / multiple) * multiple)
        if abs(at_1 + (ffn_dim - 1) * per_unit - target) <= 0.005 * target:
            break
    return TransformerConfig(**{**base, "ffn_dim": ffn_dim})


def _meta_parameter_count(model_class, config) -> int:
    with torch.device("meta"):
        return model_class(config).num_parameters
