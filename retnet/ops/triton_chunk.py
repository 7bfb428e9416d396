"""Triton chunkwise retention: one fused scan kernel (plus a scores kernel), forward and backward.

Shapes follow `reference.py`: q, k [B, T, H, K], v [B, T, H, V], log_decay [H]
(g = log gamma), state [B, H, K, V] in float32. Per batch row and head:

    S_t = gamma * S_{t-1} + k_t^T v_t        o_t = q_t S_t        (S_{-1} = initial state)

Tiling
------
The scan kernel walks the sequence in tiles of BT tokens (64 on the GPU). One
program owns one (batch, head) pair and one BV-wide slice of the value dimension,
keeps its [K, BV] slice of the state in registers in float32, and for each tile does

    r  = position inside the tile (0 .. n-1)
    P  = (q k^T) * gamma^(r_i - r_j)  for r_j <= r_i, else 0     [BT, BT] "scores"
    o  = (q S) * gamma^(r + 1)  +  P v                            cross + intra
    S  = gamma^n S  +  k^T (v * gamma^(n - 1 - r))                state to the tile end

so q, k, v are read once and o written once: nothing of size T x K x V ever
reaches memory (fla's chunk kernels store the state of every tile instead).
Dots run on the tensor cores in the input dtype with float32 accumulation; the
state is rounded to the input dtype only as a dot operand, never in storage.
All decays are exp(g * d) with 0 <= d <= BT, so nothing over- or underflows.

P does not depend on the state, so it can come from a separate, fully parallel
kernel (`_scores_kernel`, one program per tile) instead of being recomputed by
each of the V / BV programs of a head; which is faster depends on K (see
`_config`). Keys wider than 256 are cut into two slices of at most 256 columns,
each run as its own scan (o is linear in the slices: q S = q0 S0 + q1 S1); the
first writes a float32 partial output that the second adds to. That keeps every
dot operand at most 256 wide, which Triton 3.6 compiles reliably. Compiled tl.dot
also wants every inner dimension >= 16 (`MIN_DOT_K`): narrow K slices are padded to
16 columns (masked loads read zeros), and tiles of fewer than 16 tokens are refused
(`check_config`).

Backward as three more retentions
---------------------------------
With dS_T the gradient of the final state and dO that of o, differentiating the
recurrence gives (sums over s, t in 0..T-1):

    dq_t = sum_{s<=t} gamma^(t-s) (dO_t . v_s) k_s + gamma^(t+1) dO_t S_{-1}^T
    dv_s = sum_{t>=s} gamma^(t-s) (k_s . q_t) dO_t + gamma^(T-1-s) k_s dS_T
    dk_s = sum_{t>=s} gamma^(t-s) (v_s . dO_t) q_t + gamma^(T-1-s) v_s dS_T^T

Each line is itself a retention: dq = retention(q=dO, k=v, v=k, state=S_{-1}^T),
and dv, dk are retentions run backwards in time (REVERSE: tiles from last to
first, positions counted from the tile end) with (q=k, k=q, v=dO) and
(q=v, k=dO, v=q), started from dS_T / gamma (the reversed recurrence decays its
initial state once more than the formula wants). The reversed run for dv ends
in dS_0, and the initial state's gradient is gamma * dS_0. Their scores are
transposes of forward ones: dv uses P(q, k)^T, dq uses P(dO, v) and dk its
transpose, so the backward computes one scores tensor and reuses the forward's.
Nothing of size T x K x V is saved or recomputed.

Autograd and torch.compile
--------------------------
The forward and the backward above are two torch.library custom ops (`retnet_rag::chunk_retention`,
`retnet_rag::chunk_retention_backward`) tied together with `register_autograd`: torch.compile keeps each
as one opaque node, so a compiled layer traces whole around them, with no graph break.

Variable chunks (passage boundaries)
------------------------------------
Retention is one recurrence however the sequence is cut, so o does not depend
on `chunk_lengths`: the kernels always scan uniform BT tiles. Where the
application needs the state at a passage end (prefix-cache snapshots), it
ends a call there (app.encoder.Reader.ingest_chunks).
"""

from __future__ import annotations

import functools
import os

import torch
import triton
import triton.language as tl
from triton.runtime.errors import OutOfResources

# Launch settings per (K slice, V) shape and dtype: the rules of `_config`, chosen on an H100
# (benchmarks/results/KERNELS.md), and per-GPU tables from `benchmarks/kernels.py --sweep` on other GPUs
# (TUNED, picked by the device's name; RETNET_KERNEL_TUNING=h100 keeps the H100 rules anywhere, =h200 forces
# the H200 table). Tests and experiments can override both with `CONFIG_OVERRIDE[(K, V, dtype)] = dict(...)`.
CONFIG_OVERRIDE: dict = {}
TUNED: dict[str, dict[tuple[int, int], dict]] = {
    # H200, Triton 3.6, bf16 (session 8 sweep, benchmarks/results/kernels_h200.md): fwd+bwd 1.97x / 2.00x fla at
    # K=256 V=512, T=8k / 16k (1.79x / 1.82x with the H100 rules). Precomputed scores beat inline ones here.
    "h200": {
        (256, 512): dict(BT=64, BV=128, num_warps=8, num_stages=2, inline=False),
        (256, 256): dict(BT=64, BV=64, num_warps=8, num_stages=2, inline=True),
        (128, 128): dict(BT=64, BV=64, num_warps=8, num_stages=3, inline=False),
    },
}
# The compiled kernel of the latest scan launch (registers, spills, shared memory), for benchmarks.
LAST_LAUNCH: dict = {}
MAX_SLICE = 256  # widest K handled by one scan; wider keys take two
# Compiled tl.dot needs every inner (reduction) dimension >= 16 (Triton 3.6 on NVIDIA GPUs, any 16/32/64-bit
# dtype; the interpreter has no limit). The scan's inner dimensions are BK (q @ S, q @ k^T) and BT (P @ v,
# k^T @ v); the scores kernel's is BKC. BK and BKC are padded up to it (masked loads give zero columns);
# BT comes from the config, and `check_config` refuses one below it.
MIN_DOT_K = 16


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _block(n: int) -> int:
    """A power-of-two block covering n columns that is also a valid tl.dot inner dimension."""
    return max(MIN_DOT_K, triton.next_power_of_2(n))


def check_config(cfg: dict) -> dict:
    """Refuse scan settings that compiled Triton cannot build: BT (tokens per tile, an inner dimension
    of two dots) a power of two >= MIN_DOT_K, BV (state columns per program) a power of two. Checked
    under the interpreter too, so CPU tests refuse what the GPU would."""
    BT, BV = cfg.get("BT"), cfg.get("BV")
    if not isinstance(BT, int) or BT < MIN_DOT_K or BT & (BT - 1):
        raise ValueError(f"retention scan config {cfg}: BT must be a power of two >= {MIN_DOT_K} "
                         f"(compiled tl.dot needs inner dimensions of at least {MIN_DOT_K}), got {BT!r}")
    if not isinstance(BV, int) or BV < 1 or BV & (BV - 1):
        raise ValueError(f"retention scan config {cfg}: BV must be a power of two, got {BV!r}")
    return cfg


@triton.jit
def _load_tile(base, rows, cols, row_stride, mask_rows, mask_cols, dtype):
    """A [len(rows), len(cols)] tile of a row-major array, zero outside the masks."""
    ptrs = base + rows[:, None] * row_stride + cols[None, :]
    return tl.load(ptrs, mask=mask_rows[:, None] & mask_cols[None, :], other=0.0).to(dtype)


@triton.jit
def _tile_bounds(i, T, BT: tl.constexpr):
    """First token and length of tile i (uniform BT tiles; the last may be shorter)."""
    t0 = i * BT
    n = tl.minimum(T - t0, BT)
    return t0, n


@triton.jit
def _scores_kernel(
    q_ptr, k_ptr, p_ptr, g_ptr,
    T, NT, H, DKF,
    DK: tl.constexpr, BT: tl.constexpr, BKC: tl.constexpr,
    REVERSE: tl.constexpr, DOT_F32: tl.constexpr, PRECISION: tl.constexpr,
):
    """P[b, h, tile] = (q k^T) * gamma^(i - j) for j <= i, else 0, over the tile's BT x BT block
    (gamma^(j - i) for j >= i with REVERSE)."""
    i = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    acc_dtype = tl.float64 if q_ptr.dtype.element_ty == tl.float64 else tl.float32
    mm_dtype = tl.float32 if DOT_F32 else q_ptr.dtype.element_ty
    g = tl.load(g_ptr + h).to(acc_dtype)
    t0, n = _tile_bounds(i, T, BT)
    offs_t = tl.arange(0, BT)
    rows = t0 + offs_t
    mask_t = offs_t < n
    row0 = b.to(tl.int64) * T * H + h
    A = tl.full([BT, BT], 0.0, dtype=acc_dtype)
    for c0 in range(0, DK, BKC):  # K in BKC-wide steps (the loop Triton pipelines)
        cols = c0 + tl.arange(0, BKC)
        mask_c = cols < DK
        q = _load_tile(q_ptr + row0 * DKF, rows, cols, H * DKF, mask_t, mask_c, mm_dtype)
        k = _load_tile(k_ptr + row0 * DKF, rows, cols, H * DKF, mask_t, mask_c, mm_dtype)
        A = tl.dot(q, tl.trans(k), A, input_precision=PRECISION, out_dtype=acc_dtype)
    if REVERSE:
        d = offs_t[None, :] - offs_t[:, None]
    else:
        d = offs_t[:, None] - offs_t[None, :]
    A = tl.where(d >= 0, A * tl.exp(g * tl.where(d >= 0, d, 0).to(acc_dtype)), 0.0)
    p_base = p_ptr + (pid_bh.to(tl.int64) * NT + i) * BT * BT
    tl.store(p_base + offs_t[:, None] * BT + offs_t[None, :], A.to(p_ptr.dtype.element_ty))


# T and NT are not specialized: Triton 3.6 compiles a separate kernel for T == 1 or NT == 1, and on an
# H200 the scan launched after another specialization of itself read shared memory out of bounds (the
# app's prefill of a 13-token prompt, then 355, then 14 tokens; benchmarks/results/rag_loop_h200.md).
@triton.jit(do_not_specialize=["T", "NT"])
def _chunk_retention_kernel(
    q_ptr, k_ptr, v_ptr, o_ptr, oacc_ptr, p_ptr, g_ptr,
    s0_ptr, s0_sb, s0_sh, s0_sk, s0_sv,  # initial state, any strides (a transpose works without a copy)
    st_ptr, st_sb, st_sh,  # final state, rows of DV floats
    T, NT, H, DKF,  # DKF: row length of q and k (K of the full tensors; DK may be a slice of it)
    DK: tl.constexpr, DV: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, BT: tl.constexpr,
    SCORES: tl.constexpr,  # 0: compute q k^T here, 1: load P, 2: load P transposed, 3: no intra-tile term
    ADD_O: tl.constexpr,  # add a float32 partial output (the other K slice) before storing
    HAS_INIT: tl.constexpr, STORE_FINAL: tl.constexpr,
    REVERSE: tl.constexpr, DOT_F32: tl.constexpr, PRECISION: tl.constexpr,
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
    smask = mask_k[:, None] & mask_v[None, :]
    s_off = offs_k[:, None] * DV + offs_v[None, :]  # inside one [DK, DV] block of st

    # Token (b, t, h) of q is row (b * T + t) * H + h of DKF elements; 64-bit since B*T*H*K can pass 2**31.
    row0 = b.to(tl.int64) * T * H + h
    q_base = q_ptr + row0 * DKF
    k_base = k_ptr + row0 * DKF
    v_base = v_ptr + row0 * DV
    o_base = o_ptr + row0 * DV
    oacc_base = oacc_ptr + row0 * DV
    p_bh = p_ptr + pid_bh.to(tl.int64) * NT * BT * BT

    if HAS_INIT:
        s0 = s0_ptr + b.to(tl.int64) * s0_sb + h * s0_sh
        S = tl.load(s0 + offs_k[:, None] * s0_sk + offs_v[None, :] * s0_sv, mask=smask, other=0.0).to(acc_dtype)
    else:
        S = tl.full([BK, BV], 0.0, dtype=acc_dtype)
    if SCORES == 0:
        # Intra-tile decay, the same for every tile: gamma^(i-j) for j <= i (gamma^(j-i) for j >= i when
        # running backwards in time), else 0. Rows and columns past the tile hold zero q and k.
        if REVERSE:
            d = offs_t[None, :] - offs_t[:, None]
        else:
            d = offs_t[:, None] - offs_t[None, :]
        Dm = tl.where(d >= 0, tl.exp(g * tl.where(d >= 0, d, 0).to(acc_dtype)), 0.0)

    for i in range(0, NT):
        if REVERSE:
            ti = NT - 1 - i
        else:
            ti = i
        t0, n = _tile_bounds(ti, T, BT)
        rows = t0 + offs_t
        mask_t = offs_t < n
        # Position inside the tile in the direction of the recurrence (0 = first token processed).
        if REVERSE:
            r = tl.where(mask_t, n - 1 - offs_t, 0).to(acc_dtype)
        else:
            r = offs_t.to(acc_dtype)

        q = _load_tile(q_base, rows, offs_k, H * DKF, mask_t, mask_k, mm_dtype)
        k = _load_tile(k_base, rows, offs_k, H * DKF, mask_t, mask_k, mm_dtype)
        v = _load_tile(v_base, rows, offs_v, H * DV, mask_t, mask_v, mm_dtype)

        # o = (q S) * gamma^(r+1)  [the state at the tile start, decayed to each row]
        #   + P v                  [the tile itself]
        o = tl.dot(q, S.to(mm_dtype), input_precision=PRECISION, out_dtype=acc_dtype)
        o = o * tl.exp(g * (r + 1.0))[:, None]
        if SCORES == 0:
            P = tl.dot(q, tl.trans(k), input_precision=PRECISION, out_dtype=acc_dtype) * Dm
            o = tl.dot(P.to(mm_dtype), v, o, input_precision=PRECISION, out_dtype=acc_dtype)
        elif SCORES == 1:
            P = tl.load(p_bh + ti * BT * BT + offs_t[:, None] * BT + offs_t[None, :]).to(mm_dtype)
            o = tl.dot(P, v, o, input_precision=PRECISION, out_dtype=acc_dtype)
        elif SCORES == 2:
            P = tl.load(p_bh + ti * BT * BT + offs_t[None, :] * BT + offs_t[:, None]).to(mm_dtype)
            o = tl.dot(P, v, o, input_precision=PRECISION, out_dtype=acc_dtype)
        o_mask = mask_t[:, None] & mask_v[None, :]
        o_off = rows[:, None] * (H * DV) + offs_v[None, :]
        if ADD_O:
            o += tl.load(oacc_base + o_off, mask=o_mask, other=0.0).to(acc_dtype)
        tl.store(o_base + o_off, o.to(o_ptr.dtype.element_ty), mask=o_mask)

        # State update to the end of the tile: every token decays by gamma once per later token.
        w = tl.where(mask_t, tl.exp(g * (n - 1 - r)), 0.0)
        vw = (v.to(acc_dtype) * w[:, None]).to(mm_dtype)
        S = tl.dot(tl.trans(k), vw, S * tl.exp(g * n.to(acc_dtype)), input_precision=PRECISION,
                   out_dtype=acc_dtype)

    if STORE_FINAL:
        tl.store(st_ptr + b.to(tl.int64) * st_sb + h * st_sh + s_off, S, mask=smask)


def tuning(device: torch.device | None = None) -> str:
    """Which launch table applies: RETNET_KERNEL_TUNING if set ("h100": the rules of `_config`, or a key
    of TUNED), else the TUNED key found in the CUDA device's name, else "h100"."""
    forced = os.environ.get("RETNET_KERNEL_TUNING", "").strip().lower()
    if forced:
        if forced != "h100" and forced not in TUNED:
            raise ValueError(f"RETNET_KERNEL_TUNING={forced!r}; choose h100 or one of {sorted(TUNED)}")
        return forced
    if device is None or device.type != "cuda":
        return "h100"
    return _device_tuning(device.index if device.index is not None else torch.cuda.current_device())


@functools.cache
def _device_tuning(index: int) -> str:
    name = torch.cuda.get_device_name(index).lower()
    return next((key for key in TUNED if key in name), "h100")


def _config(DK: int, DV: int, dtype: torch.dtype, device: torch.device | None = None) -> dict:
    """Launch settings for a scan over a K slice of DK columns: BT tokens per tile, BV state
    columns per program, warps, pipeline stages, and `inline`: compute the scores inside the scan
    when none are given (inference); training always precomputes them, to share them backward.

    Measured on an H100 with Triton 3.6 (benchmarks/results/KERNELS.md): K=256, V=512 is best at
    BV=64 and 8 warps (1.16 ms for B=4, H=8, T=8192), K=V=128 at BV=32 and 4 warps with 3 stages
    (0.23 ms for B=4, H=16, T=8192). One stage crashed Triton 3.6 in several shapes; keep >= 2.
    On a GPU with its own table (TUNED, see `tuning`), that table's bf16/fp16 shapes come from it.
    """
    key = (DK, DV, dtype)
    table = TUNED.get(tuning(device), {}) if dtype in (torch.bfloat16, torch.float16) else {}
    if key in CONFIG_OVERRIDE:
        cfg = dict(CONFIG_OVERRIDE[key])
    elif _interpreting():
        cfg = dict(BT=16, BV=min(32, triton.next_power_of_2(DV)), num_warps=4, num_stages=2)
    elif (DK, DV) in table:
        cfg = dict(table[(DK, DV)])
    elif dtype in (torch.float32, torch.float64):
        # Wide inputs: half the tile, so that q and k tiles fit in shared memory twice over.
        cfg = dict(BT=32, BV=max(16, min(triton.next_power_of_2(DV), 4096 // triton.next_power_of_2(DK))),
                   num_warps=4, num_stages=2)
    elif DK <= 128:
        cfg = dict(BT=64, BV=min(32, triton.next_power_of_2(DV)), num_warps=4, num_stages=3)
    else:
        # The register budget: a [BK, BV] float32 state of at most 16K elements (64 a thread at 8 warps).
        BK = triton.next_power_of_2(DK)
        BV = max(16, min(triton.next_power_of_2(DV), 16384 // BK))
        cfg = dict(BT=64, BV=BV, num_warps=8 if BK * BV >= 16384 else 4, num_stages=2)
    cfg.setdefault("inline", True)
    return check_config(cfg)


def _launch_scan(args, flags, cfg, BH, key):
    """Launch the scan; if a configuration needs more shared memory than the GPU has (the limit
    differs between GPUs and Triton versions), halve BV and remember the working setting."""
    cfg = dict(cfg)
    while True:
        BV = cfg["BV"]
        launch = {name: cfg[name] for name in ("num_warps", "num_stages") if name in cfg}
        try:
            LAST_LAUNCH["kernel"] = _chunk_retention_kernel[(triton.cdiv(flags["DV"], BV), BH)](
                *args, BV=BV, **flags, **launch)
            return
        except OutOfResources:
            if BV <= 16:
                raise
            cfg.update(BV=BV // 2, num_warps=max(4, cfg.get("num_warps", 4) // 2))
            CONFIG_OVERRIDE[key] = cfg


def _flags(dtype):
    return dict(DOT_F32=_interpreting() and dtype in (torch.bfloat16, torch.float16),
                PRECISION="ieee" if dtype in (torch.float32, torch.float64) else "tf32")


def retention_scores(q, k, log_decay, BT, reverse=False):
    """P [B, H, NT, BT, BT]: decayed causal q k^T inside each tile."""
    B, T, H, DK = q.shape
    NT = triton.cdiv(T, BT)
    pdt = q.dtype if q.dtype in (torch.bfloat16, torch.float16) else \
        (torch.float64 if q.dtype == torch.float64 else torch.float32)
    P = torch.empty(B, H, NT, BT, BT, device=q.device, dtype=pdt)
    g = log_decay.to(device=q.device, dtype=torch.float64 if q.dtype == torch.float64 else torch.float32)
    if NT == 0:
        return P
    _scores_kernel[(NT, B * H)](
        q, k, P, g, T, NT, H, q.stride(2),
        DK=DK, BT=BT, BKC=min(64, _block(DK)), REVERSE=reverse,
        num_warps=4, num_stages=2, **_flags(q.dtype))
    return P


def retention_fwd(q, k, v, log_decay, init=None, *, reverse=False, final_state=False,
                  scores=None, scores_transposed=False, want_scores=False):
    """One retention scan. Returns (o, final state or None, scores or None).

    `init` [B, H, K, V] may have any strides. `scores` reuses a P tensor made for the same
    tiling (transposed for reversed runs); `want_scores` returns the P it used.
    """
    B, T, H, DK = q.shape
    DV = v.shape[-1]
    assert k.shape == q.shape and v.shape[:3] == q.shape[:3]
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    g = log_decay.to(device=q.device, dtype=acc).contiguous()
    slices = [(s, min(DK, s + MAX_SLICE)) for s in range(0, DK, MAX_SLICE)]
    if len(slices) > 2:
        raise ValueError(f"the Triton retention kernel supports K up to {2 * MAX_SLICE}, got {DK}")
    cfgs = [_config(e - s, DV, q.dtype, q.device) for s, e in slices]
    BT = cfgs[0]["BT"]
    assert all(c["BT"] == BT for c in cfgs), "both K slices must use the same tile"
    NT = triton.cdiv(T, BT)
    if scores is None and (len(slices) > 1 or want_scores or not cfgs[0]["inline"]):
        scores = retention_scores(q, k, g, BT, reverse)
        scores_transposed = False
    if scores is not None:
        assert scores.shape == (B, H, NT, BT, BT), "scores made for another tiling"

    o = torch.empty(B, T, H, DV, device=q.device, dtype=q.dtype)
    st = torch.empty(B, H, DK, DV, device=q.device, dtype=acc) if final_state else None
    if init is not None:
        assert init.shape == (B, H, DK, DV)
    oacc = torch.empty(B, T, H, DV, device=q.device, dtype=acc) if len(slices) > 1 else None
    dummy = o
    for n_slice, ((s, e), cfg) in enumerate(zip(slices, cfgs, strict=True)):
        first, last = n_slice == 0, n_slice == len(slices) - 1
        if scores is None:
            mode = 0
        elif first:
            mode = 2 if scores_transposed else 1
        else:
            mode = 3  # the intra-tile term is added once, by the first slice
        s0 = init[:, :, s:e] if init is not None else None
        st_s = st[:, :, s:e] if st is not None else None
        args = (
            q[..., s:e], k[..., s:e], v, o if last else oacc, oacc if oacc is not None else dummy,
            scores if scores is not None else dummy, g,
            s0 if s0 is not None else dummy, *(s0.stride() if s0 is not None else (0, 0, 0, 0)),
            st_s if st_s is not None else dummy, *(st_s.stride()[:2] if st_s is not None else (0, 0)),
            T, NT, H, DK,
        )
        flags = dict(DK=e - s, DV=DV, BK=_block(e - s), BT=BT, SCORES=mode, ADD_O=not first,
                     HAS_INIT=s0 is not None, STORE_FINAL=st_s is not None, REVERSE=reverse, **_flags(q.dtype))
        _launch_scan(args, flags, cfg, B * H, (e - s, DV, q.dtype))
    return o, st, (scores if want_scores else None)


# -- autograd, as torch.library custom ops -----------------------------------------------------------------
# Custom ops rather than an autograd.Function: torch.compile keeps them whole (one opaque node, no graph
# break), so a compiled layer, activation checkpointing included, traces end to end around the kernels.
# An output that was not asked for is an empty tensor (custom ops return tensors, not None).


def _acc_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _maybe(t: torch.Tensor | None) -> torch.Tensor | None:
    return t if t is not None and t.numel() > 0 else None


@torch.library.custom_op("retnet_rag::chunk_retention", mutates_args=())
def _retention_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_decay: torch.Tensor,
                  state: torch.Tensor | None, final_state: bool, want_scores: bool
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(o, final state or empty, the forward's scores for the backward or empty)."""
    o, st, P = retention_fwd(q, k, v, log_decay, state, final_state=final_state, want_scores=want_scores)
    acc = _acc_dtype(q)  # outputs may not alias each other: one empty tensor each
    return o, (st if st is not None else q.new_empty(0, dtype=acc)), (P if P is not None else q.new_empty(0, dtype=acc))


@_retention_op.register_fake
def _(q, k, v, log_decay, state, final_state, want_scores):
    B, T, H, DK = q.shape
    DV = v.shape[-1]
    acc = _acc_dtype(q)
    st = q.new_empty(B, H, DK, DV, dtype=acc) if final_state else q.new_empty(0, dtype=acc)
    if want_scores:
        BT = _config(min(DK, MAX_SLICE), DV, q.dtype, q.device)["BT"]
        pdt = q.dtype if q.dtype in (torch.bfloat16, torch.float16) else acc
        P = q.new_empty(B, H, triton.cdiv(T, BT), BT, BT, dtype=pdt)
    else:
        P = q.new_empty(0, dtype=acc)
    return q.new_empty(B, T, H, DV), st, P


@torch.library.custom_op("retnet_rag::chunk_retention_backward", mutates_args=())
def _retention_backward_op(do: torch.Tensor, dst: torch.Tensor | None, q: torch.Tensor, k: torch.Tensor,
                           v: torch.Tensor, log_decay: torch.Tensor, state: torch.Tensor | None,
                           scores: torch.Tensor, needs: list[bool]
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dq, dk, dv, d initial state), each empty where `needs` (q, k, v, state) says it is not wanted."""
    need_dq, need_dk, need_dv, need_ds0 = needs
    acc = _acc_dtype(q)
    g = log_decay.to(device=q.device, dtype=acc)
    do = do.contiguous()
    P_f = _maybe(scores)
    # dS_T / gamma starts the reversed runs (see the module docstring).
    rinit = None if dst is None else dst.to(acc) * torch.exp(-g)[None, :, None, None]
    need_ds0 = need_ds0 and state is not None
    dq, dk, dv, ds0 = (q.new_empty(0) for _ in range(4))  # outputs may not alias each other
    P_b = None  # scores of (dO, v), shared by the dq run and (transposed) the dk run
    if need_dq:
        dq, _, P_b = retention_fwd(do, v, k, g, state.transpose(2, 3) if state is not None else None,
                                   want_scores=need_dk)
    if need_dv or need_ds0:
        dv, ds0, _ = retention_fwd(k, q, do, g, rinit, reverse=True, final_state=need_ds0,
                                   scores=P_f, scores_transposed=True)
        ds0 = (ds0 * torch.exp(g)[None, :, None, None]).to(state.dtype) if need_ds0 else q.new_empty(0)
        dv = dv if need_dv else q.new_empty(0)
    if need_dk:
        dk, _, _ = retention_fwd(v, do, q, g, None if rinit is None else rinit.transpose(2, 3),
                                 reverse=True, scores=P_b, scores_transposed=True)
    return dq, dk, dv, ds0


@_retention_backward_op.register_fake
def _(do, dst, q, k, v, log_decay, state, scores, needs):
    return tuple(t.new_empty(t.shape) if need and t is not None else q.new_empty(0)
                 for t, need in zip((q, k, v, state), needs, strict=True))


def _setup_context(ctx, inputs, output):
    q, k, v, log_decay, state, final_state, _ = inputs
    ctx.save_for_backward(q, k, v, log_decay, state, output[2])
    ctx.final_state = final_state


def _backward(ctx, do, dst, _dscores):
    q, k, v, log_decay, state, scores = ctx.saved_tensors
    needs = [bool(ctx.needs_input_grad[i]) for i in (0, 1, 2, 4)]
    dst = _maybe(dst) if ctx.final_state else None
    dq, dk, dv, ds0 = _retention_backward_op(do, dst, q, k, v, log_decay, state, scores, needs)
    return _maybe(dq), _maybe(dk), _maybe(dv), None, _maybe(ds0), None, None


torch.library.register_autograd("retnet_rag::chunk_retention", _backward, setup_context=_setup_context)


def chunk_retention_triton(q, k, v, log_decay, state=None, output_final_state=True):
    """Autograd-aware entry point: (o, final state or None). log_decay gets no gradient (a fixed buffer)."""
    if state is not None and state.dtype != _acc_dtype(q):
        state = state.float()
    # The forward's scores are kept for the backward's dv run when a gradient will be asked for.
    training = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (q, k, v, state))
    o, st, _ = _retention_op(q, k, v, log_decay, state, output_final_state, training)
    return o, (st if output_final_state else None)
