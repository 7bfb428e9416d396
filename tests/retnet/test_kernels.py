"""Triton retention kernels against the pure-PyTorch reference.

Without a GPU these run the kernels in Triton's interpreter (TRITON_INTERPRET=1, set
below before the kernels are imported) at small awkward sizes: T not a multiple of
the tile, K != V, K not a power of two, several value-column blocks, chunk layouts
shorter and longer than the tile, with and without an initial state. Forward
outputs, final states and the gradients of q, k, v and the initial
state are compared in float64 (to rounding) and float32; bf16/fp16 inputs get
loose tolerances. On a machine with CUDA they run on the GPU instead.

The interpreter accepts any tl.dot shape; compiled Triton (3.6, NVIDIA) wants every inner dimension
>= 16. The `_compiled_dot_limits` fixture (conftest.py) makes the interpreter refuse what the GPU would refuse, so
a tiling that cannot compile fails here on CPU too.
"""

from __future__ import annotations

import os

import pytest
import torch

ON_GPU = torch.cuda.is_available()
if not ON_GPU:
    os.environ["TRITON_INTERPRET"] = "1"  # before anything compiles a kernel
pytest.importorskip("triton")

import retnet.ops as ops  # noqa: E402
from retnet.ops import reference, triton_chunk, triton_decode  # noqa: E402

DEV = "cuda" if ON_GPU else "cpu"

pytestmark = pytest.mark.slow  # the Triton interpreter on CPU



def log_decay(H, dtype=torch.float64, fast=False):
    # fast=True: stronger decay than RetNet's so that short tests still see it act.
    first = -2.0 if fast else -5.0
    return torch.log(1 - 2.0 ** (first - torch.arange(H, dtype=dtype))).to(DEV)


def rel(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


def inputs(B, T, H, K, V, dtype, state=True, grad=False, seed=0):
    gen = torch.Generator().manual_seed(seed)

    def mk(*shape, dt=dtype):
        return torch.randn(*shape, generator=gen, dtype=torch.float64).to(DEV, dt).requires_grad_(grad)

    sdt = torch.float64 if dtype == torch.float64 else torch.float32
    return mk(B, T, H, K), mk(B, T, H, K), mk(B, T, H, V), (mk(B, H, K, V, dt=sdt) if state else None)


TOL = {torch.float64: 1e-12, torch.float32: 2e-5, torch.float16: 5e-3, torch.bfloat16: 2e-2}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("T,K,V,lengths,with_state", [
    (37, 16, 24, [37], True),                    # one chunk, T not a multiple of the tile
    (70, 16, 40, [5, 11, 1, 33, 20], False),     # chunks shorter and longer than the tile, 2 V blocks
    (130, 20, 16, [64, 2, 16, 48], True),        # K not a power of two, boundaries on tile ends
    (16, 32, 8, [16], True),                     # exactly one tile, V smaller than K
])
def test_forward_matches_reference(dtype, T, K, V, lengths, with_state):
    B, H = 2, 3
    q, k, v, s0 = inputs(B, T, H, K, V, dtype, state=with_state)
    ld = log_decay(H, fast=True)
    o, st = ops.chunk_retention(q, k, v, ld, lengths, state=s0, backend="triton")
    ro, rst = reference.naive_retention_recurrent(q.double(), k.double(), v.double(), ld,
                                            None if s0 is None else s0.double())
    assert o.dtype == dtype and o.shape == (B, T, H, V)
    assert st.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    tol = TOL[dtype]
    assert rel(o, ro) < tol
    # The state is kept in float32 even for half inputs; only rounding of dot operands remains.
    stol = tol if dtype in (torch.float64, torch.float32) else tol / 2
    assert rel(st, rst) < stol


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("T,K,V,with_state,final_grad", [
    (37, 16, 24, True, True),
    (70, 20, 16, False, True),
    (130, 16, 40, True, False),
])
def test_gradients_match_reference(dtype, T, K, V, with_state, final_grad):
    B, H = 2, 2
    q, k, v, s0 = inputs(B, T, H, K, V, dtype, state=with_state, grad=True)
    ld = log_decay(H, fast=True)
    gen = torch.Generator().manual_seed(1)
    do = torch.randn(B, T, H, V, generator=gen, dtype=torch.float64).to(DEV, dtype)
    dst = torch.randn(B, H, K, V, generator=gen, dtype=torch.float64).to(DEV)
    leaves = [t for t in (q, k, v, s0) if t is not None]

    def grads(backend):
        o, st = ops.chunk_retention(q, k, v, ld, [T], state=s0, backend=backend)
        loss = (o * do).sum() + ((st * dst.to(st.dtype)).sum() if final_grad else 0)
        return torch.autograd.grad(loss, leaves)

    for got, want in zip(grads("triton"), grads("reference"), strict=True):
        assert rel(got, want) < TOL[dtype]


def test_gradients_half_inputs():
    B, T, H, K, V = 1, 45, 2, 16, 24
    q, k, v, s0 = inputs(B, T, H, K, V, torch.bfloat16, grad=True)
    ld = log_decay(H, fast=True)
    do = torch.randn(B, T, H, V).to(DEV, torch.bfloat16)
    o, st = ops.chunk_retention(q, k, v, ld, [20, 25], state=s0, backend="triton")
    got = torch.autograd.grad((o.float() * do.float()).sum() + st.sum(), (q, k, v, s0))
    qd, kd, vd, sd = (t.detach().double().requires_grad_() for t in (q, k, v, s0))
    ro, rst = reference.naive_retention_recurrent(qd, kd, vd, ld, sd)
    want = torch.autograd.grad((ro * do.double()).sum() + rst.sum(), (qd, kd, vd, sd))
    assert [t.dtype for t in got] == [torch.bfloat16] * 3 + [torch.float32]
    for a, b in zip(got, want, strict=True):
        assert rel(a, b) < 2e-2


def test_output_independent_of_chunk_layout():
    B, T, H, K, V = 1, 90, 2, 16, 16
    q, k, v, s0 = inputs(B, T, H, K, V, torch.float64)
    ld = log_decay(H)
    outs = [ops.chunk_retention(q, k, v, ld, lengths, state=s0, backend=backend)
            for lengths in ([90], [1] * 90, [17, 3, 70], [64, 26]) for backend in ("triton", "reference")]
    for o, st in outs[1:]:
        assert rel(o, outs[0][0]) < 1e-13 and rel(st, outs[0][1]) < 1e-13



@torch.no_grad()
def test_prompt_lengths_in_a_row():
    """What the app's prefill does: one process, prompts of many lengths, each after a state. On an H200
    (Triton 3.6) the scan specialized for T == 1 or a single tile, launched after another specialization
    of itself, read shared memory out of bounds; one kernel now serves every T."""
    H, K, V = (6, 64, 128) if ON_GPU else (2, 16, 24)
    ld = log_decay(H)
    for seed, T in enumerate((13, 355, 14, 1, 2, 64, 65, 1)):
        q, k, v, s0 = inputs(1, T, H, K, V, torch.bfloat16, seed=seed)
        o, st = ops.chunk_retention(q, k, v, ld, [T], state=s0, backend="triton")
        ro, rst = reference.naive_retention_chunkwise(q.double(), k.double(), v.double(), ld, [T], state=s0.double())
        assert rel(o, ro) < 2e-2 and rel(st, rst) < 2e-2, T

@pytest.mark.parametrize("K,V,max_slice,cfg,cfg_t", [
    # (K, V) settings for the forward and dv runs, (V, K) ones for the dq and dk runs.
    (16, 40, 256, dict(BT=32, BV=16, num_warps=4, num_stages=2, inline=False),
     dict(BT=32, BV=8, num_warps=4, num_stages=2, inline=True)),
    # Keys wider than one slice: two scans, the second adding to the first's float32 output. The second
    # slices are 4 (K) and 8 (V) columns wide, padded to 16-wide dot operands.
    (20, 24, 16, dict(BT=64, BV=64, num_warps=4, num_stages=2),
     dict(BT=16, BV=16, num_warps=4, num_stages=2, inline=False)),
])
def test_other_tile_shapes(K, V, max_slice, cfg, cfg_t, monkeypatch):
    """The GPU uses 64-token tiles, precomputed scores and two K slices above 256; check that
    other tilings and both ways of getting the scores compute the same function."""
    B, T, H = 1, 100, 2
    monkeypatch.setattr(triton_chunk, "MAX_SLICE", max_slice)
    for k_, v_, c in ((K, V, cfg), (V, K, cfg_t)):
        for width in {min(k_, max_slice), k_ - max_slice}:
            if width > 0:
                monkeypatch.setitem(triton_chunk.CONFIG_OVERRIDE, (width, v_, torch.float64), c)
    q, k, v, s0 = inputs(B, T, H, K, V, torch.float64, grad=True)
    ld = log_decay(H, fast=True)
    for lengths in ([T], [7, 60, 33]):
        got = ops.chunk_retention(q, k, v, ld, lengths, state=s0, backend="triton")
        want = ops.chunk_retention(q, k, v, ld, lengths, state=s0, backend="reference")
        for a, b in zip(got, want, strict=True):
            assert rel(a, b) < 1e-12
        g1 = torch.autograd.grad(got[0].sum() + got[1].sum(), (q, k, v, s0))
        g2 = torch.autograd.grad(want[0].sum() + want[1].sum(), (q, k, v, s0))
        for a, b in zip(g1, g2, strict=True):
            assert rel(a, b) < 1e-12


@pytest.mark.skipif(ON_GPU, reason="checks the interpreter's emulation; the GPU enforces its own limits")
def test_compiled_dot_limits_are_emulated():
    """The fixture must make the interpreter refuse a dot with an 8-wide inner dimension."""
    import triton
    import triton.language as tl
    from triton.runtime.errors import InterpreterError

    @triton.jit
    def gram(x_ptr, y_ptr, N: tl.constexpr):
        x = tl.load(x_ptr + tl.arange(0, 16)[:, None] * N + tl.arange(0, N)[None, :])
        tl.store(y_ptr + tl.arange(0, 16)[:, None] * 16 + tl.arange(0, 16)[None, :], tl.dot(x, tl.trans(x)))

    x, y = torch.randn(16, 16, device=DEV), torch.empty(16, 16, device=DEV)
    gram[(1,)](x, y, N=16)
    with pytest.raises(InterpreterError, match="K >= 16"):
        gram[(1,)](x[:, :8].contiguous(), y, N=8)


def test_block_widths_are_valid_dot_dimensions():
    assert [triton_chunk._block(n) for n in (1, 4, 8, 16, 20, 256)] == [16, 16, 16, 16, 32, 256]


@pytest.mark.parametrize("cfg,match", [
    (dict(BT=8, BV=16), "BT must be a power of two >= 16"),
    (dict(BT=48, BV=16), "BT must be a power of two"),
    (dict(BT=64, BV=24), "BV must be a power of two"),
    (dict(BV=16), "BT"),
])
def test_invalid_tile_configs_are_refused(cfg, match, monkeypatch):
    with pytest.raises(ValueError, match=match):
        triton_chunk.check_config(cfg)
    # The same refusal, before anything compiles, for a config asked for through CONFIG_OVERRIDE.
    monkeypatch.setitem(triton_chunk.CONFIG_OVERRIDE, (16, 16, torch.float64), cfg)
    q, k, v, _ = inputs(1, 20, 1, 16, 16, torch.float64)
    with pytest.raises(ValueError, match=match):
        triton_chunk.retention_fwd(q, k, v, log_decay(1))


def test_default_tile_configs_are_valid(monkeypatch):
    monkeypatch.setattr(triton_chunk, "CONFIG_OVERRIDE", {})
    for interpret in ("0", "1"):
        monkeypatch.setenv("TRITON_INTERPRET", interpret)
        for dtype in (torch.float64, torch.float32, torch.bfloat16, torch.float16):
            for DK in (1, 4, 16, 20, 64, 128, 200, 256):
                for DV in (1, 8, 24, 64, 512):
                    assert triton_chunk._config(DK, DV, dtype)["BT"] >= triton_chunk.MIN_DOT_K


def test_per_gpu_tables_are_picked_by_device_name_or_forced(monkeypatch):
    """The H200 table (benchmarks/kernels.py --sweep) for bf16 at its shapes on a GPU named H200; the
    H100 rules elsewhere, for other dtypes and shapes, and when RETNET_KERNEL_TUNING=h100 asks for them."""
    monkeypatch.setattr(triton_chunk, "CONFIG_OVERRIDE", {})
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.delenv("RETNET_KERNEL_TUNING", raising=False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: "NVIDIA H200")
    assert triton_chunk._device_tuning.__wrapped__(0) == "h200"
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: "NVIDIA H100 80GB HBM3")
    assert triton_chunk._device_tuning.__wrapped__(0) == "h100"
    monkeypatch.setattr(triton_chunk, "_device_tuning", lambda index: "h200")
    gpu, h200 = torch.device("cuda", 0), triton_chunk.TUNED["h200"]
    rules = triton_chunk._config(256, 512, torch.bfloat16)  # no device: the H100 rules
    assert rules != h200[(256, 512)]
    assert triton_chunk._config(256, 512, torch.bfloat16, gpu) == h200[(256, 512)]
    assert triton_chunk._config(128, 128, torch.float16, gpu) == h200[(128, 128)]
    assert triton_chunk._config(256, 512, torch.float32, gpu) == triton_chunk._config(256, 512, torch.float32)
    assert triton_chunk._config(64, 96, torch.bfloat16, gpu) == triton_chunk._config(64, 96, torch.bfloat16)
    monkeypatch.setenv("RETNET_KERNEL_TUNING", "h100")
    assert triton_chunk._config(256, 512, torch.bfloat16, gpu) == rules
    monkeypatch.setenv("RETNET_KERNEL_TUNING", "H200")
    assert triton_chunk._config(256, 512, torch.bfloat16) == h200[(256, 512)]
    monkeypatch.setenv("RETNET_KERNEL_TUNING", "a100")
    with pytest.raises(ValueError, match="RETNET_KERNEL_TUNING='a100'; choose h100 or one of"):
        triton_chunk._config(256, 512, torch.bfloat16)
    for table in triton_chunk.TUNED.values():
        for cfg in table.values():
            assert triton_chunk.check_config(dict(cfg))["BT"] == 64  # both K slices of a scan share BT


def test_too_wide_keys_are_refused(monkeypatch):
    monkeypatch.setattr(triton_chunk, "MAX_SLICE", 16)
    q, k, v, _ = inputs(1, 5, 1, 40, 8, torch.float64)
    with pytest.raises(ValueError, match="K up to"):
        triton_chunk.retention_fwd(q, k, v, log_decay(1))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("T,with_state", [(1, True), (5, False), (19, True)])
def test_recurrent_kernel(dtype, T, with_state):
    B, H, K, V = 2, 3, 20, 24
    q, k, v, s0 = inputs(B, T, H, K, V, dtype, state=with_state)
    ld = log_decay(H, fast=True)
    with torch.no_grad():
        o, st = ops.recurrent_retention(q, k, v, ld, state=s0, backend="triton")
    ro, rst = reference.naive_retention_recurrent(q.double(), k.double(), v.double(), ld,
                                            None if s0 is None else s0.double())
    assert rel(o, ro) < TOL[dtype] and rel(st, rst) < TOL[dtype]
    # With gradients wanted, the recurrent form goes through the chunkwise autograd.
    q.requires_grad_(True)
    o2, _ = ops.recurrent_retention(q, k, v, ld, state=s0, backend="triton")
    assert rel(o2, ro) < TOL[dtype] and o2.requires_grad


@pytest.mark.parametrize("four_d", [False, True])
def test_retention_step_in_place(four_d):
    B, H, K, V = 3, 2, 16, 40
    gen = torch.Generator().manual_seed(3)
    shape_k, shape_v = ((B, 1, H, K), (B, 1, H, V)) if four_d else ((B, H, K), (B, H, V))
    q, k = (torch.randn(*shape_k, generator=gen).to(DEV) for _ in range(2))
    v = torch.randn(*shape_v, generator=gen).to(DEV)
    s = torch.randn(B, H, K, V, generator=gen).to(DEV)
    ld = log_decay(H, dtype=torch.float32, fast=True)
    s_ref = s.clone()
    o_ref = ops.retention_step(q, k, v, ld, s_ref, backend="reference")
    ptr = s.data_ptr()
    o = ops.retention_step(q, k, v, ld, s, backend="triton")
    assert s.data_ptr() == ptr and o.shape == shape_v
    assert rel(o, o_ref) < 1e-5 and rel(s, s_ref) < 1e-5


def test_step_sequence_equals_recurrent():
    B, T, H, K, V = 1, 6, 2, 16, 24
    q, k, v, _ = inputs(B, T, H, K, V, torch.float32, state=False)
    ld = log_decay(H, dtype=torch.float32, fast=True)
    s = torch.zeros(B, H, K, V, device=DEV)
    outs = [ops.retention_step(q[:, t], k[:, t], v[:, t], ld, s, backend="triton") for t in range(T)]
    ro, rst = reference.naive_retention_recurrent(q, k, v, ld)
    assert rel(torch.stack(outs, 1), ro) < 1e-5 and rel(s, rst) < 1e-5


def test_dispatch_rules(monkeypatch):
    B, T, H, K, V = 1, 20, 2, 16, 16
    q, k, v, s0 = inputs(B, T, H, K, V, torch.float32)
    ld = log_decay(H, dtype=torch.float32)
    # auto: reference on CPU, triton on CUDA.
    assert ops._resolve("auto", q) == ("triton" if ON_GPU else "reference")
    assert ops._resolve(None, torch.zeros(1)) in ("reference", "triton")
    if ON_GPU:  # compiled kernels need K >= 16: auto hands narrow heads to the reference, triton refuses them
        narrow = q[..., : ops.MIN_TRITON_K - 1].cuda()
        assert ops._resolve("auto", narrow) == "reference"
        with pytest.raises(RuntimeError, match="key head dimension"):
            ops._resolve("triton", narrow)
    monkeypatch.setattr(ops, "_default_backend", "auto")
    ops.set_backend("reference")
    assert ops.get_backend() == "reference" and ops._resolve(None, q) == "reference"
    ops.set_backend("triton")
    assert ops._resolve(None, q) == "triton"
    ops.set_backend("auto")
    with pytest.raises(ValueError):
        ops.set_backend("cuda")
    if not ON_GPU:
        monkeypatch.setenv("TRITON_INTERPRET", "0")
        with pytest.raises(RuntimeError, match="CUDA"):
            ops.chunk_retention(q, k, v, ld, [T], backend="triton")
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    # The environment variable is read at import.
    import importlib
    import subprocess
    import sys
    code = "import retnet.ops as o; print(o.get_backend())"
    env = dict(os.environ, RETNET_BACKEND="reference")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "reference"
    assert importlib.import_module("retnet.ops") is ops


def test_triton_falls_back_for_masks_and_learned_decay():
    B, T, H, K, V = 2, 21, 2, 16, 16
    q, k, v, s0 = inputs(B, T, H, K, V, torch.float64)
    ld = log_decay(H)
    mask = torch.ones(B, T, dtype=torch.bool, device=DEV)
    mask[0, :4] = False
    o, st = ops.chunk_retention(q, k, v, ld, [10, 11], state=s0, mask=mask, backend="triton")
    ro, rst = reference.naive_retention_chunkwise(q, k, v, ld, [10, 11], state=s0, mask=mask)
    assert torch.equal(o, ro) and torch.equal(st, rst)
    ldg = ld.clone().requires_grad_(True)
    o, _ = ops.parallel_retention(q, k, v, ldg, state=s0, backend="triton")
    (g,) = torch.autograd.grad(o.sum(), ldg)
    assert torch.isfinite(g).all()


def test_forms_and_options_on_triton():
    B, T, H, K, V = 1, 33, 2, 16, 24
    q, k, v, s0 = inputs(B, T, H, K, V, torch.float64)
    ld = log_decay(H, fast=True)
    ro, rst = reference.naive_retention_parallel(q, k, v, ld, state=s0)
    for fn in (ops.parallel_retention, ops.recurrent_retention):
        o, st = fn(q, k, v, ld, state=s0, backend="triton")
        assert rel(o, ro) < 1e-12 and rel(st, rst) < 1e-12
        o, st = fn(q, k, v, ld, state=s0, backend="triton", output_final_state=False)
        assert st is None and rel(o, ro) < 1e-12
    o, st = ops.chunk_retention(q, k, v, ld, [T], backend="triton", output_final_state=False)
    assert st is None
    with pytest.raises(ValueError, match="sum to 30"):  # refused alike on both backends
        ops.chunk_retention(q, k, v, ld, [3, 27], state=s0, backend="triton")


def test_decode_config_blocks(monkeypatch):
    """Several value-column programs per head, K padded to a power of two."""
    monkeypatch.setitem(triton_decode.CONFIG_OVERRIDE, (20, 40), dict(BV=8, num_warps=4))
    B, T, H, K, V = 2, 4, 2, 20, 40
    q, k, v, s0 = inputs(B, T, H, K, V, torch.float32)
    ld = log_decay(H, dtype=torch.float32, fast=True)
    o, st = triton_decode.recurrent_fwd(q, k, v, ld, s0)
    ro, rst = reference.naive_retention_recurrent(q, k, v, ld, s0)
    assert rel(o, ro) < 1e-5 and rel(st, rst) < 1e-5


def test_shared_memory_fallback_halves_bv(monkeypatch):
    """A config too big for the GPU's shared memory is retried with narrower state slices."""
    from triton.runtime.errors import OutOfResources

    seen = []

    class FakeKernel:
        def __getitem__(self, grid):
            def launch(*args, BV, **kwargs):
                seen.append((grid, BV, kwargs["num_warps"]))
                if BV > 16:
                    raise OutOfResources(300000, 232448, "shared memory")
            return launch

    monkeypatch.setattr(triton_chunk, "_chunk_retention_kernel", FakeKernel())
    monkeypatch.setattr(triton_chunk, "CONFIG_OVERRIDE", {})
    key = (256, 512, torch.bfloat16)
    cfg = dict(BT=64, BV=64, num_warps=8, num_stages=2, inline=True)
    triton_chunk._launch_scan((), dict(DV=512), cfg, 32, key)
    assert seen == [((8, 32), 64, 8), ((16, 32), 32, 4), ((32, 32), 16, 4)]
    assert triton_chunk.CONFIG_OVERRIDE[key]["BV"] == 16


def _float64_block_on_triton(monkeypatch, seed: int, B: int, T: int):
    """A tiny RetNet block in float64 on the Triton backend, an input [B, T, hidden] and its positions."""
    from retnet import RetNetConfig
    from retnet.layers import RetNetBlock

    monkeypatch.setattr(ops, "_default_backend", "triton")
    torch.manual_seed(seed)
    cfg = RetNetConfig.from_preset("tiny", head_k_dim=16, head_v_dim=24)
    block = RetNetBlock(cfg).double().to(DEV)
    x = torch.randn(B, T, cfg.hidden_size, dtype=torch.float64, device=DEV)
    return block, x, torch.arange(T, device=DEV).expand(B, T)


def test_a_compiled_block_traces_around_the_kernels(monkeypatch):
    """torch.compile(fullgraph=True) of a whole RetNet block on the Triton backend: the kernels are custom ops
    (one opaque node forward, one backward), so nothing breaks the graph, and activation checkpointing of the
    compiled block recomputes exactly what it saved. Output and gradients equal the eager block's."""
    from torch.utils.checkpoint import checkpoint

    block, x, positions = _float64_block_on_triton(monkeypatch, seed=0, B=2, T=37)

    def run(fn, x):
        x = x.clone().requires_grad_(True)
        y = checkpoint(lambda t: fn(t, positions, None, "chunkwise", [37])[0], x, use_reentrant=False)
        (y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype, device=DEV).view_as(y)).sum().backward()
        grads = [x.grad] + [p.grad.clone() for p in block.parameters()]
        block.zero_grad(set_to_none=True)
        return y.detach(), grads

    torch._dynamo.reset()
    compiled = torch.compile(block, backend="aot_eager", fullgraph=True)
    (y0, g0), (y1, g1) = run(block, x), run(compiled, x)
    assert rel(y1, y0) < 1e-12
    assert max(rel(a, b) for a, b in zip(g1, g0, strict=True)) < 1e-12


def test_a_fresh_block_compiles_without_a_graph_break_inside_a_checkpoint(monkeypatch):
    """Compiled before any eager call, as benchmarks/train.py --compile does: the layer's float64 constants
    (rotary frequencies, decays) are first moved to the device inside the traced, checkpointed region. That
    must not mutate module state there (a graph break: dynamo then ran the whole checkpoint eagerly,
    which made compiled RetNet training no faster on the H200)."""
    from torch.utils.checkpoint import checkpoint

    block, x, positions = _float64_block_on_triton(monkeypatch, seed=1, B=1, T=21)

    def layer(t):
        return checkpoint(lambda u: block(u, positions, None, "chunkwise", [21])[0], t, use_reentrant=False)

    torch._dynamo.reset()
    y = torch.compile(layer, backend="aot_eager", fullgraph=True)(x)
    assert rel(y, block(x, positions, None, "chunkwise", [21])[0]) < 1e-12
