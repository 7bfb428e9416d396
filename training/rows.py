"""Training data: fixed-length token rows with a loss mask, mixed from weighted sources.

A source is an .npz file with `tokens` [N, T] (any integer dtype) and
optionally `loss_mask` [N, T] (1 where the token is a prediction target;
all ones when absent). Rows are independent sequences: the trainer reads
each with a fresh state.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


@dataclass
class TokenRows:
    tokens: np.ndarray  # [N, T]
    loss_mask: np.ndarray  # [N, T] bool

    @classmethod
    def load(cls, path: str | Path) -> TokenRows:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"training data file {path} does not exist")
        with np.load(path, allow_pickle=False) as data:
            if "tokens" not in data:
                raise ValueError(f"{path} has no 'tokens' array")
            tokens = data["tokens"]
            mask = data["loss_mask"].astype(bool) if "loss_mask" in data else np.ones_like(tokens, dtype=bool)
        if tokens.ndim != 2 or mask.shape != tokens.shape:
            raise ValueError(f"{path}: tokens must be [rows, length] with a matching loss_mask, got "
                             f"{tokens.shape} and {mask.shape}")
        return cls(tokens, mask)

    def __len__(self) -> int:
        return len(self.tokens)


class MixedBatches:
    """Endless batches: each row drawn from a source with probability proportional to its weight.

    Deterministic for a given seed and rank; different ranks draw different rows.
    """

    def __init__(self, sources: list[tuple[TokenRows, float]], batch_size: int, seed: int = 0, rank: int = 0):
        if not sources:
            raise ValueError("no training data sources")
        lengths = {rows.tokens.shape[1] for rows, _ in sources}
        if len(lengths) != 1:
            raise ValueError(f"all sources must have the same row length, got {sorted(lengths)}")
        self.sources = sources
        weights = np.array([w for _, w in sources], dtype=np.float64)
        if (weights <= 0).any():
            raise ValueError("source weights must be positive")
        self.p = weights / weights.sum()
        self.batch_size = batch_size
        self.rng = np.random.default_rng([seed, rank])

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        which = self.rng.choice(len(self.sources), size=self.batch_size, p=self.p)
        tokens, masks = [], []
        for s in which:
            rows = self.sources[s][0]
            i = self.rng.integers(len(rows))
            tokens.append(rows.tokens[i].astype(np.int64))
            masks.append(rows.loss_mask[i])
        return torch.from_numpy(np.stack(tokens)), torch.from_numpy(np.stack(masks))


def pack_stream(stream: np.ndarray, length: int) -> np.ndarray:
    """Cut a 1-D token stream into [N, length] rows (the tail that does not fill a row is dropped)."""
    n = len(stream) // length
    return stream[: n * length].reshape(n, length)
