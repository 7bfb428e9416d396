"""flash-linear-attention RetNet (`fla.models.RetNetForCausalLM`, fla-hub checkpoints) -> ours.

`RetNetForCausalLM.from_pretrained(dir)` sends directories whose config.json says model_type "retnet"
here. What fla computes, and how our config says the same thing:

- head dims `hidden_size * expand_k / num_heads` (keys) and `hidden_size * expand_v / num_heads` (values);
- rotary rotation of the two halves of each head ("half") with angles `10000**(-2i/K)` ("power"),
  q scaled by K**-0.5 (`qk_scale_on="q"`), decay gamma_h = 1 - 2**(-5-h);
- per-head RMSNorm with a learnable weight (`g_norm_swish_gate` or `g_norm`; none when
  `elementwise_affine` is false) times swish(g_proj x), then o_proj;
- SwiGLU MLP `down(silu(gate x) * up x)`: gate_proj -> act_proj, up_proj -> lin_proj; the width comes
  from the weights. Older fla releases stored gate and up as one `gate_proj` of twice the width
  (gate first); that layout is split on load;
- norm_eps for every RMSNorm, no embedding scale, optional tied embeddings.

Weights come from model.safetensors or a sharded model.safetensors.index.json; pickle files
(pytorch_model.bin) are refused. Every tensor must map to one of ours and every one of ours must be
present with the right shape, or a CheckpointError names the key and file; nothing is half-loaded.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import Tensor

from ..checkpoint import CONFIG_FILE, WEIGHTS_FILE, CheckpointError, read_config_dict, read_safetensors
from ..config import RetNetConfig
from ..model import RetNetForCausalLM

FLA_MODEL_TYPE = "retnet"
INDEX_FILE = "model.safetensors.index.json"
PICKLE_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json")

# fla RetNetConfig defaults (0.6.0) for the fields the conversion reads.
FLA_DEFAULTS: dict = {
    "hidden_size": 2048,
    "expand_k": 1.0,
    "expand_v": 2.0,
    "hidden_ratio": 2,
    "intermediate_size": None,
    "num_hidden_layers": 24,
    "num_heads": 8,
    "num_kv_heads": None,
    "feature_map": None,
    "hidden_act": "swish",
    "use_short_conv": False,
    "use_output_gate": True,
    "elementwise_affine": True,
    "norm_eps": 1e-6,
    "attn": None,
    "attnres_block_size": None,
    "tie_word_embeddings": False,
    "vocab_size": 32000,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": None,
}

_LAYER_KEY = re.compile(r"model\.layers\.(\d+)\.(.+)")
_LAYER_MAP = {
    "attn_norm.weight": "retention_norm.weight",
    "attn.q_proj.weight": "retention.q_proj.weight",
    "attn.k_proj.weight": "retention.k_proj.weight",
    "attn.v_proj.weight": "retention.v_proj.weight",
    "attn.g_proj.weight": "retention.g_proj.weight",
    "attn.o_proj.weight": "retention.o_proj.weight",
    "attn.g_norm_swish_gate.weight": "retention.out_norm.weight",
    "attn.g_norm.weight": "retention.out_norm.weight",
    "mlp_norm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn.act_proj.weight",
    "mlp.up_proj.weight": "ffn.lin_proj.weight",
    "mlp.down_proj.weight": "ffn.down_proj.weight",
}
_TOP_MAP = {
    "model.embeddings.weight": "embed.weight",
    "model.norm.weight": "final_norm.weight",
    "lm_head.weight": "lm_head.weight",
}


# -- strict building, shared with the torchscale converter ---------------------------------------------
def build_converted(cfg: RetNetConfig, tensors: dict[str, Tensor], names: Mapping[str, str], source: str,
                    device=None, dtype=None, name_of: Callable[[str], str] | None = None):
    """A model with exactly these weights, with errors in the source checkpoint's own key names.

    tensors: our key -> tensor; names: our key -> the source key it came from; name_of: the source key
    for one of ours that is missing (for the message).
    """
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in RetNetForCausalLM(cfg).state_dict().items()}
    if cfg.tie_embeddings:
        expected.pop("lm_head.weight")
    missing = [k for k in expected if k not in tensors]
    if missing:
        shown = [name_of(k) if name_of else k for k in missing]
        raise CheckpointError(f"{source}: missing keys {shown[:8]}{'...' if len(shown) > 8 else ''}")
    extra = [names.get(k, k) for k in tensors if k not in expected]
    if extra:
        raise CheckpointError(f"{source}: unexpected keys {extra[:8]}{'...' if len(extra) > 8 else ''}")
    for key, shape in expected.items():
        got = tuple(tensors[key].shape)
        if got != shape:
            raise CheckpointError(f"{source}: {names.get(key, key)} has shape {got}, the config implies {shape}")
    return RetNetForCausalLM.from_tensors(cfg, tensors, source, device=device, dtype=dtype)


# -- config ----------------------------------------------------------------------------------------------
def _fla_values(raw: Mapping) -> dict:
    return {name: raw.get(name, default) for name, default in FLA_DEFAULTS.items()}


def check_fla_config(raw: Mapping, where: str = CONFIG_FILE) -> dict:
    """fla's config fields with defaults filled in; CheckpointError naming the field for what we cannot run."""
    v = _fla_values(raw)

    def no(field: str, why: str) -> None:
        raise CheckpointError(f"{where}: {field}={v[field]!r} is not supported: {why}")

    if v["attn"] and (not isinstance(v["attn"], Mapping) or v["attn"].get("layers", [None])):
        no("attn", "hybrid models with softmax-attention layers cannot be converted")
    if v["attnres_block_size"] is not None:
        no("attnres_block_size", "attention residuals (attnres) are not supported")
    if v["num_kv_heads"] is not None and int(v["num_kv_heads"]) != int(v["num_heads"]):
        no("num_kv_heads", "grouped key/value heads are not supported (num_kv_heads must equal num_heads)")
    if v["feature_map"] is not None:
        no("feature_map", "retention with a q/k feature map is not supported")
    if v["use_short_conv"]:
        no("use_short_conv", "short convolutions before retention are not supported")
    if not v["use_output_gate"]:
        no("use_output_gate", "our retention always has the swish output gate")
    if v["hidden_act"] not in ("swish", "silu"):
        no("hidden_act", "only the swish (SiLU) gate and SwiGLU MLP are supported")
    hidden, heads = int(v["hidden_size"]), int(v["num_heads"])
    for field in ("expand_k", "expand_v"):
        dim = hidden * float(v[field])
        if not math.isclose(dim, round(dim)) or round(dim) % heads:
            no(field, f"hidden_size * {field} must be an integer divisible by num_heads={heads}")
    if (round(hidden * float(v["expand_k"])) // heads) % 2:
        no("expand_k", "the key dimension per head must be even for the rotary rotation")
    return v


def fla_config(raw: Mapping, ffn_dim: int, where: str = CONFIG_FILE) -> RetNetConfig:
    """Our RetNetConfig for an fla RetNet config.json; ffn_dim is the MLP width (from the weights)."""
    v = check_fla_config(raw, where)
    hidden, heads = int(v["hidden_size"]), int(v["num_heads"])
    affine = bool(v["elementwise_affine"])
    try:
        return RetNetConfig(
            vocab_size=int(v["vocab_size"]),
            hidden_size=hidden,
            num_layers=int(v["num_hidden_layers"]),
            num_heads=heads,
            head_k_dim=round(hidden * float(v["expand_k"])) // heads,
            head_v_dim=round(hidden * float(v["expand_v"])) // heads,
            ffn_dim=int(ffn_dim),
            ffn_activation="swish",
            rotary_style="half",
            rotary_grid="power",
            rotary_base=10000.0,
            qk_scale_on="q",
            embed_scale=1.0,
            norm_eps=float(v["norm_eps"]),
            group_norm_eps=None,
            group_norm_affine=affine,
            tie_embeddings=bool(v["tie_word_embeddings"]),
            bos_token_id=v["bos_token_id"],
            eos_token_id=v["eos_token_id"],
            pad_token_id=v["pad_token_id"],
            extra={"converted_from": "flash-linear-attention"},
        )
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{where}: {e}") from None


def _ffn_width(v: dict, tensors: Mapping[str, Tensor]) -> int:
    if v["intermediate_size"] is not None:
        return int(v["intermediate_size"])
    down = tensors.get("model.layers.0.mlp.down_proj.weight")
    if down is not None and down.dim() == 2:
        return int(down.shape[1])
    ratio = 4 if v["hidden_ratio"] is None else v["hidden_ratio"]  # fla's GatedMLP rule
    width = int(int(v["hidden_size"]) * ratio * 2 / 3)
    return 256 * ((width + 255) // 256)


# -- weights -----------------------------------------------------------------------------------------------
def read_fla_weights(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """All tensors of an fla directory and, per key, the file it came from (for messages)."""
    single, index = path / WEIGHTS_FILE, path / INDEX_FILE
    if single.is_file():
        tensors = read_safetensors(single)
        return tensors, dict.fromkeys(tensors, str(single))
    if index.is_file():
        return _read_sharded(path, index)
    for name in PICKLE_FILES:
        if (path / name).exists():
            raise CheckpointError(
                f"{path / name} is a pickle file and pickle is never loaded (it can run arbitrary code). Convert it "
                f"to safetensors once, where you trust it, e.g.:\n    python -c \"import fla, transformers; "
                f"transformers.AutoModelForCausalLM.from_pretrained('{path}').save_pretrained('OUT', "
                f"safe_serialization=True)\"\nthen copy the tokenizer files into OUT and load OUT.")
    raise CheckpointError(f"missing weights file {single} (nor {INDEX_FILE} for sharded weights)")


def _read_sharded(path: Path, index: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise CheckpointError(f"{index} is not a safetensors index (JSON with a weight_map): {e}") from None
    if not isinstance(weight_map, dict) or not all(isinstance(f, str) for f in weight_map.values()):
        raise CheckpointError(f"{index}: weight_map must map tensor names to file names")
    tensors: dict[str, Tensor] = {}
    origin: dict[str, str] = {}
    shards = sorted(set(weight_map.values()))
    for shard in shards:  # every file is there before any is read
        if Path(shard).name != shard:
            raise CheckpointError(f"{index}: shard {shard!r} must be a file name inside {path}")
        if not (path / shard).is_file():
            key = next(k for k, f in weight_map.items() if f == shard)
            raise CheckpointError(f"missing weights file {path / shard} (holds {key}, says {index.name})")
    for shard in shards:
        file = path / shard
        for key, value in read_safetensors(file).items():
            if weight_map.get(key) != shard:
                raise CheckpointError(f"{file}: tensor {key} is not assigned to this shard by {index.name}")
            tensors[key] = value
            origin[key] = str(file)
    absent = [k for k in weight_map if k not in tensors]
    if absent:
        raise CheckpointError(f"{index.name} lists {absent[:8]} but the shards ({path / weight_map[absent[0]]}, ...) "
                              "do not hold them")
    return tensors, origin


def convert_fla_state_dict(raw_config: Mapping, tensors: Mapping[str, Tensor],
                           where: str = "fla checkpoint") -> tuple[RetNetConfig, dict[str, Tensor], dict[str, str]]:
    """(our config, our tensors, our key -> fla key). Raises CheckpointError on any key that does not map."""
    v = check_fla_config(raw_config)
    cfg = fla_config(raw_config, _ffn_width(v, tensors))
    out: dict[str, Tensor] = {}
    names: dict[str, str] = {}
    unknown = []
    fused_gate = set()
    for key, value in tensors.items():
        ours = _TOP_MAP.get(key)
        m = _LAYER_KEY.fullmatch(key)
        if ours is None and m is not None and int(m.group(1)) < cfg.num_layers and m.group(2) in _LAYER_MAP:
            i, rest = int(m.group(1)), m.group(2)
            if rest.startswith("attn.g_norm") and not cfg.group_norm_affine:
                unknown.append(key)  # elementwise_affine is false: there must be no norm weight
                continue
            ours = f"layers.{i}.{_LAYER_MAP[rest]}"
            if rest == "mlp.gate_proj.weight" and f"model.layers.{i}.mlp.up_proj.weight" not in tensors \
                    and value.dim() == 2 and value.shape[0] == 2 * cfg.ffn_dim:
                fused_gate.add(i)  # older fla: [gate; up] in one matrix
        if ours is None:
            unknown.append(key)
            continue
        if ours in out:
            raise CheckpointError(f"{where}: {key} and {names[ours]} both map to {ours}")
        out[ours] = value
        names[ours] = key
    if unknown:
        raise CheckpointError(f"{where}: unknown keys {unknown[:8]}{'...' if len(unknown) > 8 else ''} "
                              f"(for a {cfg.num_layers}-layer fla RetNet, elementwise_affine="
                              f"{cfg.group_norm_affine})")
    for i in sorted(fused_gate):
        gate, up = out[f"layers.{i}.ffn.act_proj.weight"].chunk(2, dim=0)
        out[f"layers.{i}.ffn.act_proj.weight"] = gate
        out[f"layers.{i}.ffn.lin_proj.weight"] = up
        names[f"layers.{i}.ffn.lin_proj.weight"] = names[f"layers.{i}.ffn.act_proj.weight"] + " (second half)"
    if cfg.tie_embeddings and "lm_head.weight" in out:
        head, embed = out.pop("lm_head.weight"), out.get("embed.weight")
        if embed is None or head.shape != embed.shape or not torch.equal(head, embed):
            raise CheckpointError(f"{where}: lm_head.weight differs from model.embeddings.weight although "
                                  "tie_word_embeddings is true")
    return cfg, out, names


def fla_key(ours: str) -> str:
    """The fla key for one of ours (for messages about missing keys)."""
    for fla, mine in _TOP_MAP.items():
        if mine == ours:
            return fla
    m = re.fullmatch(r"layers\.(\d+)\.(.+)", ours)
    if m:
        for fla, mine in _LAYER_MAP.items():
            if mine == m.group(2):
                return f"model.layers.{m.group(1)}.{fla}"
    return ours


def load_fla_directory(path: str | Path, device=None, dtype=None):
    """Our RetNetForCausalLM from an fla RetNet directory (config.json + safetensors weights)."""
    path = Path(path)
    raw = read_config_dict(path, FLA_MODEL_TYPE, " (flash-linear-attention RetNet)")
    check_fla_config(raw, str(path / CONFIG_FILE))  # before reading gigabytes of weights
    tensors, origin = read_fla_weights(path)
    files = sorted(set(origin.values()))
    source = files[0] if len(files) == 1 else f"{path / INDEX_FILE} ({len(files)} shards)"
    cfg, out, names = convert_fla_state_dict(raw, tensors, where=source)
    return build_converted(cfg, out, names, source, device=device, dtype=dtype, name_of=fla_key)


__all__ = ["FLA_MODEL_TYPE", "FLA_DEFAULTS", "check_fla_config", "fla_config", "read_fla_weights",
           "convert_fla_state_dict", "load_fla_directory", "build_converted", "fla_key"]
