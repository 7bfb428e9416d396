"""retnet.fused_projections: same-input projections laid out as one matrix, in place.

Fusing must change nothing a user can see: values, parameter objects, names, saved checkpoints and the
decode step's results; it must not move weights a second time (a captured graph reads their addresses),
and loading new weights afterwards must reach the fused matrices. The decode step's equality with the
recurrent form, fused (the default), is test_cuda_decode.py's; here fused and unfused steps are compared
with each other.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from retnet import RetNetForCausalLM
from retnet.cuda_decode import GraphDecoder
from retnet.fused_projections import fuse_projections
from tests.helpers import make_model, rel_err

CONFIGS = {
    "default": {},
    "no_gate": dict(output_gate=False, ffn_activation="gelu"),
    "token_shift": dict(token_shift=True),
}


def _snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_fusing_keeps_values_names_and_parameters(name):
    model = make_model(seed=5, dtype=torch.float64, **CONFIGS[name])
    before = _snapshot(model)
    params = dict(model.named_parameters())
    fused = fuse_projections(model)
    assert dict(model.named_parameters()).keys() == params.keys()
    assert all(p is params[n] for n, p in model.named_parameters())  # optimizers keep their parameters
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    for block, layer in zip(model.layers, fused, strict=True):
        attn, ffn = block.retention, block.ffn
        if CONFIGS[name].get("token_shift"):
            assert layer.attention is None  # q, k and v read different inputs
        else:
            group = [attn.q_proj, attn.k_proj, attn.v_proj] + ([attn.g_proj] if attn.g_proj is not None else [])
            assert torch.equal(layer.attention, torch.cat([m.weight for m in group]))
            assert layer.attention_split == [m.weight.shape[0] for m in group]
            assert layer.attention.data_ptr() == attn.q_proj.weight.data_ptr()  # a view, not a copy
        assert torch.equal(layer.ffn, torch.cat([ffn.act_proj.weight, ffn.lin_proj.weight]))
        assert layer.ffn.data_ptr() == ffn.act_proj.weight.data_ptr()


def test_fusing_twice_moves_nothing():
    model = make_model(seed=6, dtype=torch.float64)
    first = fuse_projections(model)
    pointers = [p.data_ptr() for p in model.parameters()]
    second = fuse_projections(model)
    assert [p.data_ptr() for p in model.parameters()] == pointers
    assert [f.attention.data_ptr() for f in first] == [f.attention.data_ptr() for f in second]


def test_loaded_weights_reach_the_fused_matrices():
    model = make_model(seed=7, dtype=torch.float64)
    fused = fuse_projections(model)
    other = make_model(seed=8, dtype=torch.float64)
    model.load_state_dict(other.state_dict())
    attn = other.layers[1].retention
    assert torch.equal(fused[1].attention[: attn.q_proj.weight.shape[0]], attn.q_proj.weight)
    assert torch.equal(fused[1].ffn[-other.config.ffn_dim:], other.layers[1].ffn.lin_proj.weight)


def test_a_fused_model_saves_and_loads(tmp_path):
    model = make_model(seed=9, dtype=torch.float32)
    fuse_projections(model)
    model.save_pretrained(tmp_path)  # safetensors refuses tensors sharing memory: views are copied out
    loaded = RetNetForCausalLM.from_pretrained(tmp_path)
    ours = model.state_dict()
    assert all(torch.equal(v, ours[k]) for k, v in loaded.state_dict().items())


class _Wrapped(nn.Module):
    """A projection that is not a plain nn.Linear (as a quantized or adapter layer would be)."""

    def __init__(self, inner: nn.Linear):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x)


def test_layers_that_are_not_plain_linear_are_left_alone():
    model = make_model(seed=10, dtype=torch.float64)
    model.layers[0].retention.k_proj = _Wrapped(model.layers[0].retention.k_proj)
    fused = fuse_projections(model)
    assert fused[0].attention is None and fused[0].ffn is not None
    assert fused[1].attention is not None


@pytest.mark.parametrize("name", sorted(CONFIGS))
@torch.no_grad()
def test_fused_and_unfused_decode_steps_agree(name):
    model = make_model(seed=12, dtype=torch.float64, **CONFIGS[name])
    B = 3
    state = model(torch.randint(0, 256, (B, 11)), mode="chunkwise").state
    plain, fused = GraphDecoder(model, B, fuse=False), GraphDecoder(model, B, fuse=True)
    assert plain.plan.fused is None and fused.plan.fused is not None
    plain.load(state)
    fused.load(state)
    g = torch.Generator().manual_seed(4)
    for mask in (None, torch.tensor([True, False, True]), None):
        tok = torch.randint(0, model.config.vocab_size, (B,), generator=g)
        a, b = plain.step(tok, mask), fused.step(tok, mask)
        assert rel_err(b, a) < 1e-12
        assert max(rel_err(x, y) for x, y in zip(fused.layers, plain.layers, strict=True)) < 1e-12


def test_the_fuse_setting_reaches_automatic_decoders(monkeypatch):
    from retnet import cuda_decode

    monkeypatch.setattr(cuda_decode, "_fuse", False)  # restored afterwards, also after configure()
    model = make_model(seed=13, dtype=torch.float64)
    assert cuda_decode.decoder_for(model, 1).plan.fused is None
    cuda_decode.configure(fuse=True)
    assert cuda_decode.decoder_for(model, 1).plan.fused is not None
