"""Prefix-state cache: RetentionState snapshots at passage boundaries, keyed by the exact token prefix.

The state after reading tokens t_1..t_n depends on every one of them (and on their
positions), so a snapshot may only be reused for exactly the same prefix, read
from exactly the same starting state. Keys are therefore chained: each
conversation starts from a root key (the model's fingerprint), every chunk of
tokens read extends the key, ``key' = sha256(key || ids)``, and generated tokens
extend it the same way. Two turns share a snapshot only when everything read
since the start of the session is identical (typically: the same instructions and
passages at the start of a session, or a fresh ``ask`` over the same passages).

Lookup walks a turn's chunk boundaries from the deepest one back and restores
the deepest snapshot found; only the rest of the turn is encoded. Entries are
evicted least-recently-used first to stay within a byte budget (state bytes +
the boundary's logits). Snapshots are kept on the CPU.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from retnet import RetentionState


def root_key(fingerprint: str) -> bytes:
    """The key of an empty state of the model with this fingerprint."""
    return hashlib.sha256(b"retnet-rag/root/" + fingerprint.encode()).digest()


def chain_key(key: bytes, ids: Sequence[int]) -> bytes:
    """The key after reading ``ids`` from the state with key ``key``."""
    return hashlib.sha256(key + np.asarray(ids, dtype=np.int64).tobytes()).digest()


@dataclass
class Snapshot:
    state: RetentionState  # on the CPU; never handed out without a copy
    logits: Tensor  # [vocab] float32: the next-token logits at this boundary
    tokens: int  # tokens in the prefix (for statistics)

    @property
    def nbytes(self) -> int:
        return PrefixCache.snapshot_bytes(self.state, self.logits.numel())


# A turn read from an empty state takes a snapshot per passage end. With room for fewer snapshots than this,
# they evict each other within a turn or two, so storing them only costs copies (and, on a GPU, a forward
# call per passage instead of one): the 1.3B shape's 98 MB states against the default 256 MB budget.
MIN_ENTRIES = 4


class PrefixCache:
    """LRU map from prefix key to Snapshot, bounded by ``max_bytes``. Thread-safe."""

    def __init__(self, max_bytes: int):
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self._entries: OrderedDict[bytes, Snapshot] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = self.evictions = self.hit_tokens = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: bytes) -> bool:
        return key in self._entries

    @property
    def nbytes(self) -> int:
        return self._bytes

    def lookup(self, keys: Sequence[bytes]) -> tuple[int, Snapshot | None]:
        """The deepest ``i`` whose ``keys[i]`` is cached, with its snapshot; (-1, None) if none.

        Counts one hit or one miss per call (per turn), and marks the entry recently used.
        """
        with self._lock:
            for i in range(len(keys) - 1, -1, -1):
                snap = self._entries.get(keys[i])
                if snap is not None:
                    self._entries.move_to_end(keys[i])
                    self.hits += 1
                    self.hit_tokens += snap.tokens
                    return i, snap
            self.misses += 1
            return -1, None

    @staticmethod
    def snapshot_bytes(state: RetentionState, vocab_size: int) -> int:
        """What one snapshot of ``state`` (with its float32 logits) costs in the budget: Snapshot.nbytes."""
        return state.nbytes + 4 * vocab_size

    def worth_storing(self, nbytes: int) -> bool:
        """Whether snapshots of this size are worth taking: at least MIN_ENTRIES fit in the budget."""
        return nbytes * MIN_ENTRIES <= self.max_bytes

    def put(self, key: bytes, state: RetentionState, logits: Tensor, tokens: int) -> bool:
        """Store a copy of ``state`` (and the boundary's logits). False if it cannot fit at all."""
        if self.snapshot_bytes(state, logits.numel()) > self.max_bytes:
            return False  # decided before copying: the copy of a large state is what costs
        snap = Snapshot(state.clone().to("cpu"), logits.detach().reshape(-1).float().clone().cpu(), tokens)
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            self._entries[key] = snap
            self._bytes += snap.nbytes
            while self._bytes > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= evicted.nbytes
                self.evictions += 1
        return True

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def stats(self) -> dict:
        return {"entries": len(self._entries), "bytes": self._bytes, "max_bytes": self.max_bytes, "hits": self.hits,
                "misses": self.misses, "evictions": self.evictions, "hit_tokens": self.hit_tokens}

    @staticmethod
    def restore(snap: Snapshot, device) -> tuple[RetentionState, Tensor]:
        """A private copy of the snapshot's state (on ``device``) and its logits as [1, vocab]."""
        state = snap.state.clone() if torch.device(device).type == "cpu" else snap.state.to(device)
        return state, snap.logits.to(device)[None]
