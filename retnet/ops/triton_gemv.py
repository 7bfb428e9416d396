"""Triton matrix-vector product for small-batch decoding: y = x @ W.T with W read once.

At batch 1 every projection of the decode step is a matrix-vector product: y[b, n] = sum_k x[b, k] W[n, k]
with W [N, K] the nn.Linear weight (row-major, contiguous) and x [B, K], B = 1..8. The arithmetic is
trivial; the cost is streaming W from memory once (16.8 MB for the 1.3B model's [2048 x 4096] bf16
o_proj and down_proj, 3.9 us at the H200's ~4.3 TB/s copy bandwidth). cuBLAS runs those two as
split-K GEMMs at ~1.9 TB/s, plus a second kernel for the split-K reduction.

Blocking
--------
One program owns BLOCK_N consecutive rows of W and BLOCK_B (1, 2, 4 or 8) rows of x, and walks K in
BLOCK_K-wide tiles: each step loads a [BLOCK_N, BLOCK_K] tile of W (contiguous along K, so a warp's
loads are coalesced 16-byte vectors) and, per batch row, the matching [1, BLOCK_K] slice of x, and adds
the products to that row's float32 accumulator [BLOCK_N, BLOCK_K] element by element. The accumulators
have the W tile's own register layout (one per batch row, rather than one 3-D [BLOCK_B, BLOCK_N,
BLOCK_K] tensor, which Triton would feed by shuffling each W tile through shared memory), and the
reduction over K (across threads and warps) happens once, after the loop: the loop body is loads,
conversions and FMAs only. A second grid axis takes further blocks of BLOCK_B batch rows when
B > BLOCK_B (each rereads W; `linear_small_batch` keeps B <= 8 = the largest BLOCK_B).

No split over K. The products are memory-bound, so what matters is how many bytes are in flight, not
how the FLOPs are shared. Small BLOCK_N (1..8) already gives enough programs to fill every SM several
times over even at N = 2048 (BLOCK_N = 4: 512 programs for 132 SMs, all resident at once), and within
a program the loop is pipelined: `tl.range(num_stages=...)` has Triton copy the next tiles into shared
memory asynchronously while this one's FMAs run (the launch's num_stages alone only pipelines loads
that feed a tl.dot; num_stages=1 is plain 16-byte loads into registers).
A split over K would need either a second kernel to add the partial sums (a ~1.5-2 us graph node on
its own, half the 3.9 us floor: cuBLAS's own split-K reduce costs 1.6 us here) or float32 atomics into
a zeroed output (a memset node, and results whose rounding depends on the order the programs finish).
Without a split every output is one program's fixed-order sum: the results are deterministic, run to
run and replay to replay, for a given launch configuration.

Rows past N and batch rows past B are clamped to the last valid row rather than masked, so the loads
of W and x carry no mask at all when K is a multiple of BLOCK_K (EVEN_K); only the store is masked.
Row offsets are computed in int64 (N * K may pass 2**31 for large vocabularies).

Launch settings
---------------
`config_for(N, K, B, dtype)` picks BLOCK_N, BLOCK_K, num_warps and num_stages: `CONFIG_OVERRIDE[(N, K)]`
first (experiments, tests), else `TUNED[(N, K)]` (the 1.3B model's decode shapes, 2-byte weights), else
a rule (`_default_config`); then BLOCK_K is scaled to the element size and BLOCK_N / BLOCK_K shrink so
the accumulator stays within ~64 float32 registers a thread at larger B. `gemv(..., config=...)` takes
a full configuration directly (what `benchmarks/gemv.py --sweep` does).

Entry points: `gemv` (x [B, K] -> y [B, N], the launch), the custom op `retnet_rag::gemv` (opaque to
torch.compile, with a fake implementation for tracing), `linear_small_batch` (x [..., K], F.linear's
contract, falling back to F.linear where the kernel does not apply) and `gemv_applies` (the predicate a
layer asks before choosing it). The slow, obviously-correct reference is F.linear in float64. The launch
does no host synchronisation and allocates only its output, so it can be captured in a CUDA graph.
"""

from __future__ import annotations

import functools
import os

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

MAX_BATCH = 8  # largest flattened batch `gemv_applies` / `linear_small_batch` send to the kernel
SUPPORTED_DTYPES = (torch.bfloat16, torch.float16, torch.float32)
# Float32 accumulator elements per thread (BLOCK_B * BLOCK_N * BLOCK_K / threads) `config_for` keeps to.
MAX_ACC_PER_THREAD = 64

# Launch settings per (N, K) for 2-byte weights at B = 1 (float32 weights halve BLOCK_K: same bytes a tile):
# the 1.3B RetNet's decode products (hidden 2048, value dim 4096, FFN 4096, vocab 32000), each the best
# of ~150-240 configurations in `benchmarks/gemv.py --sweep` on the H200 (cold, 24 weights in one graph;
# benchmarks/results/gemv_h200_sweep.md). Other shapes follow `_default_config`.
TUNED: dict[tuple[int, int], dict] = {
    (2048, 4096): dict(BLOCK_N=4, BLOCK_K=512, num_warps=4, num_stages=4),   # o_proj, down_proj: 6.2 us
    (12288, 2048): dict(BLOCK_N=1, BLOCK_K=256, num_warps=1, num_stages=1),  # fused q, k, v, g: 13.6 us
    (8192, 2048): dict(BLOCK_N=1, BLOCK_K=256, num_warps=1, num_stages=1),   # fused FFN act, lin: 9.9 us
    (32000, 2048): dict(BLOCK_N=1, BLOCK_K=256, num_warps=1, num_stages=1),  # LM head: 31.1 us
    # The converted SmolLM2 reader (hidden 576, FFN 1536, vocab 49152; gemv_reader_h200_sweep.md).
    (2304, 576): dict(BLOCK_N=4, BLOCK_K=1024, num_warps=4, num_stages=1),  # fused q, k, v, g: 2.9 us
    (576, 576): dict(BLOCK_N=2, BLOCK_K=1024, num_warps=4, num_stages=1),   # o_proj: 1.8 us
    (3072, 576): dict(BLOCK_N=4, BLOCK_K=1024, num_warps=4, num_stages=1),  # fused FFN act, lin: 3.1 us
    (576, 1536): dict(BLOCK_N=2, BLOCK_K=512, num_warps=4, num_stages=4),   # down_proj: 2.2 us
    (49152, 576): dict(BLOCK_N=8, BLOCK_K=128, num_warps=1, num_stages=4),  # LM head: 15.7 us
}
# Experiments and tests: CONFIG_OVERRIDE[(N, K)] = dict(BLOCK_N=..., BLOCK_K=..., num_warps=..., num_stages=...,
# optionally BLOCK_B=...). Taken as given: no scaling by dtype or batch.
CONFIG_OVERRIDE: dict[tuple[int, int], dict] = {}
CONFIG_KEYS = ("BLOCK_N", "BLOCK_K", "num_warps", "num_stages")


@triton.jit
def _add(a, b):
    # Our own combine function for tl.reduce, as in triton_decode.py: it is interpreted when this module
    # is imported, so the kernel also runs under TRITON_INTERPRET=1 set after triton was first imported.
    return a + b


@triton.jit
def _fma_row(acc, x_ptr, row, offs_k, w, mask_k, EVEN_K: tl.constexpr):
    """acc [BLOCK_N, BLOCK_K] += x[row, k-tile] * w, elementwise (x read as [1, BLOCK_K]: w's layout)."""
    x_ptrs = x_ptr + row + offs_k[None, :]
    if EVEN_K:
        x = tl.load(x_ptrs)
    else:
        x = tl.load(x_ptrs, mask=mask_k[None, :], other=0.0)
    return acc + x.to(tl.float32) * w


@triton.jit
def _store_row(y_ptr, acc, b, B, stride_yb, offs_n, N):
    if b < B:  # batch rows past B (a partly filled block) are not stored
        y = tl.reduce(acc, 1, _add)  # [BLOCK_N]: the one reduction over K, across threads and warps
        tl.store(y_ptr + b.to(tl.int64) * stride_yb + offs_n, y.to(y_ptr.dtype.element_ty), mask=offs_n < N)


@triton.jit
def _gemv_kernel(
    x_ptr, w_ptr, y_ptr,
    B, N, K, stride_xb, stride_yb,
    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, EVEN_K: tl.constexpr,
    STAGES: tl.constexpr,
):
    pid_n = tl.program_id(0)
    b0 = tl.program_id(1) * BLOCK_B
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    # Out-of-range rows of W and x read the last valid row (their results are never stored): no load masks.
    rows = tl.minimum(offs_n, N - 1).to(tl.int64)
    w_ptrs = w_ptr + rows[:, None] * K + offs_k[None, :]
    # Offsets of x's rows b0 .. b0 + 7 (only the first BLOCK_B are used).
    x0 = tl.minimum(b0, B - 1).to(tl.int64) * stride_xb
    x1 = tl.minimum(b0 + 1, B - 1).to(tl.int64) * stride_xb
    x2 = tl.minimum(b0 + 2, B - 1).to(tl.int64) * stride_xb
    x3 = tl.minimum(b0 + 3, B - 1).to(tl.int64) * stride_xb
    x4 = tl.minimum(b0 + 4, B - 1).to(tl.int64) * stride_xb
    x5 = tl.minimum(b0 + 5, B - 1).to(tl.int64) * stride_xb
    x6 = tl.minimum(b0 + 6, B - 1).to(tl.int64) * stride_xb
    x7 = tl.minimum(b0 + 7, B - 1).to(tl.int64) * stride_xb

    # One float32 accumulator per batch row, each in the layout of the W tile, so that nothing in the loop
    # changes layout (a 3-D [BLOCK_B, BLOCK_N, BLOCK_K] accumulator would make Triton shuffle every W tile
    # through shared memory). The unused ones (row >= BLOCK_B) are compiled away.
    acc0 = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.float32)
    acc1 = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.float32)
    acc2 = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.float32)
    acc3 = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.float32)
    acc4 = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.float32)
    acc5 = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.float32)
    acc6 = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.float32)
    acc7 = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.float32)
    # tl.range(num_stages=...) pipelines loads that feed no tl.dot (the launch's num_stages does not).
    for k0 in tl.range(0, K, BLOCK_K, num_stages=STAGES):
        mask_k = (k0 + offs_k) < K
        if EVEN_K:
            w = tl.load(w_ptrs)
        else:
            w = tl.load(w_ptrs, mask=mask_k[None, :], other=0.0)
        w = w.to(tl.float32)
        acc0 = _fma_row(acc0, x_ptr + k0, x0, offs_k, w, mask_k, EVEN_K)
        if BLOCK_B > 1:
            acc1 = _fma_row(acc1, x_ptr + k0, x1, offs_k, w, mask_k, EVEN_K)
        if BLOCK_B > 2:
            acc2 = _fma_row(acc2, x_ptr + k0, x2, offs_k, w, mask_k, EVEN_K)
            acc3 = _fma_row(acc3, x_ptr + k0, x3, offs_k, w, mask_k, EVEN_K)
        if BLOCK_B > 4:
            acc4 = _fma_row(acc4, x_ptr + k0, x4, offs_k, w, mask_k, EVEN_K)
            acc5 = _fma_row(acc5, x_ptr + k0, x5, offs_k, w, mask_k, EVEN_K)
            acc6 = _fma_row(acc6, x_ptr + k0, x6, offs_k, w, mask_k, EVEN_K)
            acc7 = _fma_row(acc7, x_ptr + k0, x7, offs_k, w, mask_k, EVEN_K)
        w_ptrs += BLOCK_K

    _store_row(y_ptr, acc0, b0, B, stride_yb, offs_n, N)
    if BLOCK_B > 1:
        _store_row(y_ptr, acc1, b0 + 1, B, stride_yb, offs_n, N)
    if BLOCK_B > 2:
        _store_row(y_ptr, acc2, b0 + 2, B, stride_yb, offs_n, N)
        _store_row(y_ptr, acc3, b0 + 3, B, stride_yb, offs_n, N)
    if BLOCK_B > 4:
        _store_row(y_ptr, acc4, b0 + 4, B, stride_yb, offs_n, N)
        _store_row(y_ptr, acc5, b0 + 5, B, stride_yb, offs_n, N)
        _store_row(y_ptr, acc6, b0 + 6, B, stride_yb, offs_n, N)
        _store_row(y_ptr, acc7, b0 + 7, B, stride_yb, offs_n, N)


# -- launch settings ---------------------------------------------------------------------------------------

def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _pow2(value, name: str, cfg: dict) -> int:
    if not isinstance(value, int) or value < 1 or value & (value - 1):
        raise ValueError(f"gemv config {cfg}: {name} must be a positive power of two, got {value!r}")
    return value


def check_config(cfg: dict) -> dict:
    """Refuse settings the kernel cannot take: block sizes and warps powers of two, BLOCK_B <= MAX_BATCH,
    at least one stage."""
    missing = [name for name in (*CONFIG_KEYS, "BLOCK_B") if name not in cfg]
    if missing:
        raise ValueError(f"gemv config {cfg}: missing {missing}")
    for name in ("BLOCK_B", "BLOCK_N", "BLOCK_K", "num_warps"):
        _pow2(cfg[name], name, cfg)
    if cfg["BLOCK_B"] > MAX_BATCH:
        raise ValueError(f"gemv config {cfg}: BLOCK_B must be at most {MAX_BATCH} (one accumulator a batch row)")
    if not isinstance(cfg["num_stages"], int) or cfg["num_stages"] < 1:
        raise ValueError(f"gemv config {cfg}: num_stages must be a positive int, got {cfg['num_stages']!r}")
    return cfg


@functools.cache
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def _default_config(N: int, K: int, sms: int) -> dict:
    """The rule for shapes without a table entry (2-byte weights, B = 1): 4 warps, a tile of ~32 weight
    elements a thread (four 16-byte loads in flight per thread per stage) as wide along K as K allows,
    and BLOCK_N small enough for at least 4 programs an SM (N = 2048 -> 4 rows, 512 programs)."""
    num_warps = 4
    BLOCK_K = max(16, min(1024, triton.next_power_of_2(K)))
    BLOCK_N = max(1, min(16, (32 * 32 * num_warps) // BLOCK_K))
    while BLOCK_N > 1 and triton.cdiv(N, BLOCK_N) < 4 * sms:
        BLOCK_N //= 2
    return dict(BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K, num_warps=num_warps, num_stages=3)


def config_for(N: int, K: int, B: int = 1, dtype: torch.dtype = torch.bfloat16,
               device: torch.device | None = None) -> dict:
    """Launch settings (BLOCK_B, BLOCK_N, BLOCK_K, num_warps, num_stages) for W [N, K] and B rows of x."""
    if (N, K) in CONFIG_OVERRIDE:
        cfg = dict(CONFIG_OVERRIDE[(N, K)])
        cfg.setdefault("BLOCK_B", min(MAX_BATCH, triton.next_power_of_2(max(B, 1))))
        return check_config(cfg)
    BLOCK_B = min(MAX_BATCH, triton.next_power_of_2(max(B, 1)))
    if _interpreting():  # CPU tests: small tiles, so toy sizes still cross several blocks and tails
        return check_config(dict(BLOCK_B=BLOCK_B, BLOCK_N=4, BLOCK_K=16, num_warps=1, num_stages=1))
    if (N, K) in TUNED:
        cfg = dict(TUNED[(N, K)])
    else:
        index = 0
        if device is not None and device.type == "cuda":
            index = device.index if device.index is not None else torch.cuda.current_device()
        cfg = _default_config(N, K, _sm_count(index) if torch.cuda.is_available() else 132)
    if dtype.itemsize == 4:
        cfg["BLOCK_K"] = max(16, cfg["BLOCK_K"] // 2)  # the same bytes a tile as for 2-byte weights
    threads = 32 * cfg["num_warps"]
    while BLOCK_B * cfg["BLOCK_N"] * cfg["BLOCK_K"] > MAX_ACC_PER_THREAD * threads and cfg["BLOCK_N"] > 1:
        cfg["BLOCK_N"] //= 2  # more programs, same tile width along K
    while BLOCK_B * cfg["BLOCK_N"] * cfg["BLOCK_K"] > MAX_ACC_PER_THREAD * threads and cfg["BLOCK_K"] > 256:
        cfg["BLOCK_K"] //= 2
    cfg["BLOCK_B"] = BLOCK_B
    return check_config(cfg)


# -- entry points ------------------------------------------------------------------------------------------

def gemv(x: torch.Tensor, weight: torch.Tensor, *, config: dict | None = None,
         out: torch.Tensor | None = None) -> torch.Tensor:
    """y [B, N] = x [B, K] @ weight[N, K].T with float32 accumulation, in x's dtype.

    `weight` must be contiguous and of x's dtype (bf16, fp16 or fp32); x is made contiguous along K if
    it is not. `config` replaces `config_for`'s choice (keys BLOCK_N, BLOCK_K, num_warps, num_stages,
    optionally BLOCK_B); `out` [B, N] receives the result. No host synchronisation: graph-capturable.
    """
    if x.dim() != 2 or weight.dim() != 2 or x.shape[1] != weight.shape[1]:
        raise ValueError(f"gemv needs x [B, K] and weight [N, K], got {tuple(x.shape)} and {tuple(weight.shape)}")
    if x.dtype != weight.dtype or x.dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"gemv needs x and weight of one dtype among {SUPPORTED_DTYPES}, "
                         f"got {x.dtype} and {weight.dtype}")
    if not weight.is_contiguous():
        raise ValueError("gemv needs a contiguous (row-major) weight")
    if x.device != weight.device:
        raise ValueError(f"x is on {x.device}, weight on {weight.device}")
    B, K = x.shape
    N = weight.shape[0]
    if x.stride(1) != 1:
        x = x.contiguous()
    if out is None:
        out = torch.empty(B, N, device=x.device, dtype=x.dtype)
    elif out.shape != (B, N) or out.dtype != x.dtype or out.stride(1) != 1:
        raise ValueError(f"out must be [{B}, {N}] of {x.dtype} with unit column stride")
    if B == 0 or N == 0:
        return out
    if K == 0:
        return out.zero_()
    if config is None:
        cfg = config_for(N, K, B, x.dtype, x.device)
    else:
        cfg = dict(config)
        cfg.setdefault("BLOCK_B", min(MAX_BATCH, triton.next_power_of_2(B)))
        check_config(cfg)
    grid = (triton.cdiv(N, cfg["BLOCK_N"]), triton.cdiv(B, cfg["BLOCK_B"]))
    _gemv_kernel[grid](
        x, weight, out, B, N, K, x.stride(0), out.stride(0),
        BLOCK_B=cfg["BLOCK_B"], BLOCK_N=cfg["BLOCK_N"], BLOCK_K=cfg["BLOCK_K"], EVEN_K=K % cfg["BLOCK_K"] == 0,
        STAGES=cfg["num_stages"], num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )
    return out


# A custom op, so that torch.compile keeps the launch as one opaque node (no graph break) and traces the
# shapes through the fake implementation. Inference only: no autograd formula is registered, and
# `linear_small_batch` hands anything that needs a gradient to F.linear.
@torch.library.custom_op("retnet_rag::gemv", mutates_args=())
def _gemv_op(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return gemv(x, weight)


@_gemv_op.register_fake
def _(x, weight):
    return x.new_empty(x.shape[0], weight.shape[0])


def _kernel_can_run(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Everything `gemv_applies` asks except the device being a GPU (CPU tensors run under the interpreter)."""
    if weight.dim() != 2 or x.dim() < 1 or x.shape[-1] != weight.shape[1]:
        return False
    if x.dtype != weight.dtype or x.dtype not in SUPPORTED_DTYPES or not weight.is_contiguous():
        return False
    if x.device != weight.device or weight.numel() == 0:
        return False
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        return False
    batch = x.numel() // x.shape[-1]
    return 1 <= batch <= MAX_BATCH


def gemv_applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether a layer should compute F.linear(x, weight) with this kernel: CUDA tensors, a contiguous
    weight of x's dtype (bf16, fp16 or fp32), x [..., K] with at most MAX_BATCH rows, no gradient needed.

    CUDA only, on purpose: CPU test runs switch the Triton interpreter on process-wide, and a model on the
    CPU must not start interpreting its products because of that. `linear_small_batch` itself also runs
    CPU tensors under the interpreter (how the tests check it)."""
    return x.is_cuda and _kernel_can_run(x, weight)


def linear_small_batch(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """F.linear(x, weight) (no bias) for x [..., K]: through `retnet_rag::gemv` when the flattened batch is
    at most MAX_BATCH and the kernel can run (CUDA, or CPU under TRITON_INTERPRET=1; see `gemv_applies`),
    else F.linear itself."""
    if not (x.is_cuda or _interpreting()) or not _kernel_can_run(x, weight):
        return F.linear(x, weight)
    y = _gemv_op(x.reshape(-1, x.shape[-1]), weight)
    return y.view(*x.shape[:-1], weight.shape[0])
