"""Triton chunkwise retention: one fused kernel, used once forward and three times backward.

Shapes follow `reference.py`: q, k [B, T, H, K], v [B, T, H, V], log_decay [H]
(g = log gamma), state [B, H, K, V] in float32. Per batch row and head:

    S_t = gamma * S_{t-1} + k_t^T v_t        o_t = q_t S_t        (S_{-1} = initial state)

Tiling
------
The kernel walks the sequence in tiles of BT tokens (64 on the GPU). One program
owns one (batch, head) pair and one BV-wide slice of the value dimension, keeps
its [K, BV] slice of the state in registers in float32, and for each tile does

    r        = position inside the tile (0 .. n-1)
    A        = (q k^T) * gamma^(r_i - r_j)  for r_j <= r_i, else 0     [BT, BT]
    o        = A v  +  (q S) * gamma^(r + 1)                            intra + cross
    S        = gamma^n S  +  k^T (v * gamma^(n - 1 - r))                state to the tile end

so q, k, v are read once and o written once: nothing of size T x K x V ever
reaches memory (fla's chunk kernels store the state of every tile instead).
Dots run on the tensor cores in the input dtype with float32 accumulation; the
state is rounded to the input dtype only as a dot operand, never in storage.
All decays are exp(g * d) with 0 <= d <= BT, so nothing over- or underflows.

Backward as three more retentions
---------------------------------
With dS_T the gradient of the final state and dO that of o, differentiating the
recurrence gives (sums over s, t in 0..T-1):

    dq_t = sum_{s<=t} gamma^(t-s) (dO_t . v_s) k_s + gamma^(t+1) dO_t S_{-1}^T
    dv_s = sum_{t>=s} gamma^(t-s) (k_s . q_t) dO_t + gamma^(T-1-s) k_s dS_T
    dk_s = sum_{t>=s} gamma^(t-s) (v_s . dO_t) q_t + gamma^(T-1-s) v_s dS_T^T

Each line is itself a retention: dq = retention(q=dO, k=v, v=k, state=S_{-1}^T),
and dv, dk are retentions run backwards in time (REVERSE=True: tiles from last
to first, positions counted from the tile end) with (q=k, k=q, v=dO) and
(q=v, k=dO, v=q), started from dS_T / gamma (the reversed recurrence decays
its initial state once more than the formula wants). The reversed run for dv
ends in dS_0, and the initial state's gradient is gamma * dS_0. So the same
kernel, compiled for a few flag combinations, is the whole operator; the
backward recomputes everything from q, k, v and saves no per-tile state.

Variable chunks (passage boundaries)
------------------------------------
Retention is one recurrence however the sequence is cut, so o does not depend
on `chunk_lengths`; what passage-aligned chunks need is the state at each
passage end (the application snapshots it there). Decision: the kernel always
computes with its own fixed tile BT, and `chunk_lengths` only says where to
*materialise* states. A boundary p inside a tile costs one extra masked
state-update dot (S_p = gamma^m S + k^T (v * w), w zero for tokens at or after p,
m = p - tile start); a boundary on a tile end is a plain store of the updated
state. The cost is therefore proportional to the number of boundaries asked
for, never to their alignment, and chunk shapes never change the tiling,
the outputs or the gradients. Boundary states are returned without gradient;
training uses fixed chunks and needs only o (and, for truncated BPTT, the
final state, which is differentiable).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

# Kernel launch settings per (K, V) shape, chosen on an H100 (see benchmarks/results/KERNELS.md).
# Tests and experiments can override them with `CONFIG_OVERRIDE`.
CONFIG_OVERRIDE: dict = {}


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@triton.jit
def _chunk_retention_kernel(
    q_ptr, k_ptr, v_ptr, o_ptr, g_ptr,
    s0_ptr, s0_stride_k, s0_stride_v,  # initial state, (batch, head) blocks of DK*DV, inner strides given
    st_ptr,  # final state [B, H, DK, DV]
    bpos_ptr, btile_ptr, bst_ptr,  # boundary positions, first boundary index per tile, boundary states
    T, H, BH,
    DK: tl.constexpr, DV: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, BT: tl.constexpr,
    HAS_INIT: tl.constexpr, STORE_FINAL: tl.constexpr, STORE_BND: tl.constexpr, REVERSE: tl.constexpr,
    DOT_F32: tl.constexpr, PRECISION: tl.constexpr,
):
    pid_v = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    acc_dtype = tl.float64 if q_ptr.dtype.element_ty == tl.float64 else tl.float32
    mm_dtype = tl.float32 if DOT_F32 else q_ptr.dtype.element_ty
    g = tl.load(g_ptr + h).to(acc_dtype)

    offs_t = tl.arange(0, BT)
    offs_k = tl.arange(0, BK)
    offs_v = pid_v * BV + tl.arange(0, BV)
    mask_k = offs_k < DK
    mask_v = offs_v < DV

    # q[b, t, h, :] lives at ((b * T + t) * H + h) * DK; 64-bit because B*T*H*DK can pass 2**31.
    row0 = (b.to(tl.int64) * T * H + h)
    q_base = q_ptr + row0 * DK
    k_base = k_ptr + row0 * DK
    v_base = v_ptr + row0 * DV
    o_base = o_ptr + row0 * DV
    state_off = pid_bh.to(tl.int64) * DK * DV + offs_k[:, None] * DV + offs_v[None, :]
    state_mask = mask_k[:, None] & mask_v[None, :]
    bnd_stride = BH.to(tl.int64) * DK * DV  # between boundary states

    if HAS_INIT:
        s0_off = pid_bh.to(tl.int64) * DK * DV + offs_k[:, None] * s0_stride_k + offs_v[None, :] * s0_stride_v
        S = tl.load(s0_ptr + s0_off, mask=state_mask, other=0.0).to(acc_dtype)
    else:
        S = tl.full([BK, BV], 0.0, dtype=acc_dtype)

    NT = (T + BT - 1) // BT  # (tl.cdiv is avoided: see _add in triton_decode.py)
    for i in range(0, NT):
        if REVERSE:
            t0 = (NT - 1 - i) * BT
        else:
            t0 = i * BT
        n = tl.minimum(T - t0, BT)  # tokens in this tile
        rows = t0 + offs_t
        mask_t = rows < T
        # Position inside the tile in the direction of the recurrence (0 = first token processed).
        if REVERSE:
            r = tl.where(mask_t, n - 1 - offs_t, 0)
        else:
            r = offs_t
        rf = r.to(acc_dtype)

        qk_off = rows[:, None] * (H * DK) + offs_k[None, :]
        qk_mask = mask_t[:, None] & mask_k[None, :]
        q = tl.load(q_base + qk_off, mask=qk_mask, other=0.0).to(mm_dtype)
        k = tl.load(k_base + qk_off, mask=qk_mask, other=0.0).to(mm_dtype)
        v_off = rows[:, None] * (H * DV) + offs_v[None, :]
        v_mask = mask_t[:, None] & mask_v[None, :]
        v = tl.load(v_base + v_off, mask=v_mask, other=0.0).to(mm_dtype)

        # Intra-tile part: decayed causal scores (in the recurrence's direction) times v.
        A = tl.dot(q, tl.trans(k), input_precision=PRECISION, out_dtype=acc_dtype)
        d = rf[:, None] - rf[None, :]
        causal = d >= 0
        A = tl.where(causal, A * tl.exp(g * tl.where(causal, d, 0.0)), 0.0)
        o = tl.dot(A.to(mm_dtype), v, input_precision=PRECISION, out_dtype=acc_dtype)
        # Cross part: what the state at the tile start contributes, decayed to each row.
        o += tl.dot(q, S.to(mm_dtype), input_precision=PRECISION, out_dtype=acc_dtype) * \
            tl.exp(g * (rf + 1.0))[:, None]
        tl.store(o_base + v_off, o.to(o_ptr.dtype.element_ty), mask=v_mask)

        if STORE_BND:
            # Boundaries p with t0 < p <= t0 + n (state after token p - 1). Ones strictly inside the
            # tile need a masked update of their own; one on the tile end is the updated state below.
            lo = tl.load(btile_ptr + i)
            hi = tl.load(btile_ptr + i + 1)
            last = tl.load(bpos_ptr + hi - 1, mask=hi > lo, other=-1)
            ends_here = (last == t0 + n).to(tl.int32)
            for j in range(lo, hi - ends_here):
                m = tl.load(bpos_ptr + j) - t0  # tokens of this tile before the boundary
                w = tl.where(offs_t < m, tl.exp(g * (m - 1 - offs_t).to(acc_dtype)), 0.0)
                vw = (v.to(acc_dtype) * w[:, None]).to(mm_dtype)
                Sp = S * tl.exp(g * m.to(acc_dtype)) + \
                    tl.dot(tl.trans(k), vw, input_precision=PRECISION, out_dtype=acc_dtype)
                tl.store(bst_ptr + j * bnd_stride + state_off, Sp, mask=state_mask)

        # State update to the end of the tile: every token decays by gamma once per later token.
        w = tl.where(mask_t, tl.exp(g * (n - 1 - r).to(acc_dtype)), 0.0)
        vw = (v.to(acc_dtype) * w[:, None]).to(mm_dtype)
        S = S * tl.exp(g * n.to(acc_dtype)) + \
            tl.dot(tl.trans(k), vw, input_precision=PRECISION, out_dtype=acc_dtype)

        if STORE_BND:
            if ends_here > 0:
                tl.store(bst_ptr + (hi - 1) * bnd_stride + state_off, S, mask=state_mask)

    if STORE_FINAL:
        tl.store(st_ptr + state_off, S, mask=state_mask)


def _config(DK: int, DV: int, dtype: torch.dtype) -> dict:
    """Tile sizes: BT tokens per tile, BV state columns per program, warps and pipeline stages."""
    BK = triton.next_power_of_2(DK)
    key = (DK, DV, dtype)
    if key in CONFIG_OVERRIDE:
        return dict(CONFIG_OVERRIDE[key])
    if _interpreting():
        return dict(BT=16, BV=min(32, triton.next_power_of_2(DV)), num_warps=4, num_stages=1)
    wide = dtype == torch.float32 or dtype == torch.float64
    BT = 32 if wide and BK > 128 else 64
    # The register budget: a [BK, BV] float32 state of at most 16K elements per program.
    BV = max(16, min(triton.next_power_of_2(DV), 16384 // BK))
    stages = 2 if BK <= 256 and not wide else 1
    return dict(BT=BT, BV=BV, num_warps=8 if BK * BV >= 8192 else 4, num_stages=stages)


def _boundary_tables(bounds: torch.Tensor, T: int, BT: int) -> torch.Tensor:
    """For each tile i, the index of the first boundary p with p > i * BT (p sorted ascending)."""
    starts = torch.arange(0, triton.cdiv(T, BT) + 1, device=bounds.device, dtype=torch.int32) * BT
    return torch.searchsorted(bounds, starts, right=True).to(torch.int32)


def retention_fwd(q, k, v, log_decay, init=None, *, reverse=False, final_state=False, boundaries=None):
    """Run the kernel once. Returns (o, final state or None, boundary states or None).

    `init` may be any [B, H, K, V] tensor whose last two dims have arbitrary strides (a transpose
    of a contiguous state works without a copy). `boundaries` is an int32 tensor of sorted
    positions p in (0, T]; the state after token p-1 is returned for each, stacked on dim 0.
    """
    B, T, H, DK = q.shape
    DV = v.shape[-1]
    assert k.shape == q.shape and v.shape[:3] == q.shape[:3]
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    g = log_decay.to(device=q.device, dtype=acc).contiguous()
    cfg = _config(DK, DV, q.dtype)
    BT, BV = cfg.pop("BT"), cfg.pop("BV")
    o = torch.empty(B, T, H, DV, device=q.device, dtype=q.dtype)
    st = torch.empty(B, H, DK, DV, device=q.device, dtype=acc) if final_state else o
    if init is not None:
        assert init.shape == (B, H, DK, DV)
        if init.stride(0) != H * DK * DV or init.stride(1) != DK * DV:
            init = init.contiguous()
        s0, s0k, s0v = init, init.stride(2), init.stride(3)
    else:
        s0, s0k, s0v = o, 0, 0
    if boundaries is not None and len(boundaries) > 0:
        btile = _boundary_tables(boundaries, T, BT)
        bst = torch.empty(len(boundaries), B, H, DK, DV, device=q.device, dtype=acc)
        bpos = boundaries
    else:
        btile = bpos = bst = None
    grid = (triton.cdiv(DV, BV), B * H)
    _chunk_retention_kernel[grid](
        q, k, v, o, g,
        s0, s0k, s0v, st,
        bpos if bpos is not None else o, btile if btile is not None else o, bst if bst is not None else o,
        T, H, B * H,
        DK=DK, DV=DV, BK=triton.next_power_of_2(DK), BV=BV, BT=BT,
        HAS_INIT=init is not None, STORE_FINAL=final_state, STORE_BND=bst is not None, REVERSE=reverse,
        DOT_F32=_interpreting() and q.dtype in (torch.bfloat16, torch.float16),
        PRECISION="ieee" if q.dtype in (torch.float32, torch.float64) else "tf32",
        **cfg,
    )
    return o, (st if final_state else None), bst


class ChunkRetentionFunction(torch.autograd.Function):
    """o, S_T = retention(q, k, v, S_{-1}); differentiable in q, k, v and the initial state.

    Boundary states (if asked for) come back without gradient; log_decay gets none (it is a
    fixed buffer in RetNet).
    """

    @staticmethod
    def forward(ctx, q, k, v, log_decay, state, output_final_state, boundaries):
        o, st, bst = retention_fwd(q, k, v, log_decay, state, final_state=output_final_state,
                                   boundaries=boundaries)
        ctx.save_for_backward(q, k, v, log_decay, state)
        ctx.has_state = state is not None
        if bst is not None:
            ctx.mark_non_differentiable(bst)
        return o, st, bst

    @staticmethod
    def backward(ctx, do, dst, _dbst):
        q, k, v, log_decay, state = ctx.saved_tensors
        acc = torch.float64 if q.dtype == torch.float64 else torch.float32
        g = log_decay.to(device=q.device, dtype=acc)
        do = do.contiguous()
        # dS_T / gamma starts the reversed runs (see the module docstring).
        rinit = None if dst is None else dst.to(acc) * torch.exp(-g)[None, :, None, None]
        need_ds0 = ctx.has_state and ctx.needs_input_grad[4]
        dq = dk = dv = ds0 = None
        if ctx.needs_input_grad[0]:
            dq, _, _ = retention_fwd(do, v, k, g, state.transpose(2, 3) if ctx.has_state else None)
        if ctx.needs_input_grad[2] or need_ds0:
            dv, ds0, _ = retention_fwd(k, q, do, g, rinit, reverse=True, final_state=need_ds0)
            if need_ds0:
                ds0 = (ds0 * torch.exp(g)[None, :, None, None]).to(state.dtype)
        if ctx.needs_input_grad[1]:
            dk, _, _ = retention_fwd(v, do, q, g, None if rinit is None else rinit.transpose(2, 3),
                                     reverse=True)
        return dq, dk, dv, None, ds0, None, None


def chunk_retention_triton(q, k, v, log_decay, state=None, output_final_state=True, boundaries=None):
    """Autograd-aware entry point: (o, final state or None, boundary states or None)."""
    if state is not None and state.dtype != (torch.float64 if q.dtype == torch.float64 else torch.float32):
        state = state.float()
    return ChunkRetentionFunction.apply(q, k, v, log_decay, state, output_final_state, boundaries)
