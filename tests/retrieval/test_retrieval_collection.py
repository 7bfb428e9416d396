"""Collection: add, search with provenance, duplicates, delete, persistence, names, index kinds."""

from __future__ import annotations

import time

import numpy as np
import pytest

import retrieval.index as index_module
from retrieval import Collection, CollectionError, Document, HashEmbedder, Page, Splitter, load_document

from .retrieval_testdata import assert_consistent, text_pdf, write

ANIMALS = "Cats sleep most of the day in warm sunny spots.\n\nDogs bark at the mailman every morning."
SPACE = "Rockets need a lot of fuel to reach orbit.\n\nThe moon has no atmosphere at all."


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "corpus"
    write(root / "animals.txt", ANIMALS)
    write(root / "nested" / "space.md", "# Space facts\n\n" + SPACE)
    write(root / "manual.pdf", text_pdf(["Press the red button to start.", "Clean the filter weekly."],
                                        title="Blender manual"))
    return root


def test_add_and_search_with_provenance(make_collection, corpus):
    col = make_collection()
    report = col.add([corpus])
    assert report.ok and len(report.added) == 3 and report.passages == len(col) > 0
    hits = col.search("clean the filter weekly", k=3)
    top = hits[0]
    assert top.title == "Blender manual" and top.page == 2 and top.source.endswith("manual.pdf")
    assert "Clean the filter weekly." in top.text
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    # Offsets point into the document text as the loader produced it.
    doc = load_document(top.source)
    assert doc.id == top.doc_id and doc.text[top.start : top.end] == top.text
    assert top.position == 1
    assert_consistent(col)


def test_search_filter_by_document(make_collection, corpus):
    col = make_collection()
    col.add(corpus)
    space = next(d for d in col.documents() if d.kind == "markdown")
    hits = col.search("cats sleep", k=10, documents=[space.id])
    assert hits and {h.doc_id for h in hits} == {space.id}
    assert col.search("cats", documents=space.id)[0].doc_id == space.id  # a single id works too
    assert col.search("cats", documents=["no-such-doc"]) == []
    assert col.search("cats", k=0) == []


def test_duplicates_skipped_in_batch_and_later(make_collection, corpus, tmp_path):
    col = make_collection()
    copy = write(tmp_path / "copy-of-animals.txt", ANIMALS)
    report = col.add([corpus / "animals.txt", copy])
    assert [r.status for r in report.results] == ["added", "duplicate"]
    assert report.duplicates[0].duplicate_of == str(corpus / "animals.txt")
    n = len(col)
    again = col.add(corpus)
    assert len(again.duplicates) == 1 and len(again.added) == 2
    assert col.add(corpus).duplicates and len(col.documents()) == 3
    assert len(col) > n
    assert_consistent(col)


def test_a_moved_folder_added_again_moves_its_documents(make_collection, corpus, tmp_path, data_dir):
    """Same bytes at a new path while the recorded file is gone (a folder moved, a checkout cloned anew):
    the stored document now points at the new path (sources, searches, removal by path); passages and
    vectors stay. Where the old file still exists it is a plain duplicate, and a second copy of a moved
    file in the same add is one too."""
    col = make_collection()
    col.add(corpus)
    before = {d.id: d for d in col.documents()}
    passages = len(col)
    moved = tmp_path / "moved"
    corpus.rename(moved)
    extra = write(tmp_path / "kept" / "animals.txt", ANIMALS)  # a copy of a moved file, after it in the add
    report = col.add([moved, extra])
    assert sorted(r.path for r in report.moved) == sorted(str(p) for p in moved.rglob("*") if p.is_file())
    assert all(r.moved_from.startswith(str(corpus)) and "which is gone" in str(r) for r in report.moved)
    assert report.result(str(extra)).status == "duplicate" and report.result(str(extra)).moved_from is None
    assert "3 moved" in report.summary() and "0 duplicate(s)" not in report.summary()
    after = {d.id: d for d in col.documents()}
    assert after.keys() == before.keys() and len(col) == passages
    assert all(d.source.startswith(str(moved)) for d in after.values())
    hit = col.search("clean the filter weekly", k=1)[0]
    assert hit.source == str(moved / "manual.pdf")
    reopened = Collection.open(col.name, data_dir, embedder=col.embedder)  # another process sees the move
    assert {d.source for d in reopened.documents()} == {d.source for d in after.values()}
    assert [d.id for d in col.remove_documents(moved / "nested")] == [after_id for after_id, d in after.items()
                                                                       if d.kind == "markdown"]
    again = col.add(moved)  # files still there: nothing moves
    assert not again.moved and len(again.unchanged) == 2
    assert_consistent(col)


def test_delete_and_documents(make_collection, corpus):
    col = make_collection()
    col.add(corpus)
    docs = {d.title: d for d in col.documents()}
    assert set(docs) == {"animals", "Space facts", "Blender manual"}
    assert docs["Blender manual"].pages == 2 and docs["Blender manual"].kind == "pdf"
    assert col.delete(docs["animals"].id) is True
    assert col.delete(docs["animals"].id) is False
    assert all(h.doc_id != docs["animals"].id for h in col.search("cats sleep", k=10))
    assert {d.title for d in col.documents()} == {"Space facts", "Blender manual"}
    assert_consistent(col)


def test_persistence_and_reopen(data_dir, embedder, corpus):
    with Collection.create("keep", data_dir, embedder=embedder, progress=False) as col:
        col.add(corpus)
        before = [(h.passage_id, h.score) for h in col.search("rocket fuel")]
    with Collection.open("keep", data_dir) as col:  # embedder found from its stored name
        assert col.embedder.name == embedder.name
        assert [(h.passage_id, h.score) for h in col.search("rocket fuel")] == before
        assert_consistent(col)


def test_open_errors(data_dir, embedder):
    with pytest.raises(CollectionError, match="no collection"):
        Collection.open("missing", data_dir)
    Collection.create("one", data_dir, embedder=embedder).close()
    with pytest.raises(CollectionError, match="already exists"):
        Collection.create("one", data_dir, embedder=embedder)
    with pytest.raises(CollectionError, match="was built with embedder"):
        Collection.open("one", data_dir, embedder=HashEmbedder(dim=32))


def test_several_collections_side_by_side(make_collection, corpus, data_dir):
    a, b = make_collection("a"), make_collection("b")
    a.add(corpus / "animals.txt")
    b.add(corpus / "nested")
    assert Collection.list(data_dir) == ["a", "b"]
    assert {h.title for h in a.search("moon", k=5)} == {"animals"}
    assert {h.title for h in b.search("cats", k=5)} == {"Space facts"}
    b.close()
    Collection.remove("b", data_dir)
    assert Collection.list(data_dir) == ["a"]
    assert Collection.list(data_dir / "nowhere") == []


@pytest.mark.parametrize(
    "name", ["..", ".", "../x", "a/b", "/etc", "/tmp/abs", "a\\b", "", ".hidden", "x" * 200, "a b", "é"]
)
def test_names_cannot_escape_data_dir(data_dir, embedder, name):
    with pytest.raises(CollectionError, match="invalid collection name"):
        Collection.open_or_create(name, data_dir, embedder=embedder)
    assert not data_dir.exists() or not any(data_dir.iterdir())


def test_other_instance_sees_changes(make_collection, corpus, data_dir):
    writer = make_collection("shared")
    reader = Collection.open("shared", data_dir, progress=False)
    try:
        assert reader.search("cats") == []
        writer.add(corpus / "animals.txt")
        assert reader.search("cats")[0].title == "animals"  # picks up the newer generation
        writer.delete(reader.documents()[0].id)
        assert reader.search("cats") == []
    finally:
        reader.close()


def test_add_documents_and_custom_splitter(make_collection):
    col = make_collection(splitter=Splitter(max_tokens=5))
    text = "one two three four five six seven eight nine ten"
    doc = Document("memo0001", "memo", "Memo", "text", text, [Page(None, 0, len(text))])
    report = col.add_documents([doc, doc])
    assert [r.status for r in report.results] == ["added", "duplicate"]
    assert len(col) == 2 and col.search("seven eight")[0].text == "six seven eight nine ten"
    assert [p.text for p in col.passages("memo0001")] == ["one two three four five", "six seven eight nine ten"]
    assert col.passages("nope") == []
    blank = Document("blank001", "blank", "Blank", "text", "   ", [Page(None, 0, 3)])
    assert col.add_documents([blank]).results[0].error == "no text to index"


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_other_index_kinds(make_collection, corpus, kind):
    col = make_collection(kind, index=kind)
    col.add(corpus)
    assert col.index.layout == ("hnsw" if kind == "hnsw" else "flat")  # ivf is flat while small
    hits = col.search("Rockets need a lot of fuel", k=3)
    assert "Rockets" in hits[0].text
    space = next(d for d in col.documents() if d.kind == "markdown")
    assert {h.doc_id for h in col.search("cats", documents=[space.id])} == {space.id}
    col.delete(space.id)
    assert all(h.doc_id != space.id for h in col.search("rockets", k=10))
    assert_consistent(col)


def test_ivf_trains_past_threshold(make_collection, tmp_path, monkeypatch):
    monkeypatch.setattr(index_module, "IVF_MIN_VECTORS", 300)
    col = make_collection("big", index="ivf", splitter=Splitter(max_tokens=8))
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(500)]
    for part in range(3):
        text = "\n\n".join(" ".join(rng.choice(words, 8)) + "." for _ in range(150))
        write(tmp_path / "ivf" / f"{part}.txt", text)
    col.add(tmp_path / "ivf" / "0.txt")
    assert col.index.layout == "flat"
    col.add([tmp_path / "ivf" / "1.txt", tmp_path / "ivf" / "2.txt"])
    assert col.index.layout == "ivf" and col.index.ntotal == 450
    probe = col.store.hits([123])[123][1]
    assert col.search(probe, k=1)[0].passage_id == 123
    assert_consistent(col)
    col.close()
    reopened = Collection.open("big", col.path.parent, progress=False)
    assert reopened.index.layout == "ivf" and reopened.search(probe, k=1)[0].passage_id == 123
    reopened.close()


def test_report_text(make_collection, corpus, tmp_path):
    col = make_collection()
    write(tmp_path / "empty.txt", b"")
    report = col.add([corpus / "animals.txt", tmp_path / "empty.txt", corpus / "animals.txt"])
    summary = report.summary()
    # the same file named twice: the second is "unchanged", not a duplicate of another file
    assert summary.startswith("1 added (1 passages), 0 duplicate(s), 1 failed, 0 skipped, 1 unchanged in")
    assert f"failed    {tmp_path / 'empty.txt'}: empty file" in summary
    assert report.result(str(tmp_path / "empty.txt")).error == "empty file"
    assert not report.ok


def test_threads_search_while_adding(make_collection, tmp_path):
    import threading

    col = make_collection()
    for i in range(40):
        write(tmp_path / "t" / f"{i:02d}.txt", f"Thread test document {i} about subject {i % 5}.")
    errors: list[BaseException] = []
    stop = threading.Event()

    def searcher() -> None:
        try:
            while not stop.is_set():
                for hit in col.search("thread test document subject", k=5):
                    assert hit.text.startswith("Thread test document")
                col.documents()
        except BaseException as exc:  # reported to the main thread
            errors.append(exc)

    threads = [threading.Thread(target=searcher) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for i in range(0, 40, 8):
            col.add([tmp_path / "t" / f"{j:02d}.txt" for j in range(i, i + 8)])
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors and len(col.documents()) == 40
    assert_consistent(col)


def test_concurrent_open_or_create(data_dir, embedder):
    from concurrent.futures import ThreadPoolExecutor

    def open_one(_):
        col = Collection.open_or_create("race", data_dir, embedder=embedder, progress=False)
        col.close()
        return col.name

    with ThreadPoolExecutor(6) as pool:
        assert list(pool.map(open_one, range(6))) == ["race"] * 6
    assert Collection.list(data_dir) == ["race"]


def test_open_or_create_while_another_creator_is_slow(data_dir, embedder, monkeypatch):
    """A creator that is slow to initialise must never expose a half-made collection to others."""
    import threading

    import retrieval.collection as collection_module

    real_store = collection_module.Store
    started = threading.Event()

    def slow_store(path, *args, **kwargs):
        if not started.is_set():  # only the first creator is slowed down
            started.set()
            time.sleep(0.3)
        return real_store(path, *args, **kwargs)

    monkeypatch.setattr(collection_module, "Store", slow_store)
    results = []
    slow = threading.Thread(target=lambda: results.append(
        Collection.open_or_create("slow", data_dir, embedder=embedder, progress=False).name))
    slow.start()
    started.wait(5)
    fast = Collection.open_or_create("slow", data_dir, embedder=embedder, progress=False)
    slow.join(10)
    assert fast.name == "slow" and results == ["slow"]
    assert Collection.list(data_dir) == ["slow"]


def test_without_faiss_embedders_still_work_and_collections_say_what_is_missing(tmp_path):
    """The GPU image has no faiss: the evaluation's hash embedder must import; collections must
    fail with an error naming the package instead of a NameError."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(f"""
        import sys
        sys.modules["faiss"] = None  # makes `import faiss` raise ImportError
        from retrieval import Collection, HashEmbedder, RetrievalError
        assert HashEmbedder(16).encode(["a b"]).shape == (1, 16)
        try:
            Collection.create("c", {str(tmp_path)!r}, embedder=HashEmbedder(16))
        except RetrievalError as e:
            assert "faiss" in str(e), e
            print("clear error")
        else:
            raise SystemExit("a collection was created without faiss")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "clear error" in out.stdout
