"""Official torchscale RetNet (`torchscale.architecture.retnet.RetNetDecoder`, torchscale 0.3.0) -> ours.

    model = from_torchscale(decoder.state_dict(), decoder_args)   # args: dict, RetNetConfig or Namespace

What torchscale computes, and how our config says the same thing:

- keys per head `decoder_embed_dim // heads`, values per head `decoder_value_embed_dim // heads`;
- rotary rotation of every pair (2i, 2i+1) ("interleaved") with angles `1/10000**linspace(0, 1, K/2)`
  ("linspace"), k scaled by K**-0.5 before the rotation (`qk_scale_on="k"`);
- decay gamma_h = 1 - 2**(-5-h), read from the `retnet_rel_pos.decay` buffer (so a checkpoint with
  other decays keeps them);
- retention scores divided by row sums: per-row, per-head scalars that the following group RMSNorm
  removes (up to its eps), so our unnormalised retention gives the same outputs;
- group RMSNorm without weight (`group_norm_affine=False`), eps `layernorm_eps` everywhere;
- embeddings times sqrt(decoder_embed_dim) unless `no_scale_embedding` (torchscale's default is True);
- GLU FFN `fc2(act(fc1 x) * gate x)`: fc1 -> act_proj, gate -> lin_proj, fc2 -> down_proj;
- pre-norm blocks (`retention_layer_norm`, `final_layer_norm` = the FFN's norm), a final `layer_norm`
  and `output_projection` (tied to `embed_tokens` with `share_decoder_input_output_embed`).

Options that change the network into something else (deepnorm / post-norm, layernorm_embedding,
multiway, mixture of experts, no output layer, relu FFN) raise ValueError naming the option.
Options torchscale's RetNet reads nowhere (xpos_rel_pos, rel_pos_buckets, max_rel_pos, ...) and
training-only ones (dropout, drop_path_rate, checkpoint_activations, ...) are accepted.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import torch
from torch import Tensor

from ..checkpoint import CheckpointError
from ..config import RetNetConfig
from .fla import build_converted

# torchscale 0.3.0 RetNetConfig defaults for every argument the conversion reads.
TORCHSCALE_DEFAULTS: dict = {
    "decoder_embed_dim": 768,
    "decoder_value_embed_dim": 1280,
    "decoder_retention_heads": 3,
    "decoder_ffn_embed_dim": 1280,
    "decoder_layers": 12,
    "decoder_normalize_before": True,
    "activation_fn": "gelu",
    "no_scale_embedding": True,
    "layernorm_embedding": False,
    "moe_freq": 0,
    "moe_expert_count": 0,
    "use_xmoe": False,
    "deepnorm": False,
    "subln": True,
    "multiway": False,
    "share_decoder_input_output_embed": False,
    "no_output_layer": False,
    "layernorm_eps": 1e-6,
    "vocab_size": -1,
    "recurrent_chunk_size": 512,
}

_LAYER_KEY = re.compile(r"layers\.(\d+)\.(.+)")
_LAYER_MAP = {
    "retention_layer_norm.weight": "retention_norm.weight",
    "retention.q_proj.weight": "retention.q_proj.weight",
    "retention.k_proj.weight": "retention.k_proj.weight",
    "retention.v_proj.weight": "retention.v_proj.weight",
    "retention.g_proj.weight": "retention.g_proj.weight",
    "retention.out_proj.weight": "retention.o_proj.weight",
    "final_layer_norm.weight": "ffn_norm.weight",
    "ffn.fc1.weight": "ffn.act_proj.weight",
    "ffn.gate.weight": "ffn.lin_proj.weight",
    "ffn.fc2.weight": "ffn.down_proj.weight",
}
_TOP_MAP = {
    "embed_tokens.weight": "embed.weight",
    "layer_norm.weight": "final_norm.weight",
    "output_projection.weight": "lm_head.weight",
}
_BUFFERS = ("retnet_rel_pos.angle", "retnet_rel_pos.decay")
_PREFIXES = ("", "decoder.", "model.decoder.", "module.decoder.", "module.")


def read_torchscale_args(args) -> dict:
    """torchscale's arguments as a plain dict with torchscale's defaults and its own flag resolution.

    `args` may be a dict, torchscale's RetNetConfig, or an argparse/fairseq Namespace. None counts as
    unset (as in torchscale's `override`).
    """
    if args is None:
        raise ValueError("torchscale arguments are required (the RetNetConfig kwargs the decoder was built with)")
    if isinstance(args, Mapping):
        def get(name):
            return args.get(name)
    else:
        def get(name):
            return getattr(args, name, None)
    values = {}
    for name, default in TORCHSCALE_DEFAULTS.items():
        value = get(name)
        values[name] = default if value is None else value
    # torchscale's RetNetConfig.__init__: deepnorm turns pre-norm off, subln turns it back on.
    if values["deepnorm"]:
        values["decoder_normalize_before"] = False
        values["subln"] = False
    if values["subln"]:
        values["decoder_normalize_before"] = True
    return values


def _check_supported(a: dict) -> None:
    def no(option: str, why: str) -> None:
        raise ValueError(f"torchscale option {option}={a.get(option, '?')!r} is not supported: {why}")

    if a["deepnorm"]:
        no("deepnorm", "DeepNorm scales residuals and uses post-norm; only pre-norm (subln) RetNets convert")
    if not a["decoder_normalize_before"]:
        no("decoder_normalize_before", "post-norm blocks have no equivalent in our model")
    if a["layernorm_embedding"]:
        no("layernorm_embedding", "our model has no norm after the embedding")
    if a["multiway"]:
        no("multiway", "multiway (two-expert) projections have no equivalent in our model")
    if int(a["moe_freq"]) > 0 or int(a["moe_expert_count"]) > 0:
        no("moe_freq" if int(a["moe_freq"]) > 0 else "moe_expert_count", "mixture-of-experts FFNs are not supported")
    if a["use_xmoe"]:
        no("use_xmoe", "mixture-of-experts FFNs are not supported")
    if a["no_output_layer"]:
        no("no_output_layer", "a causal LM needs the output projection")
    if str(a["activation_fn"]) not in ("gelu", "swish"):
        no("activation_fn", "only the gelu and swish GLU activations are supported")
    heads = int(a["decoder_retention_heads"])
    for name in ("decoder_embed_dim", "decoder_value_embed_dim"):
        if heads <= 0 or int(a[name]) % heads:
            no(name, f"must be divisible by decoder_retention_heads={heads}")
    if (int(a["decoder_embed_dim"]) // heads) % 2:
        no("decoder_embed_dim", "the key dimension per head must be even for the rotary rotation")


def torchscale_config(args, vocab_size: int | None = None, decay: Tensor | None = None) -> RetNetConfig:
    """Our RetNetConfig for a torchscale RetNetDecoder built with these arguments.

    `vocab_size` (the rows of embed_tokens) overrides args.vocab_size; `decay` is the
    `retnet_rel_pos.decay` buffer (log gamma per head), kept when it differs from the paper's.
    """
    a = read_torchscale_args(args)
    _check_supported(a)
    hidden, heads = int(a["decoder_embed_dim"]), int(a["decoder_retention_heads"])
    vocab = int(vocab_size) if vocab_size is not None else int(a["vocab_size"])
    if vocab <= 0:
        raise ValueError(f"torchscale option vocab_size={a['vocab_size']!r}: a positive vocabulary size is needed")
    eps = float(a["layernorm_eps"])
    cfg = RetNetConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_layers=int(a["decoder_layers"]),
        num_heads=heads,
        head_k_dim=hidden // heads,
        head_v_dim=int(a["decoder_value_embed_dim"]) // heads,
        ffn_dim=int(a["decoder_ffn_embed_dim"]),
        ffn_activation=str(a["activation_fn"]),
        rotary_style="interleaved",
        rotary_grid="linspace",
        rotary_base=10000.0,
        qk_scale_on="k",
        embed_scale=1.0 if a["no_scale_embedding"] else math.sqrt(hidden),
        norm_eps=eps,
        group_norm_eps=eps,
        group_norm_affine=False,
        tie_embeddings=bool(a["share_decoder_input_output_embed"]),
        extra={"converted_from": "torchscale"},
    )
    if decay is not None:
        cfg.decay_log = _decay_log(decay, cfg)
    return cfg


def _decay_log(decay: Tensor, cfg: RetNetConfig) -> list[float] | None:
    """None (the exact float64 paper decays) when the buffer holds them, else the buffer's values."""
    d = decay.detach().to("cpu", torch.float64).reshape(-1)
    if d.numel() != cfg.num_heads:
        raise CheckpointError(f"retnet_rel_pos.decay has {d.numel()} entries for {cfg.num_heads} heads")
    paper = torch.tensor([math.log(1 - 2 ** (-5 - h)) for h in range(cfg.num_heads)], dtype=torch.float64)
    if torch.allclose(d, paper, rtol=1e-5, atol=1e-7):  # torchscale computes it in float32
        return None
    if not bool(torch.isfinite(d).all()) or bool((d > 0).any()):
        raise CheckpointError(f"retnet_rel_pos.decay must hold finite log(gamma) <= 0, got {d.tolist()}")
    return d.tolist()


def _check_angle(angle: Tensor, cfg: RetNetConfig) -> None:
    K = cfg.head_k_dim
    want = 1.0 / 10000 ** torch.linspace(0, 1, K // 2, dtype=torch.float64)
    want = want[:, None].repeat(1, 2).flatten()
    got = angle.detach().to("cpu", torch.float64).reshape(-1)
    if got.shape != want.shape or not torch.allclose(got, want, rtol=1e-5, atol=1e-9):
        raise CheckpointError("retnet_rel_pos.angle does not hold torchscale's rotary angles "
                              f"1/10000**linspace(0, 1, {K // 2}) for key head dim {K}: unsupported rotary grid")


def _strip_prefix(state_dict: Mapping[str, Tensor], prefix: str | None) -> tuple[dict[str, Tensor], str]:
    if prefix is None:
        for p in _PREFIXES:
            if p + "embed_tokens.weight" in state_dict:
                prefix = p
                break
        else:
            raise CheckpointError("torchscale state dict: no embed_tokens.weight (nor decoder.embed_tokens.weight); "
                                  "build RetNetDecoder with embed_tokens=nn.Embedding(vocab, dim)")
    out, foreign = {}, []
    for key, value in state_dict.items():
        if key.startswith(prefix):
            out[key[len(prefix):]] = value
        else:
            foreign.append(key)
    if foreign:
        raise CheckpointError(f"torchscale state dict: unexpected keys {foreign[:8]} (outside prefix {prefix!r})")
    return out, prefix


def convert_torchscale_state_dict(state_dict: Mapping[str, Tensor], args, prefix: str | None = None
                                  ) -> tuple[RetNetConfig, dict[str, Tensor], dict[str, str]]:
    """(our config, our tensors, our key -> torchscale key). Raises on any unknown key or bad buffer."""
    sd, prefix = _strip_prefix(state_dict, prefix)
    embed = sd["embed_tokens.weight"]
    cfg = torchscale_config(args, vocab_size=embed.shape[0],
                            decay=sd.get("retnet_rel_pos.decay"))
    if "retnet_rel_pos.angle" in sd:
        _check_angle(sd["retnet_rel_pos.angle"], cfg)
    tensors: dict[str, Tensor] = {}
    names: dict[str, str] = {}
    unknown = []
    for key, value in sd.items():
        if key in _BUFFERS:
            continue
        ours = _TOP_MAP.get(key)
        m = _LAYER_KEY.fullmatch(key)
        if ours is None and m is not None and int(m.group(1)) < cfg.num_layers and m.group(2) in _LAYER_MAP:
            ours = f"layers.{int(m.group(1))}.{_LAYER_MAP[m.group(2)]}"
        if ours is None:
            unknown.append(prefix + key)
            continue
        tensors[ours] = value
        names[ours] = prefix + key
    if unknown:
        raise CheckpointError(f"torchscale state dict: unknown keys {unknown[:8]}{'...' if len(unknown) > 8 else ''}"
                              f" (for a {cfg.num_layers}-layer decoder)")
    if cfg.tie_embeddings and "lm_head.weight" in tensors:
        head = tensors.pop("lm_head.weight")
        if head.shape != embed.shape or not torch.equal(head, embed):
            raise CheckpointError(f"{names['lm_head.weight']} differs from {prefix}embed_tokens.weight although "
                                  "share_decoder_input_output_embed is set")
    return cfg, tensors, names


def from_torchscale(state_dict: Mapping[str, Tensor], torchscale_args, device=None, dtype=None,
                    prefix: str | None = None):
    """Our RetNetForCausalLM with the weights of a torchscale RetNetDecoder (copied, not shared).

    state_dict: `RetNetDecoder.state_dict()` (keys may carry a fairseq "decoder." prefix);
    torchscale_args: the decoder's RetNetConfig (object, dict or Namespace).
    """
    cfg, tensors, names = convert_torchscale_state_dict(state_dict, torchscale_args, prefix)
    tensors = {k: v.detach().clone() for k, v in tensors.items()}
    found = _prefix_of(names)
    return build_converted(cfg, tensors, names, "torchscale state dict", device=device, dtype=dtype,
                           name_of=lambda ours: found + torchscale_key(ours))


def _prefix_of(names: Mapping[str, str]) -> str:
    embed = names.get("embed.weight", "embed_tokens.weight")
    return embed[: -len("embed_tokens.weight")]


def torchscale_key(ours: str) -> str:
    """The torchscale key (without prefix) for one of ours (for messages about missing keys)."""
    for ts, mine in _TOP_MAP.items():
        if mine == ours:
            return ts
    m = _LAYER_KEY.fullmatch(ours)
    if m:
        for ts, mine in _LAYER_MAP.items():
            if mine == m.group(2):
                return f"layers.{m.group(1)}.{ts}"
    return ours


__all__ = ["TORCHSCALE_DEFAULTS", "read_torchscale_args", "torchscale_config", "convert_torchscale_state_dict",
           "from_torchscale", "torchscale_key"]
