"""BM25 over the whole collection (SQLite FTS5): kept in step with the passages, safe on any query,
added to collections made before it existed."""

from __future__ import annotations

import sqlite3

import pytest

import retrieval.lexical as lexical
from retrieval import Collection, Document, Page
from retrieval.lexical import FTS_TABLE, fts_query

from .retrieval_testdata import assert_consistent, fts_out_of_step, on_disk_state, write

FILLER = "Compress the file with the tool; the compressed file replaces the file you compress."
KEEP = "--keep Do not delete the input files after a successful run."


def doc(name: str, text: str) -> Document:
    return Document(id=f"id-{name}", source=f"/virtual/{name}.txt", title=f"{name} manual", kind="text", text=text,
                    pages=[Page(None, 0, len(text))], size_bytes=len(text))


@pytest.fixture
def tools(make_collection):
    """30 passages that repeat the question's common words, and one that holds its rare option name.
    Embedded without their titles (passage_context="none"): the dense ranks below follow the text's words."""
    col = make_collection(passage_context="none")
    col.add_documents([doc(f"filler{i}", f"{FILLER} Note {i}.") for i in range(30)] + [doc("keeper", KEEP)])
    return col


def test_fts_table_follows_adds_and_deletes(tools, data_dir):
    assert_consistent(tools)  # includes the FTS table (retrieval_testdata.fts_out_of_step)
    assert on_disk_state(tools.path)["passages"] == 31
    keeper = tools.lexical_search("--keep", k=3)
    assert [h.doc_id for h in keeper] == ["id-keeper"] and keeper[0].title == "keeper manual"
    assert tools.delete("id-keeper") and tools.delete("id-filler3")
    assert_consistent(tools)
    assert tools.lexical_search("--keep", k=3) == []
    assert len(tools.lexical_search("compress file", k=100)) == 29
    # Another process sees the same: the table is on disk, committed with the passages.
    with Collection.open(tools.name, data_dir, embedder=tools.embedder, progress=False) as other:
        assert len(other.lexical_search("compress file", k=100)) == 29


def test_failed_transaction_leaves_passages_and_fts_in_step(tools, monkeypatch):
    """A failure after the FTS rows went in (as a kill would) rolls them back with the passages."""
    before = on_disk_state(tools.path)

    def add_then_fail(conn, ids, texts, title):
        original(conn, ids, texts, title)
        raise sqlite3.OperationalError("disk I/O error")

    original = lexical.add_rows
    monkeypatch.setattr(lexical, "add_rows", add_then_fail)
    report = tools.add_documents([doc("late", "--late arrives after the rest.")])
    assert not report.ok and "could not store" in report.results[0].error
    after = on_disk_state(tools.path)
    assert (after["passages"], after["generation"]) == (before["passages"], before["generation"])
    assert after["fts_mismatch"] == 0 and tools.lexical_search("--late", k=3) == []


def test_bm25_finds_an_exact_option_name_that_dense_ranks_low(tools):
    from app.retrieve import retrieve

    question = "compress a file but keep the original"
    dense = [h.doc_id for h in tools.search(question, k=31)]
    assert dense.index("id-keeper") >= 4  # the hash embedder counts words: the filler says "compress file" more
    assert tools.lexical_search(question, k=1)[0].doc_id == "id-keeper"  # "keep" is rare: high IDF
    assert "id-keeper" in [h.doc_id for h in retrieve(tools, question, 4)]  # fused, it makes the top 4


def test_documents_filter(tools):
    assert [h.doc_id for h in tools.lexical_search("compress", k=5, documents="id-filler7")] == ["id-filler7"]
    hits = tools.lexical_search("compress keep", k=10, documents=["id-keeper", "id-filler1"])
    assert {h.doc_id for h in hits} == {"id-keeper", "id-filler1"}
    assert tools.lexical_search("compress", documents=[]) == []
    assert tools.lexical_search("compress", k=0) == []


HOSTILE = ['"', '""', "*", "AND", "OR", "NOT", "-", "--", "NEAR(", "NEAR(a b", "(((", ")", "a AND", "title:x",
           "text: keep", "^keep", "keep*", "'", "\\", "\x00", ";DROP TABLE passages;--", "", "   ", "?!.,;:",
           "🙂 émigré", "x" * 10_000, "keep " * 2_000, "-i -r --keep", "{a b}", "+keep -filler"]


@pytest.mark.parametrize("query", HOSTILE, ids=lambda q: repr(q[:12]))
def test_hostile_queries_never_raise(tools, query):
    from app.retrieve import retrieve

    hits = tools.lexical_search(query, k=5)
    assert all(h.score > 0 for h in hits)
    assert len(retrieve(tools, query, 3)) <= 3
    assert_consistent(tools)  # nothing was dropped or changed


def test_fts_query_quotes_every_piece():
    assert fts_query("--keep") == '"keep"'
    assert fts_query("what does zlib.decompress() do?") == '"zlib decompress"'
    assert fts_query('say "NEAR(a, b)" AND -i') == '"say" OR "near a" OR "b" OR "i"'  # "and" is a stop word, -i not
    assert fts_query("?!") == fts_query("") == fts_query("how is it?") == ""
    assert fts_query(" ".join(f"w{i}" for i in range(500))).count(" OR ") == lexical.MAX_PHRASES - 1


def test_option_names_and_dotted_names_match_as_written(make_collection):
    col = make_collection()
    col.add_documents([doc("a", "-I pattern Do not list files that match the wild-card pattern."),
                       doc("b", "Use zlib.decompress to inflate; node_modules is skipped."),
                       doc("c", "decompress the zlib stream with care; node and modules are words.")])
    assert col.lexical_search("-I", k=1)[0].doc_id == "id-a"
    assert col.lexical_search("zlib.decompress", k=3)[0].doc_id == "id-b"  # a phrase: adjacent words first
    assert [h.doc_id for h in col.lexical_search("node_modules", k=3)] == ["id-b"]
    assert col.lexical_search("patterns listed", k=1)[0].doc_id == "id-a"  # stemmed


def test_old_collection_without_fts_is_migrated_on_open(make_collection, data_dir, tmp_path):
    col = make_collection("old")
    write(tmp_path / "old" / "gzip.txt", "gzip -d decompresses files.")
    write(tmp_path / "old" / "tar.txt", "tar -x extracts files. --keep-old-files keeps them.")
    assert len(col.add(tmp_path / "old").added) == 2
    col.close()
    conn = sqlite3.connect(str(col.path / "collection.sqlite3"))
    conn.execute(f"DROP TABLE {FTS_TABLE}")  # as a collection written before BM25 existed
    conn.commit()
    conn.close()
    with Collection.open("old", data_dir, embedder=col.embedder, progress=False) as reopened:
        assert_consistent(reopened)
        assert reopened.lexical_search("keep old files", k=1)[0].title == "tar"
        assert reopened.add_documents([doc("new", "--new arrives later.")]).ok
        assert reopened.lexical_search("--new", k=1)[0].doc_id == "id-new"
        assert_consistent(reopened)
    conn = sqlite3.connect(str(col.path / "collection.sqlite3"))
    assert fts_out_of_step(conn) == 0
    conn.close()


def test_migration_runs_once(make_collection, monkeypatch):
    col = make_collection()
    col.add_documents([doc("a", "alpha beta")])
    assert lexical.ensure_fts(col.store.conn) is False  # already there: nothing rebuilt
    assert len(col.lexical_search("alpha")) == 1
