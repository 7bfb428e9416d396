"""Is the answer in the passages? A model-free answerability score for the refusal gate (issue 13).

``EvidenceScorer(embedder)(question, passages)`` is the probability that the retrieved passages answer
the question, from a logistic model of two signals:

- support: the share of the question's content terms found in the passages (app.grounding.support);
- cosine: the embedder's cosine of the question and the retrieved sentence closest to it
  (app.sentences.closest_sentence, what the dev set's model-free baseline answers with).

Fitted on the dev set's single questions and first turns (benchmarks/refusal_signals.py: AUC 0.75-0.79
two-fold, against 0.70 for support alone); the threshold in ``app.grounding.REFUSAL_THRESHOLDS`` refuses
at most 10% of its answerable questions. A cosine's scale is its embedder's, so the model is kept per
embedder (``CALIBRATION``, by ``embedder.name``); for any other embedder the scorer is unavailable and the
decoder falls back to the "support" gate.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from .sentences import closest_sentence

# logit P(answerable) = intercept + support_weight * support + cosine_weight * cosine
CALIBRATION: dict[str, tuple[float, float, float]] = {
    "all-MiniLM-L6-v2": (-6.3266, 3.1896, 8.2662),  # 273 dev questions (46 unanswerable), 2026-12-03
}
CACHE_SENTENCES = 20_000  # sentence vectors kept (about 30 MB at 384 dims): passages come back often


class _LRU(OrderedDict):
    """A dict that forgets its oldest entries past ``limit`` (sentence -> vector)."""

    def __init__(self, limit: int):
        super().__init__()
        self.limit = limit

    def __setitem__(self, key, value) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self.limit:
            self.popitem(last=False)


class EvidenceScorer:
    """P(the passages answer the question) for one embedder; thread-safe (one lock around the cache)."""

    def __init__(self, embedder: Any, calibration: tuple[float, float, float] | None = None,
                 cache_sentences: int = CACHE_SENTENCES):
        self.embedder = embedder
        self._calibration = calibration
        self._cache = _LRU(cache_sentences)
        self._lock = threading.Lock()

    @property
    def calibration(self) -> tuple[float, float, float] | None:
        """The given calibration, else the one kept for this embedder's name (None: there is none)."""
        return self._calibration or CALIBRATION.get(getattr(self.embedder, "name", None))

    @property
    def available(self) -> bool:
        """Whether this embedder has a calibration (else the caller should fall back to "support")."""
        return self.calibration is not None

    def signals(self, question: str, passages: Sequence[Any]) -> dict[str, float]:
        from .grounding import support

        texts = [getattr(p, "text", p) for p in passages]
        with self._lock:
            _, cosine = closest_sentence(question, texts, self.embedder, self._cache)
        return {"support": support(question, texts), "cosine": cosine}

    def __call__(self, question: str, passages: Sequence[Any]) -> float | None:
        """The probability, or None without a calibration or without passages."""
        calibration = self.calibration
        if calibration is None or not passages:
            return None
        s = self.signals(question, passages)
        b, w_support, w_cosine = calibration
        logit = b + w_support * s["support"] + w_cosine * s["cosine"]
        return 1.0 / (1.0 + math.exp(-logit)) if logit > -700 else 0.0
