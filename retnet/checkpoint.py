"""Model directories: config.json + model.safetensors (+ tokenizer.json).

`RetNetForCausalLM.from_pretrained` also opens the formats converters register
(`register_format`): importing `retnet.convert` adds flash-linear-attention (fla-hub) RetNet
directories, recognised by their config's model_type "retnet". Loading is all-or-nothing: every key and shape is
checked before the model is returned, and errors name the key or file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from .config import RetNetConfig
from .io import atomic_write, atomic_write_text

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded as it is: the message names the file or key."""


def _own_storage(t: torch.Tensor) -> torch.Tensor:
    """t, or a copy when it is a view into a larger buffer (fused projections, retnet.fused_projections):
    safetensors refuses tensors that share memory."""
    return t if t.untyped_storage().nbytes() == t.numel() * t.element_size() else t.clone()


def save_pretrained(model, path: str | Path, tokenizer=None) -> None:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {k: _own_storage(v.detach().contiguous().cpu()) for k, v in model.state_dict().items()}
    if model.config.tie_embeddings:
        tensors.pop("lm_head.weight")  # the same tensor as embed.weight
    atomic_write(path / WEIGHTS_FILE, lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt"}))
    model.config.to_json(path / CONFIG_FILE)
    if tokenizer is not None:
        atomic_write_text(path / TOKENIZER_FILE, tokenizer.to_str())


def read_config_dict(path: Path, model_type: str | None = None, hint: str = "") -> dict:
    """config.json of a model directory, with clear errors; with `model_type`, the type it must have
    (`hint` is added to that error)."""
    import json

    if not path.is_dir():
        raise CheckpointError(f"model directory {path} does not exist")
    file = path / CONFIG_FILE
    if not file.is_file():
        raise CheckpointError(f"{path} has no {CONFIG_FILE}: not a model directory")
    try:
        raw = json.loads(file.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{file} is not valid JSON: {e}") from None
    if model_type is not None and raw.get("model_type") != model_type:
        raise CheckpointError(f"{file} has model_type {raw.get('model_type')!r}, not {model_type!r}{hint}")
    return raw


def read_safetensors(file: Path) -> dict[str, Tensor]:
    if not file.is_file():
        raise CheckpointError(f"missing weights file {file}")
    try:
        return load_file(str(file))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"cannot read {file}: {e}") from None


# Other checkpoint formats that from_pretrained can read, keyed by config.json's model_type. Converters
# register themselves here (importing retnet.convert adds fla's "retnet"): the core imports none of them.
FORMATS: dict[str, Callable[..., Any]] = {}
_FORMAT_HINTS = {"retnet": "a flash-linear-attention RetNet: `import retnet.convert` first (it registers the "
                           "format), or convert it once with `retnet-rag convert SRC DST`"}


def register_format(model_type: str, loader: Callable[..., Any]) -> None:
    """Let from_pretrained read directories whose config.json says ``model_type``:
    ``loader(path, device=, dtype=)`` returns the model."""
    FORMATS[model_type] = loader


def loader_for(path: str | Path) -> Callable[..., Any] | None:
    """The registered loader of a foreign checkpoint directory, None for one of ours; CheckpointError
    for a model_type nobody registered."""
    path = Path(path)
    model_type = read_config_dict(path).get("model_type")
    if model_type in FORMATS:
        return FORMATS[model_type]
    if model_type != "retnet-rag":
        hint = _FORMAT_HINTS.get(model_type, f"readable formats: 'retnet-rag' (ours), {sorted(FORMATS)}")
        raise CheckpointError(f"{path / CONFIG_FILE} has model_type {model_type!r}: {hint}")
    return None


def read_config(path: str | Path) -> RetNetConfig:
    """The RetNetConfig of one of our model directories."""
    path = Path(path)
    try:
        return RetNetConfig.from_dict(read_config_dict(path, "retnet-rag"))
    except (TypeError, ValueError) as e:
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(f"{path / CONFIG_FILE}: {e}") from None


def check_tensors(expected: dict[str, Tensor], tensors: dict[str, Tensor], source: str) -> None:
    """Every expected key present, no extra keys, every shape right; else a CheckpointError naming them."""
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{source}: missing keys {missing[:8]}{'...' if len(missing) > 8 else ''}; "
                              f"unexpected keys {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}")
    for name, want in expected.items():
        if tuple(tensors[name].shape) != tuple(want.shape):
            raise CheckpointError(f"{source}: {name} has shape {tuple(tensors[name].shape)}, "
                                  f"the config implies {tuple(want.shape)}")


def materialize_fixed_buffers(model, device) -> None:
    """Non-persistent buffers (fixed norm weights of ones) are not in the file: rebuild them."""
    for module in model.modules():
        for name, buf in list(module.named_buffers(recurse=False)):
            if buf.is_meta:
                module.register_buffer(name, torch.ones(buf.shape, device=device), persistent=False)


def load_tokenizer(path: str | Path):
    """The HF `tokenizers` tokenizer saved beside a model, or None if there is none."""
    from tokenizers import Tokenizer

    file = Path(path) / TOKENIZER_FILE
    return Tokenizer.from_file(str(file)) if file.is_file() else None
