"""retrieve(): the passages a question is answered from, used by QA, sessions and LangChain alike.

Hybrid search: the dense top 40 re-ranked lexically, fused by reciprocal rank fusion with the
BM25 top 40 over the whole collection (SQLite FTS5, ``Collection.lexical_search``). A follow-up
turn is searched with ``conversation_query``: its own words plus terms of the turns before.
Dev set (benchmarks/results/retrieval_dev.md, k = 4, all-MiniLM-L6-v2): single-passage questions
found 0.771 (dense top 20 re-ranked) -> 0.833 (session 5) -> 0.890 with passages embedded after
their titles and overlapping (retrieval.context, retrieval.splitter); follow-up turns 0.857 with the
conversation (first turns 0.864).

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
from collections.abc import Hashable, Sequence
from typing import Any

from .prompt import is_refusal

DEFAULT_WEIGHT = 0.5
DEFAULT_CANDIDATES = 40  # per retriever; dev set (benchmarks/results/retrieval_dev.md): 40 beat 20 and 60

# Option names, dotted names, words, and operators: runs of two or more symbols ("//", "|=", "->"),
# which technical questions ask about and which BM25's tokenizer drops (quotes, brackets and
# sentence punctuation are not operators).
_TERM = re.compile(r"--?\w[\w-]*|\w+(?:\.\w+)+(?:\(\))?|\w+|[^\w\s'\"()\[\]{},.;:!?]{2,}")
_STOP = frozenset("""
a an the of to in on at by for with from and or not no is are was were be been being do does did doing what which
who whom whose when where why how this that these those it its as into than then there their they you your i we he
she me my our his her them can could should would will shall may might must about if so such any all some each
section first sentence option options python function method command mean means meant define defined
""".split())


def terms(text: str) -> set[str]:
    """Lower-cased words, option names, dotted names and operators, without stop words."""
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


# Reciprocal rank fusion constant: a hit scores 1 / (RRF_K + rank) per ranking. Cormack et al. (2009)
# use 60 for long lists; over 40 candidates 10 keeps the top ranks apart (dev set: recall@4 0.81 -> 0.83).
RRF_K = 10


def rrf(rankings: Sequence[Sequence[Hashable]], weights: Sequence[float] | None = None,
        c: float = RRF_K) -> list[tuple[Hashable, float]]:
    """Reciprocal rank fusion: ``(key, sum over rankings of weight / (c + rank))``, best first.

    ``rank`` is 1-based; a key missing from a ranking gets nothing from it. Ties keep the order
    in which keys were first seen (rankings in order, each best first)."""
    weights = [1.0] * len(rankings) if weights is None else list(weights)
    if len(weights) != len(rankings):
        raise ValueError(f"{len(rankings)} rankings but {len(weights)} weights")
    scores: dict[Hashable, float] = {}
    for ranking, w in zip(rankings, weights, strict=True):
        for rank, key in enumerate(ranking, start=1):
            scores[key] = scores.get(key, 0.0) + w / (c + rank)
    order = {key: i for i, key in enumerate(scores)}
    return sorted(scores.items(), key=lambda kv: (-kv[1], order[kv[0]]))


def fuse(hit_lists: Sequence[Sequence[Any]], weights: Sequence[float] | None = None, c: float = RRF_K) -> list[Any]:
    """Hits of several rankings (retrieval.SearchHit, best first) fused by ``rrf`` on passage id;
    each hit's ``score`` becomes its fused score."""
    first: dict[int, Any] = {}
    for hits in hit_lists:
        for h in hits:
            first.setdefault(h.passage_id, h)
    fused = rrf([[h.passage_id for h in hits] for hits in hit_lists], weights, c)
    return [dataclasses.replace(first[pid], score=float(s)) for pid, s in fused]


def retrieve(collection: Any, question: str, k: int, *, documents: Any = None, rerank: bool = True,
             hybrid: bool = True) -> list[Any]:
    """The ``k`` best passages (retrieval.SearchHit) of ``collection`` for ``question``, best first.

    The collection is asked for more dense candidates than needed (at least DEFAULT_CANDIDATES);
    with ``rerank`` they are re-scored by ``lexical_rerank``; with ``hybrid`` that ranking is fused
    (``fuse``, reciprocal rank fusion) with as many BM25 matches over the whole collection
    (``collection.lexical_search``), so a passage the embedder ranks low can still come first on
    its exact words. ``documents`` restricts the search to those document ids.
    """
    if collection is None or k <= 0:
        return []
    lexical = getattr(collection, "lexical_search", None) if hybrid else None
    if not rerank and lexical is None:
        return list(collection.search(question, k, documents=documents))
    n = max(DEFAULT_CANDIDATES, 4 * k)
    dense = collection.search(question, n, documents=documents)
    if rerank:
        dense = lexical_rerank(question, dense)
    if lexical is None:
        return dense[:k]
    return fuse([dense, lexical(question, n, documents=documents)])[:k]


# Words by which a question leans on what came before: "does IT keep...", "and the number of threads?".
_ANAPHORA = frozenset("it its it's they them their that those these this ones same also too".split())
_LEANS = ("and ", "what about", "how about", "same ", "or ", "but ")
CONTEXT_TERMS = 8  # from earlier questions, most recent first
ANSWER_TERMS = 4  # from the last answer: it may be long, and the reader may be wrong


def leans_on_context(question: str) -> bool:
    """Whether ``question`` reads as a follow-up: a pronoun or "and ..."/"what about ...", or a single
    content term ("descending?", "what's the max?")."""
    q = question.lower().strip()
    words = set(re.findall(r"[\w']+", q))
    return bool(words & _ANAPHORA) or q.startswith(_LEANS) or len(terms(question)) <= 1


def conversation_query(history: Sequence[tuple[str, str]], question: str, turns: int = 2) -> str:
    """The search text for ``question`` asked after ``history`` ((question, answer) pairs, oldest first).

    A follow-up (``leans_on_context``) gets the salient terms of the last ``turns`` questions, most
    recent first, and a few of the last answer (option and dotted names first), after its own words.
    A question that stands alone is searched as it is, so a change of topic is not pulled back.
    """
    if not history or not leans_on_context(question):
        return question
    own = terms(question)
    extra: list[str] = []
    for q, _ in reversed(history[-turns:]):
        extra += [t for t in _ordered_terms(q) if t not in own and t not in extra][:CONTEXT_TERMS - len(extra)]
    last = history[-1][1]
    # a refusal says nothing about the topic ("documents" would be searched for)
    answer = [] if is_refusal(last) else [t for t in _ordered_terms(last) if t not in own and t not in extra]
    answer.sort(key=lambda t: not (t.startswith("-") or "." in t or "_" in t))  # stable: names first
    extra += answer[:ANSWER_TERMS]
    return " ".join([question, *extra])


def _ordered_terms(text: str) -> list[str]:
    """``terms`` in order of first appearance."""
    wanted, out = terms(text), []
    for m in _TERM.findall(text.lower()):
        t = m.removesuffix("()")
        if t in wanted and t not in out:
            out.append(t)
    return out
