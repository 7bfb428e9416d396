"""Scoring answers: SQuAD-style normalisation, exact match, containment, token F1, and summaries.

A *record* is one scored answer (a dict with at least ``em``, ``contains``, ``f1``, ``prompt_tokens``,
``seconds`` and ``kind``); ``summarize`` turns a list of them into means overall and per kind.
"""

from __future__ import annotations

import re
import string
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)
METRICS = ("em", "contains", "f1")
SAMPLES = 5  # answers kept verbatim in a summary


def normalize(text: str) -> str:
    """Lower case, no punctuation, no articles, single spaces."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCT)).split())


def token_f1(prediction: str, answer: str) -> float:
    p, a = normalize(prediction).split(), normalize(answer).split()
    common = sum((Counter(p) & Counter(a)).values())
    if not p or not a or not common:
        return float(p == a)
    precision, recall = common / len(p), common / len(a)
    return 2 * precision * recall / (precision + recall)


def score(prediction: str, answer: str) -> dict:
    n_pred, n_ans = normalize(prediction), normalize(answer)
    return {"em": float(n_pred == n_ans), "contains": float(bool(n_ans) and n_ans in n_pred),
            "f1": token_f1(prediction, answer)}


def contains_answer(text: str, answer: str) -> bool:
    """True if ``text`` gives the answer away: the raw answer (any case) or its normalised words
    (as whole words) occur in it."""
    if answer.strip() and answer.strip().lower() in text.lower():
        return True
    n_ans = normalize(answer)
    return bool(n_ans) and f" {n_ans} " in f" {normalize(text)} "


def _means(records: Sequence[dict]) -> dict:
    n = len(records)
    return {m: (sum(r[m] for r in records) / n if n else float("nan")) for m in METRICS}


def summarize(records: Sequence[dict], groups: dict[str, Callable[[dict], bool]] | None = None,
              keep_records: bool = True) -> dict:
    """Means of the metrics, overall and per kind; mean prompt tokens; total and per-answer seconds;
    the first few answers; optionally the same for named sub-groups (``groups``: name -> predicate)."""
    n = len(records)
    kinds: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        kinds[r.get("kind", "all")].append(r)
    seconds = sum(r.get("seconds", 0.0) for r in records)
    out = {"n": n, **_means(records),
           "prompt_tokens": sum(r.get("prompt_tokens", 0) for r in records) / n if n else float("nan"),
           "seconds": seconds, "seconds_per_answer": seconds / n if n else float("nan"),
           "kinds": {k: {**_means(rs), "n": len(rs)} for k, rs in sorted(kinds.items())},
           "samples": [{k: r[k] for k in ("question", "answer", "output") if k in r} for r in records[:SAMPLES]]}
    if groups:
        out["groups"] = {name: summarize([r for r in records if pred(r)], keep_records=False)
                         for name, pred in groups.items()}
    if keep_records:
        out["records"] = list(records)
    return out
