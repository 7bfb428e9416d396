"""Documents that change: one version per file, replaced atomically; removal by id, path or folder; update."""

from __future__ import annotations

import os
import sqlite3

import numpy as np
import pytest

import retrieval.index as index_module
import retrieval.lexical as lexical
from retrieval import Collection, CollectionError, Document, HashEmbedder, Page, Splitter, content_id

from .retrieval_testdata import assert_consistent, on_disk_state, write


def version(i: int, n: int) -> str:
    return f"Chapter {i} version {n}: the pump{n} valve needs oiling.\n\nEdition marker v{n}x{i} appears here."


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "docs"
    for i in range(3):
        write(root / f"ch{i}.txt", version(i, 1))
    write(root / "sub" / "notes.md", "# Notes\n\nLoose notes about the gearbox and the clutch.")
    return root


def sources(col) -> list[str]:
    return sorted(d.source for d in col.documents())


def test_readding_an_edited_file_keeps_one_version(make_collection, folder):
    col = make_collection()
    col.add(folder)
    target = folder / "ch1.txt"
    for n in (2, 3):  # the "three versions of one file": each edit replaces the last
        write(target, version(1, n))
        report = col.add(folder)
        [replaced] = report.replaced
        assert replaced.path == str(target) and len(replaced.replaced) == 1
        assert len(report.unchanged) == 3 and not report.duplicates[0].replaced
        assert "replaced  " in report.summary() and "1 replacing older version(s)" in report.summary()
    assert len(col.documents()) == 4 and len(set(sources(col))) == 4
    [doc] = col.find_documents(str(target))
    assert doc.id == content_id(target.read_bytes())
    assert " ".join(" ".join(p.text for p in col.passages(doc.id)).split()) == " ".join(version(1, 3).split())
    # neither the dense index nor BM25 still returns an old version
    assert col.lexical_search("v1x1") == [] and col.lexical_search("v2x1") == []
    assert col.lexical_search("v3x1")[0].doc_id == doc.id
    # the index holds the passages of exactly the current documents
    assert {h.doc_id for h in col.search("pump valve oiling", k=100)} == {d.id for d in col.documents()}
    assert_consistent(col)


def test_same_file_under_another_spelling_or_a_symlink_is_the_same_document(make_collection, folder, tmp_path):
    col = make_collection()
    col.add(folder / "ch0.txt")
    write(folder / "ch0.txt", version(0, 2))
    col.add(folder / "sub" / ".." / "ch0.txt")  # same file, path not normalised
    os.symlink(folder / "ch0.txt", tmp_path / "link.txt")
    write(folder / "ch0.txt", version(0, 3))
    assert col.add(tmp_path / "link.txt").added[0].replaced
    [doc] = col.documents()
    assert doc.id == content_id(version(0, 3).encode())
    assert_consistent(col)


def test_unchanged_files_are_skipped_without_a_commit(make_collection, folder):
    col = make_collection()
    col.add(folder)
    before = on_disk_state(col.path)
    report = col.add(folder)
    assert len(report.unchanged) == 4 and not report.added
    assert str(report.unchanged[0]) == f"unchanged {folder / 'ch0.txt'}"
    assert report.summary().startswith("0 added (0 passages), 0 duplicate(s), 0 failed, 0 skipped, 4 unchanged")
    assert len(report.summary().splitlines()) == 1  # unchanged files are counted, not listed
    assert on_disk_state(col.path)["generation"] == before["generation"]


def test_failed_store_keeps_the_old_version(make_collection, folder, monkeypatch):
    """A replace is one transaction: if writing the new version fails half-way (here in its BM25 rows,
    after its passages and the old version's deletion), nothing of it happened."""
    col = make_collection()
    col.add(folder)
    old = col.find_documents(str(folder / "ch2.txt"))[0]
    write(folder / "ch2.txt", version(2, 2))

    def broken(*args):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(lexical, "add_rows", broken)
    report = col.add(folder / "ch2.txt")
    assert report.failed[0].error.startswith("could not store: OperationalError")
    assert col.find_documents(str(folder / "ch2.txt")) == [old]
    assert col.lexical_search("v1x2")[0].doc_id == old.id
    assert_consistent(col)
    monkeypatch.undo()
    assert col.add(folder / "ch2.txt").added[0].replaced == [old.id]
    assert_consistent(col)


def test_index_behind_after_a_replace_is_rebuilt_on_open(make_collection, folder, data_dir, embedder):
    """A crash between the commit of a replace and the index save leaves an index file of an older
    generation; the next open rebuilds it from the store, which holds only the new version."""
    col = make_collection()
    col.add(folder)
    saved = {p.name: p.read_bytes() for p in col.path.glob("index.*.faiss")}
    write(folder / "ch0.txt", version(0, 2))
    col.add(folder)
    col.close()
    for p in col.path.glob("index.*.faiss"):
        p.unlink()
    for name, data in saved.items():  # as if the process died before writing the new index
        (col.path / name).write_bytes(data)
    with Collection.open("docs", data_dir, embedder=embedder, progress=False) as reopened:
        assert_consistent(reopened)
        assert reopened.lexical_search("v1x0") == []
        hit = reopened.search(version(0, 2), k=1)[0]
        assert hit.doc_id == content_id(version(0, 2).encode())


def test_remove_by_id_path_and_folder(make_collection, folder, monkeypatch):
    col = make_collection()
    col.add(folder)
    by_id = col.find_documents(str(folder / "ch0.txt"))[0]
    assert [d.id for d in col.remove_documents(by_id.id)] == [by_id.id]
    monkeypatch.chdir(folder)
    assert [d.title for d in col.remove_documents(["ch1.txt"])] == ["ch1"]  # relative to the working directory
    assert [d.title for d in col.remove_documents([folder / "sub"])] == ["Notes"]  # every document under it
    assert sources(col) == [str(folder / "ch2.txt")]
    assert col.lexical_search("gearbox clutch") == [] and col.lexical_search("v1x0") == []
    assert {h.doc_id for h in col.search("pump valve", k=10)} == {col.documents()[0].id}
    assert (folder / "ch0.txt").exists()  # the files themselves are untouched
    assert_consistent(col)


def test_remove_with_an_unknown_name_removes_nothing(make_collection, folder, tmp_path):
    col = make_collection()
    col.add(folder)
    before = on_disk_state(col.path)
    with pytest.raises(CollectionError, match=r"'no-such-id', '.*missing\.txt'.*nothing was removed"):
        col.remove_documents([str(folder / "ch0.txt"), "no-such-id", str(tmp_path / "missing.txt")])
    assert on_disk_state(col.path) == before
    # a folder that holds files but no document of this collection is unknown too
    with pytest.raises(CollectionError):
        col.remove_documents(tmp_path / "elsewhere")
    assert len(col.documents()) == 4


def test_a_removed_file_is_found_by_path_after_it_is_gone(make_collection, folder):
    col = make_collection()
    col.add(folder)
    (folder / "ch0.txt").unlink()
    assert [d.title for d in col.remove_documents(str(folder / "ch0.txt"))] == ["ch0"]
    assert_consistent(col)


def test_update_adds_replaces_and_drops_deleted_files(make_collection, folder):
    col = make_collection()
    col.add(folder)
    write(folder / "ch0.txt", version(0, 2))  # edited
    (folder / "ch1.txt").unlink()  # deleted
    write(folder / "sub" / "new.txt", "A brand new page about the radiator.")  # new
    report = col.update(folder)
    assert [r.path for r in report.added] == [str(folder / "ch0.txt"), str(folder / "sub" / "new.txt")]
    assert report.added[0].replaced and not report.added[1].replaced
    [removed] = report.removed
    assert removed.path == str(folder / "ch1.txt") and removed.passages > 0
    assert "1 removed" in report.summary() and f"removed   {folder / 'ch1.txt'}" in report.summary()
    assert len(report.unchanged) == 2 and report.ok
    assert sources(col) == sorted(str(folder / p) for p in ("ch0.txt", "ch2.txt", "sub/new.txt", "sub/notes.md"))
    assert_consistent(col)


def test_update_of_a_folder_that_is_gone_removes_its_documents(make_collection, folder, tmp_path):
    col = make_collection()
    col.add(folder)
    for p in (folder / "sub").iterdir():
        p.unlink()
    (folder / "sub").rmdir()
    report = col.update([folder / "sub"])
    assert [r.path for r in report.removed] == [str(folder / "sub" / "notes.md")] and not report.results[1:]
    before = on_disk_state(col.path)
    with pytest.raises(CollectionError, match="no such file or folder"):
        col.update([folder, tmp_path / "never-there"])  # checked before anything changes
    assert on_disk_state(col.path) == before
    assert len(col.documents()) == 3


def test_update_keeps_a_document_whose_file_fails_to_load(make_collection, folder):
    col = make_collection()
    col.add(folder)
    write(folder / "ch2.txt", b"")  # emptied: fails, the old version stays
    report = col.update(folder)
    assert report.failed[0].path == str(folder / "ch2.txt") and not report.removed
    assert col.find_documents(str(folder / "ch2.txt"))[0].id == content_id(version(2, 1).encode())


def test_identical_copies_survive_editing_one_of_them(make_collection, folder):
    """Ids are content hashes, so two identical files are one document (the second a duplicate). Editing
    the one that holds the document must not lose the other's content."""
    col = make_collection()
    write(folder / "a-copy.txt", version(0, 1))  # sorts before ch0.txt, so it is skipped as its duplicate
    col.add(folder / "ch0.txt")
    write(folder / "ch0.txt", version(0, 2))
    report = col.add(folder)
    assert report.result(str(folder / "a-copy.txt")).status == "added"
    assert {d.id for d in col.documents()} >= {content_id(version(0, 1).encode()), content_id(version(0, 2).encode())}
    assert len(col.documents()) == len(set(sources(col))) == 5
    assert_consistent(col)


def test_a_file_edited_into_a_copy_of_another_drops_its_old_version(make_collection, folder):
    col = make_collection()
    col.add(folder)
    write(folder / "ch1.txt", version(2, 1))  # now the same bytes as ch2.txt
    report = col.add(folder / "ch1.txt")
    [dup] = report.duplicates
    assert dup.duplicate_of == str(folder / "ch2.txt") and dup.replaced == [content_id(version(1, 1).encode())]
    assert col.find_documents(str(folder / "ch1.txt")) == []
    assert col.lexical_search("v1x1") == []
    assert_consistent(col)


def test_add_documents_replace_by_source_path_only(make_collection):
    col = make_collection(splitter=Splitter(max_tokens=20))

    def doc(doc_id: str, source: str, text: str) -> Document:
        return Document(doc_id, source, "Memo", "text", text, [Page(None, 0, len(text))])

    col.add_documents([doc("v1", "/virtual/memo.txt", "first draft of the memo"),
                       doc("n1", "memo", "a note that never was a file")])
    report = col.add_documents([doc("v2", "/virtual/memo.txt", "second draft of the memo"),
                                doc("n2", "memo", "another note with the same name")])
    assert report.results[0].replaced == ["v1"] and report.results[1].replaced == []
    assert sorted(d.id for d in col.documents()) == ["n1", "n2", "v2"]  # a name that is no path never replaces
    assert_consistent(col)


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_replace_and_remove_in_other_index_kinds(make_collection, folder, tmp_path, monkeypatch, kind):
    monkeypatch.setattr(index_module, "IVF_MIN_VECTORS", 40)
    col = make_collection(kind, index=kind, batch_passages=2)
    for i in range(60):  # enough passages for a trained IVF
        write(folder / "many" / f"{i:02d}.txt", f"Filler page {i} about part {i * 7 % 13} of the engine.")
    col.add(folder)
    assert col.index.layout == kind
    for i in range(3):
        write(folder / f"ch{i}.txt", version(i, 2))
    report = col.add(folder)
    assert len(report.replaced) == 3
    assert col.search(version(1, 2), k=1)[0].doc_id == content_id(version(1, 2).encode())
    assert_consistent(col)
    col.remove_documents(folder / "many")
    assert len(col.documents()) == 4
    assert_consistent(col)


def test_another_instance_sees_the_replacement(make_collection, folder, data_dir, embedder):
    writer = make_collection("shared")
    writer.add(folder)
    with Collection.open("shared", data_dir, embedder=embedder, progress=False) as reader:
        assert reader.lexical_search("v1x0")
        write(folder / "ch0.txt", version(0, 2))
        writer.add(folder)
        assert reader.search(version(0, 2), k=1)[0].doc_id == content_id(version(0, 2).encode())
        assert reader.lexical_search("v1x0") == []
        assert_consistent(reader)


def test_collections_made_before_paths_were_kept_get_them(data_dir, folder):
    """Stores made before ``documents.path`` existed get the column (from their sources) on open."""
    embedder = HashEmbedder(dim=64)
    with Collection.create("old", data_dir, embedder=embedder, progress=False) as col:
        col.add(folder)
    conn = sqlite3.connect(str(data_dir / "old" / "collection.sqlite3"))
    conn.execute("DROP INDEX documents_by_path")
    conn.execute("ALTER TABLE documents DROP COLUMN path")
    conn.commit()
    conn.close()
    with Collection.open("old", data_dir, embedder=embedder, progress=False) as col:
        paths = dict(col.store.conn.execute("SELECT source, path FROM documents").fetchall())
        assert paths == {s: os.path.realpath(s) for s in paths}
        write(folder / "ch0.txt", version(0, 2))
        assert col.add(folder).replaced
        assert len(col.documents()) == 4
        assert_consistent(col)


def test_report_lists_replaced_and_removed_files(make_collection, folder):
    col = make_collection()
    col.add(folder)
    write(folder / "ch2.txt", version(2, 2))
    (folder / "ch0.txt").unlink()
    lines = col.update(folder).summary().splitlines()
    assert lines[0].startswith("1 added (1 passages; 1 replacing older version(s)), 0 duplicate(s), 0 failed, "
                               "0 skipped, 2 unchanged, 1 removed in ")
    assert lines[1:] == [f"replaced  {folder / 'ch2.txt'}: 1 passages",
                         f"removed   {folder / 'ch0.txt'}: the file is gone (1 passages)"]
    assert np.all(np.diff([d.added_at for d in col.documents()]) >= 0)
