"""retnet-rag ingest: per-file budgets, the wait for a busy collection, symbolic links, skipped files named."""

from __future__ import annotations

import os

import pytest

from app.cli import build_parser, main
from retrieval import LoadLimits
from retrieval.locking import exclusive_lock
from tests.retrieval.hostile_data import slow_html
from tests.retrieval.retrieval_testdata import write


def ingest(capsys, data_dir, *args):
    code = main(["ingest", *map(str, args), "-c", "docs", "--data-dir", str(data_dir), "--embedder", "hash"])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_max_file_mb_refuses_larger_files_alone(capsys, data_dir, tmp_path):
    write(tmp_path / "d" / "big.txt", "big file " * 300)  # 2.7 KB
    write(tmp_path / "d" / "small.txt", "small file")
    code, out, _ = ingest(capsys, data_dir, tmp_path / "d", "--max-file-mb", "0.001")
    assert code == 1
    assert "1 added" in out and "1 failed" in out
    assert f"failed    {tmp_path / 'd' / 'big.txt'}: file too large: 2.6 KiB > limit 1.0 KiB" in out
    assert "--max-file-mb" in out  # the message names the option that raises it


def test_max_file_seconds_fails_the_slow_file_only(capsys, data_dir, tmp_path):
    write(tmp_path / "d" / "slow.html", slow_html())
    write(tmp_path / "d" / "quick.txt", "quick file")
    code, out, _ = ingest(capsys, data_dir, tmp_path / "d", "--max-file-seconds", "0.2")
    assert code == 1 and "1 added" in out
    assert "slow.html: loading took longer than the 0.2 s budget per file (raise it: --max-file-seconds" in out


def test_wait_gives_up_on_a_busy_collection_with_a_hint(capsys, data_dir, tmp_path):
    write(tmp_path / "d" / "a.txt", "some text")
    assert ingest(capsys, data_dir, tmp_path / "d")[0] == 0
    with exclusive_lock(data_dir / "docs" / "lock"):  # another writer holds it
        code, out, err = ingest(capsys, data_dir, tmp_path / "d", "--wait", "0.2")
    assert code == 1 and out == ""
    assert "collection is busy" in err and "(waited 0.2 s)" in err and "--wait SECONDS waits longer" in err
    assert "Traceback" not in err


@pytest.mark.skipif(os.name == "nt", reason="symlinks need privileges on Windows")
def test_follow_symlinks_and_skipped_files_named(capsys, data_dir, tmp_path):
    root = tmp_path / "d"
    write(root / ".notes.txt", "hidden notes about kites")
    write(tmp_path / "outside.txt", "outside the folder")
    (root / "kites.txt").symlink_to(root / ".notes.txt")
    (root / "out.txt").symlink_to(tmp_path / "outside.txt")
    write(root / "photo.png", b"\x89PNG")
    code, out, _ = ingest(capsys, data_dir, root)
    assert code == 0 and "0 added" in out and "3 skipped" in out
    assert f"skipped   {root / 'kites.txt'}: symbolic link, not followed" in out
    assert f"skipped   {root / 'photo.png'}: unsupported file type '.png'" in out
    code, out, _ = ingest(capsys, data_dir, root, "--follow-symlinks")
    assert code == 0 and "1 added" in out and "2 skipped" in out
    assert f"skipped   {root / 'out.txt'}: symbolic link to {tmp_path / 'outside.txt'}, outside the folder" in out


@pytest.mark.parametrize("option,value", [("--max-file-mb", "0"), ("--max-file-seconds", "-1"), ("--wait", "-5"),
                                          ("--wait", "soon"), ("--max-file-mb", "nan")])
def test_bad_values_are_usage_errors(capsys, data_dir, tmp_path, option, value):
    with pytest.raises(SystemExit) as e:
        ingest(capsys, data_dir, tmp_path, option, value)
    assert e.value.code == 2 and option in capsys.readouterr().err


def test_help_defaults_are_the_library_defaults():
    text = " ".join(build_parser()._subparsers._group_actions[0].choices["ingest"].format_help().split())
    limits = LoadLimits()
    assert f"(default {limits.max_file_bytes / 2**20:g})" in text
    assert f"fails on its own (default {limits.max_seconds:g})" in text


def test_update_takes_the_same_budgets_and_link_option(capsys, data_dir, tmp_path):
    root = tmp_path / "d"
    write(root / "a.txt", "first text about kites")
    assert ingest(capsys, data_dir, root)[0] == 0
    write(root / "big.txt", "big file " * 300)
    (root / "link.txt").symlink_to(root / "a.txt")
    code = main(["update", str(root), "-c", "docs", "--data-dir", str(data_dir), "--max-file-mb", "0.001"])
    out = capsys.readouterr().out
    assert code == 1 and "big.txt: file too large" in out and "link.txt: symbolic link, not followed" in out
    with exclusive_lock(data_dir / "docs" / "lock"):
        code = main(["update", str(root), "-c", "docs", "--data-dir", str(data_dir), "--wait", "0.2"])
    err = capsys.readouterr().err
    assert code == 1 and "--wait SECONDS waits longer" in err
