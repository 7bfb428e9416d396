"""Model directories: config.json + model.safetensors (+ tokenizer.json).

`load_pretrained` also opens flash-linear-attention (fla-hub) RetNet
directories, recognised by their config's model_type "retnet", through
`retnet.convert.fla`. Loading is all-or-nothing: every key and shape is
checked before the model is returned, and errors name the key or file.
"""

from __future__ import annotations

from pathlib import Path

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


def save_pretrained(model, path: str | Path, tokenizer=None) -> None:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
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


def load_pretrained(path: str | Path, device=None, dtype=None):
    path = Path(path)
    raw = read_config_dict(path)
    if raw.get("model_type") == "retnet":
        from .convert.fla import load_fla_directory

        return load_fla_directory(path, device=device, dtype=dtype)
    if raw.get("model_type") != "retnet-rag":
        raise CheckpointError(f"{path / CONFIG_FILE} has model_type {raw.get('model_type')!r}; "
                              "expected 'retnet-rag' (ours) or 'retnet' (flash-linear-attention)")
    try:
        cfg = RetNetConfig.from_dict(raw)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path / CONFIG_FILE}: {e}") from None
    return build_model(cfg, read_safetensors(path / WEIGHTS_FILE), str(path / WEIGHTS_FILE), device, dtype)


def build_model(cfg: RetNetConfig, tensors: dict[str, Tensor], source: str, device=None, dtype=None):
    """A model with exactly these weights: every key present, no extra keys, every shape right."""
    from .model import RetNetForCausalLM

    with torch.device("meta"):
        model = RetNetForCausalLM(cfg)
    expected = model.state_dict()
    if cfg.tie_embeddings:
        expected.pop("lm_head.weight")
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{source}: missing keys {missing[:8]}{'...' if len(missing) > 8 else ''}; "
                              f"unexpected keys {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}")
    for name, want in expected.items():
        if tuple(tensors[name].shape) != tuple(want.shape):
            raise CheckpointError(f"{source}: {name} has shape {tuple(tensors[name].shape)}, "
                                  f"the config implies {tuple(want.shape)}")
    device = torch.device(device) if device is not None else torch.device("cpu")
    cast = {k: v.to(device=device, dtype=dtype if dtype is not None and v.is_floating_point() else v.dtype)
            for k, v in tensors.items()}
    model.load_state_dict(cast, strict=not cfg.tie_embeddings, assign=True)
    if cfg.tie_embeddings:
        model.lm_head.weight = model.embed.weight
    _materialize_fixed_buffers(model, device)
    return model.eval()


def _materialize_fixed_buffers(model, device) -> None:
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
