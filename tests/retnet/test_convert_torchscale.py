"""The torchscale converter against torchscale 0.3.0's own RetNetDecoder forward (parallel, incremental, chunkwise).

torchscale imports `timm.models.layers.drop_path`; timm needs torchvision, which has no CPU build, so a
one-function stand-in for timm is put in sys.modules while torchscale is imported (and removed after).
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
import types

import pytest
import torch
from safetensors.torch import save_file

from retnet import CheckpointError, RetNetForCausalLM
from retnet.convert import convert_checkpoint, from_torchscale, torchscale_config

pytest.importorskip("fairscale")
pytestmark = pytest.mark.slow  # builds torchscale reference models


def drop_path(x: torch.Tensor, drop_prob: float = 0.0, training: bool = False, scale_by_keep: bool = True):
    """Stochastic depth: zero whole samples with probability drop_prob, rescale the rest (timm's contract)."""
    if drop_prob == 0.0 or not training:
        return x
    keep = 1.0 - drop_prob
    mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
    if keep > 0.0 and scale_by_keep:
        mask = mask / keep
    return x * mask


def _import_torchscale():
    if importlib.util.find_spec("torchscale") is None:
        pytest.skip("torchscale is not installed (CI installs torchscale==0.3.0 --no-deps)", allow_module_level=True)
    fakes = {}
    if importlib.util.find_spec("timm") is None:
        timm, models, layers = (types.ModuleType(n) for n in ("timm", "timm.models", "timm.models.layers"))
        layers.drop_path = drop_path
        timm.models, models.layers = models, layers
        fakes = {"timm": timm, "timm.models": models, "timm.models.layers": layers}
    sys.modules.update(fakes)
    try:
        from torchscale.architecture.config import RetNetConfig as TSConfig
        from torchscale.architecture.retnet import RetNetDecoder
    finally:
        for name, module in fakes.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]
    return TSConfig, RetNetDecoder


TSConfig, RetNetDecoder = _import_torchscale()

VOCAB, T = 50, 13
CONFIGS = {
    "2heads-gelu-v48-noscale": dict(decoder_embed_dim=32, decoder_value_embed_dim=48, decoder_retention_heads=2,
                                    decoder_ffn_embed_dim=64, decoder_layers=2, activation_fn="gelu",
                                    no_scale_embedding=True),
    "4heads-swish-v96-scale": dict(decoder_embed_dim=64, decoder_value_embed_dim=96, decoder_retention_heads=4,
                                   decoder_ffn_embed_dim=96, decoder_layers=2, activation_fn="swish",
                                   no_scale_embedding=False),
    "4heads-gelu-v64-scale-tied": dict(decoder_embed_dim=32, decoder_value_embed_dim=64, decoder_retention_heads=4,
                                       decoder_ffn_embed_dim=48, decoder_layers=3, activation_fn="gelu",
                                       no_scale_embedding=False, share_decoder_input_output_embed=True,
                                       layernorm_eps=1e-5, drop_path_rate=0.1, xpos_rel_pos=True),
    "2heads-swish-v40-noscale": dict(decoder_embed_dim=48, decoder_value_embed_dim=40, decoder_retention_heads=2,
                                     decoder_ffn_embed_dim=80, decoder_layers=1, activation_fn="swish",
                                     no_scale_embedding=True),
}


def make_decoder(seed: int = 0, init: str = "fan_in", **kwargs):
    """A torchscale RetNetDecoder in eval mode with random weights (norm weights away from 1)."""
    torch.manual_seed(seed)
    args = {"vocab_size": VOCAB, **kwargs}
    decoder = RetNetDecoder(TSConfig(**args), embed_tokens=torch.nn.Embedding(VOCAB, args["decoder_embed_dim"]))
    with torch.no_grad():
        for name, p in decoder.named_parameters():
            if p.dim() == 1:
                p.uniform_(0.5, 1.5)
            elif init == "fan_in" and name != "embed_tokens.weight":
                p.normal_(0.0, p.shape[1] ** -0.5)
    return decoder.eval(), args


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def torchscale_incremental(decoder, ids: torch.Tensor) -> torch.Tensor:
    """torchscale's recurrent form: feed growing prefixes with one incremental_state; it reads the last token."""
    state: dict = {}
    steps = [decoder(ids[:, : t + 1], incremental_state=state)[0] for t in range(ids.shape[1])]
    return torch.cat(steps, dim=1)


def ours_recurrent(model, ids: torch.Tensor) -> torch.Tensor:
    state, steps = None, []
    for t in range(ids.shape[1]):
        out = model(ids[:, t : t + 1], state=state, mode="recurrent")
        state = out.state
        steps.append(out.logits)
    return torch.cat(steps, dim=1)


@pytest.fixture(params=sorted(CONFIGS), scope="module")
def pair(request):
    decoder, args = make_decoder(seed=len(request.param), **CONFIGS[request.param])
    model = from_torchscale(decoder.state_dict(), args)
    ids = torch.randint(0, VOCAB, (2, T), generator=torch.Generator().manual_seed(1))
    return decoder, model, ids


@torch.no_grad()
def test_parallel_and_chunkwise_match_torchscale_parallel(pair):
    decoder, model, ids = pair
    ref, _ = decoder(ids)
    assert rel_err(model(ids, mode="parallel").logits, ref) < 1e-4
    assert rel_err(model(ids, mode="chunkwise", chunk_lengths=[5, 1, 7]).logits, ref) < 1e-4
    assert rel_err(model(ids, mode="chunkwise", chunk_size=4).logits, ref) < 1e-4


@torch.no_grad()
def test_recurrent_matches_torchscale_incremental(pair):
    decoder, model, ids = pair
    ref = torchscale_incremental(decoder, ids)
    assert rel_err(ours_recurrent(model, ids), ref) < 1e-4
    # prefill with chunkwise, continue token by token: same logits as torchscale's recurrent decoding
    head = model(ids[:, :6], mode="chunkwise", chunk_lengths=[2, 4])
    tail = model(ids[:, 6:], state=head.state, mode="recurrent").logits
    assert rel_err(torch.cat([head.logits, tail], dim=1), ref) < 1e-4


@torch.no_grad()
def test_chunkwise_matches_torchscale_chunkwise_recurrent():
    decoder, args = make_decoder(seed=3, chunkwise_recurrent=True, recurrent_chunk_size=4,
                                 **CONFIGS["4heads-swish-v96-scale"])
    model = from_torchscale(decoder.state_dict(), args)
    ids = torch.randint(0, VOCAB, (2, T))  # 13 = 3 chunks of 4 plus padding in torchscale
    ref, _ = decoder(ids)
    assert rel_err(model(ids, mode="chunkwise", chunk_size=4).logits, ref) < 1e-4


@torch.no_grad()
def test_torchscale_default_init_differs_only_by_group_norm_eps():
    """torchscale's own init gives retention outputs with mean square ~1e-7, below the group norm eps (1e-6):
    there its row-sum normalisation and our unnormalised form differ through eps alone. With a tiny eps
    the two agree again; with real checkpoints' activations eps is negligible."""
    kw = dict(CONFIGS["2heads-gelu-v48-noscale"], layernorm_eps=1e-12)
    decoder, args = make_decoder(seed=5, init="torchscale", **kw)
    model = from_torchscale(decoder.state_dict(), args)
    ids = torch.randint(0, VOCAB, (2, T))
    assert rel_err(model(ids, mode="parallel").logits, decoder(ids)[0]) < 1e-4
    assert rel_err(ours_recurrent(model, ids), torchscale_incremental(decoder, ids)) < 1e-4


@torch.no_grad()
def test_config_mapping_and_copies():
    decoder, args = make_decoder(**CONFIGS["4heads-gelu-v64-scale-tied"])
    sd = decoder.state_dict()
    model = from_torchscale(sd, args)
    cfg = model.config
    assert (cfg.num_heads, cfg.head_k_dim, cfg.head_v_dim, cfg.ffn_dim) == (4, 8, 16, 48)
    assert (cfg.rotary_style, cfg.rotary_grid, cfg.qk_scale_on) == ("interleaved", "linspace", "k")
    assert cfg.embed_scale == pytest.approx(32**0.5) and not cfg.group_norm_affine and cfg.tie_embeddings
    assert cfg.norm_eps == cfg.group_norm_eps == 1e-5 and cfg.decay_log is None
    assert model.lm_head.weight is model.embed.weight
    assert torch.equal(model.layers[2].ffn.lin_proj.weight, sd["layers.2.ffn.gate.weight"])
    assert torch.equal(model.layers[1].retention.o_proj.weight, sd["layers.1.retention.out_proj.weight"])
    assert model.embed.weight.data_ptr() != sd["embed_tokens.weight"].data_ptr()  # copied, not shared
    # A tied checkpoint saved without the duplicate output projection loads the same.
    sd.pop("output_projection.weight")
    assert torch.equal(from_torchscale(sd, args).lm_head.weight, model.lm_head.weight)


@torch.no_grad()
def test_custom_decay_buffer_is_kept():
    decoder, args = make_decoder(**CONFIGS["2heads-swish-v40-noscale"])
    decoder.retnet_rel_pos.decay.copy_(torch.log(torch.tensor([0.9, 0.5])))
    model = from_torchscale(decoder.state_dict(), args)
    assert model.config.decay_log == pytest.approx([math.log(0.9), math.log(0.5)], rel=1e-6)
    ids = torch.randint(0, VOCAB, (1, T))
    assert rel_err(model(ids, mode="parallel").logits, decoder(ids)[0]) < 1e-4


def test_fairseq_prefix_and_argument_objects():
    decoder, args = make_decoder(**CONFIGS["2heads-gelu-v48-noscale"])
    prefixed = {"decoder." + k: v for k, v in decoder.state_dict().items()}
    model = from_torchscale(prefixed, TSConfig(**args))  # torchscale's own config object
    ids = torch.randint(0, VOCAB, (1, 7))
    with torch.no_grad():
        assert rel_err(model(ids, mode="parallel").logits, decoder(ids)[0]) < 1e-4
    with pytest.raises(CheckpointError, match=r"decoder\.layers\.0\.ffn\.fc2\.weight"):
        from_torchscale({k: v for k, v in prefixed.items() if k != "decoder.layers.0.ffn.fc2.weight"}, args)


# -- errors ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small():
    return make_decoder(**CONFIGS["2heads-gelu-v48-noscale"])


def test_unknown_key_is_named(small):
    decoder, args = small
    sd = {**decoder.state_dict(), "layers.0.retention.k_bias": torch.zeros(32)}
    with pytest.raises(CheckpointError, match=r"layers\.0\.retention\.k_bias"):
        from_torchscale(sd, args)
    sd = {**decoder.state_dict(), "layers.2.ffn.fc1.weight": torch.zeros(64, 32)}  # a layer too many
    with pytest.raises(CheckpointError, match=r"layers\.2\.ffn\.fc1\.weight"):
        from_torchscale(sd, args)


def test_missing_key_is_named(small):
    decoder, args = small
    sd = {k: v for k, v in decoder.state_dict().items() if k != "layers.1.ffn.gate.weight"}
    with pytest.raises(CheckpointError, match=r"missing keys \['layers\.1\.ffn\.gate\.weight'\]"):
        from_torchscale(sd, args)


def test_wrong_shape_is_named(small):
    decoder, args = small
    sd = {**decoder.state_dict(), "layers.0.retention.v_proj.weight": torch.zeros(40, 32)}
    with pytest.raises(CheckpointError, match=r"layers\.0\.retention\.v_proj\.weight has shape \(40, 32\)"):
        from_torchscale(sd, args)
    with pytest.raises(CheckpointError, match="decoder_value_embed_dim|v_proj"):
        from_torchscale(decoder.state_dict(), {**args, "decoder_value_embed_dim": 64})


def test_untied_head_with_share_flag_and_bad_angle_are_refused(small):
    decoder, args = small
    with pytest.raises(CheckpointError, match="output_projection.weight differs"):
        from_torchscale(decoder.state_dict(), {**args, "share_decoder_input_output_embed": True})
    sd = decoder.state_dict()
    sd["retnet_rel_pos.angle"] = sd["retnet_rel_pos.angle"] * 2
    with pytest.raises(CheckpointError, match="retnet_rel_pos.angle"):
        from_torchscale(sd, args)


@pytest.mark.parametrize("option, value", [
    ("deepnorm", True),
    ("layernorm_embedding", True),
    ("multiway", True),
    ("moe_freq", 2),
    ("moe_expert_count", 4),
    ("activation_fn", "relu"),
    ("no_output_layer", True),
])
def test_unsupported_options_name_the_option(option, value):
    args = {**CONFIGS["2heads-gelu-v48-noscale"], "vocab_size": VOCAB, option: value}
    with pytest.raises(ValueError, match=option):
        torchscale_config(args)


def test_post_norm_is_refused_and_subln_forces_pre_norm():
    base = {**CONFIGS["2heads-gelu-v48-noscale"], "vocab_size": VOCAB}
    with pytest.raises(ValueError, match="decoder_normalize_before"):
        torchscale_config({**base, "subln": False, "decoder_normalize_before": False})
    torchscale_config({**base, "decoder_normalize_before": False})  # subln (default) forces pre-norm, as torchscale


def test_fake_drop_path_contract():
    x = torch.ones(4000, 3)
    assert drop_path(x, 0.25, training=False) is x
    y = drop_path(x, 0.25, training=True)
    values = y.unique()
    assert len(values) == 2 and values[0] == 0 and values[1] == pytest.approx(4 / 3)
    assert abs(y.mean().item() - 1) < 0.05


# -- files and the CLI entry point ------------------------------------------------------------------------
def test_convert_checkpoint_from_safetensors(tmp_path, small):
    decoder, args = small
    src = tmp_path / "ts"
    src.mkdir()
    save_file({k: v.contiguous() for k, v in decoder.state_dict().items()}, str(src / "model.safetensors"))
    (src / "torchscale_args.json").write_text(json.dumps(args))
    report = convert_checkpoint(src, tmp_path / "ours")
    assert report["source"] == "torchscale" and report["config"]["num_layers"] == 2
    loaded = RetNetForCausalLM.from_pretrained(tmp_path / "ours")
    ids = torch.randint(0, VOCAB, (1, T))
    with torch.no_grad():
        assert torch.equal(loaded(ids, mode="parallel").logits, from_torchscale(decoder.state_dict(), args)(
            ids, mode="parallel").logits)
    with pytest.raises(FileExistsError):
        convert_checkpoint(src, tmp_path / "ours")


def test_convert_checkpoint_refuses_pickle_and_missing_args(tmp_path, small):
    decoder, args = small
    (tmp_path / "ckpt").mkdir()
    torch.save(decoder.state_dict(), tmp_path / "ckpt" / "checkpoint.pt")
    with pytest.raises(CheckpointError, match=r"checkpoint\.pt is a pickle"):
        convert_checkpoint(tmp_path / "ckpt", tmp_path / "out", source="torchscale", torchscale_args=args)
    (tmp_path / "w").mkdir()
    save_file({k: v.contiguous() for k, v in decoder.state_dict().items()}, str(tmp_path / "w" / "model.safetensors"))
    with pytest.raises(CheckpointError, match="torchscale_args.json"):
        convert_checkpoint(tmp_path / "w", tmp_path / "out", source="torchscale")
    assert not (tmp_path / "out").exists()  # nothing written on failure
