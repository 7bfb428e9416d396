"""RetentionState: everything a RetNet remembers about what it has read.

Per layer one float32 tensor [batch, heads, K, V], plus, per sequence, the
number of tokens read (which is also the rotary position of the next token).
Its size depends only on the model, never on how much was read.

On disk it is one safetensors file; its metadata header carries a format
version and the fingerprint of the model that wrote it, so a state cannot be
loaded into a different model by accident. No pickle anywhere.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from .io import atomic_write

STATE_FORMAT = "retnet-rag-state"
STATE_FORMAT_VERSION = 1


class StateMismatchError(ValueError):
    """The state on disk belongs to a different model (or is not a state at all)."""


@dataclass
class RetentionState:
    layers: list[Tensor]  # per layer [B, H, K, V], float32 (float64 in exactness tests)
    offsets: Tensor  # [B] int64: tokens read so far = rotary position of the next token
    fingerprint: str | None = None  # of the model that produced it

    @classmethod
    def zeros(cls, cfg, batch_size: int = 1, device=None, dtype=torch.float32, fingerprint=None):
        shape = (batch_size, cfg.num_heads, cfg.head_k_dim, cfg.head_v_dim)
        return cls(
            layers=[torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.num_layers)],
            offsets=torch.zeros(batch_size, dtype=torch.long, device=device),
            fingerprint=fingerprint,
        )

    @property
    def batch_size(self) -> int:
        return int(self.offsets.shape[0])

    @property
    def tokens_seen(self) -> Tensor:
        return self.offsets

    @property
    def nbytes(self) -> int:
        """Bytes held: the per-layer tensors plus the position counters."""
        return sum(t.numel() * t.element_size() for t in self.layers) + self.offsets.numel() * 8

    def clone(self) -> RetentionState:
        """An independent copy: fork a conversation without touching the original."""
        return RetentionState([t.clone() for t in self.layers], self.offsets.clone(), self.fingerprint)

    def to(self, device) -> RetentionState:
        return RetentionState([t.to(device) for t in self.layers], self.offsets.to(device), self.fingerprint)

    # -- persistence ----------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write atomically: the previous file at `path` survives any failure."""
        tensors = {f"layer.{i}": t.detach().contiguous().cpu() for i, t in enumerate(self.layers)}
        tensors["offsets"] = self.offsets.detach().contiguous().cpu()
        header = {"format": STATE_FORMAT, "format_version": STATE_FORMAT_VERSION,
                  "fingerprint": self.fingerprint, "num_layers": len(self.layers)}
        atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata={"header": json.dumps(header)}))

    @classmethod
    def load(cls, path: str | Path, model=None, device=None) -> RetentionState:
        """Read a saved state; with `model`, refuse a state written by a different model."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no state file at {path}")
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                header = json.loads((f.metadata() or {}).get("header", "null"))
                if not isinstance(header, dict) or header.get("format") != STATE_FORMAT:
                    raise StateMismatchError(f"{path} is not a retnet-rag state file")
                if header.get("format_version") != STATE_FORMAT_VERSION:
                    raise StateMismatchError(
                        f"{path} has state format version {header.get('format_version')}, "
                        f"this code reads version {STATE_FORMAT_VERSION}")
                n = int(header["num_layers"])
                layers = [f.get_tensor(f"layer.{i}") for i in range(n)]
                offsets = f.get_tensor("offsets")
        except (SafetensorError, json.JSONDecodeError, KeyError, OSError) as e:
            raise StateMismatchError(f"{path} is not a readable state file ({e})") from None
        state = cls(layers, offsets, header.get("fingerprint"))
        if model is not None:
            state.check_compatible(model, source=str(path))
        return state.to(device) if device is not None else state

    def check_compatible(self, model, source: str = "state") -> None:
        cfg = model.config
        expected = (cfg.num_heads, cfg.head_k_dim, cfg.head_v_dim)
        if len(self.layers) != cfg.num_layers or any(tuple(t.shape[1:]) != expected for t in self.layers):
            raise StateMismatchError(f"{source} has the wrong shape for this model "
                                     f"({len(self.layers)} layers of {tuple(self.layers[0].shape[1:])}, "
                                     f"expected {cfg.num_layers} of {expected})")
        if self.fingerprint != model.fingerprint():
            raise StateMismatchError(f"{source} was written by a different model "
                                     f"(fingerprint {self.fingerprint}, this model {model.fingerprint()})")
