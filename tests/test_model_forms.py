"""Model level: the three modes give the same logits and the same final state, with and without a prior state."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import make_model
from retnet import RetNetConfig, RetNetForCausalLM

MODEL64 = make_model(seed=1)
CONVENTIONS = [
    dict(),
    dict(rotary_style="half", rotary_grid="power", qk_scale_on="q", ffn_activation="gelu"),
    dict(group_norm_affine=False, tie_embeddings=True, embed_scale=5.0),
]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def states_err(s1, s2) -> float:
    assert torch.equal(s1.offsets, s2.offsets)
    return max(rel_err(a, b) for a, b in zip(s1.layers, s2.layers, strict=True))


@st.composite
def model_case(draw):
    B = draw(st.integers(1, 3))
    T = draw(st.integers(1, 30))
    cuts = sorted(draw(st.sets(st.integers(1, max(1, T - 1)), max_size=5)))
    edges = [0, *[c for c in cuts if c < T], T]
    lengths = [b - a for a, b in zip(edges, edges[1:], strict=False)]
    prior = draw(st.integers(0, 12))
    seed = draw(st.integers(0, 10**6))
    return B, T, lengths, prior, seed


@settings(max_examples=30, deadline=None)
@given(model_case())
def test_modes_agree_float64(case):
    B, T, lengths, prior, seed = case
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 256, (B, T), generator=g)
    state = None
    if prior:
        state = MODEL64(torch.randint(0, 256, (B, prior), generator=g), mode="chunkwise").state
    ref = MODEL64(ids, state=state.clone() if state else None, mode="recurrent")
    for kwargs in (dict(mode="parallel"), dict(mode="chunkwise", chunk_lengths=lengths),
                   dict(mode="chunkwise", chunk_size=4)):
        out = MODEL64(ids, state=state.clone() if state else None, **kwargs)
        assert rel_err(out.logits, ref.logits) < 1e-10, kwargs
        assert states_err(out.state, ref.state) < 1e-10, kwargs


@pytest.mark.parametrize("conventions", CONVENTIONS)
def test_modes_agree_float32(conventions):
    model = make_model(seed=2, dtype=torch.float32, std=0.2, **conventions)
    ids = torch.randint(0, 256, (2, 70))
    prior = model(torch.randint(0, 256, (2, 9)), mode="recurrent").state
    ref = model.double()(ids, state=prior.to("cpu"), mode="recurrent")  # float64 reference of the same weights
    model = model.float()
    for kwargs in (dict(mode="parallel"), dict(mode="recurrent"), dict(mode="chunkwise", chunk_lengths=[5, 40, 25])):
        out = model(ids, state=prior.clone(), **kwargs)
        assert out.logits.dtype == torch.float32
        assert rel_err(out.logits.double(), ref.logits) < 1e-5, kwargs
        assert states_err(out.state, ref.state) < 1e-5, kwargs


def test_prefill_chunkwise_then_decode_recurrent_equals_one_pass():
    ids = torch.randint(0, 256, (1, 40))
    whole = MODEL64(ids, mode="parallel")
    pre = MODEL64(ids[:, :31], mode="chunkwise", chunk_lengths=[10, 21])
    logits = [pre.logits]
    state = pre.state
    for t in range(31, 40):
        step = MODEL64(ids[:, t:t + 1], state=state, mode="recurrent")
        logits.append(step.logits)
        state = step.state
    assert rel_err(torch.cat(logits, dim=1), whole.logits) < 1e-10
    assert states_err(state, whole.state) < 1e-10
    assert state.offsets.tolist() == [40]


@pytest.mark.parametrize("side", ["left", "right", "both"])
def test_padding_never_leaks_into_the_state(side):
    lengths = [7, 3, 11]
    T = 14
    rows = [torch.randint(0, 256, (n,)) for n in lengths]
    prior = MODEL64(torch.randint(0, 256, (3, 5)), mode="chunkwise").state
    ids = torch.zeros(3, T, dtype=torch.long)
    mask = torch.zeros(3, T, dtype=torch.bool)
    for i, row in enumerate(rows):
        start = {"left": T - len(row), "right": 0, "both": (T - len(row)) // 2}[side]
        ids[i, start:start + len(row)] = row
        mask[i, start:start + len(row)] = True
    for mode in ("parallel", "recurrent", "chunkwise"):
        out = MODEL64(ids, state=prior.clone(), mode=mode, attention_mask=mask)
        for i, row in enumerate(rows):
            single = MODEL64(row[None], state=_row(prior, i), mode="recurrent")
            assert states_err(_row(out.state, i), single.state) < 1e-10, (mode, i)
            assert rel_err(out.logits[i][mask[i]], single.logits[0]) < 1e-10, (mode, i)


def _row(state, i):
    from retnet import RetentionState

    return RetentionState([t[i:i + 1].clone() for t in state.layers], state.offsets[i:i + 1].clone(), state.fingerprint)


def test_mode_errors_are_clear():
    ids = torch.randint(0, 256, (1, 6))
    with pytest.raises(ValueError, match="unknown mode"):
        MODEL64(ids, mode="fast")
    with pytest.raises(ValueError, match="only apply to mode='chunkwise'"):
        MODEL64(ids, mode="parallel", chunk_lengths=[6])
    with pytest.raises(ValueError, match="sum to 5"):
        MODEL64(ids, mode="chunkwise", chunk_lengths=[2, 3])
    with pytest.raises(ValueError, match="state holds 1 sequences"):
        MODEL64(torch.randint(0, 256, (2, 6)), state=MODEL64(ids).state)


def test_gradients_flow_through_chunkwise():
    model = RetNetForCausalLM(RetNetConfig.from_preset("tiny"))
    ids = torch.randint(0, 256, (2, 20))
    logits = model(ids, mode="chunkwise", chunk_size=8).logits
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 256), ids[:, 1:].reshape(-1))
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
