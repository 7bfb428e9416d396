"""Retention operators with one entry point per form and a backend switch.

`backend="reference"` is the pure-PyTorch code in `reference.py` (any device,
autograd through plain tensor ops). Fast kernels plug in behind the same
signatures; `backend="auto"` picks them on CUDA when available.
"""

from __future__ import annotations

import os

from torch import Tensor

from .reference import (
    check_chunk_lengths,
    chunk_lengths_for,
    retention_chunkwise,
    retention_parallel,
    retention_recurrent,
)

BACKENDS = ("auto", "reference", "triton")
_default_backend = os.environ.get("RETNET_BACKEND", "auto")


def set_backend(name: str) -> None:
    """Force a backend for every retention call: 'auto', 'reference' or 'triton'."""
    global _default_backend
    if name not in BACKENDS:
        raise ValueError(f"unknown retention backend {name!r}; choose one of {BACKENDS}")
    _default_backend = name


def get_backend() -> str:
    return _default_backend


def _resolve(backend: str | None, q: Tensor) -> str:
    name = backend or _default_backend
    if name not in BACKENDS:
        raise ValueError(f"unknown retention backend {name!r}; choose one of {BACKENDS}")
    if name == "auto":
        return "reference"
    if name == "triton":
        raise RuntimeError("the Triton retention backend is not available in this build")
    return name


def parallel_retention(q, k, v, log_decay, state=None, mask=None, backend=None) -> tuple[Tensor, Tensor]:
    _resolve(backend, q)
    return retention_parallel(q, k, v, log_decay, state=state, mask=mask)


def recurrent_retention(q, k, v, log_decay, state=None, mask=None, backend=None) -> tuple[Tensor, Tensor]:
    _resolve(backend, q)
    return retention_recurrent(q, k, v, log_decay, state=state, mask=mask)


def chunk_retention(q, k, v, log_decay, chunk_lengths, state=None, mask=None, backend=None) -> tuple[Tensor, Tensor]:
    _resolve(backend, q)
    return retention_chunkwise(q, k, v, log_decay, chunk_lengths, state=state, mask=mask)


__all__ = [
    "BACKENDS", "set_backend", "get_backend", "parallel_retention", "recurrent_retention",
    "chunk_retention", "chunk_lengths_for", "check_chunk_lengths",
    "retention_parallel", "retention_recurrent", "retention_chunkwise",
]
