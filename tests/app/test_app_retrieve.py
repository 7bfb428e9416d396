"""Lexical re-ranking of dense hits (app.retrieve) and its use by MultiDocQA."""

from __future__ import annotations

from app.retrieve import lexical_rerank, terms
from retrieval import SearchHit


def hit(score, text, pid):
    return SearchHit(score, text, f"d{pid}", f"t{pid}", f"s{pid}", None, 0, len(text), 0, pid)


def test_terms_keep_option_and_dotted_names():
    assert terms("What does the --version option of grep do?") == {"--version", "grep"}
    assert terms("What does zlib.decompress() do?") == {"zlib.decompress"}


def test_exact_terms_lift_the_right_passage():
    hits = [hit(0.62, "grep prints lines that match patterns.", 1),
            hit(0.55, "--version Output the version number of grep and exit.", 2),
            hit(0.50, "Binary files are detected by NUL bytes.", 3)]
    ranked = lexical_rerank("What does the --version option of grep do?", hits)
    assert [h.passage_id for h in ranked] == [2, 1, 3]
    assert ranked[0].score > ranked[1].score >= ranked[2].score and ranked[0].text == hits[1].text
    assert lexical_rerank("what is it?", hits) == hits  # nothing but stop words: order kept
    assert lexical_rerank("--version grep", hits, weight=0) == hits


def test_multidocqa_reranks_unless_told_not_to(qa, monkeypatch):
    calls = []
    orig = qa.collection.search
    monkeypatch.setattr(qa.collection, "search", lambda q, k, documents=None: calls.append(k) or orig(q, k, documents))
    assert len(qa.ask("What does the -z option of tar do?").sources) == 2
    assert calls[-1] >= 20  # more candidates than needed, then re-ranked down to k
    qa.rerank = False
    qa.ask("What does the -z option of tar do?")
    assert calls[-1] == 2
