"""RetNetConfig: every architectural choice as an explicit, serialisable field.

Two public families differ in small conventions (DESIGN.md §2). Each convention
is a field here, so a torchscale or flash-linear-attention checkpoint loads
exactly and our own models say what they are:

| field              | torchscale                   | flash-linear-attention (fla) |
|--------------------|------------------------------|------------------------------|
| rotary_style       | "interleaved" (every two)    | "half" (first/second half)   |
| rotary_grid        | "linspace": 1/base**linspace(0,1,K/2) | "power": base**(-2i/K) |
| qk_scale_on        | "k"                          | "q"                          |
| embed_scale        | sqrt(hidden) unless no_scale_embedding | 1.0                |
| ffn_activation     | "gelu" or "swish" (GLU)      | "swish" (SwiGLU)             |
| group_norm_affine  | False (weight fixed to 1)    | True                         |

Both FFNs are the same gated shape, down(act(a x) * b x): torchscale's
fc1/gate/fc2 and fla's gate/up/down are a/b/down. Decay is
gamma_h = 1 - 2**(-5 - h) (paper Eq. 8) unless `decay_log` lists log(gamma_h).

`token_shift` (ours only; neither torchscale nor fla has it, so it is off for
both) gives every retention layer an RWKV-style token shift: q, k and v are
projected from `x + mu * (x_prev - x)`, a learned per-channel mix of the
layer's input at this token and at the previous one (the gate still reads x).
Keys that see the previous token let one retention layer form the
"previous token -> next token" associations that in-context copying and
associative recall need (H3's shift, RWKV's token shift, the short
convolutions of Based/Mamba). The state then also carries each layer's last
input (`RetentionState.last_inputs`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

_CHOICES = {
    "rotary_style": ("interleaved", "half"),
    "rotary_grid": ("linspace", "power"),
    "qk_scale_on": ("q", "k"),
    "ffn_activation": ("gelu", "swish"),
}

# Fields added after models and states were first saved, with the value that means "as before".
_ADDED_LATER = {"token_shift": False, "output_gate": True, "group_norm_per_head": False, "layer_decay_log": None}


@dataclass
class RetNetConfig:
    vocab_size: int = 32000
    hidden_size: int = 2048
    num_layers: int = 24
    num_heads: int = 8
    head_k_dim: int = 256
    head_v_dim: int = 512
    ffn_dim: int = 4096
    ffn_activation: str = "swish"
    rotary_style: str = "interleaved"
    rotary_grid: str = "linspace"
    rotary_base: float = 10000.0
    qk_scale_on: str = "k"
    embed_scale: float = 1.0
    norm_eps: float = 1e-6
    group_norm_eps: float | None = None  # None: same as norm_eps
    group_norm_affine: bool = True
    tie_embeddings: bool = False
    decay_log: list[float] | None = None  # None: log(1 - 2**(-5 - h))
    layer_decay_log: list[list[float]] | None = None  # per layer, per head log(gamma); overrides decay_log
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    pad_token_id: int | None = None
    max_chunk_length: int = 512  # longest chunk the chunkwise form is given by default
    token_shift: bool = False  # q/k/v read a learned mix of this token's and the previous token's input
    output_gate: bool = True  # silu(x W_G) gate on the retention output; off for converted Transformers (none there)
    group_norm_per_head: bool = False  # the per-head RMSNorm weight is [H, V] (one scale per head) instead of [V]
    extra: dict = field(default_factory=dict)  # free-form provenance, e.g. the source checkpoint

    def __post_init__(self) -> None:
        for name, allowed in _CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"RetNetConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "head_k_dim", "head_v_dim",
                     "ffn_dim", "max_chunk_length"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"RetNetConfig.{name} must be positive, got {getattr(self, name)}")
        if self.head_k_dim % 2:
            raise ValueError(f"head_k_dim must be even for rotary embeddings, got {self.head_k_dim}")
        if self.decay_log is not None and len(self.decay_log) != self.num_heads:
            raise ValueError(f"decay_log has {len(self.decay_log)} entries for {self.num_heads} heads")
        if self.layer_decay_log is not None:
            rows = self.layer_decay_log
            if len(rows) != self.num_layers or any(len(r) != self.num_heads for r in rows):
                raise ValueError(f"layer_decay_log must be {self.num_layers} lists of {self.num_heads} log decays")
            if not all(-math.inf < float(x) < 0 for r in rows for x in r):
                raise ValueError("layer_decay_log values must be finite and negative (0 < gamma < 1)")
        for name in ("token_shift", "output_gate", "group_norm_per_head"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"RetNetConfig.{name} must be true or false, got {getattr(self, name)!r}")
        if self.group_norm_per_head and not self.group_norm_affine:
            raise ValueError("group_norm_per_head needs group_norm_affine (a fixed weight of ones has no heads)")

    # -- derived sizes ------------------------------------------------------
    @property
    def key_dim(self) -> int:
        return self.num_heads * self.head_k_dim

    @property
    def value_dim(self) -> int:
        return self.num_heads * self.head_v_dim

    def head_log_decays(self, layer: int | None = None) -> list[float]:
        """log(gamma_h) of each head (of ``layer``, when the decays differ per layer)."""
        if self.layer_decay_log is not None and layer is not None:
            return [float(x) for x in self.layer_decay_log[layer]]
        if self.decay_log is not None:
            return list(self.decay_log)
        return [math.log(1 - 2 ** (-5 - h)) for h in range(self.num_heads)]

    def state_bytes(self, batch_size: int = 1) -> int:
        """Bytes of the fp32 recurrent state: layers x heads x K x V x 4 per sequence,
        plus layers x hidden x 4 (each layer's last input) with token shift."""
        per_layer = self.num_heads * self.head_k_dim * self.head_v_dim + (self.hidden_size if self.token_shift else 0)
        return batch_size * self.num_layers * per_layer * 4

    # -- presets ------------------------------------------------------------
    @classmethod
    def from_preset(cls, name: str, **overrides) -> RetNetConfig:
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    # -- serialisation ------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def identity_dict(self) -> dict:
        """to_dict() without fields added later that are at their old behaviour's value, so that a
        model's fingerprint (and every state file and cache key derived from it) stays what it was."""
        data = self.to_dict()
        for name, old in _ADDED_LATER.items():
            if data[name] == old:
                del data[name]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> RetNetConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known - {"model_type", "format_version"})
        if unknown:
            raise ValueError(f"unknown RetNetConfig fields: {unknown}")
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_json(self, path: str | Path) -> None:
        from .io import atomic_write_text

        atomic_write_text(Path(path), json.dumps({"model_type": "retnet-rag", **self.to_dict()}, indent=2))

    @classmethod
    def from_json(cls, path: str | Path) -> RetNetConfig:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"no config.json at {path}") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON: {e}") from None
        return cls.from_dict(data)


def _paper(layers: int, hidden: int, heads: int) -> dict:
    # Paper Table: key head dim 256, value dim 2 x hidden, FFN 2 x hidden.
    return dict(num_layers=layers, hidden_size=hidden, num_heads=heads, head_k_dim=256,
                head_v_dim=2 * hidden // heads, ffn_dim=2 * hidden)


PRESETS: dict[str, dict] = {
    "1.3b": _paper(24, 2048, 8),
    "2.7b": _paper(32, 2560, 10),
    "6.7b": _paper(32, 4096, 16),
    # Small shapes for tests and CPU experiments.
    "tiny": dict(vocab_size=256, hidden_size=32, num_layers=2, num_heads=2, head_k_dim=8, head_v_dim=12,
                 ffn_dim=48),
    "small": dict(vocab_size=8192, hidden_size=256, num_layers=6, num_heads=4, head_k_dim=64,
                  head_v_dim=128, ffn_dim=512),
}
