"""The building blocks of a RetNet decoder layer: RMSNorm, multi-scale retention, gated FFN."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import ops
from .config import RetNetConfig
from .rotary import apply_rotary, inverse_frequencies

MODES = ("parallel", "recurrent", "chunkwise")


class RMSNorm(nn.Module):
    """x / rms(x) * weight, computed in float32 (float64 for float64 inputs).

    With `affine=False` the weight is a fixed buffer of ones (torchscale's group
    norm has none), so the same code serves both conventions.
    """

    def __init__(self, dim: int, eps: float, affine: bool = True):
        super().__init__()
        self.eps = eps
        if affine:
            self.weight = nn.Parameter(torch.ones(dim))
        else:
            self.register_buffer("weight", torch.ones(dim), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        xf = x.to(ops.reference.compute_dtype(x))
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * self.weight.to(y.dtype)).to(x.dtype)


class GatedFFN(nn.Module):
    """down(act(act_proj x) * lin_proj x): torchscale's GLU and fla's SwiGLU are both this."""

    def __init__(self, cfg: RetNetConfig):
        super().__init__()
        self.act_proj = nn.Linear(cfg.hidden_size, cfg.ffn_dim, bias=False)
        self.lin_proj = nn.Linear(cfg.hidden_size, cfg.ffn_dim, bias=False)
        self.down_proj = nn.Linear(cfg.ffn_dim, cfg.hidden_size, bias=False)
        self.activation = F.gelu if cfg.ffn_activation == "gelu" else F.silu

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(self.activation(self.act_proj(x)) * self.lin_proj(x))


class _PerDeviceConstant:
    """A float64 constant kept off the module's buffers so that model.to(bf16) cannot round it."""

    def __init__(self, values: Tensor):
        self._cpu = values.to(torch.float64)
        self._copies: dict[torch.device, Tensor] = {}

    def on(self, device: torch.device) -> Tensor:
        if device not in self._copies:
            self._copies[device] = self._cpu.to(device)
        return self._copies[device]


class MultiScaleRetention(nn.Module):
    """Retention with per-head decays, rotary q/k, per-head RMSNorm and a swish output gate."""

    def __init__(self, cfg: RetNetConfig):
        super().__init__()
        self.cfg = cfg
        h = cfg.hidden_size
        self.q_proj = nn.Linear(h, cfg.key_dim, bias=False)
        self.k_proj = nn.Linear(h, cfg.key_dim, bias=False)
        self.v_proj = nn.Linear(h, cfg.value_dim, bias=False)
        self.g_proj = nn.Linear(h, cfg.value_dim, bias=False)
        self.o_proj = nn.Linear(cfg.value_dim, h, bias=False)
        eps = cfg.group_norm_eps if cfg.group_norm_eps is not None else cfg.norm_eps
        self.out_norm = RMSNorm(cfg.head_v_dim, eps, affine=cfg.group_norm_affine)
        self._log_decay = _PerDeviceConstant(torch.tensor(cfg.head_log_decays(), dtype=torch.float64, device="cpu"))
        self._inv_freq = _PerDeviceConstant(inverse_frequencies(cfg))

    def forward(self, x: Tensor, positions: Tensor, state: Tensor | None, mode: str,
                chunk_lengths: list[int] | None = None, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        cfg = self.cfg
        B, T, _ = x.shape
        H, K, V = cfg.num_heads, cfg.head_k_dim, cfg.head_v_dim
        q = self.q_proj(x).view(B, T, H, K)
        k = self.k_proj(x).view(B, T, H, K)
        v = self.v_proj(x).view(B, T, H, V)
        if cfg.qk_scale_on == "k":
            k = k * K**-0.5
        else:
            q = q * K**-0.5
        inv_freq = self._inv_freq.on(x.device)
        q = apply_rotary(q, positions, inv_freq, cfg.rotary_style)
        k = apply_rotary(k, positions, inv_freq, cfg.rotary_style)
        log_decay = self._log_decay.on(x.device)
        if mode == "parallel":
            o, state = ops.parallel_retention(q, k, v, log_decay, state=state, mask=mask)
        elif mode == "recurrent":
            o, state = ops.recurrent_retention(q, k, v, log_decay, state=state, mask=mask)
        elif mode == "chunkwise":
            o, state = ops.chunk_retention(q, k, v, log_decay, chunk_lengths, state=state, mask=mask)
        else:
            raise ValueError(f"unknown mode {mode!r}; choose one of {MODES}")
        o = self.out_norm(o).reshape(B, T, H * V)
        return self.o_proj(o * F.silu(self.g_proj(x))), state


class RetNetBlock(nn.Module):
    """Pre-norm residual block: x + retention(norm(x)), then x + ffn(norm(x))."""

    def __init__(self, cfg: RetNetConfig):
        super().__init__()
        self.retention_norm = RMSNorm(cfg.hidden_size, cfg.norm_eps)
        self.retention = MultiScaleRetention(cfg)
        self.ffn_norm = RMSNorm(cfg.hidden_size, cfg.norm_eps)
        self.ffn = GatedFFN(cfg)

    def forward(self, x: Tensor, positions: Tensor, state: Tensor | None, mode: str,
                chunk_lengths: list[int] | None = None, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        y, state = self.retention(self.retention_norm(x), positions, state, mode, chunk_lengths, mask)
        x = x + y
        return x + self.ffn(self.ffn_norm(x)), state
