"""The CPU fast path of chunkwise retention (retnet/ops/cpu_chunk.py) against the reference.

Fresh random inputs of awkward sizes, in float64 (to rounding) and float32, with and without an initial
state, chunk layouts shorter and longer than one another; gradients of q, k, v and the state; the decay
tables reused across calls and grown for longer blocks; and the dispatch: "auto" on the CPU takes the
fast path only where it applies.
"""

from __future__ import annotations

import pytest
import torch

from retnet import ops
from retnet.ops import cpu_chunk, reference


def _inputs(B, T, H, K, V, dtype, seed, state=True, grad=False):
    gen = torch.Generator().manual_seed(seed)

    def mk(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64).to(dtype).requires_grad_(grad)

    log_decay = torch.log(1 - 2.0 ** (-1.5 - torch.rand(H, generator=gen, dtype=torch.float64) * 6))
    return mk(B, T, H, K), mk(B, T, H, K), mk(B, T, H, V), log_decay, (mk(B, H, K, V) if state else None)


def _rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-300)).item()


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 2e-5)])
@pytest.mark.parametrize("B,T,H,K,V,lengths,with_state", [
    (1, 37, 3, 16, 24, [37], True),
    (2, 70, 2, 8, 40, [5, 11, 1, 33, 20], False),
    (3, 130, 5, 20, 12, [64, 2, 16, 48], True),
    (1, 1, 1, 4, 4, [1], True),
])
def test_matches_the_reference(dtype, tol, B, T, H, K, V, lengths, with_state):
    q, k, v, g, s0 = _inputs(B, T, H, K, V, dtype, seed=T + H, state=with_state)
    o, st = cpu_chunk.cpu_retention_chunkwise(q, k, v, g, lengths, state=s0)
    ro, rst = reference.naive_retention_chunkwise(q, k, v, g, lengths, state=s0)
    assert o.dtype == q.dtype and o.shape == ro.shape
    assert _rel(o, ro) < tol and _rel(st, rst) < tol


def test_gradients_match_the_reference():
    q, k, v, g, s0 = _inputs(2, 45, 3, 12, 10, torch.float64, seed=7, grad=True)
    lengths = [17, 3, 25]
    w = torch.randn(2, 45, 3, 10, dtype=torch.float64)
    grads = []
    for fn in (cpu_chunk.cpu_retention_chunkwise, reference.naive_retention_chunkwise):
        o, st = fn(q, k, v, g, lengths, state=s0)
        grads.append(torch.autograd.grad((o * w).sum() + st.square().sum(), (q, k, v, s0)))
    assert max(_rel(a, b) for a, b in zip(*grads, strict=True)) < 1e-12


def test_tables_are_reused_and_grown(monkeypatch):
    monkeypatch.setattr(cpu_chunk, "_tables", type(cpu_chunk._tables)())
    made = []
    real = cpu_chunk._make
    monkeypatch.setattr(cpu_chunk, "_make", lambda g, n: made.append(n) or real(g, n))
    q, k, v, g, s0 = _inputs(1, 40, 2, 8, 8, torch.float64, seed=1)
    for lengths in ([20, 20], [10, 30], [40]):
        o, _ = cpu_chunk.cpu_retention_chunkwise(q, k, v, g, lengths, state=s0)
        ro, _ = reference.naive_retention_chunkwise(q, k, v, g, lengths, state=s0)
        assert _rel(o, ro) < 1e-12
    assert made == [20, 30, 40]  # grown for a longer block, reused for shorter ones
    other = torch.log(1 - 2.0 ** (-3 - torch.arange(2, dtype=torch.float64)))  # other decays: another table
    cpu_chunk.cpu_retention_chunkwise(q, k, v, other, [40], state=s0)
    assert made == [20, 30, 40, 40] and len(cpu_chunk._tables) == 2


def test_auto_takes_the_fast_path_only_where_it_applies(monkeypatch):
    calls = []
    real = cpu_chunk.cpu_retention_chunkwise
    monkeypatch.setattr(ops, "cpu_retention_chunkwise", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    q, k, v, g, s0 = _inputs(2, 20, 2, 8, 8, torch.float64, seed=3)
    ref, _ = reference.naive_retention_chunkwise(q, k, v, g, [20], state=s0)
    o, _ = ops.chunk_retention(q, k, v, g, [20], state=s0)  # auto, CPU: fast path
    assert calls == [1] and _rel(o, ref) < 1e-12
    ops.chunk_retention(q, k, v, g, [20], state=s0, backend="reference")  # asked for the reference
    ops.chunk_retention(q, k, v, g, [20], state=s0, mask=torch.ones(2, 20, dtype=torch.bool))  # padding
    ops.chunk_retention(q, k, v, g.clone().requires_grad_(True), [20], state=s0)  # a learned decay
    assert calls == [1]


def test_tables_stay_within_their_budget(monkeypatch):
    monkeypatch.setattr(cpu_chunk, "_tables", type(cpu_chunk._tables)())
    one = 3 * 32 * 32 * 8 + 3 * 33 * 8  # D and the powers of 3 heads at 32 tokens, float64
    monkeypatch.setattr(cpu_chunk, "MAX_TOTAL_BYTES", 2 * one)
    q, k, v, _, s0 = _inputs(1, 32, 3, 4, 4, torch.float64, seed=2)
    for i in range(4):  # four layers' decays: only the two most recent tables are kept
        g = torch.log(1 - 2.0 ** (-2 - i - torch.arange(3, dtype=torch.float64)))
        o, _ = cpu_chunk.cpu_retention_chunkwise(q, k, v, g, [32], state=s0)
        ro, _ = reference.naive_retention_chunkwise(q, k, v, g, [32], state=s0)
        assert _rel(o, ro) < 1e-12
    assert len(cpu_chunk._tables) == 2
    monkeypatch.setattr(cpu_chunk, "MAX_TABLE_BYTES", one - 1)  # too large to keep at all: computed, not kept
    cpu_chunk._tables.clear()
    cpu_chunk.cpu_retention_chunkwise(q, k, v, torch.log(torch.full((3,), 0.9, dtype=torch.float64)), [32], state=s0)
    assert len(cpu_chunk._tables) == 0
