"""Synthetic rows that reward in-context recall on every supervised token.

A QA episode supervises a handful of answer tokens per thousand read, too sparse a signal for a
small model to discover how to look things up in its state (session 2 found that neither a RetNet
nor a Transformer did in 0.5B tokens). These rows make recall the only way to lower the loss:

- repeat rows: text segments read twice, a random gap apart, loss on every token; the second copy
  is predictable only by copying. Short ones (8-64 tokens) are where copying is learned first.
- MQAR rows (multi-query associative recall, as in the Zoology benchmark): key-value pairs of
  single tokens, then every key again in random order; loss only on the values after the repeated
  keys. Tokens are drawn from the corpus stream, so they are ordinary vocabulary.
"""

from __future__ import annotations

import numpy as np

END_ID = 0  # <|endoftext|>: separates MQAR examples


def repeat_rows(stream: np.ndarray, n_rows: int, row_length: int, seed: int,
                segment: tuple[int, int] = (16, 768), max_gap: int = 256) -> np.ndarray:
    """Rows of ``segment, gap, segment`` triples cut from a token stream (segment lengths
    log-uniform in ``segment``; gaps of 0-``max_gap`` tokens of other text).

    Short segments with short gaps (``segment=(8, 64), max_gap=32``) are the easy end of the
    curriculum: a tiny model learns to copy short segments within ~2M tokens, long ones barely
    (experiments/copy_toy.py), and the 17M runs with long segments alone never copied (NOTES.md)."""
    if not 1 <= segment[0] <= segment[1] or max_gap < 0:
        raise ValueError(f"segment lengths must satisfy 1 <= min <= max and max_gap >= 0, got {segment}, {max_gap}")
    rng = np.random.default_rng(seed)
    width = row_length + 1
    rows = np.empty((n_rows, width), dtype=stream.dtype)
    low, high = np.log(segment[0]), np.log(segment[1])
    for r in range(n_rows):
        parts, filled = [], 0
        while filled < width:
            length = int(np.exp(rng.uniform(low, high)))
            gap = int(rng.integers(0, max_gap + 1))
            start, gap_start = rng.integers(0, len(stream) - length), rng.integers(0, len(stream) - gap)
            segment_tokens = stream[start : start + length]
            parts += [segment_tokens, stream[gap_start : gap_start + gap], segment_tokens]
            filled += 2 * length + gap
        rows[r] = np.concatenate(parts)[:width]
    return rows


def mqar_example(stream: np.ndarray, pairs: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One example: k1 v1 ... kP vP, then the keys again (shuffled) each followed by its value,
    then END. Keys are distinct ordinary tokens. Returns (tokens, target mask)."""
    keys: list[int] = []
    seen: set[int] = set()
    while len(keys) < pairs:
        t = int(stream[rng.integers(0, len(stream))])
        if t > END_ID + 15 and t not in seen:
            seen.add(t)
            keys.append(t)
    values = stream[rng.integers(0, len(stream), pairs)]
    order = rng.permutation(pairs)
    context = np.stack([keys, values], axis=1).ravel()
    queries = np.stack([np.asarray(keys)[order], values[order]], axis=1).ravel()
    tokens = np.concatenate([context, queries, [END_ID]]).astype(stream.dtype)
    target = np.zeros(len(tokens), dtype=bool)
    target[2 * pairs + 1 : 4 * pairs : 2] = True
    return tokens, target


def mqar_rows(n_rows: int, row_length: int, seed: int, stream: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of MQAR examples back to back (2-64 pairs each, log-uniform); the last one is cut."""
    rng = np.random.default_rng(seed)
    width = row_length + 1
    tokens = np.empty((n_rows, width), dtype=stream.dtype)
    masks = np.empty((n_rows, width), dtype=bool)
    for r in range(n_rows):
        parts, targets, filled = [], [], 0
        while filled < width:
            t, m = mqar_example(stream, int(np.exp(rng.uniform(np.log(2), np.log(64)))), rng)
            parts.append(t)
            targets.append(m)
            filled += len(t)
        tokens[r] = np.concatenate(parts)[:width]
        masks[r] = np.concatenate(targets)[:width]
    return tokens, masks
