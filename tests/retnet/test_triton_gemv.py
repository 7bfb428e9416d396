"""The small-batch matrix-vector kernel (retnet/ops/triton_gemv.py) against F.linear in float64.

Without a GPU these run the kernel in Triton's interpreter (TRITON_INTERPRET=1, set below before the
kernel is imported) at small awkward sizes: N and K not multiples of the blocks, K shorter than one tile,
K a multiple of the tile (the unmasked EVEN_K loop), batch 1..5 with partly filled batch blocks and more
than one batch block. Error bounds are elementwise and follow from the arithmetic: float32 accumulation
of K products (at most about K * 2**-24 of sum |x_k w_k|), then one rounding to the output dtype. On a
machine with CUDA they run on the GPU instead.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

ON_GPU = torch.cuda.is_available()
if not ON_GPU:
    os.environ["TRITON_INTERPRET"] = "1"  # before anything compiles a kernel
triton = pytest.importorskip("triton")

from retnet.ops import triton_gemv  # noqa: E402

DEV = "cuda" if ON_GPU else "cpu"

pytestmark = pytest.mark.slow  # the Triton interpreter on CPU

# The final rounding to the output dtype: half an ulp, except that the interpreter casts float32 to bfloat16
# by truncation (triton/runtime/interpreter.py, cast_impl: no rounding mode), a whole ulp; the GPU rounds.
UNIT_ROUNDOFF = {torch.float32: 2.0 ** -24, torch.float16: 2.0 ** -11,
                 torch.bfloat16: 2.0 ** -8 if ON_GPU else 2.0 ** -7}


def inputs(B, N, K, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(B, K, generator=gen, dtype=torch.float64).to(DEV, dtype)
    w = torch.randn(N, K, generator=gen, dtype=torch.float64).to(DEV, dtype)
    return x, w


def assert_close_to_reference(y, x, w):
    """|y - ref| <= (K + 2) * 2**-24 * (|x| @ |w|.T) + u_out * |ref|, elementwise, with ref = F.linear in
    float64 of the very same (rounded) inputs and u_out the output dtype's unit roundoff."""
    ref = F.linear(x.double(), w.double())
    scale = F.linear(x.double().abs(), w.double().abs())
    K = x.shape[-1]
    bound = (K + 2) * 2.0 ** -24 * scale + UNIT_ROUNDOFF[y.dtype] * ref.abs()
    assert y.dtype == x.dtype and y.shape == ref.shape
    err = (y.double() - ref).abs()
    worst = (err / bound.clamp_min(1e-300)).max().item()
    assert worst <= 1.0, f"error {worst:.2f}x the bound"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("B,N,K", [
    (1, 13, 37),   # N, K not multiples of the blocks (interpreter blocks: BLOCK_N=4, BLOCK_K=16)
    (2, 5, 7),     # K shorter than one tile
    (3, 9, 64),    # K a multiple of the tile: the unmasked loop; batch block of 4 with one row unused
    (5, 17, 50),   # batch block of 8 with three rows unused
])
def test_gemv_matches_float64_reference(dtype, B, N, K):
    x, w = inputs(B, N, K, dtype, seed=B * 100 + K)
    y = triton_gemv.gemv(x, w)
    assert_close_to_reference(y, x, w)


@pytest.mark.parametrize("cfg", [
    dict(BLOCK_B=2, BLOCK_N=1, BLOCK_K=32, num_warps=1, num_stages=1),  # 3 batch blocks, one row per program
    dict(BLOCK_B=1, BLOCK_N=8, BLOCK_K=8, num_warps=2, num_stages=3),   # one batch row per block
    dict(BLOCK_B=8, BLOCK_N=16, BLOCK_K=64, num_warps=4, num_stages=2),  # every block bigger than the data
])
def test_explicit_configs(cfg):
    x, w = inputs(5, 19, 40, torch.float32, seed=7)
    assert_close_to_reference(triton_gemv.gemv(x, w, config=cfg), x, w)


def test_strided_inputs_and_out():
    """x with a row stride (a slice of a wider buffer) and a preallocated out, as a captured graph uses."""
    x_wide, w = inputs(3, 11, 80, torch.float32, seed=3)
    x = x_wide[:, 10:60]
    w = w[:, :50].contiguous()
    out = torch.full((3, 11), float("nan"), device=DEV)
    y = triton_gemv.gemv(x, w, out=out)
    assert y is out
    assert_close_to_reference(y, x, w)


def test_results_are_deterministic():
    x, w = inputs(2, 21, 45, torch.bfloat16, seed=11)
    assert torch.equal(triton_gemv.gemv(x, w), triton_gemv.gemv(x, w))


def test_refuses_what_it_cannot_compute():
    x, w = inputs(2, 6, 20, torch.float32)
    with pytest.raises(ValueError, match="one dtype"):
        triton_gemv.gemv(x, w.to(torch.bfloat16))
    with pytest.raises(ValueError, match="contiguous"):
        triton_gemv.gemv(x, torch.randn(20, 6, device=DEV).t())
    with pytest.raises(ValueError, match="x \\[B, K\\]"):
        triton_gemv.gemv(x[:, :19], w)
    with pytest.raises(ValueError, match="one dtype"):
        triton_gemv.gemv(x.double(), w.double())
    for bad in (dict(BLOCK_N=3), dict(BLOCK_B=16), dict(num_stages=0), dict(num_warps=6)):
        cfg = {**dict(BLOCK_B=2, BLOCK_N=4, BLOCK_K=16, num_warps=1, num_stages=1), **bad}
        with pytest.raises(ValueError, match="gemv config"):
            triton_gemv.gemv(x, w, config=cfg)


def test_empty_shapes():
    x, w = inputs(2, 6, 20, torch.float32)
    assert triton_gemv.gemv(x[:0], w).shape == (0, 6)
    assert torch.equal(triton_gemv.gemv(x[:, :0], w[:, :0]), torch.zeros(2, 6, device=DEV))


def test_linear_small_batch_routes_by_batch(monkeypatch):
    """Leading dims are flattened; up to MAX_BATCH rows go to the kernel, more (or a gradient) to F.linear."""
    calls = []
    real = triton_gemv.gemv
    monkeypatch.setattr(triton_gemv, "gemv", lambda x, w, **kw: calls.append(x.shape) or real(x, w, **kw))
    w = inputs(1, 10, 33, torch.float32)[1]

    x = torch.randn(2, 3, 33, device=DEV)  # 6 rows: the kernel
    y = triton_gemv.linear_small_batch(x, w)
    assert y.shape == (2, 3, 10) and calls == [(6, 33)]
    assert_close_to_reference(y.reshape(6, 10), x.reshape(6, 33), w)

    x = torch.randn(3, 3, 33, device=DEV)  # 9 rows: F.linear
    assert torch.equal(triton_gemv.linear_small_batch(x, w), F.linear(x, w)) and len(calls) == 1

    x = torch.randn(1, 33, device=DEV, requires_grad=True)  # a gradient is wanted: F.linear
    triton_gemv.linear_small_batch(x, w).sum().backward()
    assert len(calls) == 1 and torch.allclose(x.grad, w.sum(0).expand_as(x))

    assert triton_gemv.linear_small_batch(x.detach().double(), w.double()).dtype == torch.float64  # F.linear
    assert len(calls) == 1


def test_gemv_applies_only_to_cuda_small_batches():
    x, w = inputs(3, 8, 16, torch.bfloat16)
    assert not triton_gemv.gemv_applies(x.cpu(), w.cpu())  # never CPU, interpreter or not
    if ON_GPU:
        assert triton_gemv.gemv_applies(x, w)
        assert triton_gemv.gemv_applies(x.view(3, 1, 16), w)
        assert not triton_gemv.gemv_applies(torch.randn(9, 16, device=DEV, dtype=torch.bfloat16), w)
        assert not triton_gemv.gemv_applies(x.float(), w)
        assert not triton_gemv.gemv_applies(x, torch.randn(16, 8, device=DEV, dtype=torch.bfloat16).t())


def test_config_table_and_rule(monkeypatch):
    """The launch settings the GPU gets (not the interpreter's): the table's shapes, float32 halving BLOCK_K,
    the accumulator budget shrinking blocks at larger batches, and the rule's programs-per-SM floor."""
    monkeypatch.setattr(triton_gemv, "_interpreting", lambda: False)
    assert triton_gemv.config_for(2048, 4096, 1) == {**triton_gemv.TUNED[(2048, 4096)], "BLOCK_B": 1}
    assert triton_gemv.config_for(2048, 4096, 1, torch.float32)["BLOCK_K"] == \
        triton_gemv.TUNED[(2048, 4096)]["BLOCK_K"] // 2
    for B in range(1, 9):
        cfg = triton_gemv.config_for(2048, 4096, B)
        assert cfg["BLOCK_B"] == triton.next_power_of_2(B)
        assert cfg["BLOCK_B"] * cfg["BLOCK_N"] * cfg["BLOCK_K"] <= \
            triton_gemv.MAX_ACC_PER_THREAD * 32 * cfg["num_warps"]
    rule = triton_gemv._default_config(3000, 1000, sms=132)
    assert rule["BLOCK_K"] == 1024 and triton.cdiv(3000, rule["BLOCK_N"]) >= 4 * 132
    monkeypatch.setitem(triton_gemv.CONFIG_OVERRIDE, (2048, 4096), dict(BLOCK_N=2, BLOCK_K=512, num_warps=2,
                                                                        num_stages=4))
    assert triton_gemv.config_for(2048, 4096, 3, torch.float32) == dict(BLOCK_B=4, BLOCK_N=2, BLOCK_K=512,
                                                                        num_warps=2, num_stages=4)


def test_custom_op_under_torch_compile(monkeypatch):
    """torch.compile(fullgraph=True) traces around retnet_rag::gemv (its fake gives the shape) and the
    compiled function runs the kernel; opcheck validates the registration (schema, fake, dispatch)."""
    calls = []
    real = triton_gemv.gemv
    monkeypatch.setattr(triton_gemv, "gemv", lambda x, w, **kw: calls.append(x.shape) or real(x, w, **kw))
    x, w = inputs(4, 12, 24, torch.float32, seed=5)
    torch.library.opcheck(torch.ops.retnet_rag.gemv.default, (x, w))
    torch._dynamo.reset()
    compiled = torch.compile(lambda x, w: triton_gemv.linear_small_batch(x, w) * 2, backend="aot_eager",
                             fullgraph=True)
    calls.clear()
    y = compiled(x.view(2, 2, 24), w)
    assert calls == [(4, 24)] and y.shape == (2, 2, 12)
    assert_close_to_reference(y.reshape(4, 12) / 2, x, w)



@pytest.mark.parametrize("token_shift", [False, True])  # fused q, k, v, g products; separate ones
@torch.no_grad()
def test_decode_step_through_the_kernel_equals_the_recurrent_form(monkeypatch, token_shift):
    """retnet.cuda_decode's batch-1 step with every product through the kernel (float32 weights) against
    the model's recurrent form; on the CPU the plan never asks for the kernel, so the test switches it on."""
    import dataclasses

    from retnet.cuda_decode import GraphDecoder
    from retnet.state import RetentionState
    from tests.helpers import make_model, rel_err, states_err

    calls = []
    launch = triton_gemv.gemv
    monkeypatch.setattr(triton_gemv, "gemv", lambda x, w, **kw: calls.append(w.shape) or launch(x, w, **kw))
    model = make_model(seed=14, dtype=torch.float32, token_shift=token_shift).to(DEV)
    state = model(torch.randint(0, 256, (1, 9), device=DEV), mode="chunkwise").state
    dec = GraphDecoder(model, 1, use_graph=False)
    dec.plan = dataclasses.replace(dec.plan, gemv=True)
    dec.load(state)
    g = torch.Generator().manual_seed(3)
    for _ in range(3):
        token = torch.randint(0, model.config.vocab_size, (1,), generator=g).to(DEV)
        ref = model(token[:, None], state=state, mode="recurrent")
        logits = dec.step(token)
        assert rel_err(logits, ref.logits[:, -1]) < 1e-5
        assert states_err(RetentionState(dec.layers, dec.offsets, None, dec.last_inputs), ref.state) < 1e-5
        state = ref.state
    cfg = model.config
    per_layer = 7 if token_shift else 4  # q/k/v/g fused (token shift: four products), o, FFN inputs fused, down
    assert len(calls) == 3 * (cfg.num_layers * per_layer + 1)  # + the LM head
