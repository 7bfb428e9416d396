"""A bf16 model stays close to its float64 self (issue 15), on the reference path (CPU).

The bar is flash-linear-attention's own bf16 error (~0.04 of the largest logit on an H200) on the
issue's model: a random fla RetNet, hidden 512, 4 layers, 4 heads (K=128, V=256), 512 tokens,
weights N(0, 1/fan_in), norm weights U(0.5, 1.5). Ours was 0.665 there; rounding q and k once,
after a float32 scale and rotation, and running the output norm and gate in float32 made it 0.039.

Single positions can still be far off for some inputs: at the first few tokens a head's output is a
sum of a handful of terms that can nearly cancel, and the per-head norm then magnifies bf16 rounding
of q, k and v (|o| 50x below its median was seen at t=1). That is the function's conditioning, not
a rounding step we add, so the fla-free tests below bound the error over all logits (norm ratio).
"""

from __future__ import annotations

import tempfile

import pytest
import torch

from retnet import RetNetConfig, RetNetForCausalLM

TOLERANCE = 0.05


def max_rel(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.double() - want).abs().max() / want.abs().max()).item()


def norm_rel(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.double() - want).norm() / want.norm()).item()


def as_bf16(model: RetNetForCausalLM) -> RetNetForCausalLM:
    low = RetNetForCausalLM(model.config)
    low.load_state_dict(model.state_dict())
    return low.to(torch.bfloat16).eval()


def unit_scale_model(seed: int, **overrides) -> RetNetForCausalLM:
    torch.manual_seed(seed)
    cfg = RetNetConfig(**{**dict(vocab_size=1000, hidden_size=512, num_layers=4, num_heads=4, head_k_dim=128,
                                  head_v_dim=256, ffn_dim=768, rotary_style="half", rotary_grid="power",
                                  qk_scale_on="q"), **overrides})
    model = RetNetForCausalLM(cfg)
    with torch.no_grad():  # weights for unit-scale activations; norm weights away from 1
        for p in model.parameters():
            if p.dim() == 1:
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0.0, p.shape[1] ** -0.5)
    return model.double().eval()


@pytest.mark.slow  # imports fla (most of a minute) and runs a 512-wide model over 512 tokens in float64
def test_the_issue_model_in_bf16_is_within_fla_error():
    fla_models = pytest.importorskip("fla.models")
    import retnet.convert  # noqa: F401  (registers the fla format)

    torch.manual_seed(0)  # the model and inputs of benchmarks/fla_parity_gpu.py's defaults
    fla = fla_models.RetNetForCausalLM(fla_models.RetNetConfig(hidden_size=512, num_hidden_layers=4, num_heads=4,
                                                              vocab_size=32000, fuse_cross_entropy=False))
    with torch.no_grad():
        for p in fla.parameters():
            if p.dim() == 1:
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0.0, p.shape[1] ** -0.5)
    ids = torch.randint(0, 32000, (1, 512), generator=torch.Generator().manual_seed(1))
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        fla.save_pretrained(tmp, safe_serialization=True)
        want = RetNetForCausalLM.from_pretrained(tmp, dtype=torch.float64)(ids, mode="parallel").logits
        low = RetNetForCausalLM.from_pretrained(tmp, dtype=torch.bfloat16)
        for mode in ("parallel", "chunkwise"):
            assert max_rel(low(ids, mode=mode).logits, want) <= TOLERANCE


@pytest.mark.slow  # float64 forward passes of a 512-wide model over 512 tokens
@pytest.mark.parametrize("seed, overrides", [
    (0, {}),
    (1, dict(token_shift=True, rotary_style="interleaved", rotary_grid="linspace", qk_scale_on="k")),
    (2, dict(tie_embeddings=True)),
])
def test_bf16_logits_stay_near_float64(seed, overrides):
    model = unit_scale_model(seed, **overrides)
    ids = torch.randint(0, model.config.vocab_size, (1, 512), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        assert norm_rel(as_bf16(model)(ids, mode="chunkwise").logits, model(ids, mode="chunkwise").logits) <= TOLERANCE


@pytest.mark.slow  # 48 recurrent steps of the 512-wide model in float64 and bf16
def test_bf16_decode_agrees_with_bf16_prefill_and_float64():
    model = unit_scale_model(3)
    low = as_bf16(model)
    ids = torch.randint(0, model.config.vocab_size, (1, 48), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        whole = low(ids, mode="chunkwise").logits
        steps = low(ids, mode="recurrent").logits
        want = model(ids, mode="chunkwise").logits
    assert whole.dtype == steps.dtype == torch.bfloat16
    assert norm_rel(steps, whole.double()) <= TOLERANCE
    assert norm_rel(steps, want) <= TOLERANCE


def test_retention_reads_q_k_v_in_one_dtype_under_autocast(monkeypatch):
    """Training runs float32 weights under bf16 autocast: the projections come out in bf16 while x stays
    float32. q and k must reach the retention op in v's dtype (the Triton backward tiles by dtype)."""
    import retnet.ops as ops

    model = unit_scale_model(4, hidden_size=64, num_heads=2, head_k_dim=16, head_v_dim=32, ffn_dim=96).float()
    seen = []
    real = ops.chunk_retention

    def spy(q, k, v, *args, **kwargs):
        seen.append((q.dtype, k.dtype, v.dtype))
        return real(q, k, v, *args, **kwargs)

    monkeypatch.setattr(ops, "chunk_retention", spy)
    ids = torch.randint(0, model.config.vocab_size, (2, 20), generator=torch.Generator().manual_seed(4))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(ids, mode="chunkwise").logits.float().sum().backward()
    assert seen and all(dt == (torch.bfloat16,) * 3 for dt in seen)
