"""Office files (the ``office`` extra): DOCX, PPTX and XLSX built here with the same libraries, zip bombs,
damaged files and the message when the extra is missing."""

from __future__ import annotations

import datetime
import io
import sys
import zipfile

import pytest

from retrieval import LoadError, iter_files, load_document
from retrieval.limits import MIB, LoadLimits
from retrieval.office import EXTRA_HINT, RATIO_MIN_BYTES
from retrieval.sandbox import load_limited

docx = pytest.importorskip("docx")
pptx = pytest.importorskip("pptx")
openpyxl = pytest.importorskip("openpyxl")


def make_docx(path):
    document = docx.Document()
    document.add_heading("Pump Manual", level=0)  # the Title style
    document.add_paragraph("Read this before the first start.")
    document.add_heading("Installation", level=1)
    document.add_paragraph("Bolt the pump to a level floor.")
    document.add_heading("Wiring", level=2)
    table = document.add_table(rows=2, cols=3)
    for row, values in zip(table.rows, [("Wire", "Colour", "Terminal"), ("Live", "brown", "L1")], strict=True):
        for cell, value in zip(row.cells, values, strict=True):
            cell.text = value
    document.add_paragraph("Earth the frame last.")
    document.save(path)
    return path


def make_pptx(path):
    presentation = pptx.Presentation()
    for title, body, notes in [("Quarterly Results", "Revenue grew 12%", "Mention the new plant"),
                               ("Next Steps", "Hire two engineers\nOpen the Lyon office", "")]:
        slide = presentation.slides.add_slide(presentation.slide_layouts[1])  # title and content
        slide.shapes.title.text = title
        slide.placeholders[1].text_frame.text = body
        if notes:
            slide.notes_slide.notes_text_frame.text = notes
    slide = presentation.slides.add_slide(presentation.slide_layouts[6])  # blank: a text box and a table
    box = slide.shapes.add_textbox(0, 0, 100, 100)
    box.text_frame.text = "Questions welcome"
    table = slide.shapes.add_table(2, 2, 0, 200, 300, 100).table
    for (r, c), value in {(0, 0): "City", (0, 1): "Staff", (1, 0): "Lyon", (1, 1): "14"}.items():
        table.cell(r, c).text = value
    presentation.save(path)
    return path


def make_xlsx(path):
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.title = "Prices"
    sheet.append(["Item", "Price", "In stock"])
    sheet.append(["Bolt", 0.25, True])
    sheet.append([])
    sheet.append(["Nut", 3.0, False])
    stock = workbook.create_sheet("Stock")
    stock["A1"], stock["B1"] = "Counted", datetime.datetime(2024, 5, 1)
    stock["C5"] = "far cell"
    workbook.save(path)
    return path


def test_docx_paragraphs_headings_tables(tmp_path):
    doc = load_document(make_docx(tmp_path / "manual.docx"))
    assert doc.kind == "docx" and doc.title == "Pump Manual" and doc.encoding is None
    assert doc.text == ("# Pump Manual\n\nRead this before the first start.\n\n# Installation\n\n"
                        "Bolt the pump to a level floor.\n\n## Wiring\n\nWire\tColour\tTerminal\nLive\tbrown\tL1\n\n"
                        "Earth the frame last.")
    assert [(p.number, p.start, p.end) for p in doc.pages] == [(None, 0, len(doc.text))]


def test_docx_without_title_uses_the_file_name(tmp_path):
    document = docx.Document()  # its template's core title, if any, is not the document's
    document.add_paragraph("Just a note.")
    document.save(tmp_path / "note.docx")
    doc = load_document(tmp_path / "note.docx")
    assert doc.title == "note" and doc.text == "Just a note."


def test_pptx_one_page_per_slide(tmp_path):
    doc = load_document(make_pptx(tmp_path / "deck.pptx"))
    assert doc.kind == "pptx" and doc.title == "Quarterly Results"
    assert [p.number for p in doc.pages] == [1, 2, 3]  # citations name the slide
    slides = [doc.text[p.start:p.end] for p in doc.pages]
    assert slides[0] == "# Quarterly Results\n\nRevenue grew 12%\n\nNotes: Mention the new plant"
    assert slides[1] == "# Next Steps\n\nHire two engineers\nOpen the Lyon office"
    assert slides[2] == "Questions welcome\n\nCity\tStaff\nLyon\t14"


def test_xlsx_one_page_per_sheet(tmp_path):
    doc = load_document(make_xlsx(tmp_path / "stock.xlsx"))
    assert doc.kind == "xlsx" and doc.title == "stock"
    assert [p.number for p in doc.pages] == [1, 2]
    sheets = [doc.text[p.start:p.end] for p in doc.pages]
    assert sheets[0] == "# Prices\nItem\tPrice\tIn stock\nBolt\t0.25\tTRUE\nNut\t3\tFALSE"
    assert sheets[1] == "# Stock\nCounted\t2024-05-01\n\t\tfar cell"


def _shared_string_xlsx(path, rows: int, text: str):
    """A minimal workbook written by hand: every row's cell points to one shared string."""
    main = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
    rel = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
    kinds = "application/vnd.openxmlformats-officedocument.spreadsheetml"
    cells = "".join(f'<row r="{i}"><c r="A{i}" t="s"><v>0</v></c></row>' for i in range(1, rows + 1))
    parts = {
        "[Content_Types].xml": (
            '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
            f'<Override PartName="/xl/workbook.xml" ContentType="{kinds}.sheet.main+xml"/>'
            f'<Override PartName="/xl/worksheets/sheet1.xml" ContentType="{kinds}.worksheet+xml"/>'
            f'<Override PartName="/xl/sharedStrings.xml" ContentType="{kinds}.sharedStrings+xml"/></Types>'),
        "_rels/.rels": (
            '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            f'<Relationship Id="rId1" Type="{rel}/officeDocument" Target="xl/workbook.xml"/></Relationships>'),
        "xl/workbook.xml": (f'<workbook xmlns="{main}" xmlns:r="{rel}"><sheets>'
                            '<sheet name="Big" sheetId="1" r:id="rId1"/></sheets></workbook>'),
        "xl/_rels/workbook.xml.rels": (
            '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            f'<Relationship Id="rId1" Type="{rel}/worksheet" Target="worksheets/sheet1.xml"/>'
            f'<Relationship Id="rId2" Type="{rel}/sharedStrings" Target="sharedStrings.xml"/></Relationships>'),
        "xl/worksheets/sheet1.xml": f'<worksheet xmlns="{main}"><sheetData>{cells}</sheetData></worksheet>',
        "xl/sharedStrings.xml": f'<sst xmlns="{main}" count="1" uniqueCount="1"><si><t>{text}</t></si></sst>',
    }
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, xml in parts.items():
            archive.writestr(name, xml)
    return path


def test_xlsx_text_over_the_budget_is_refused(tmp_path):
    # A shared string is stored once and may fill every cell: the text can outgrow the package, so the
    # text is counted against the budget while the rows are read.
    path = _shared_string_xlsx(tmp_path / "big.xlsx", 2000, "x" * 1000)
    with pytest.raises(LoadError, match="extracted text too large"):
        load_document(path, max_decompressed_bytes=MIB)  # the package inflates to ~100 KiB, its text to 2 MB
    doc = load_document(path)
    assert doc.text.startswith("# Big\n" + "x" * 1000 + "\n") and len(doc.text) > 2_000_000


def test_office_files_load_in_the_worker(tmp_path):
    for path in (make_docx(tmp_path / "a.docx"), make_pptx(tmp_path / "b.pptx"), make_xlsx(tmp_path / "c.xlsx")):
        doc = load_limited(path, path.read_bytes(), LoadLimits(max_seconds=60))
        assert doc == load_document(path)


def _zip_bomb(path, size: int):
    """A DOCX-like package whose document part is ``size`` bytes of one repeated character."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types/>')
        archive.writestr("word/document.xml", b"a" * size)
    return path


def test_zip_bomb_refused_before_parsing(tmp_path):
    path = _zip_bomb(tmp_path / "bomb.docx", 8 * MIB)
    assert path.stat().st_size < 64 * 1024
    with pytest.raises(LoadError, match=r"decompression budget exceeded: the DOCX package.*zip bomb"):
        load_document(path, max_decompressed_bytes=4 * MIB)

def test_zip_bomb_refused_in_the_worker(tmp_path):
    path = _zip_bomb(tmp_path / "bomb.docx", 8 * MIB)
    with pytest.raises(LoadError, match="decompression budget exceeded"):
        load_limited(path, path.read_bytes(), LoadLimits(max_seconds=60, max_decompressed_bytes=4 * MIB))


def test_part_that_inflates_too_far_is_refused_under_the_budget(tmp_path):
    path = _zip_bomb(tmp_path / "bomb.docx", RATIO_MIN_BYTES + MIB)  # under the default 256 MiB budget
    with pytest.raises(LoadError, match=r"suspicious compression: part 'word/document.xml'.*zip bomb"):
        load_document(path)


@pytest.mark.parametrize("suffix", [".docx", ".pptx", ".xlsx"])
def test_damaged_files_get_a_per_file_error(tmp_path, suffix):
    not_zip = tmp_path / f"junk{suffix}"
    not_zip.write_bytes(b"this is no zip archive at all" * 10)
    with pytest.raises(LoadError, match=rf"not a valid {suffix[1:].upper()} file: not a readable ZIP package"):
        load_document(not_zip)
    empty_package = tmp_path / f"hollow{suffix}"
    with zipfile.ZipFile(empty_package, "w") as archive:
        archive.writestr("hello.txt", "no office parts here")
    with pytest.raises(LoadError, match=rf"cannot read this {suffix[1:].upper()} file \(damaged\?\)"):
        load_document(empty_package)


def test_truncated_docx(tmp_path):
    data = make_docx(tmp_path / "whole.docx").read_bytes()
    (tmp_path / "cut.docx").write_bytes(data[: len(data) // 2])
    with pytest.raises(LoadError, match="DOCX"):
        load_document(tmp_path / "cut.docx")


def test_lying_member_size_stops_at_the_declared_size(tmp_path):
    # The budget trusts the sizes in the ZIP directory: zipfile never inflates a member past its declared size.
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("word/document.xml", b"a" * (4 * MIB))
    data = bytearray(buffer.getvalue())
    central = data.rfind(b"PK\x01\x02")  # the last directory entry: word/document.xml; its size at +24
    data[central + 24:central + 28] = (1000).to_bytes(4, "little")
    (tmp_path / "liar.docx").write_bytes(bytes(data))
    with pytest.raises(LoadError, match="cannot read this DOCX file"):
        load_document(tmp_path / "liar.docx", max_decompressed_bytes=MIB)


@pytest.mark.parametrize(("suffix", "module", "package"),
                         [(".docx", "docx", "python-docx"), (".pptx", "pptx", "python-pptx"),
                          (".xlsx", "openpyxl", "openpyxl")])
def test_missing_extra_is_named_not_a_crash(tmp_path, monkeypatch, suffix, module, package):
    path = {".docx": make_docx, ".pptx": make_pptx, ".xlsx": make_xlsx}[suffix](tmp_path / f"file{suffix}")
    monkeypatch.setitem(sys.modules, module, None)  # import now raises ImportError
    with pytest.raises(LoadError) as caught:
        load_document(path)
    assert package in str(caught.value) and EXTRA_HINT in str(caught.value)
    assert EXTRA_HINT == "pip install 'retnet-rag[office]'"
    # Inside a folder the file is skipped with the same reason.
    assert [(p.name, reason) for p, reason in iter_files([tmp_path])] == [(path.name, str(caught.value))]


def test_folder_lists_office_files_when_installed(tmp_path):
    make_docx(tmp_path / "a.docx")
    make_xlsx(tmp_path / "b.xlsx")
    assert [(p.name, reason) for p, reason in iter_files([tmp_path])] == [("a.docx", None), ("b.xlsx", None)]
