"""The model-free baseline: answer with the retrieved sentence most similar to the question.

A reader that does not beat this adds nothing (DESIGN.md). Retrieved passages are cut into
sentences (app.sentences) and each is scored by the cosine of the collection's own embedder,
ties broken by how many of the question's terms (app.retrieve.terms) it shares. It never
refuses unless nothing was retrieved.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from app.sentences import closest_sentence, sentences

__all__ = ["best_sentence", "sentences"]


def best_sentence(question: str, passages: Sequence[str], embedder, cache: dict[str, np.ndarray] | None = None) -> str:
    """The sentence of ``passages`` closest to ``question`` ('' when there is none); ``cache`` (sentence ->
    vector) saves re-encoding the sentences of passages retrieved again."""
    return closest_sentence(question, passages, embedder, cache)[0]
