"""The answerability score of the refusal gate (app.evidence) and how the decoder uses it."""

from __future__ import annotations

import numpy as np
import pytest

from app.decoder import AnswerStream
from app.encoder import Reader
from app.evidence import _LRU, CALIBRATION, EvidenceScorer
from app.grounding import REFUSAL, REFUSAL_THRESHOLDS
from app.sentences import closest_sentence
from app.types import Source
from retrieval import HashEmbedder

GZIP = "Gzip compresses files with Lempel-Ziv coding. The -k option keeps the input files."
PASSAGES = [GZIP, "Tar collects files into one archive.\n\nThe -x option extracts an archive.",
            "Make builds programs. It reads a Makefile:\n\n  $ make all"]


def src(text: str, n: int = 1) -> Source:
    return Source(n, "doc", "doc.txt", None, text, 1.0, f"d{n}", 0, len(text))


class Named(HashEmbedder):
    """A hash embedder under another name, so a test can give it a calibration."""

    def __init__(self, name: str):
        super().__init__(256)
        self.name = name


def test_closest_sentence_is_the_same_through_a_cache_too_small_to_hold_one_question():
    emb = HashEmbedder(256)
    question = "which option extracts an archive"
    full = closest_sentence(question, PASSAGES, emb)
    tiny = _LRU(1)  # every new sentence evicts the last: vectors must be taken before they go
    assert closest_sentence(question, PASSAGES, emb, tiny) == full
    assert closest_sentence(question, PASSAGES, emb, tiny) == full  # again, one entry cached
    assert full[0] == "The -x option extracts an archive." and 0 < full[1] <= 1 + 1e-6
    assert closest_sentence(question, [], emb) == ("", 0.0)


def test_lru_keeps_only_the_newest_entries():
    lru = _LRU(2)
    for key in "abc":
        lru[key] = np.zeros(1)
    lru.update({"d": np.zeros(1)})
    assert list(lru) == ["c", "d"]


def test_the_score_is_the_calibrated_logistic_of_support_and_cosine():
    emb = Named("test-embedder")
    b, ws, wc = -3.0, 2.0, 4.0
    scorer = EvidenceScorer(emb, calibration=(b, ws, wc))
    question = "Which gzip option keeps the input files?"
    sig = scorer.signals(question, [src(p) for p in PASSAGES])
    assert sig["support"] == 1.0 and sig["cosine"] == pytest.approx(closest_sentence(question, PASSAGES, emb)[1])
    expected = 1 / (1 + np.exp(-(b + ws * sig["support"] + wc * sig["cosine"])))
    assert scorer(question, [src(p) for p in PASSAGES]) == pytest.approx(expected)
    # an unrelated question scores lower on both signals, so lower overall (positive weights)
    assert scorer("How do I split tmux windows vertically?", [src(p) for p in PASSAGES]) < expected


def test_no_score_without_a_calibration_or_without_passages():
    assert not EvidenceScorer(Named("some-other-model")).available
    assert EvidenceScorer(Named("some-other-model"))("anything?", [src(GZIP)]) is None
    assert EvidenceScorer(Named("x"), calibration=(0.0, 1.0, 1.0))("anything?", []) is None
    # the shipped calibration is keyed by the bundled embedder's name
    assert EvidenceScorer(Named("all-MiniLM-L6-v2")).calibration == CALIBRATION["all-MiniLM-L6-v2"]


def _stream(reader, question, evidence):
    sources = [src(GZIP)]
    turn = reader.layout_turn(question, sources, first_turn=True)
    ing = reader.ingest(turn, reader.new_state(), reader.root_key())
    return AnswerStream(reader, ing.state, ing.logits, ing.key, question=question, sources=sources,
                        sampling=reader.sampling_config(), evidence=evidence)


@pytest.mark.parametrize("grounded", [True, False])
def test_the_gate_refuses_below_the_evidence_threshold_and_only_then(special_model, special_tok, grounded):
    seen = []

    def evidence(value):
        def score(question, sources):
            seen.append((question, [s.text for s in sources]))
            return value
        return score

    extra = {} if grounded else {"free_refusal": "gate"}
    reader = Reader(special_model, special_tok, grounded=grounded, max_new_tokens=6, **extra)
    assert reader.options.refusal_score == "evidence"  # the default
    question = "Which gzip option keeps the input files?"  # full support: "support" alone would not refuse
    low = _stream(reader, question, evidence(REFUSAL_THRESHOLDS["evidence"] - 0.01)).answer
    assert low.refused and low.text == REFUSAL
    high = _stream(reader, question, evidence(REFUSAL_THRESHOLDS["evidence"] + 0.01)).answer
    assert not high.refused and high.text != REFUSAL
    assert seen == [(question, [GZIP])] * 2
    # a user threshold applies to the evidence score
    strict = Reader(special_model, special_tok, grounded=grounded, max_new_tokens=6, refusal_threshold=0.99, **extra)
    assert _stream(strict, question, evidence(0.98)).answer.refused


def test_without_a_calibrated_score_the_support_gate_decides(special_model, special_tok):
    reader = Reader(special_model, special_tok, grounded=True, max_new_tokens=6, refusal_threshold=0.0)
    # no scorer, or one without a calibration: "support" at its own threshold (the 0.0 above is on the
    # evidence scale and does not apply)
    for evidence in (None, lambda q, s: None):
        assert _stream(reader, "How do I split tmux windows?", evidence).answer.refused  # support 0.0
        assert not _stream(reader, "Which gzip option keeps the input files?", evidence).answer.refused


def test_explicit_support_score_ignores_the_evidence_scorer(special_model, special_tok):
    reader = Reader(special_model, special_tok, grounded=True, max_new_tokens=6, refusal_score="support")
    answer = _stream(reader, "Which gzip option keeps the input files?", lambda q, s: 0.0).answer
    assert not answer.refused


def test_sessions_of_a_multidocqa_score_with_its_collections_embedder(qa, monkeypatch):
    import app.evidence as evidence_module

    monkeypatch.setitem(evidence_module.CALIBRATION, qa.collection.embedder.name, (-50.0, 0.0, 0.0))
    session = qa.session()
    assert session.evidence.embedder is qa.collection.embedder and session.evidence.available
    assert session.fork().evidence is session.evidence
    # the calibration above scores every question ~0: the gate refuses whatever is asked
    answer = qa.ask("what does the -k option do?")
    assert answer.refused and answer.text == REFUSAL


def test_a_follow_up_is_gated_on_the_sessions_search_text(qa):
    seen = []
    session = qa.session()
    session.evidence = lambda text, sources: seen.append(text)  # None: "support" decides; we only watch
    session.ask("what does the -k option of gzip do?")
    session.ask("and what about -d?")
    assert seen[0] == "what does the -k option of gzip do?"
    assert seen[1].startswith("and what about -d?") and "gzip" in seen[1]  # the conversation's terms
