"""retrieve(): the passages a question is answered from, used by QA, sessions and LangChain alike.

Dense search, then lexical re-ranking of the results: a cheap hybrid retriever.

Sentence embeddings (MiniLM) match meaning well but are weak on the exact strings
technical questions hinge on: option names (``--version``), dotted API names
(``zlib.decompress``), section titles. The app therefore asks the collection for
more candidates than it needs and re-scores them:

    score = cosine similarity + weight * (IDF-weighted share of the question's terms found in the passage)

where IDF is computed over the candidates themselves (terms that every candidate
has say nothing). Measured before choosing the default (all-MiniLM-L6-v2, weight 0.5):

- 300 evaluation episodes (data/build/episodes/eval.jsonl.gz, ~9.6 passages each with
  BM25-chosen hard distractors): gold passage ranked first 72% -> 86% (man_option
  29% -> 71%, api 38% -> 75%, synthetic facts 82% -> 100%; dictionary kinds unchanged).
- the 12 sample questions over data/samples (85 passages): answer passage in the top 4
  6 -> 9, first 2 -> 6.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence
from typing import Any

DEFAULT_WEIGHT = 0.5
DEFAULT_CANDIDATES = 20

_TERM = re.compile(r"--?\w[\w-]*|\w+(?:\.\w+)+(?:\(\))?|\w+")
_STOP = frozenset("""
a an the of to in on at by for with from and or not no is are was were be been being do does did doing what which
who whom whose when where why how this that these those it its as into than then there their they you your i we he
she me my our his her them can could should would will shall may might must about if so such any all some each
section first sentence option options python function method command mean means meant define defined
""".split())


def terms(text: str) -> set[str]:
    """Lower-cased words, option names and dotted names, without stop words."""
    out = set()
    for m in _TERM.findall(text.lower()):
        t = m.removesuffix("()")
        if len(t) > 1 and t not in _STOP:
            out.add(t)
    return out


def lexical_rerank(question: str, hits: Sequence[Any], weight: float = DEFAULT_WEIGHT) -> list[Any]:
    """``hits`` (retrieval.SearchHit, best first by cosine) re-ordered by the combined score, which
    replaces each hit's ``score``."""
    if not hits or weight == 0:
        return list(hits)
    q = terms(question)
    if not q:
        return list(hits)
    docs = [terms(h.text) for h in hits]
    n = len(hits)
    idf = {t: math.log(1 + n / (1 + sum(t in d for d in docs))) for t in q}
    total = sum(idf.values()) or 1.0
    scored = [(h.score + weight * sum(idf[t] for t in q & d) / total, i, h) for i, (h, d) in enumerate(zip(hits, docs,
                                                                                                        strict=True))]
    scored.sort(key=lambda x: (-x[0], x[1]))
    return [dataclasses.replace(h, score=float(s)) if dataclasses.is_dataclass(h) else h for s, _, h in scored]


def retrieve(collection: Any, question: str, k: int, *, documents: Any = None, rerank: bool = True) -> list[Any]:
    """The ``k`` best passages (retrieval.SearchHit) of ``collection`` for ``question``, best first.

    With ``rerank`` the collection is asked for more candidates (at least DEFAULT_CANDIDATES) and
    they are re-scored by ``lexical_rerank``. ``documents`` restricts the search to those document ids.
    """
    if collection is None or k <= 0:
        return []
    if not rerank:
        return list(collection.search(question, k, documents=documents))
    candidates = collection.search(question, max(DEFAULT_CANDIDATES, 4 * k), documents=documents)
    return lexical_rerank(question, candidates)[:k]
