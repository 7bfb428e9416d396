"""Model level: the three modes give the same logits and the same final state, with and without a prior state."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings

from retnet import RetNetConfig, RetNetForCausalLM
from tests.helpers import (
    PAD_SIDES,
    assert_modes_agree,
    assert_padding_matches_rows,
    make_model,
    model_case,
    rel_err,
    states_err,
)

MODEL64 = make_model(seed=1)
CONVENTIONS = [
    dict(),
    dict(rotary_style="half", rotary_grid="power", qk_scale_on="q", ffn_activation="gelu"),
    dict(group_norm_affine=False, tie_embeddings=True, embed_scale=5.0),
    dict(token_shift=True),
]


@settings(max_examples=30, deadline=None)
@given(model_case())
def test_modes_agree_float64(case):
    assert_modes_agree(MODEL64, case)


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


@pytest.mark.parametrize("side", PAD_SIDES)
def test_padding_never_leaks_into_the_state(side):
    assert_padding_matches_rows(MODEL64, side)


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
