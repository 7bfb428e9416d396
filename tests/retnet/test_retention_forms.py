"""The three retention forms agree: parallel, recurrent (token by token), chunkwise (fixed and variable)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from retnet.ops import chunk_lengths_for, naive_retention_chunkwise, naive_retention_parallel, naive_retention_recurrent


def paper_log_decay(H: int, dtype=torch.float64) -> torch.Tensor:
    return torch.tensor([math.log(1 - 2 ** (-5 - h)) for h in range(H)], dtype=dtype)


def naive_retention(q, k, v, log_decay, state=None):
    """The definition, written out with explicit loops over batch, head and time."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    o = torch.zeros(B, T, H, V, dtype=torch.float64)
    final = torch.zeros(B, H, K, V, dtype=torch.float64)
    for b in range(B):
        for h in range(H):
            gamma = math.exp(log_decay[h])
            S = torch.zeros(K, V, dtype=torch.float64) if state is None else state[b, h].double().clone()
            for t in range(T):
                S = gamma * S + torch.outer(k[b, t, h].double(), v[b, t, h].double())
                o[b, t, h] = q[b, t, h].double() @ S
            final[b, h] = S
    return o, final


def random_partition(draw, total: int) -> list[int]:
    cuts = sorted(draw(st.sets(st.integers(1, max(1, total - 1)), max_size=min(6, total - 1))))
    edges = [0, *[c for c in cuts if c < total], total]
    return [b - a for a, b in zip(edges, edges[1:], strict=False)]


@st.composite
def retention_case(draw):
    B = draw(st.integers(1, 3))
    T = draw(st.integers(1, 33))
    H = draw(st.integers(1, 3))
    K = draw(st.integers(1, 9))
    V = draw(st.integers(1, 9))
    seed = draw(st.integers(0, 2**31 - 1))
    with_state = draw(st.booleans())
    with_mask = draw(st.booleans())
    lengths = random_partition(draw, T)
    return B, T, H, K, V, seed, with_state, with_mask, lengths


def make_inputs(B, T, H, K, V, seed, with_state, with_mask, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(B, T, H, K, generator=g, dtype=dtype) for _ in range(2))
    v = torch.randn(B, T, H, V, generator=g, dtype=dtype)
    state = torch.randn(B, H, K, V, generator=g, dtype=dtype) if with_state else None
    mask = torch.rand(B, T, generator=g) > 0.3 if with_mask else None
    return q, k, v, state, mask


def assert_close(a, b, rel):
    scale = max(a.abs().max().item(), b.abs().max().item(), 1e-30)
    assert (a - b).abs().max().item() <= rel * scale, f"max diff {(a - b).abs().max().item():.3e} vs scale {scale:.3e}"


@settings(max_examples=60, deadline=None)
@given(retention_case())
def test_forms_agree_in_float64(case):
    B, T, H, K, V, seed, with_state, with_mask, lengths = case
    q, k, v, state, mask = make_inputs(B, T, H, K, V, seed, with_state, with_mask)
    ld = paper_log_decay(H)
    o_rec, s_rec = naive_retention_recurrent(q, k, v, ld, state, mask)
    for o, s in (naive_retention_parallel(q, k, v, ld, state, mask),
                 naive_retention_chunkwise(q, k, v, ld, lengths, state, mask),
                 naive_retention_chunkwise(q, k, v, ld, chunk_lengths_for(T, 4), state, mask)):
        assert_close(o, o_rec, 1e-10)
        assert_close(s, s_rec, 1e-10)


@pytest.mark.parametrize("T", [1, 7, 23])
def test_recurrent_matches_explicit_loops(T):
    q, k, v, state, _ = make_inputs(2, T, 2, 3, 5, seed=T, with_state=True, with_mask=False)
    ld = paper_log_decay(2)
    o, s = naive_retention_recurrent(q, k, v, ld, state)
    o_ref, s_ref = naive_retention(q, k, v, ld, state)
    assert_close(o, o_ref, 1e-12)
    assert_close(s, s_ref, 1e-12)


def test_float32_forms_within_1e5():
    q, k, v, state, mask = make_inputs(2, 301, 4, 16, 24, seed=3, with_state=True, with_mask=True,
                                       dtype=torch.float32)
    ld = paper_log_decay(4, torch.float32)
    o64, s64 = naive_retention_recurrent(q.double(), k.double(), v.double(), ld.double(), state.double(), mask)
    for o, s in (naive_retention_parallel(q, k, v, ld, state, mask),
                 naive_retention_chunkwise(q, k, v, ld, [50, 1, 120, 130], state, mask),
                 naive_retention_recurrent(q, k, v, ld, state, mask)):
        assert o.dtype == torch.float32 and s.dtype == torch.float32
        assert_close(o.double(), o64, 1e-5)
        assert_close(s.double(), s64, 1e-5)


def test_long_sequence_has_no_overflow():
    # 4000 tokens: gamma**4000 underflows for the fastest head; log-space differences must stay finite.
    q, k, v, _, _ = make_inputs(1, 4000, 2, 4, 4, seed=1, with_state=False, with_mask=False, dtype=torch.float32)
    ld = paper_log_decay(2, torch.float32)
    o_par, s_par = naive_retention_parallel(q, k, v, ld)
    o_chk, s_chk = naive_retention_chunkwise(q, k, v, ld, chunk_lengths_for(4000, 512))
    assert torch.isfinite(o_par).all() and torch.isfinite(s_par).all()
    assert_close(o_chk, o_par, 1e-5)
    assert_close(s_chk, s_par, 1e-5)


def test_padding_neither_decays_nor_writes_the_state():
    q, k, v, state, _ = make_inputs(1, 9, 2, 3, 4, seed=5, with_state=True, with_mask=False)
    ld = paper_log_decay(2)
    real = torch.tensor([[0, 1, 1, 0, 0, 1, 1, 1, 0]], dtype=torch.bool)
    o_masked, s_masked = naive_retention_chunkwise(q, k, v, ld, [4, 5], state, real)
    idx = real[0].nonzero().squeeze(1)
    o_packed, s_packed = naive_retention_recurrent(q[:, idx], k[:, idx], v[:, idx], ld, state)
    assert_close(s_masked, s_packed, 1e-12)
    assert_close(o_masked[:, idx], o_packed, 1e-12)


def test_bad_chunk_lengths_are_rejected():
    q, k, v, _, _ = make_inputs(1, 10, 1, 2, 2, seed=0, with_state=False, with_mask=False)
    ld = paper_log_decay(1)
    with pytest.raises(ValueError, match="sum to 9"):
        naive_retention_chunkwise(q, k, v, ld, [4, 5])
    with pytest.raises(ValueError, match="positive"):
        naive_retention_chunkwise(q, k, v, ld, [10, 0])
