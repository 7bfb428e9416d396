"""Per-file budgets (issue 16): time, decompressed bytes, size; a batch keeps its good files."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

import retrieval.ingest as ingest_module
from retrieval import Collection, LoadError, LoadLimits, load_document
from retrieval.pdf_budget import decompression_budget

from .hostile_data import KIB, page_text, pdf_bomb, slow_html
from .retrieval_testdata import assert_consistent, text_pdf, write

# -- PDFs: one budget for the whole document -------------------------------------------------------


def test_pdf_bomb_stops_at_the_document_budget_and_names_the_page(tmp_path):
    """Every stream is under pypdf's per-stream limit; their sum is not under the document's budget."""
    path = write(tmp_path / "bomb.pdf", pdf_bomb([256 * KIB] * 8))
    assert path.stat().st_size < 16 * KIB
    with pytest.raises(LoadError) as err:
        load_document(path, max_decompressed_bytes=600 * KIB)
    message = str(err.value)
    assert message.startswith("decompression budget exceeded on page 3: ")
    assert "600.0 KiB" in message and "OCR" not in message
    # Unbudgeted, the same file reads (so the budget, not damage, stopped it).
    doc = load_document(path, max_decompressed_bytes=None)
    assert [doc.text[p.start : p.end].strip() for p in doc.pages] == [page_text(i) for i in range(1, 9)]


def test_budget_is_the_sum_of_what_pypdf_inflates():
    from retrieval.pdf import extract_pdf

    data = pdf_bomb([100 * KIB, 50 * KIB])
    assert len(extract_pdf(data, 151 * KIB)[0]) == 2
    with pytest.raises(LoadError, match="^decompression budget exceeded on page 2"):
        extract_pdf(data, 149 * KIB)
    with decompression_budget(None) as budget:  # counting alone (no budget) stops nothing
        from pypdf import PdfReader

        for page in PdfReader(io.BytesIO(data)).pages:
            page.extract_text()
    assert budget.used == 150 * KIB


def test_one_stream_over_the_limit_is_named_not_called_scanned(tmp_path):
    """Before: any extraction failure on every page read as "scanned or image-only PDF? (run OCR first)"."""
    path = write(tmp_path / "one.pdf", pdf_bomb([2048 * KIB]))
    with pytest.raises(LoadError) as err:
        load_document(path, max_decompressed_bytes=1024 * KIB)
    message = str(err.value)
    assert message.startswith("decompression limit reached on page 1: a stream inflates past the per-stream limit")
    assert "1.0 MiB" in message and "OCR" not in message


def test_pages_that_fail_are_not_called_scanned(tmp_path, monkeypatch):
    from pypdf import PageObject

    def broken(self, *args, **kwargs):
        raise ValueError("bad font table")

    monkeypatch.setattr(PageObject, "extract_text", broken)
    with pytest.raises(LoadError) as err:
        load_document(write(tmp_path / "p.pdf", text_pdf(["one", "two"])))
    assert str(err.value) == ("no text could be extracted: page 1: text extraction failed (bad font table) "
                              "(and on page(s) 2)")


def test_pdf_budget_applies_in_the_worker(make_collection, tmp_path):
    write(tmp_path / "b" / "bomb.pdf", pdf_bomb([256 * KIB] * 4))
    write(tmp_path / "b" / "fine.pdf", text_pdf(["A page about kites."]))
    col = make_collection(limits=LoadLimits(max_decompressed_bytes=300 * KIB))
    report = col.add(tmp_path / "b")
    by_name = {Path(r.path).name: r for r in report.results}
    assert by_name["bomb.pdf"].status == "failed"
    assert by_name["bomb.pdf"].error.startswith("decompression budget exceeded on page 2: ")
    assert by_name["fine.pdf"].status == "added"


def test_extracted_text_over_the_budget_fails(tmp_path):
    path = write(tmp_path / "big.txt", "word " * 1000)
    with pytest.raises(LoadError, match=r"^extracted text too large: 5,000 characters > limit 3.9 KiB"):
        load_document(path, max_decompressed_bytes=4000)


# -- time ------------------------------------------------------------------------------------------


def test_a_file_over_its_time_budget_fails_alone_and_the_batch_goes_on(make_collection, data_dir, tmp_path):
    root = tmp_path / "t"
    write(root / "a.txt", "Alpha notes about apples.")
    write(root / "b_slow.html", slow_html())
    write(root / "c.md", "# Cherries\n\nNotes about cherries.")
    col = make_collection(limits=LoadLimits(max_seconds=0.2))
    report = col.add(root)
    by_name = {Path(r.path).name: r for r in report.results}
    assert by_name["b_slow.html"].status == "failed"
    assert by_name["b_slow.html"].error.startswith("loading took longer than the 0.2 s budget per file")
    assert by_name["a.txt"].status == "added" and by_name["c.md"].status == "added"  # c: a fresh worker
    assert sorted(d.title for d in col.documents()) == ["Cherries", "a"]
    assert_consistent(col)


# -- a batch keeps what was ready --------------------------------------------------------------------


def test_ctrl_c_stores_the_files_already_loaded(make_collection, data_dir, embedder, tmp_path, monkeypatch):
    for name in ("a", "b", "c", "d"):
        write(tmp_path / "k" / f"{name}.txt", f"Notes about {name}.")
    real = ingest_module.load_limited

    def interrupted(path, data, limits):
        if Path(path).name == "c.txt":
            raise KeyboardInterrupt
        return real(path, data, limits)

    monkeypatch.setattr(ingest_module, "load_limited", interrupted)
    col = make_collection(batch_passages=1000)  # nothing would be committed before the end of the add
    with pytest.raises(KeyboardInterrupt):
        col.add(tmp_path / "k")
    col.close()
    with Collection.open("docs", data_dir, embedder=embedder) as again:
        assert sorted(d.title for d in again.documents()) == ["a", "b"]
        assert_consistent(again)


def test_size_limit_message_names_the_options_that_exist(make_collection, tmp_path):
    write(tmp_path / "s" / "large.txt", "large file " * 500)
    report = make_collection(limits=LoadLimits(max_file_bytes=1000)).add(tmp_path / "s")
    error = report.results[0].error
    assert error.startswith("file too large: ") and "--max-file-mb" in error and "max_file_bytes" in error
    from app.cli import build_parser

    assert "--max-file-mb" in build_parser()._subparsers._group_actions[0].choices["ingest"].format_help()


@pytest.mark.parametrize("bad", [0, -1.0])
def test_limits_must_be_positive(bad):
    with pytest.raises(ValueError, match="must be positive or None"):
        LoadLimits(max_seconds=bad)
