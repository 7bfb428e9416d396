"""Triton recurrent retention: the fused decode step and short multi-token runs.

Decoding reads one token's q, k [B, H, K] and v [B, H, V] and the state
S [B, H, K, V] (float32), and does, per batch row and head,

    S <- gamma * S + k^T v          o = q S

The arithmetic is trivial; the cost is reading and writing S (512 KiB per head at
K=256, V=512), so the kernel is a streaming pass over the state: one program per
(batch, head, BV-wide column slice of S) loads its [K, BV] slice once, updates it
in registers, reduces q S over K for its BV outputs, and stores the slice back.
Programs touch disjoint slices, so updating the state in place is safe.

The same kernel loops over T > 1 tokens with the state held in registers (the
"fused recurrent" form); for long sequences the chunkwise kernel is faster.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

CONFIG_OVERRIDE: dict = {}


@triton.jit
def _add(a, b):
    # Our own combine function for tl.reduce instead of tl.sum: Triton's standard-library helpers are
    # compiled-or-interpreted when triton is first imported, ours when this module is, so the kernels
    # still run under TRITON_INTERPRET=1 set after something else imported triton.
    return a + b


@triton.jit
def _recurrent_retention_kernel(
    q_ptr, k_ptr, v_ptr, o_ptr, g_ptr, s_in_ptr, s_out_ptr,
    T, H,
    DK: tl.constexpr, DV: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    HAS_INIT: tl.constexpr, STORE_STATE: tl.constexpr,
):
    pid_v = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    acc_dtype = tl.float64 if q_ptr.dtype.element_ty == tl.float64 else tl.float32
    decay = tl.exp(tl.load(g_ptr + h).to(acc_dtype))

    offs_k = tl.arange(0, BK)
    offs_v = pid_v * BV + tl.arange(0, BV)
    mask_k = offs_k < DK
    mask_v = offs_v < DV
    state_off = pid_bh.to(tl.int64) * DK * DV + offs_k[:, None] * DV + offs_v[None, :]
    state_mask = mask_k[:, None] & mask_v[None, :]
    if HAS_INIT:
        S = tl.load(s_in_ptr + state_off, mask=state_mask, other=0.0).to(acc_dtype)
    else:
        S = tl.full([BK, BV], 0.0, dtype=acc_dtype)

    row0 = b.to(tl.int64) * T * H + h  # token (b, 0, h); token t is H rows further on
    qk_ptrs = row0 * DK + offs_k
    v_ptrs = row0 * DV + offs_v
    for _ in range(0, T):
        q = tl.load(q_ptr + qk_ptrs, mask=mask_k, other=0.0).to(acc_dtype)
        k = tl.load(k_ptr + qk_ptrs, mask=mask_k, other=0.0).to(acc_dtype)
        v = tl.load(v_ptr + v_ptrs, mask=mask_v, other=0.0).to(acc_dtype)
        S = S * decay + k[:, None] * v[None, :]
        o = tl.reduce(q[:, None] * S, 0, _add)
        tl.store(o_ptr + v_ptrs, o.to(o_ptr.dtype.element_ty), mask=mask_v)
        qk_ptrs += H * DK
        v_ptrs += H * DV

    if STORE_STATE:
        tl.store(s_out_ptr + state_off, S.to(s_out_ptr.dtype.element_ty), mask=state_mask)


def _config(DK: int, DV: int, BH: int) -> dict:
    BK = triton.next_power_of_2(DK)
    key = (DK, DV)
    if key in CONFIG_OVERRIDE:
        return dict(CONFIG_OVERRIDE[key])
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        return dict(BV=min(32, triton.next_power_of_2(DV)), num_warps=4)
    # Measured on an H100 (K=256, V=512): with few (batch, head) pairs, narrow 32-column slices
    # spread one head over more programs (3.7 us a step at batch 1); with many, 64-column slices
    # at 8 warps stream the state at ~97% of copy bandwidth. Either way at most 64 floats a thread.
    BV = min(triton.next_power_of_2(DV), 32 if BH <= 64 else 64)
    BV = max(8, min(BV, 16384 // BK))
    return dict(BV=BV, num_warps=4 if BK * BV <= 8192 else 8)


def recurrent_fwd(q, k, v, log_decay, state=None, *, state_out=None, store_state=True):
    """o [B, T, H, V] and the state after the last token.

    `state` [B, H, K, V] may be None (zeros). With `state_out` given the final state is written
    there (it may be `state` itself: each program reads its slice before writing it).
    """
    B, T, H, DK = q.shape
    DV = v.shape[-1]
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    g = log_decay.to(device=q.device, dtype=acc).contiguous()
    o = torch.empty(B, T, H, DV, device=q.device, dtype=q.dtype)
    if state is not None and not state.is_contiguous():
        state = state.contiguous()
    if store_state and state_out is None:
        state_out = torch.empty(B, H, DK, DV, device=q.device, dtype=acc)
    cfg = _config(DK, DV, B * H)
    BV = cfg.pop("BV")
    grid = (triton.cdiv(DV, BV), B * H)
    _recurrent_retention_kernel[grid](
        q, k, v, o, g,
        state if state is not None else o, state_out if state_out is not None else o,
        T, H, DK=DK, DV=DV, BK=triton.next_power_of_2(DK), BV=BV,
        HAS_INIT=state is not None, STORE_STATE=store_state, **cfg,
    )
    return o, state_out


def retention_step_triton(q, k, v, log_decay, state):
    """One token: q, k [B, H, K], v [B, H, V]; `state` [B, H, K, V] (contiguous) updated in place."""
    B, H, DK = q.shape
    if not state.is_contiguous():
        raise ValueError("retention_step updates the state in place and needs it contiguous")
    o, _ = recurrent_fwd(q.reshape(B, 1, H, DK), k.reshape(B, 1, H, DK), v.reshape(B, 1, H, v.shape[-1]),
                         log_decay, state, state_out=state)
    return o.view(B, H, v.shape[-1])
