"""The decode step's lean forms (retnet/ops/reference.py naive_retention_decode, retnet/rotary.py
rotary_cos_sin + rotate) against the general ones, in float64 on odd sizes."""

from __future__ import annotations

import pytest
import torch

from retnet import ops
from retnet.ops.reference import naive_retention_decode, naive_retention_recurrent
from retnet.rotary import apply_rotary, rotary_cos_sin, rotate
from tests.helpers import make_model


@pytest.mark.parametrize("B,H,K,V", [(1, 1, 3, 5), (2, 3, 8, 7), (3, 5, 16, 4)])
def test_decode_step_equals_the_recurrent_form(B, H, K, V):
    g = torch.Generator().manual_seed(B * 100 + H)
    q, k = (torch.randn(B, 1, H, K, generator=g, dtype=torch.float64) for _ in range(2))
    v = torch.randn(B, 1, H, V, generator=g, dtype=torch.float64)
    log_decay = -torch.rand(H, generator=g, dtype=torch.float64)
    state = torch.randn(B, H, K, V, generator=g, dtype=torch.float64)
    before = state.clone()
    o, new = naive_retention_decode(q, k, v, log_decay, state)
    o_ref, new_ref = naive_retention_recurrent(q, k, v, log_decay, state=state)
    assert torch.equal(state, before)  # the incoming state is not changed
    assert torch.allclose(o, o_ref, rtol=1e-12, atol=1e-12) and torch.allclose(new, new_ref, rtol=1e-12, atol=1e-12)
    o_disp, new_disp = ops.recurrent_retention(q, k, v, log_decay, state=state, backend="reference")
    assert torch.equal(o_disp, o) and torch.equal(new_disp, new)  # the dispatcher takes the decode step for T = 1
    with pytest.raises(ValueError, match="expected"):
        naive_retention_decode(q, k, v, log_decay, state[:, :, :-1])


def test_shared_rotary_tables_rotate_like_apply_rotary():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 3, 8, generator=g, dtype=torch.float64)
    positions = torch.tensor([[0, 1, 2, 3, 4], [7, 8, 9, 10, 11]])
    inv_freq = 10000.0 ** (-torch.arange(0, 4, dtype=torch.float64) / 4)
    cos, sin = rotary_cos_sin(positions, inv_freq, x.dtype)
    for style in ("half", "interleaved"):
        assert torch.equal(rotate(x, cos, sin, style), apply_rotary(x, positions, inv_freq, style))


@torch.no_grad()
def test_token_by_token_decoding_equals_chunkwise_reading():
    model = make_model(seed=3)
    ids = torch.randint(0, model.config.vocab_size, (2, 9), generator=torch.Generator().manual_seed(1))
    full = model(ids, mode="chunkwise", chunk_lengths=[4, 5])
    state, logits = None, []
    for t in range(ids.shape[1]):
        out = model(ids[:, t : t + 1], state=state, mode="recurrent")
        state, logits = out.state, [*logits, out.logits]
    assert torch.allclose(torch.cat(logits, 1), full.logits, rtol=1e-10, atol=1e-10)
    for a, b in zip(state.layers, full.state.layers, strict=True):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-10)
