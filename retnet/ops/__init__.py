"""Retention operators with one entry point per form and a backend switch.

Backends
--------
- "reference": the pure-PyTorch code in `reference.py` (any device, autograd through
  plain tensor ops, float64 capable).
- "triton": the fused Triton kernels in `triton_chunk.py` (chunkwise forward and
  backward) and `triton_decode.py` (decode step, short recurrent runs). They need CUDA
  tensors, or CPU tensors under `TRITON_INTERPRET=1` (how the tests run them).
- "auto" (default): "triton" for CUDA tensors when Triton imports and the key head dimension is
  at least ``MIN_TRITON_K`` (16: compiled ``tl.dot`` needs an inner dimension of 16), else "reference",
  except that chunkwise retention of CPU tensors without a mask and with a fixed decay runs
  `cpu_chunk.py` (the reference's closed form with its decays looked up in per-layer tables).

Not retention, but beside its kernels: `triton_gemv.py`, the batch-1 matrix-vector product that
`retnet.cuda_decode` uses for a GPU decode step's projections (imported only there, lazily).

Force one with `set_backend("reference" | "triton" | "auto")`, the environment variable
`RETNET_BACKEND` (read at import), or the `backend=` argument of each call.

Where the Triton path hands back to the reference (documented, not an error):
- a padding `mask` is given: padding changes the decay per token, which the kernels do
  not model (the model only pads at batch edges; those calls are rare and short);
- `log_decay` requires grad: the kernels treat the decay as the fixed buffer it is in
  RetNet and return no gradient for it.

All three forms compute the same function, so on the Triton backend `parallel_retention`
and `recurrent_retention` share the chunkwise kernel's autograd; `recurrent_retention`
uses the fused recurrent kernel for short inputs when no gradient is needed.

Chunk lengths
-------------
`chunk_lengths` (passage lengths) never changes `o` or its gradients: the reference computes
one block per chunk, the Triton kernel uses its own uniform tiles. Where the application
needs the state at a passage end (prefix-cache snapshots), it ends a call there: one
mechanism, `app.encoder.Reader.ingest_chunks`. Lengths are validated once per call, by
the backend that runs.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

from .cpu_chunk import cpu_retention_chunkwise
from .reference import (
    check_chunk_lengths,
    chunk_lengths_for,
    naive_retention_chunkwise,
    naive_retention_decode,
    naive_retention_parallel,
    naive_retention_recurrent,
    naive_retention_step,
)

BACKENDS = ("auto", "reference", "triton")
_default_backend = os.environ.get("RETNET_BACKEND", "auto")
if _default_backend not in BACKENDS:
    raise ValueError(f"RETNET_BACKEND={_default_backend!r}; choose one of {BACKENDS}")

# Above this many tokens the chunkwise kernel beats the token-by-token one.
RECURRENT_KERNEL_MAX_T = 64


def set_backend(name: str) -> None:
    """Force a backend for every retention call: 'auto', 'reference' or 'triton'."""
    global _default_backend
    if name not in BACKENDS:
        raise ValueError(f"unknown retention backend {name!r}; choose one of {BACKENDS}")
    _default_backend = name


def get_backend() -> str:
    return _default_backend


_triton_ok: bool | None = None
MIN_TRITON_K = 16  # compiled tl.dot wants inner dimensions of at least 16 (q @ S, q @ k^T)


def triton_available() -> bool:
    """True when Triton imports (it is an optional, GPU-side dependency)."""
    global _triton_ok
    if _triton_ok is None:
        try:
            import triton  # noqa: F401
            _triton_ok = True
        except Exception:  # ImportError, or a broken install on an odd platform
            _triton_ok = False
    return _triton_ok


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _resolve(backend: str | None, q: Tensor) -> str:
    """The backend that runs a call on q [B, T, H, K] (only q's device and K are looked at)."""
    name = backend or _default_backend
    if name not in BACKENDS:
        raise ValueError(f"unknown retention backend {name!r}; choose one of {BACKENDS}")
    if name == "auto":
        return "triton" if q.is_cuda and triton_available() and q.shape[-1] >= MIN_TRITON_K else "reference"
    if name == "triton":
        if not triton_available():
            raise RuntimeError("the Triton retention backend needs the 'triton' package")
        if not q.is_cuda and not _interpreting():
            raise RuntimeError("the Triton retention backend needs CUDA tensors (or TRITON_INTERPRET=1)")
        if q.is_cuda and q.shape[-1] < MIN_TRITON_K:  # the interpreter has no such limit (tests use it)
            raise RuntimeError(f"the compiled Triton retention kernels need a key head dimension of at least "
                               f"{MIN_TRITON_K}, not {q.shape[-1]}: use the 'auto' or 'reference' backend")
    return name


def _fast_paths_can(log_decay: Tensor, mask: Tensor | None) -> bool:
    """False where the Triton kernels and the CPU fast path hand back to the reference (see the module
    docstring): a padding mask, or a decay that is learned."""
    return mask is None and not (log_decay.requires_grad and torch.is_grad_enabled())


def parallel_retention(q, k, v, log_decay, state=None, mask=None, backend=None, *,
                       output_final_state=True) -> tuple[Tensor, Tensor | None]:
    if _resolve(backend, q) == "triton" and _fast_paths_can(log_decay, mask):
        from .triton_chunk import chunk_retention_triton
        o, st = chunk_retention_triton(q, k, v, log_decay, state, output_final_state)
        return o, st
    o, st = naive_retention_parallel(q, k, v, log_decay, state=state, mask=mask)
    return o, (st if output_final_state else None)


def recurrent_retention(q, k, v, log_decay, state=None, mask=None, backend=None, *,
                        output_final_state=True) -> tuple[Tensor, Tensor | None]:
    if _resolve(backend, q) == "triton" and _fast_paths_can(log_decay, mask):
        needs_grad = torch.is_grad_enabled() and any(
            t is not None and t.requires_grad for t in (q, k, v, state))
        if q.shape[1] <= RECURRENT_KERNEL_MAX_T and not needs_grad:
            from .triton_decode import recurrent_fwd
            return recurrent_fwd(q, k, v, log_decay, state, store_state=output_final_state)
        from .triton_chunk import chunk_retention_triton
        o, st = chunk_retention_triton(q, k, v, log_decay, state, output_final_state)
        return o, st
    if q.shape[1] == 1 and mask is None and state is not None:  # a decode step: no loop needed
        o, st = naive_retention_decode(q, k, v, log_decay, state)
    else:
        o, st = naive_retention_recurrent(q, k, v, log_decay, state=state, mask=mask)
    return o, (st if output_final_state else None)


def chunk_retention(q, k, v, log_decay, chunk_lengths, state=None, mask=None, backend=None, *,
                    output_final_state=True) -> tuple[Tensor, Tensor | None]:
    """Chunkwise retention: (o, final state). q, k [B, T, H, K], v [B, T, H, V], log_decay [H],
    state [B, H, K, V] (float32) or None, mask [B, T] bool or None, chunk_lengths positive ints
    summing to T (passage lengths; o does not depend on them, see the module docstring)."""
    if _resolve(backend, q) == "triton" and _fast_paths_can(log_decay, mask):
        from .triton_chunk import chunk_retention_triton
        check_chunk_lengths(chunk_lengths, q.shape[1])  # the kernel tiles uniformly, but bad input is refused alike
        o, st = chunk_retention_triton(q, k, v, log_decay, state, output_final_state)
        return o, st
    # Not while torch.compile traces: the tables are looked up by the decays' values, a graph break.
    if ((backend or _default_backend) == "auto" and q.device.type == "cpu" and _fast_paths_can(log_decay, mask)
            and not torch.compiler.is_compiling()):
        o, st = cpu_retention_chunkwise(q, k, v, log_decay, chunk_lengths, state=state)
        return o, (st if output_final_state else None)
    o, st = naive_retention_chunkwise(q, k, v, log_decay, chunk_lengths, state=state, mask=mask)
    return o, (st if output_final_state else None)


def retention_step(q, k, v, log_decay, state, backend=None) -> Tensor:
    """One decode step: S <- gamma S + k^T v (in place on `state`), returns o = q S.

    q, k [B, H, K] or [B, 1, H, K]; v [B, H, V] or [B, 1, H, V]; state [B, H, K, V] float32,
    contiguous. o has q's dtype and v's rank. Inference only (no autograd through the
    in-place update).
    """
    squeeze = q.dim() == 4
    if squeeze:
        q, k, v = q[:, 0], k[:, 0], v[:, 0]
    if _resolve(backend, q) == "triton":
        from .triton_decode import retention_step_triton
        o = retention_step_triton(q, k, v, log_decay, state)
    else:
        o = naive_retention_step(q, k, v, log_decay, state)
    return o[:, None] if squeeze else o


__all__ = [
    "BACKENDS", "MIN_TRITON_K", "set_backend", "get_backend", "triton_available",
    "parallel_retention", "recurrent_retention", "chunk_retention", "retention_step",
    "chunk_lengths_for", "check_chunk_lengths",
    "naive_retention_parallel", "naive_retention_recurrent", "naive_retention_chunkwise", "naive_retention_step",
    "naive_retention_decode",
]
