"""Chunkwise retention on the CPU: the reference's block-by-block closed form, with the decays looked up.

The reference (`reference.naive_retention_chunkwise`) builds each block's decay matrix from cumulative
log decays: a difference, a causal mask, a fill and an exponential over [B, H, L, L], for every block
of every layer. Without padding the decay per token is the head's constant gamma, so everything a
block needs depends only on distances and on the block length L:

    D[h, n, m]   = gamma_h^(n - m) for n >= m, else 0        (inside the block)
    q decay      = gamma_h^(n + 1)                             (the incoming state, seen by token n)
    k decay      = gamma_h^(L - 1 - m)                         (token m's update, carried to the block end)
    state decay  = gamma_h^L

All of them are slices of one table per head set: D's top-left L x L corner and powers gamma^0..gamma^N.
The tables are made once per set of decays (a layer) and dtype, for the longest block seen, and kept
while small (MAX_TABLE_BYTES each, MAX_TOTAL_BYTES in all). On a 1,432-token prompt of the converted reader
(30 layers, 2 threads) this halves the time retention takes in prefill.

Used by `ops.chunk_retention` on the "auto" backend for CPU tensors without a padding mask and with a
fixed decay; everything else, and the "reference" backend, runs the reference. Tests compare the two.
Differentiable in q, k, v and the initial state through plain tensor operations.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import torch
from torch import Tensor

from .reference import _prepare, check_chunk_lengths

MAX_TABLE_BYTES = 8 * 2**20  # per table: 30 layers of 9 heads at blocks of 256 tokens take ~2.4 MB each
MAX_TOTAL_BYTES = 128 * 2**20  # all tables: the converted reader's 30 layers take ~72 MB
_tables: OrderedDict[tuple, tuple[int, Tensor, Tensor]] = OrderedDict()
_lock = threading.Lock()


def _make(g: Tensor, n: int) -> tuple[int, Tensor, Tensor]:
    """(n, D [H, n, n], powers [H, n + 1]) for per-head log decays g [H]."""
    pos = torch.arange(n, dtype=g.dtype, device=g.device)
    dist = pos[:, None] - pos[None, :]
    causal = dist >= 0
    D = torch.where(causal, (g[:, None, None] * dist.clamp(min=0)).exp(), torch.zeros((), dtype=g.dtype))
    powers = (g[:, None] * torch.arange(n + 1, dtype=g.dtype, device=g.device)).exp()
    return n, D, powers


def decay_tables(g: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """D [H, >= n, >= n] and powers [H, >= n + 1] for the log decays g [H] (compute dtype, CPU)."""
    key = (tuple(g.tolist()), g.dtype)  # by value: a freed tensor's address can come back with other decays
    with _lock:
        entry = _tables.get(key)
        if entry is not None and entry[0] >= n:
            _tables.move_to_end(key)
            return entry[1], entry[2]
    entry = _make(g, max(n, entry[0] if entry is not None else 0))
    if _nbytes(entry) <= MAX_TABLE_BYTES:
        with _lock:
            _tables[key] = entry
            _tables.move_to_end(key)
            while sum(_nbytes(e) for e in _tables.values()) > MAX_TOTAL_BYTES:
                _tables.popitem(last=False)  # least recently used first
    return entry[1], entry[2]


def _nbytes(entry: tuple[int, Tensor, Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in entry[1:])


def _block(q: Tensor, k: Tensor, v: Tensor, state: Tensor, D: Tensor, powers: Tensor) -> tuple[Tensor, Tensor]:
    """One block, q, k [B, H, L, K], v [B, H, L, V], state [B, H, K, V]: (o [B, H, L, V], new state)."""
    L = q.shape[2]
    inner = ((q @ k.transpose(-1, -2)) * D[:, :L, :L]) @ v
    cross = (q * powers[:, 1:L + 1, None]) @ state
    k_to_end = k * powers[:, :L].flip(-1)[..., None]  # gamma^(L - 1 - m)
    new_state = state * powers[:, L, None, None] + k_to_end.transpose(-1, -2) @ v
    return inner + cross, new_state


def cpu_retention_chunkwise(q: Tensor, k: Tensor, v: Tensor, log_decay: Tensor, chunk_lengths,
                            state: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """naive_retention_chunkwise without a mask: (o [B, T, H, V] in q's dtype, final state)."""
    out_dtype = q.dtype
    lengths = check_chunk_lengths(chunk_lengths, q.shape[1])
    q, k, v, _, state = _prepare(q, k, v, log_decay, state, None)
    if q.shape[1] == 0:
        return v.to(out_dtype), state
    D, powers = decay_tables(log_decay.detach().to(device=q.device, dtype=q.dtype), max(lengths))
    qh, kh, vh = (x.transpose(1, 2).contiguous() for x in (q, k, v))  # [B, H, T, .]: one copy each
    outs, start = [], 0
    for n in lengths:
        sl = slice(start, start + n)
        o, state = _block(qh[:, :, sl], kh[:, :, sl], vh[:, :, sl], state, D, powers)
        outs.append(o)
        start += n
    return torch.cat(outs, dim=2).transpose(1, 2).to(out_dtype), state
