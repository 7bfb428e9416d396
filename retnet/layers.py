"""The building blocks of a RetNet decoder layer: RMSNorm, multi-scale retention, gated FFN."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import ops
from .config import RetNetConfig
from .rotary import inverse_frequencies, rotary_cos_sin, rotate

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
        # F.rms_norm is xf * rsqrt(mean(xf^2) + eps), the same operations without the Python per step
        y = F.rms_norm(xf, (xf.shape[-1],), None, self.eps)
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
        copy = self._copies.get(device)
        if copy is None:
            copy = self._cpu.to(device)
            if not torch.compiler.is_compiling():  # a traced graph must not mutate module state: a graph break
                self._copies[device] = copy
        return copy


def previous_inputs(x: Tensor, last: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Each token's previous input, and the input to remember for the next call.

    x [B, T, D]; last [B, D], the last real input before this call (zeros at the start).
    Returns x_prev [B, T, D] (x_prev[:, t] = x at the last real token before t, or `last`)
    and the new last input [B, D] in `last`'s dtype. With a padding mask [B, T] (True = real)
    padded tokens are skipped: they are nobody's previous token and leave `last` unchanged.
    Vectorised: the index of the last real token so far is a running maximum.
    """
    B, T, _ = x.shape
    history = torch.cat([last.to(x.dtype)[:, None], x], dim=1)  # history[:, j + 1] = x[:, j]
    if mask is None:
        return history[:, :T], history[:, T].to(last.dtype)
    steps = torch.arange(1, T + 1, device=x.device).expand(B, T)
    # upto[:, t]: history index of the last real token at or before t (0: none, i.e. `last`).
    upto = torch.where(mask, steps, torch.zeros_like(steps)).cummax(dim=1).values
    before = F.pad(upto, (1, 0))  # [B, T + 1]: the same strictly before t; the last column is after the call
    picked = history.gather(1, before[..., None].expand(-1, -1, x.shape[-1]))
    return picked[:, :T], picked[:, T].to(last.dtype)


class MultiScaleRetention(nn.Module):
    """Retention with per-head decays, rotary q/k, per-head RMSNorm and a swish output gate.

    With `cfg.token_shift`, q, k and v are projected from x + shift_* (x_prev - x): per-channel
    learned mixes of this token's and the previous token's input (RWKV's token shift).
    """

    def __init__(self, cfg: RetNetConfig, layer_index: int = 0):
        super().__init__()
        self.cfg = cfg
        h = cfg.hidden_size
        self.q_proj = nn.Linear(h, cfg.key_dim, bias=False)
        self.k_proj = nn.Linear(h, cfg.key_dim, bias=False)
        self.v_proj = nn.Linear(h, cfg.value_dim, bias=False)
        self.g_proj = nn.Linear(h, cfg.value_dim, bias=False) if cfg.output_gate else None
        self.o_proj = nn.Linear(cfg.value_dim, h, bias=False)
        eps = cfg.group_norm_eps if cfg.group_norm_eps is not None else cfg.norm_eps
        self.out_norm = RMSNorm(cfg.head_v_dim, eps, affine=cfg.group_norm_affine)
        if cfg.group_norm_per_head:  # broadcasts over o [B, T, H, V]
            self.out_norm.weight = nn.Parameter(torch.ones(cfg.num_heads, cfg.head_v_dim))
        self._log_decay = _PerDeviceConstant(torch.tensor(cfg.head_log_decays(layer_index), dtype=torch.float64,
                                                       device="cpu"))
        self._inv_freq = _PerDeviceConstant(inverse_frequencies(cfg))
        if cfg.token_shift:
            self.shift_q = nn.Parameter(torch.empty(h))
            self.shift_k = nn.Parameter(torch.empty(h))
            self.shift_v = nn.Parameter(torch.empty(h))
            self.reset_token_shift()

    def reset_token_shift(self) -> None:
        """Keys mix in linspace(0, 1) of the previous token (the last channels see only it); q, v none."""
        with torch.no_grad():
            self.shift_q.zero_()
            self.shift_v.zero_()
            self.shift_k.copy_(torch.linspace(0, 1, self.shift_k.numel(), device=self.shift_k.device))

    def forward(self, x: Tensor, positions: Tensor, state: Tensor | None, mode: str,
                chunk_lengths: list[int] | None = None, mask: Tensor | None = None,
                last_input: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor | None]:
        """Returns (output, new retention state, new last input). `last_input` [B, hidden] is the
        previous call's last real input (token shift only; None means zeros)."""
        cfg = self.cfg
        B, T, _ = x.shape
        H, K, V = cfg.num_heads, cfg.head_k_dim, cfg.head_v_dim
        xq = xk = xv = x
        if cfg.token_shift:
            if last_input is None:
                last_input = x.new_zeros(B, x.shape[-1], dtype=ops.reference.compute_dtype(x))
            x_prev, last_input = previous_inputs(x, last_input, mask)
            delta = x_prev - x
            xq, xk, xv = (x + mu.to(x.dtype) * delta for mu in (self.shift_q, self.shift_k, self.shift_v))
        # q and k are scaled and rotated in float32, and the output norm and gate run in float32: done in
        # bf16, each step rounds again, and those roundings were most of a bf16 model's error (issue 15).
        dt = ops.reference.compute_dtype(x)
        q = self.q_proj(xq).view(B, T, H, K).to(dt)
        k = self.k_proj(xk).view(B, T, H, K).to(dt)
        v = self.v_proj(xv).view(B, T, H, V)
        if cfg.qk_scale_on == "k":
            k = k * K**-0.5
        else:
            q = q * K**-0.5
        cos, sin = rotary_cos_sin(positions, self._inv_freq.on(x.device), dt)  # once for q and k
        # Rounded once, after the float32 rotation, to v's dtype: the kernels want q, k and v in one dtype
        # (under autocast that is the projections' bf16, not the float32 of the weights and of x).
        q = rotate(q, cos, sin, cfg.rotary_style).to(v.dtype)
        k = rotate(k, cos, sin, cfg.rotary_style).to(v.dtype)
        log_decay = self._log_decay.on(x.device)
        if mode == "parallel":
            o, state = ops.parallel_retention(q, k, v, log_decay, state=state, mask=mask)
        elif mode == "recurrent":
            o, state = ops.recurrent_retention(q, k, v, log_decay, state=state, mask=mask)
        elif mode == "chunkwise":
            o, state = ops.chunk_retention(q, k, v, log_decay, chunk_lengths, state=state, mask=mask)
        else:
            raise ValueError(f"unknown mode {mode!r}; choose one of {MODES}")
        o = self.out_norm(o.to(dt)).reshape(B, T, H * V)  # float32: the norm and the gate run unrounded
        if self.g_proj is not None:
            o = o * F.silu(self.g_proj(x).to(o.dtype))
        return self.o_proj(o.to(x.dtype)), state, last_input


def same_input_projections(module: nn.Module) -> list[str]:
    """Names of ``module``'s projections that always read one input tensor, so they can be multiplied as
    one stacked matrix (retnet.quantize, retnet.fused_projections): the FFN's act_proj and lin_proj;
    retention's q, k, v and gate, unless token shift gives q, k and v inputs of their own. [] otherwise."""
    if isinstance(module, GatedFFN):
        return ["act_proj", "lin_proj"]
    if isinstance(module, MultiScaleRetention) and not module.cfg.token_shift:
        return [a for a in ("q_proj", "k_proj", "v_proj", "g_proj") if getattr(module, a) is not None]
    return []


class RetNetBlock(nn.Module):
    """Pre-norm residual block: x + retention(norm(x)), then x + ffn(norm(x))."""

    def __init__(self, cfg: RetNetConfig, layer_index: int = 0):
        super().__init__()
        self.retention_norm = RMSNorm(cfg.hidden_size, cfg.norm_eps)
        self.retention = MultiScaleRetention(cfg, layer_index)
        self.ffn_norm = RMSNorm(cfg.hidden_size, cfg.norm_eps)
        self.ffn = GatedFFN(cfg)

    def forward(self, x: Tensor, positions: Tensor, state: Tensor | None, mode: str,
                chunk_lengths: list[int] | None = None, mask: Tensor | None = None,
                last_input: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor | None]:
        y, state, last_input = self.retention(self.retention_norm(x), positions, state, mode, chunk_lengths, mask,
                                              last_input)
        x = x + y
        return x + self.ffn(self.ffn_norm(x)), state, last_input
