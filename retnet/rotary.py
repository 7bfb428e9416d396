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
    angles = positions.to(torch.float64)[..., None] * inv_freq.to(positions.device)  # [B, T, K/2]
    cos = angles.cos().to(x.dtype)[:, :, None, :]
    sin = angles.sin().to(x.dtype)[:, :, None, :]
    if style == "interleaved":  # pairs (2i, 2i+1)
        a, b = x[..., 0::2], x[..., 1::2]
        return torch.stack((a * cos - b * sin, b * cos + a * sin), dim=-1).flatten(-2)
    a, b = x.chunk(2, dim=-1)  # pairs (i, i + K/2)
    return torch.cat((a * cos - b * sin, b * cos + a * sin), dim=-1)
