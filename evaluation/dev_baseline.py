"""The model-free baseline: answer with the retrieved sentence most similar to the question.

A reader that does not beat this adds nothing (DESIGN.md). Retrieved passages are cut into
sentences (paragraphs first, then sentence ends; a sentence ending in ':' keeps the paragraph
after it, so "Rebuild a project if source files change:" comes with its example command);
each is scored by the cosine of the collection's own embedder, ties broken by how many of the
question's terms (app.retrieve.terms) it shares. It never refuses unless nothing was retrieved.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from app.retrieve import terms

_PARAGRAPH = re.compile(r"\n[^\S\n]*\n\s*")
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+")
MAX_SENTENCE_CHARS = 600  # a "sentence" longer than this is a run-on table or code block: cut by lines


def sentences(text: str) -> list[str]:
    """The sentences of a passage, whitespace collapsed, in order."""
    out: list[str] = []
    for para in _PARAGRAPH.split(text):
        para = para.strip()
        if not para:
            continue
        pieces = [p for p in _SENTENCE_END.split(para) if p.strip()]
        for piece in pieces:
            if len(piece) > MAX_SENTENCE_CHARS:
                out += [ln for ln in piece.splitlines() if ln.strip()]
            else:
                out.append(piece)
    return _join_colons([" ".join(s.split()) for s in out])


def _join_colons(items: list[str]) -> list[str]:
    """Join a sentence that ends in ':' with the one after it (an example follows its caption)."""
    out: list[str] = []
    for s in items:
        if out and out[-1].endswith(":"):
            out[-1] = f"{out[-1]} {s}"
        else:
            out.append(s)
    return out


def best_sentence(question: str, passages: Sequence[str], embedder, cache: dict[str, np.ndarray] | None = None) -> str:
    """The sentence of ``passages`` closest to ``question`` by the embedder's cosine (vectors are
    unit length), ties broken by shared question terms, then by order; '' when there is none.
    ``cache`` (sentence -> vector) saves re-encoding the sentences of passages retrieved again."""
    cands = [s for p in passages for s in sentences(p)]
    if not cands:
        return ""
    cache = {} if cache is None else cache
    new = list(dict.fromkeys(s for s in cands if s not in cache))
    vecs = np.asarray(embedder.encode([question, *new]), dtype=np.float32)
    cache.update(zip(new, vecs[1:], strict=True))
    cos = np.stack([cache[s] for s in cands]) @ vecs[0]
    q_terms = terms(question)
    # round the cosine so that float noise does not hide a tie the lexical overlap should break
    best = max(range(len(cands)), key=lambda i: (round(float(cos[i]), 6), len(q_terms & terms(cands[i])), -i))
    return cands[best]
