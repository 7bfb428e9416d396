"""Scoring one answer to a dev-set question, and summing records up by group.

What counts (the dev set's own conventions, see data/eval/README.md):

- key-phrase hit: the answer contains every key phrase, both sides put through
  ``evaluation.devset.normalise`` (case, whitespace runs);
- token F1: SQuAD-style F1 (``evaluation.score.token_f1``) against the best reference answer;
- retrieval recall@k: a retrieved passage contains all the key phrases (for ``multi`` questions,
  which need two passages by design, each phrase in some retrieved passage); "right document":
  every document the question names is among the retrieved passages' documents;
- refusal: :func:`is_refusal`, the one place that decides whether an answer declines.

A *record* is a dict per (system, question); :func:`summarize` gives the means of a list of them.
"""

from __future__ import annotations

import importlib
import math
import re
import statistics
from collections.abc import Iterable, Sequence

from .devset import normalise
from .score import token_f1

# Said by readers that decline; matched on the normalised answer. The app's own fixed refusal
# sentence (app.prompt.REFUSAL, once the app has one) is added by refusal_phrases().
REFUSAL_PATTERNS = (
    "not in the documents",
    "not in the document",
    "not in the passages",
    "i don't know",
    "i do not know",
    "cannot find",
    "can't find",
    "could not find",
    "couldn't find",
    "no information",
    "not mentioned",
    "does not say",
    "doesn't say",
)
_APOSTROPHES = re.compile("[\u2018\u2019`]")


def refusal_phrases() -> tuple[str, ...]:
    """REFUSAL_PATTERNS plus the app's fixed refusal sentence if ``app.prompt`` exports ``REFUSAL``."""
    try:
        sentence = getattr(importlib.import_module("app.prompt"), "REFUSAL", None)
    except ImportError:
        sentence = None
    extra = (_norm_refusal(sentence),) if isinstance(sentence, str) and sentence.strip() else ()
    return extra + REFUSAL_PATTERNS


def _norm_refusal(text: str) -> str:
    return normalise(_APOSTROPHES.sub("'", text)).rstrip(".!")


def is_refusal(text: str, phrases: Sequence[str] | None = None) -> bool:
    """True when the answer declines: it is empty, or it contains a refusal phrase (case and
    whitespace ignored). An empty answer counts because a user is told nothing either way."""
    norm = _norm_refusal(text)
    if not norm:
        return True
    return any(p in norm for p in (refusal_phrases() if phrases is None else phrases))


def key_phrase_hit(answer: str, key_phrases: Sequence[str]) -> bool | None:
    """Every key phrase occurs in the answer (normalised); None when there are no key phrases."""
    if not key_phrases:
        return None
    norm = normalise(answer)
    return all(normalise(p) in norm for p in key_phrases)


def best_f1(answer: str, references: Sequence[str]) -> float:
    """Token F1 against the reference answer it matches best."""
    return max((token_f1(answer, r) for r in references), default=0.0)


def passage_recall(passages: Sequence[str], key_phrases: Sequence[str], together: bool = True) -> bool | None:
    """Whether the retrieved ``passages`` hold the answer: one passage with every key phrase
    (``together``), or each phrase in some passage. None when there are no key phrases."""
    if not key_phrases:
        return None
    texts = [normalise(p) for p in passages]
    phrases = [normalise(p) for p in key_phrases]
    if together:
        return any(all(p in t for p in phrases) for t in texts)
    return all(any(p in t for t in texts) for p in phrases)


def document_recall(retrieved_docs: Iterable[str], gold_docs: Sequence[str]) -> bool | None:
    """Every document that holds the answer is among the retrieved passages' documents."""
    if not gold_docs:
        return None
    found = set(retrieved_docs)
    return all(d in found for d in gold_docs)


def score_answer(answer: str, question, passages: Sequence[str] | None, passage_docs: Sequence[str] | None) -> dict:
    """The scores of one answer to a ``devset.Question``. ``passages`` None: no retrieval
    (closed book), so no recall."""
    retrieved = passages is not None
    return {
        "hit": key_phrase_hit(answer, question.key_phrases),
        "f1": best_f1(answer, question.answers) if question.answerable else None,
        "refused": is_refusal(answer),
        "recall": passage_recall(passages, question.key_phrases, together=question.type != "multi")
        if retrieved and question.answerable else None,
        "doc_recall": document_recall(passage_docs or (), question.docs) if retrieved and question.answerable
        else None,
    }


# -- summaries ------------------------------------------------------------------------------------
def _mean(values: Iterable) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def summarize(records: Sequence[dict]) -> dict:
    """Means over records: recall, right document, key-phrase hit and F1 over answerable questions;
    refusal over unanswerable ones, false refusal over answerable ones; mean time to first token and
    tokens per second (where the system generates tokens)."""
    answerable = [r for r in records if r["answerable"]]
    unanswerable = [r for r in records if not r["answerable"]]
    ttft = [r["timings"]["first_token_s"] for r in records if r["timings"].get("first_token_s") is not None]
    rates = [r["timings"]["tokens_per_s"] for r in records if r["timings"].get("tokens_per_s")]
    return {
        "n": len(records), "n_answerable": len(answerable), "n_unanswerable": len(unanswerable),
        "recall": _mean(r["recall"] for r in answerable),
        "doc_recall": _mean(r["doc_recall"] for r in answerable),
        "hit": _mean(r["hit"] for r in answerable),
        "f1": _mean(r["f1"] for r in answerable),
        "refusal": _mean(r["refused"] for r in unanswerable),
        "false_refusal": _mean(r["refused"] for r in answerable),
        "ttft_s": _mean(ttft), "ttft_median_s": statistics.median(ttft) if ttft else None,
        "tokens_per_s": _mean(rates),
    }


def turn_group(record: dict) -> str:
    """``single`` for a question on its own, else ``turn N`` of its conversation."""
    return "single" if record["turn"] is None else f"turn {record['turn']}"


def grouped(records: Sequence[dict]) -> dict:
    """``{"overall": summary, "types": {type: summary}, "turns": {group: summary}}``."""
    types: dict[str, list[dict]] = {}
    turns: dict[str, list[dict]] = {}
    for r in records:
        types.setdefault(r["type"], []).append(r)
        turns.setdefault(turn_group(r), []).append(r)
    return {"overall": summarize(records),
            "types": {t: summarize(rs) for t, rs in sorted(types.items())},
            "turns": {t: summarize(rs) for t, rs in sorted(turns.items(), key=lambda kv: (kv[0] != "single", kv[0]))}}


def fmt(value: float | None, digits: int = 3) -> str:
    """A table cell: '-' for a mean over nothing."""
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"
