"""Documents that change, from the CLI (retnet-rag rm / update) and MultiDocQA (remove / update)."""

from __future__ import annotations

import pytest

from app.cli import main
from retrieval import Collection, CollectionError

GZIP_V2 = "# Gzip\n\nGzip version two: the -9 option compresses best and the -1 option fastest."


def run(capsys, argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def ingested(capsys, data_dir, docs_dir):
    col = ["-c", "docs", "--data-dir", data_dir]
    code, _, err = run(capsys, ["ingest", docs_dir, *col, "--embedder", "hash"])
    assert code == 0, err
    return col


def titles(data_dir) -> list[str]:
    with Collection.open("docs", data_dir) as col:
        return sorted(d.title for d in col.documents())


@pytest.mark.parametrize("command", ["rm", "update"])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert f"retnet-rag {command}" in out and "--collection" in out and "--embedder" not in out


def test_rm_by_path_and_id_with_a_summary(capsys, ingested, data_dir, docs_dir):
    code, out, err = run(capsys, ["rm", docs_dir / "tar.txt", *ingested])
    assert code == 0, err
    assert "removed 1 document(s), 1 passages" in out and str(docs_dir / "tar.txt") in out
    assert "collection 'docs': 2 documents, 2 passages" in out
    with Collection.open("docs", data_dir) as col:
        gzip_id = next(d.id for d in col.documents() if d.title == "Gzip")
    code, out, _ = run(capsys, ["rm", gzip_id, *ingested])
    assert code == 0 and f"removed {gzip_id} 'Gzip'" in out
    assert titles(data_dir) == ["rsync"]
    assert (docs_dir / "tar.txt").exists()  # files on disk are left alone


def test_rm_unknown_names_remove_nothing(capsys, ingested, data_dir, docs_dir, tmp_path):
    code, out, err = run(capsys, ["rm", docs_dir / "tar.txt", "deadbeef00000000", tmp_path / "other.txt",
                                  *ingested])
    assert code == 2 and out == ""
    assert "'deadbeef00000000'" in err and "other.txt" in err and "nothing was removed" in err
    assert "tar.txt" not in err and "Traceback" not in err
    assert titles(data_dir) == ["Gzip", "rsync", "tar"]


def test_rm_dry_run_and_folders(capsys, ingested, data_dir, docs_dir):
    code, out, _ = run(capsys, ["rm", "--dry-run", docs_dir, *ingested])
    assert code == 0 and "would remove 3 document(s)" in out
    assert titles(data_dir) == ["Gzip", "rsync", "tar"]
    code, out, _ = run(capsys, ["rm", docs_dir, *ingested])
    assert code == 0 and "removed 3 document(s)" in out and titles(data_dir) == []


def test_rm_and_update_need_an_existing_collection(capsys, data_dir, docs_dir):
    for command in (["rm", "x"], ["update", docs_dir]):
        code, _, err = run(capsys, [*command, "-c", "nope", "--data-dir", data_dir])
        assert code == 1 and "no collection 'nope'" in err
    assert not (data_dir / "nope").exists()


def test_update_replaces_edited_files_and_drops_deleted_ones(capsys, ingested, data_dir, docs_dir):
    (docs_dir / "gzip.md").write_text(GZIP_V2)
    (docs_dir / "tar.txt").unlink()
    code, out, err = run(capsys, ["update", docs_dir, *ingested])
    assert code == 0, err
    head = out.splitlines()[0]
    assert head.startswith("1 added (1 passages; 1 replacing older version(s)), 0 duplicate(s)")
    assert "1 unchanged, 1 removed" in head
    assert f"replaced  {docs_dir / 'gzip.md'}" in out and f"removed   {docs_dir / 'tar.txt'}" in out
    assert "collection 'docs': 2 documents" in out
    with Collection.open("docs", data_dir) as col:
        assert len(col.documents()) == 2  # one version of gzip.md, not two
        assert "-9 option" in col.lexical_search("compresses best")[0].text
        assert col.lexical_search("Lempel-Ziv") == []
    code, out, _ = run(capsys, ["update", docs_dir, *ingested])  # nothing changed since
    assert code == 0 and out.startswith("0 added (0 passages), 0 duplicate(s), 0 failed, 0 skipped, 2 unchanged")


def test_ingest_of_an_edited_file_replaces_it_too(capsys, ingested, data_dir, docs_dir):
    (docs_dir / "gzip.md").write_text(GZIP_V2)
    code, out, _ = run(capsys, ["ingest", docs_dir / "gzip.md", *ingested])
    assert code == 0 and "replacing older version" in out and "3 documents" in out


def test_update_of_an_unknown_path_changes_nothing(capsys, ingested, data_dir, docs_dir, tmp_path):
    (docs_dir / "tar.txt").unlink()
    code, _, err = run(capsys, ["update", docs_dir, tmp_path / "nowhere", *ingested])
    assert code == 2 and "no such file or folder" in err and "nowhere" in err
    assert titles(data_dir) == ["Gzip", "rsync", "tar"]  # tar's document was not dropped either


def test_multidocqa_update_and_remove(qa, docs_dir):
    (docs_dir / "gzip.md").write_text(GZIP_V2)
    report = qa.update(docs_dir)
    assert len(report.replaced) == 1 and len(qa.documents()) == 3
    assert "-9 option" in qa.search("Which gzip option compresses best?", k=1)[0].text
    removed = qa.remove([str(docs_dir / "gzip.md")])
    assert [d.title for d in removed] == ["Gzip"] and len(qa.documents()) == 2
    with pytest.raises(CollectionError, match="nothing was removed"):
        qa.remove(["rsync-id-that-is-not-there", str(docs_dir / "rsync.txt")])
    assert sorted(d.title for d in qa.documents()) == ["rsync", "tar"]
    assert all(s.title != "Gzip" for s in qa.search("gzip compresses", k=5))
