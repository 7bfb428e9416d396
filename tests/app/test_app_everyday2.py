"""Everyday use, continued: the CLI's ingest summary names the files it skipped and why."""

from __future__ import annotations

from app.cli import main
from retrieval.report import MAX_SKIPPED_LISTED


def _run(capsys, argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_ingest_names_unsupported_files(capsys, docs_dir, data_dir):
    (docs_dir / "report.odt").write_bytes(b"PK\x03\x04 not an office format we read")
    (docs_dir / "data.json").write_text('{"a": 1}')
    (docs_dir / "sub").mkdir()
    (docs_dir / "sub" / "table.csv").write_text("a,b\n1,2\n")
    code, out, _ = _run(capsys, ["ingest", docs_dir, "-c", "docs", "--data-dir", data_dir, "--embedder", "hash"])
    assert code == 0 and "3 added" in out and "3 skipped" in out
    for name, suffix in [("report.odt", ".odt"), ("data.json", ".json"), ("sub/table.csv", ".csv")]:
        assert f"skipped   {docs_dir / name}: unsupported file type '{suffix}'" in out


def test_ingest_caps_the_skipped_list(capsys, docs_dir, data_dir):
    for i in range(MAX_SKIPPED_LISTED + 3):
        (docs_dir / f"sheet{i:02d}.csv").write_text("a,b\n")
    code, out, _ = _run(capsys, ["ingest", docs_dir, "-c", "docs", "--data-dir", data_dir, "--embedder", "hash"])
    assert code == 0 and f"{MAX_SKIPPED_LISTED + 3} skipped" in out
    assert out.count("unsupported file type '.csv'") == MAX_SKIPPED_LISTED
    assert "sheet00.csv" in out and f"sheet{MAX_SKIPPED_LISTED:02d}.csv" not in out
    assert "... and 3 more skipped" in out
