"""Int8 weights for CPU inference (retnet/quantize.py): exact integer products, closeness to the float
model, per-token inputs (so chunkwise and token-by-token reading agree), the float model's fingerprint,
and the choice "auto" / "none" / "int8"."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from retnet import RetentionState
from retnet import quantize as Q
from retnet.generation import generate
from tests.helpers import make_model

pytestmark = pytest.mark.skipif(not Q.int8_available(), reason="this torch cannot multiply int8 matrices on the CPU")


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    """A tiny random Llama converted from a GGUF (the reader's path), float32."""
    pytest.importorskip("gguf")
    from retnet.convert.llama_gguf import from_llama_gguf

    from .tiny_llama_gguf import write_tiny_llama_gguf

    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    write_tiny_llama_gguf(path, layers=3, hidden=96, heads=4, kv_heads=2, ffn=160, seed=3)
    return from_llama_gguf(path, dtype=torch.float32, with_sha256=False).eval()


def test_int8_linear_computes_the_dequantized_product_exactly():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(40, 24, generator=g)
    x = torch.randn(7, 24, generator=g) * torch.linspace(0.1, 10, 7)[:, None]  # rows of very different scales
    layer = Q.Int8Linear(w)
    xq, s, z = Q.quantize_rows(x)
    assert xq.dtype == torch.int8 and int(xq.min()) >= -128 and int(xq.max()) <= 127
    want = (s.double() * xq.double() + z.double()) @ layer.dequantized().double().t()  # what int8 stands for
    assert torch.allclose(layer(x).double(), want, rtol=1e-5, atol=1e-5 * want.abs().max().item())
    # ... and that is close to the float product: per-row scales keep every row's error small.
    ref = x @ w.t()
    row_err = (layer(x) - ref).norm(dim=1) / ref.norm(dim=1)
    assert row_err.max() < 0.03, row_err
    assert (w - layer.dequantized()).abs().max() <= w.abs().amax(1).max() / 254 + 1e-6


def test_each_token_is_quantized_on_its_own():
    """One outlier token must not change another token's result (one scale per row, not per call)."""
    g = torch.Generator().manual_seed(1)
    layer = Q.Int8Linear(torch.randn(16, 32, generator=g))
    x = torch.randn(3, 32, generator=g)
    alone = layer(x[:1])
    with_outlier = layer(torch.cat([x[:1], 1e4 * x[1:]]))
    assert torch.equal(with_outlier[:1], alone)


def test_fused_siblings_give_the_results_of_separate_layers():
    g = torch.Generator().manual_seed(2)
    weights = [torch.randn(n, 16, generator=g) for n in (8, 5, 8)]
    group = Q._FusedProduct(weights)
    members = [Q.Int8Linear(group=group, member=i) for i in range(3)]
    alone = [Q.Int8Linear(w) for w in weights]
    x = torch.randn(2, 3, 16, generator=g)
    for m, a in zip(members, alone, strict=True):
        assert m(x).shape == (2, 3, m.out_features)
        assert torch.allclose(m(x), a(x), rtol=1e-6, atol=1e-6)
        assert torch.equal(m.weight_int8, a.weight_int8)
    x.mul_(3.0)  # same tensor object, new contents: the kept product must not be reused
    assert torch.allclose(members[1](x), alone[1](x), rtol=1e-6, atol=1e-6)
    first = members[0](x)
    first.zero_()  # a caller may write into what it got; asking again computes afresh
    assert torch.allclose(members[0](x), alone[0](x), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="not both"):
        Q.Int8Linear(weights[0], group=group)


def test_quantize_model_fuses_only_layers_that_read_one_input(tiny_llama):
    q = Q.quantize_model(copy.deepcopy(tiny_llama), "int8")
    ret, ffn = q.layers[0].retention, q.layers[0].ffn
    assert ret.q_proj._group is ret.k_proj._group is ret.v_proj._group is not None
    assert ffn.act_proj._group is ffn.lin_proj._group is not None and ffn.down_proj._group is None
    assert ret.o_proj._group is None and q.lm_head._group is None
    shifted = Q.quantize_model(make_model(dtype=torch.float32, token_shift=True), "int8")
    assert shifted.layers[0].retention.q_proj._group is None  # token shift: q, k, v read different inputs


@torch.no_grad()
def test_quantized_tiny_model_stays_close_to_float(tiny_llama):
    """Logits and greedy tokens of the int8 model against the float one. The tiny random model is a harsh
    case (int8 KL ~0.02 per token, like the real reader's 0.02-0.03 in benchmarks/results/reader_cpu.md)."""
    fp = copy.deepcopy(tiny_llama)
    q = Q.quantize_model(copy.deepcopy(tiny_llama), "int8")
    assert Q.quantization_of(q) == "int8" and Q.quantization_of(fp) == "none"
    assert not any(isinstance(m, torch.nn.Linear) for m in q.modules())
    for seed in range(3):
        ids = torch.randint(0, fp.config.vocab_size, (2, 40), generator=torch.Generator().manual_seed(seed))
        lf = fp(ids, mode="chunkwise", chunk_lengths=[13, 27]).logits
        lq = q(ids, mode="chunkwise", chunk_lengths=[13, 27]).logits
        kl = F.kl_div(lq.log_softmax(-1), lf.log_softmax(-1), log_target=True, reduction="none").sum(-1)
        assert kl.mean() < 0.04, kl.mean()
        assert (lq - lf).abs().max() < 0.8 * lf.std()
        assert (lq.argmax(-1) == lf.argmax(-1)).float().mean() > 0.9
        out_f, _ = generate(fp, ids[:1, :12], max_new_tokens=16)
        out_q, _ = generate(q, ids[:1, :12], max_new_tokens=16)
        assert out_q[0, :4].tolist() == out_f[0, :4].tolist()  # greedy: the same first tokens
        if seed == 0:
            assert out_q.tolist() == out_f.tolist()  # and here all 16


@torch.no_grad()
def test_quantized_model_reads_chunkwise_and_token_by_token_alike(tiny_llama):
    """Per-token input scales make each token's products independent of how the prompt is cut: reading
    chunkwise or token by token differs only where a float rounding flips an int8 step, far less than
    int8 differs from float (one scale per call would differ as much again)."""
    fp = copy.deepcopy(tiny_llama)
    q = Q.quantize_model(copy.deepcopy(tiny_llama), "int8")
    ids = torch.randint(0, q.config.vocab_size, (1, 24), generator=torch.Generator().manual_seed(1))
    chunk = q(ids, mode="chunkwise", chunk_lengths=[9, 15]).logits
    state, logits = None, []
    for t in range(ids.shape[1]):
        out = q(ids[:, t : t + 1], state=state, mode="recurrent")
        state = out.state
        logits.append(out.logits)
    step = torch.cat(logits, dim=1)
    int8_error = (fp(ids, mode="chunkwise", chunk_lengths=[9, 15]).logits - chunk).abs().max()
    # the first token has no history: the same int8 products, up to float matmuls of other shapes
    assert (step[:, 0] - chunk[:, 0]).abs().max() < 1e-4 * int8_error
    assert (step - chunk).abs().max() < 0.5 * int8_error


@torch.no_grad()
def test_quantized_model_keeps_the_float_fingerprint(tiny_llama, tmp_path):
    fp = copy.deepcopy(tiny_llama)
    q = Q.quantize_model(copy.deepcopy(tiny_llama), "int8")
    assert q.fingerprint() == fp.fingerprint()
    _, state = q(torch.tensor([[5, 6, 7]]), mode="chunkwise")
    state.save(tmp_path / "s.safetensors")
    loaded = RetentionState.load(tmp_path / "s.safetensors", model=fp)  # a state read by int8 continues in float
    assert torch.equal(loaded.layers[0], state.layers[0])


def test_choice_auto_none_int8(tiny_llama, monkeypatch):
    m = copy.deepcopy(tiny_llama)
    monkeypatch.delenv(Q.ENV_VAR, raising=False)
    assert Q.resolve(None, m) == "none"  # small model: auto keeps float
    monkeypatch.setattr(Q, "AUTO_MIN_LINEAR_PARAMS", 0)
    assert Q.resolve("auto", m) == "int8"
    assert Q.resolve("auto", m.double()) == "none"  # float64 (tests, references) is never quantized by auto
    assert Q.resolve("none", m) == "none"
    monkeypatch.setenv(Q.ENV_VAR, "none")
    assert Q.resolve(None, m) == "none"
    monkeypatch.setenv(Q.ENV_VAR, "int8")
    assert Q.resolve(None, m) == "int8"
    with pytest.raises(ValueError, match="unknown quantization"):
        Q.resolve("int4", m)
    Q.quantize_model(m, "int8")
    assert Q.resolve("int8", m) == "none"  # already quantized: nothing more to do
    assert Q.quantize_model(m, "int8") is m
    with pytest.raises(ValueError, match="CPU"):
        Q.resolve("int8", copy.deepcopy(tiny_llama).to("meta"))


def test_int8_refuses_other_dtypes_and_biases():
    layer = Q.Int8Linear(torch.randn(4, 8))
    with pytest.raises(TypeError, match="float32"):
        layer(torch.randn(2, 8, dtype=torch.float64))
    model = torch.nn.Sequential(torch.nn.Linear(8, 4))
    with pytest.raises(ValueError, match="bias"):
        Q.quantize_model(model, "int8")
