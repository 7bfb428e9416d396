"""Rotary position embedding (the `e^{i n theta}` of the paper's retention).

Rotating q at position n and k at position m makes q.k depend on n - m only,
which is why the state built at earlier positions stays valid later. Angles
are computed in float64: sessions run to hundreds of thousands of positions,
where float32 angles would drift by hundredths of a radian.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .config import RetNetConfig


def inverse_frequencies(cfg: RetNetConfig) -> Tensor:
    """theta_i for i < K/2, in float64 on the CPU (also when built under a meta-device context)."""
    half = cfg.head_k_dim // 2
    if cfg.rotary_grid == "linspace":  # torchscale: 1 / base**linspace(0, 1, K/2)
        return 1.0 / cfg.rotary_base ** torch.linspace(0, 1, half, dtype=torch.float64, device="cpu")
    return cfg.rotary_base ** (-torch.arange(0, half, dtype=torch.float64, device="cpu") * 2 / cfg.head_k_dim)


def apply_rotary(x: Tensor, positions: Tensor, inv_freq: Tensor, style: str) -> Tensor:
    """Rotate x [B, T, H, K] by positions [B, T] (absolute token positions)."""
    return rotate(x, *rotary_cos_sin(positions, inv_freq, x.dtype), style)


def rotary_cos_sin(positions: Tensor, inv_freq: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """cos and sin [B, T, 1, K/2] of the angles for positions [B, T] (computed in float64, then cast):
    compute them once to rotate both q and k."""
    angles = positions.to(torch.float64)[..., None] * inv_freq.to(positions.device)  # [B, T, K/2]
    return angles.cos().to(dtype)[:, :, None, :], angles.sin().to(dtype)[:, :, None, :]


def rotate(x: Tensor, cos: Tensor, sin: Tensor, style: str) -> Tensor:
    """x [B, T, H, K] rotated by the angles whose cos and sin are given (see rotary_cos_sin)."""
    if style == "interleaved":  # pairs (2i, 2i+1)
        a, b = x[..., 0::2], x[..., 1::2]
        return torch.stack((a * cos - b * sin, b * cos + a * sin), dim=-1).flatten(-2)
    a, b = x.chunk(2, dim=-1)  # pairs (i, i + K/2)
    return torch.cat((a * cos - b * sin, b * cos + a * sin), dim=-1)
