"""Pure-PyTorch retention: the three equivalent forms, written for clarity.

Shapes (the layout flash-linear-attention uses):
    q, k        [B, T, H, K]   already rotated and scaled by the caller
    v           [B, T, H, V]
    log_decay   [H]            log(gamma_h), natural log, gamma_h in (0, 1)
    state       [B, H, K, V]   the recurrent state S (None means zeros)
    mask        [B, T] bool    True for real tokens, False for padding

The recurrence every form computes (per batch row and head):

    S_t = gamma_t * S_{t-1} + k_t^T v_t          o_t = q_t S_t

with gamma_t = gamma_h for a real token and 1 for a padding token, whose k and
v are zeroed. Padding therefore neither decays nor writes the state: it never
leaks into it, whatever side it is on.

All decays are handled in log space as differences of cumulative sums, so no
gamma**n is ever formed for large n. Arithmetic runs in float32 (float64 when
the inputs are float64); outputs come back in the input dtype and the state
in the compute dtype.
"""

from __future__ import annotations

import torch
from torch import Tensor


def compute_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _prepare(q: Tensor, k: Tensor, v: Tensor, log_decay: Tensor, state: Tensor | None, mask: Tensor | None):
    """Cast to the compute dtype, zero padded k/v, and build per-token log decays [B, T, H]."""
    if q.dim() != 4 or k.shape != q.shape or v.dim() != 4 or v.shape[:3] != q.shape[:3]:
        raise ValueError(f"expected q, k [B,T,H,K] and v [B,T,H,V]; got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    B, T, H, K = q.shape
    V = v.shape[-1]
    if log_decay.shape != (H,):
        raise ValueError(f"log_decay must have shape [{H}], got {tuple(log_decay.shape)}")
    dt = compute_dtype(q)
    q, k, v = q.to(dt), k.to(dt), v.to(dt)
    g = log_decay.to(device=q.device, dtype=dt).view(1, 1, H).expand(B, T, H)
    if mask is not None:
        if mask.shape != (B, T):
            raise ValueError(f"mask must have shape [{B}, {T}], got {tuple(mask.shape)}")
        m = mask.to(device=q.device, dtype=torch.bool)
        k = k * m[:, :, None, None]
        v = v * m[:, :, None, None]
        g = g * m[:, :, None]
    if state is None:
        state = q.new_zeros(B, H, K, V)
    else:
        if state.shape != (B, H, K, V):
            raise ValueError(f"state must have shape [{B}, {H}, {K}, {V}], got {tuple(state.shape)}")
        state = state.to(dt)
    return q, k, v, g, state


def _decay_matrix(b: Tensor) -> Tensor:
    """D[b, h, n, m] = exp(b_n - b_m) for n >= m, else 0, from cumulative log decays b [B, L, H]."""
    b = b.transpose(1, 2)  # [B, H, L]
    diff = b[..., :, None] - b[..., None, :]
    L = b.shape[-1]
    causal = torch.ones(L, L, dtype=torch.bool, device=b.device).tril()
    # Mask before exp: above the diagonal the difference is positive and could overflow.
    return torch.where(causal, diff, torch.full_like(diff, float("-inf"))).exp()


def _block(q: Tensor, k: Tensor, v: Tensor, g: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
    """One block in closed form: the parallel form inside, plus the incoming state's contribution."""
    b = g.cumsum(dim=1)  # [B, L, H]: log of the decay from the block start to token n, inclusive
    scores = torch.einsum("bnhk,bmhk->bhnm", q, k) * _decay_matrix(b)
    inner = torch.einsum("bhnm,bmhv->bnhv", scores, v)
    cross = torch.einsum("bnhk,bhkv->bnhv", q * b.exp()[..., None], state)
    total = b[:, -1:, :]  # [B, 1, H]: log decay across the whole block
    k_to_end = k * (total - b).exp()[..., None]  # decay from each token to the block end
    new_state = state * total.exp().transpose(1, 2)[..., None] + torch.einsum("bmhk,bmhv->bhkv", k_to_end, v)
    return inner + cross, new_state


def naive_retention_parallel(q, k, v, log_decay, state=None, mask=None) -> tuple[Tensor, Tensor]:
    """O = (Q K^T * D) V over the whole sequence at once, plus the incoming state."""
    out_dtype = q.dtype
    q, k, v, g, state = _prepare(q, k, v, log_decay, state, mask)
    if q.shape[1] == 0:
        return v.to(out_dtype), state
    o, state = _block(q, k, v, g, state)
    return o.to(out_dtype), state


def naive_retention_recurrent(q, k, v, log_decay, state=None, mask=None) -> tuple[Tensor, Tensor]:
    """Token by token: S_t = gamma_t S_{t-1} + k_t^T v_t, o_t = q_t S_t."""
    out_dtype = q.dtype
    q, k, v, g, state = _prepare(q, k, v, log_decay, state, mask)
    outs = []
    for t in range(q.shape[1]):
        state = state * g[:, t].exp()[:, :, None, None] + k[:, t, :, :, None] * v[:, t, :, None, :]
        outs.append(torch.einsum("bhk,bhkv->bhv", q[:, t], state))
    o = torch.stack(outs, dim=1) if outs else v
    return o.to(out_dtype), state


def naive_retention_decode(q: Tensor, k: Tensor, v: Tensor, log_decay: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
    """The recurrent form for one token without padding, as a decode step uses it: (o, new state).

    q, k [B, 1, H, K], v [B, 1, H, V], state [B, H, K, V] (not changed). S' = gamma S + k^T v, o = q S'.
    Written without the general form's per-token loop and bookkeeping: a decode step calls it 30 times
    per token, and on a CPU those few-microsecond operations add up.
    """
    B, T, H, K = q.shape
    if T != 1 or k.shape != q.shape or v.shape[:3] != q.shape[:3] or state.shape != (B, H, K, v.shape[-1]):
        raise ValueError(f"expected q, k [B,1,H,K], v [B,1,H,V] and state [B,H,K,V]; got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}, {tuple(state.shape)}")
    dt = compute_dtype(q)
    decay = log_decay.to(device=q.device, dtype=dt).exp()[:, None, None]  # [H, 1, 1]
    new = torch.addcmul(state.to(dt) * decay, k[:, 0, :, :, None].to(dt), v[:, 0, :, None, :].to(dt))
    o = torch.matmul(q[:, 0, :, None, :].to(dt), new)  # [B, H, 1, V]
    return o.transpose(1, 2).to(q.dtype), new


def chunk_lengths_for(total: int, chunk_size: int) -> list[int]:
    """Fixed-size chunking as a list of lengths (the last chunk may be shorter)."""
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    return [min(chunk_size, total - start) for start in range(0, total, chunk_size)]


def check_chunk_lengths(chunk_lengths, total: int) -> list[int]:
    lengths = [int(n) for n in chunk_lengths]
    if any(n <= 0 for n in lengths):
        raise ValueError(f"chunk lengths must be positive, got {lengths}")
    if sum(lengths) != total:
        raise ValueError(f"chunk lengths sum to {sum(lengths)} but the sequence has {total} tokens")
    return lengths


def naive_retention_chunkwise(q, k, v, log_decay, chunk_lengths, state=None, mask=None) -> tuple[Tensor, Tensor]:
    """Parallel inside each chunk, recurrent across chunks. Chunks may have different lengths."""
    out_dtype = q.dtype
    lengths = check_chunk_lengths(chunk_lengths, q.shape[1])
    q, k, v, g, state = _prepare(q, k, v, log_decay, state, mask)
    outs, start = [], 0
    for n in lengths:
        sl = slice(start, start + n)
        o, state = _block(q[:, sl], k[:, sl], v[:, sl], g[:, sl], state)
        outs.append(o)
        start += n
    o = torch.cat(outs, dim=1) if outs else v
    return o.to(out_dtype), state


def naive_retention_step(q: Tensor, k: Tensor, v: Tensor, log_decay: Tensor, state: Tensor) -> Tensor:
    """One decode step in place: S <- gamma S + k^T v, returns o = q S (q, k [B, H, K], v [B, H, V])."""
    decay = log_decay.to(device=state.device, dtype=state.dtype).exp()[None, :, None, None]
    state.mul_(decay).add_(k.to(state.dtype)[..., :, None] * v.to(state.dtype)[..., None, :])
    return torch.einsum("bhk,bhkv->bhv", q.to(state.dtype), state).to(q.dtype)
