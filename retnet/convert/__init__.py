"""Converters from public RetNet checkpoints to our model.

    from retnet.convert import from_torchscale, load_fla_directory, convert_checkpoint
    model = from_torchscale(decoder.state_dict(), decoder_args)          # official torchscale RetNet
    model = RetNetForCausalLM.from_pretrained("fla-hub/retnet-1.3B-100B")  # fla directories, once imported
    convert_checkpoint(src, dst, source="fla")                            # write one of our model directories

Neither converter imports torchscale or fla: they read state dicts and config files only.
Command line: `python -m retnet.convert SRC DST [--source auto|fla|torchscale] [--dtype bfloat16]`.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path

import torch

from ..checkpoint import (
    CONFIG_FILE,
    TOKENIZER_FILE,
    CheckpointError,
    read_config_dict,
    read_safetensors,
    register_format,
)
from ..io import atomic_directory
from .delta import DELTA_MODEL_TYPE, load_delta_directory
from .fla import FLA_MODEL_TYPE, convert_fla_state_dict, load_fla_directory
from .torchscale import convert_torchscale_state_dict, from_torchscale, read_torchscale_args, torchscale_config

SOURCES = ("auto", "fla", "torchscale")
TORCHSCALE_ARGS_FILE = "torchscale_args.json"
# Tokenizer files copied beside the converted model (load_tokenizer reads tokenizer.json).
TOKENIZER_FILES = (TOKENIZER_FILE, "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model")
_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16, "float64": torch.float64}
_PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl")

# RetNetForCausalLM.from_pretrained now also opens fla directories and delta directories (base + delta).
register_format(FLA_MODEL_TYPE, load_fla_directory)
register_format(DELTA_MODEL_TYPE, load_delta_directory)


def parse_dtype(dtype) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if str(dtype) not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {sorted(_DTYPES)}")
    return _DTYPES[str(dtype)]


def detect_source(src: Path) -> str:
    """'fla' for a directory whose config.json says model_type "retnet", 'torchscale' for torchscale files."""
    if src.is_dir() and (src / CONFIG_FILE).is_file():
        raw = read_config_dict(src)
        if raw.get("model_type") == FLA_MODEL_TYPE:
            return "fla"
        if "decoder_embed_dim" in raw:
            return "torchscale"
        raise CheckpointError(f"{src / CONFIG_FILE}: model_type {raw.get('model_type')!r} is neither an fla RetNet "
                              "('retnet') nor torchscale arguments (decoder_embed_dim, ...)")
    if (src.is_dir() and (src / TORCHSCALE_ARGS_FILE).is_file()) or (src.is_file() and src.suffix == ".safetensors"):
        return "torchscale"
    if not src.exists():
        raise FileNotFoundError(f"no checkpoint at {src}")
    raise CheckpointError(f"cannot tell what {src} is: give source='fla' or 'torchscale' (an fla directory has "
                          f"{CONFIG_FILE}; torchscale needs {TORCHSCALE_ARGS_FILE} + safetensors)")


def _pickle_message(file: Path) -> str:
    return (f"{file} is a pickle file and pickle is never loaded by the converter (it can run arbitrary code). "
            "If you trust it, load it yourself and convert in Python:\n"
            "    sd = torch.load(FILE, weights_only=True); sd = sd.get('model', sd)\n"
            "    retnet.convert.from_torchscale(sd, ARGS).save_pretrained(DST)\n"
            "or save the state dict with safetensors.torch.save_model / save_file and convert that.")


def load_torchscale_files(src: Path, torchscale_args=None):
    """Our model from torchscale weights in safetensors plus the decoder's arguments (JSON or given)."""
    src = Path(src)
    if src.is_file():
        weights, folder = src, src.parent
    elif src.is_dir():
        folder = src
        candidates = sorted(src.glob("*.safetensors"))
        if (src / "model.safetensors").is_file():
            weights = src / "model.safetensors"
        elif len(candidates) == 1:
            weights = candidates[0]
        else:
            pickles = sorted(p for p in src.iterdir() if p.suffix in _PICKLE_SUFFIXES)
            if pickles and not candidates:
                raise CheckpointError(_pickle_message(pickles[0]))
            raise CheckpointError(f"missing weights file {src / 'model.safetensors'}"
                                  + (f" (several candidates: {[c.name for c in candidates]})" if candidates else ""))
    else:
        raise FileNotFoundError(f"no checkpoint at {src}")
    if weights.suffix in _PICKLE_SUFFIXES:
        raise CheckpointError(_pickle_message(weights))
    if torchscale_args is None:
        for name in (TORCHSCALE_ARGS_FILE, CONFIG_FILE):
            if (folder / name).is_file():
                torchscale_args = folder / name
                break
        else:
            raise CheckpointError(f"missing {folder / TORCHSCALE_ARGS_FILE}: the torchscale RetNetConfig arguments "
                                  "(decoder_embed_dim, decoder_retention_heads, ...) as JSON")
    if isinstance(torchscale_args, (str, Path)):
        file = Path(torchscale_args)
        try:
            torchscale_args = json.loads(file.read_text())
        except FileNotFoundError:
            raise CheckpointError(f"missing torchscale arguments file {file}") from None
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{file} is not valid JSON: {e}") from None
        if not isinstance(torchscale_args, Mapping):
            raise CheckpointError(f"{file} must hold a JSON object of torchscale RetNetConfig arguments")
    return from_torchscale(read_safetensors(weights), torchscale_args)


def convert_checkpoint(src: str | Path, dst: str | Path, source: str = "auto", *, dtype=None,
                       torchscale_args=None, overwrite: bool = False) -> dict:
    """Convert a torchscale or fla checkpoint into one of our model directories (config.json + model.safetensors).

    src: an fla directory (config.json with model_type "retnet" + safetensors weights), or torchscale weights
    (a .safetensors file or a directory holding one, with torchscale_args.json beside it unless
    `torchscale_args` is given as a dict, object or JSON path). Tokenizer files are copied along.
    dtype: the stored dtype ("float32", "bfloat16", ...); default: as in the source.
    The model is fully loaded and checked before anything is written; dst appears complete or not at all.
    Returns a summary (source kind, parameters, dtype, copied tokenizer files).
    """
    src, dst = Path(src), Path(dst)
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; choose one of {SOURCES}")
    if dst.resolve() == src.resolve() or dst.resolve() in src.resolve().parents:
        raise ValueError(f"the destination {dst} must not be (or contain) the source {src}")
    if dst.exists() and not overwrite and (not dst.is_dir() or any(dst.iterdir())):
        raise FileExistsError(f"{dst} exists and is not empty (pass overwrite=True to replace it)")
    kind = detect_source(src) if source == "auto" else source
    if kind == "fla":
        model = load_fla_directory(src, dtype=parse_dtype(dtype))
    else:
        model = load_torchscale_files(src, torchscale_args)
        if dtype is not None:
            model = model.to(parse_dtype(dtype))
    folder = src if src.is_dir() else src.parent
    copied = []
    tok = folder / TOKENIZER_FILE
    if tok.is_file():
        from tokenizers import Tokenizer

        try:
            Tokenizer.from_file(str(tok))
        except Exception as e:  # the tokenizers library raises its own exception type
            raise CheckpointError(f"{tok} cannot be read by the tokenizers library: {e}") from None

    with atomic_directory(dst) as tmp:
        model.save_pretrained(tmp)
        for name in TOKENIZER_FILES:
            if (folder / name).is_file():
                shutil.copyfile(folder / name, tmp / name)
                copied.append(name)
    weight = model.embed.weight
    return {"source": kind, "src": str(src), "dst": str(dst), "num_parameters": model.num_parameters,
            "dtype": str(weight.dtype).replace("torch.", ""), "tokenizer_files": copied,
            "config": model.config.to_dict()}


__all__ = ["SOURCES", "convert_checkpoint", "detect_source", "load_torchscale_files", "parse_dtype",
           "from_torchscale", "torchscale_config", "read_torchscale_args", "convert_torchscale_state_dict",
           "load_fla_directory", "convert_fla_state_dict", "CheckpointError"]
