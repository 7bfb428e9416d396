"""Sentences of retrieved passages, and the one closest to a question.

Shared by the refusal gate (app.evidence: is any retrieved sentence close to the question?) and the
model-free baseline of the dev set (evaluation.dev_baseline: answer with that sentence). Passages are
cut into paragraphs, then at sentence ends; a sentence ending in ':' keeps what follows it, so
"Rebuild a project if source files change:" comes with its example command; a "sentence" longer than
MAX_SENTENCE_CHARS (a run-on table or code block) is cut by lines.
"""

from __future__ import annotations

import re
from collections.abc import MutableMapping, Sequence

import numpy as np

from .retrieve import terms

_PARAGRAPH = re.compile(r"\n[^\S\n]*\n\s*")
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+")
MAX_SENTENCE_CHARS = 600


def sentences(text: str) -> list[str]:
    """The sentences of a passage, whitespace collapsed, in order."""
    out: list[str] = []
    for para in _PARAGRAPH.split(text):
        para = para.strip()
        if not para:
            continue
        for piece in (p for p in _SENTENCE_END.split(para) if p.strip()):
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


def closest_sentence(question: str, passages: Sequence[str], embedder,
                     cache: MutableMapping[str, np.ndarray] | None = None) -> tuple[str, float]:
    """``(sentence, cosine)``: the sentence of ``passages`` closest to ``question`` by the embedder's cosine
    (its vectors are unit length), ties broken by shared question terms, then by order; ``("", 0.0)``
    when there is none. ``cache`` (sentence -> vector) saves re-encoding passages retrieved again."""
    cands = [s for p in passages for s in sentences(p)]
    if not cands:
        return "", 0.0
    cache = {} if cache is None else cache
    vec_of = {s: cache[s] for s in cands if s in cache}  # first: a bounded cache may drop old entries below
    new = [s for s in dict.fromkeys(cands) if s not in vec_of]
    vecs = np.asarray(embedder.encode([question, *new]), dtype=np.float32)
    vec_of.update(zip(new, vecs[1:], strict=True))
    cache.update(zip(new, vecs[1:], strict=True))
    cos = np.stack([vec_of[s] for s in cands]) @ vecs[0]
    q_terms = terms(question)
    # round the cosine so that float noise does not hide a tie the lexical overlap should break
    best = max(range(len(cands)), key=lambda i: (round(float(cos[i]), 6), len(q_terms & terms(cands[i])), -i))
    return cands[best], float(cos[best])
