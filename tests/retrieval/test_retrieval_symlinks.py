"""Symbolic links inside folders: skipped by default; with follow_symlinks, followed to files inside the folder only."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from retrieval import LoadError, iter_files
from retrieval.loaders import read_bytes

from .retrieval_testdata import write

pytestmark = pytest.mark.skipif(os.name == "nt", reason="symlinks need privileges on Windows")


@pytest.fixture
def tree(tmp_path):
    """root/ holds a real file, a hidden one, links in and out, a chain that leaves, a folder link."""
    outside = write(tmp_path / "outside" / "secret.txt", "Secret text about submarines.")
    root = tmp_path / "root"
    write(root / "real.txt", "Plain text about gardening.")
    write(root / ".hidden-notes.txt", "Hidden notes about kites.")  # the walk ignores hidden names
    (root / "docs").mkdir()
    (root / "docs" / "kites.txt").symlink_to(root / ".hidden-notes.txt")  # inside the folder
    (root / "docs" / "escape.txt").symlink_to(outside)
    (root / "docs" / "hop.txt").symlink_to(root / "docs" / "escape.txt")  # inside, but lands outside
    (root / "docs" / "relative.txt").symlink_to(Path("..") / ".." / "outside" / "secret.txt")
    (root / "linked-dir").symlink_to(tmp_path / "outside", target_is_directory=True)
    (root / "loop").symlink_to(root, target_is_directory=True)
    return root


def _by_name(report) -> dict:
    return {Path(r.path).name: r for r in report.results}


def test_default_skips_every_link_with_its_reason(make_collection, tree):
    report = make_collection().add(tree)
    results = _by_name(report)
    assert results["real.txt"].status == "added"
    for name in ("kites.txt", "escape.txt", "hop.txt", "relative.txt"):
        assert (results[name].status, results[name].error) == ("skipped", "symbolic link, not followed")
    for name in ("linked-dir", "loop"):
        assert (results[name].status, results[name].error) == ("skipped", "symbolic link to a folder, not followed")
    summary = report.summary()
    assert "escape.txt: symbolic link, not followed" in summary and "linked-dir" in summary


def test_opt_in_follows_links_inside_the_folder_only(make_collection, tree):
    col = make_collection()
    results = _by_name(col.add(tree, follow_symlinks=True))
    assert results["kites.txt"].status == "added"  # its target's name is hidden; the link's is not
    for name in ("escape.txt", "hop.txt", "relative.txt"):
        assert results[name].status == "skipped"
        assert results[name].error.endswith("outside the folder: not followed"), name
        assert "secret.txt" in results[name].error
    assert results["loop"].status == "skipped" and results["linked-dir"].status == "skipped"
    assert not any("submarines" in hit.text for hit in col.search("submarines", k=20))
    assert sorted(d.title for d in col.documents()) == ["kites", "real"]


def test_a_link_named_on_its_own_is_read(make_collection, tree):
    """Naming a file is consent: only what a folder walk finds needs the opt-in."""
    report = make_collection().add(tree / "docs" / "escape.txt")
    assert report.results[0].status == "added"


def test_folder_given_as_a_link_is_walked_but_links_inside_are_judged_against_its_target(make_collection, tree,
                                                                                         tmp_path):
    (tmp_path / "alias").symlink_to(tree, target_is_directory=True)
    results = _by_name(make_collection().add(tmp_path / "alias", follow_symlinks=True))
    assert results["real.txt"].status == "added" and results["kites.txt"].status == "added"
    assert results["escape.txt"].status == "skipped"


def test_file_swapped_for_a_link_after_listing_is_refused(tree, tmp_path):
    victim = tree / "real.txt"
    files = dict(iter_files([tree]))
    assert files[victim] is None
    victim.unlink()
    victim.symlink_to(tmp_path / "outside" / "secret.txt")  # between the walk and the read
    with pytest.raises(LoadError, match="^symbolic link .*not followed$"):
        read_bytes(victim, follow_symlinks=False)
    assert read_bytes(victim) == b"Secret text about submarines."  # named files follow links


def test_swapped_file_in_a_batch_is_refused(make_collection, tree, tmp_path, monkeypatch):
    import retrieval.collection as collection_module

    real_iter = collection_module.iter_files

    def listing_then_swap(paths, follow_symlinks=False):
        listed = list(real_iter(paths, follow_symlinks))
        victim = tree / "real.txt"
        victim.unlink()
        victim.symlink_to(tmp_path / "outside" / "secret.txt")
        return listed

    monkeypatch.setattr(collection_module, "iter_files", listing_then_swap)
    results = _by_name(make_collection().add(tree))
    assert results["real.txt"].status == "failed"
    assert results["real.txt"].error.startswith("symbolic link (appeared after its folder was listed)")
