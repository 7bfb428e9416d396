"""Passages are embedded after their document's title (retrieval.context), as each collection records."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval import CollectionError, Document, Page
from retrieval.context import META_KEY, embedding_text

KEEP = "-k: keep the source file after the run."


def doc(name: str, text: str, title: str) -> Document:
    return Document(id=f"id-{name}", source=f"/virtual/{name}.txt", title=title, kind="text", text=text,
                    pages=[Page(None, 0, len(text))], size_bytes=len(text))


def test_embedding_text():
    assert embedding_text("body", "zstd  manual\n", "title") == "zstd manual\nbody"
    assert embedding_text("body", "zstd manual", "none") == "body"
    assert embedding_text("body", "  ", "title") == "body"  # no title, nothing to add


def test_new_collection_embeds_the_title_with_each_passage(make_collection, embedder):
    col = make_collection()
    assert col.passage_context == "title" and col.store.get_meta(META_KEY) == "title"
    col.add_documents([doc("zstd", KEEP, "zstd manual")])
    stored = col.store.vectors(col.store.passage_ids(["id-zstd"]), col.dim)[0]
    assert np.allclose(stored, embedder.encode([f"zstd manual\n{KEEP}"])[0])
    assert col.passages("id-zstd")[0].text == KEEP  # the stored passage is the text alone


def test_title_tells_apart_passages_that_do_not_name_their_program(make_collection):
    docs = [doc("gzip", KEEP, "gzip manual"), doc("zstd", KEEP, "zstd manual"), doc("xz", KEEP, "xz manual")]
    with_title, plain = make_collection("titled"), make_collection("plain", passage_context="none")
    for col in (with_title, plain):
        col.add_documents(docs)
    question = "how do I make zstd keep the source file"
    assert with_title.search(question, k=1)[0].doc_id == "id-zstd"
    scores = [h.score for h in plain.search(question, k=3)]
    assert max(scores) - min(scores) < 1e-6  # the same text: nothing to choose by


def test_a_collection_keeps_the_context_it_was_made_with(make_collection, data_dir, embedder):
    from retrieval import Collection

    plain = make_collection("plain", passage_context="none")
    plain.close()
    # Reopened (even with a different default asked for), it goes on embedding plain text.
    with Collection.open_or_create("plain", data_dir, embedder=embedder, passage_context="title") as col:
        assert col.passage_context == "none"
        col.add_documents([doc("zstd", KEEP, "zstd manual")])
        stored = col.store.vectors(col.store.passage_ids(["id-zstd"]), col.dim)[0]
        assert np.allclose(stored, embedder.encode([KEEP])[0])


def test_collections_made_before_the_context_existed_stay_plain(make_collection, data_dir, embedder):
    from retrieval import Collection

    old = make_collection("old")
    with old.store.transaction() as conn:  # what a collection of an earlier version holds: no such key
        conn.execute("DELETE FROM meta WHERE key = ?", (META_KEY,))
    old.close()
    with Collection.open("old", data_dir, embedder=embedder) as col:
        assert col.passage_context == "none"


def test_unknown_context_is_refused(make_collection):
    with pytest.raises(CollectionError, match="passage_context"):
        make_collection(passage_context="summary")
