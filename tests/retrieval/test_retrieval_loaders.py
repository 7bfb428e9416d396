"""Loaders: each format, encodings, and every kind of bad file giving one clear error."""

from __future__ import annotations

import codecs

import pytest

from retrieval import LoadError, content_id, iter_files, load_document
from retrieval.loaders import read_bytes

from .retrieval_testdata import text_pdf, write


def test_text_file(tmp_path):
    doc = load_document(write(tmp_path / "notes.txt", "First line.\n\nSecond paragraph."))
    assert doc.kind == "text" and doc.title == "notes" and doc.encoding == "utf-8"
    assert doc.text == "First line.\n\nSecond paragraph."
    assert [(p.number, p.start, p.end) for p in doc.pages] == [(None, 0, len(doc.text))]
    assert doc.id == content_id(doc.text.encode()) and len(doc.id) == 16


def test_same_bytes_same_id_any_path(tmp_path):
    a = load_document(write(tmp_path / "a.txt", "same"))
    b = load_document(write(tmp_path / "sub" / "b.txt", "same"))
    c = load_document(write(tmp_path / "c.txt", "different"))
    assert a.id == b.id != c.id


def test_markdown_title_from_top_level_heading(tmp_path):
    # Issue 17: the first heading of any level used to be the title, so a file whose first heading was
    # "## Install Guide" was cited as "Install Guide" everywhere. A "##" names a section, not the file:
    # only a top-level heading is the file's title, else the file name (tests/retrieval/test_retrieval_cleanup.py).
    doc = load_document(write(tmp_path / "guide.md", "Intro text\n\n# Install Guide ##\n\n## Steps"))
    assert doc.kind == "markdown" and doc.title == "Install Guide"
    assert load_document(write(tmp_path / "notes.md", "Intro text\n\n## Install Guide ##\n\nSteps.")).title == "notes"
    assert load_document(write(tmp_path / "plain.md", "no heading")).title == "plain"


def test_html_visible_text_only(tmp_path):
    html = """<!doctype html><html><head><title>The  Page</title>
    <style>p { color: red }</style><script>var secret = "SCRIPT";</script></head>
    <body><nav>Menu</nav><p>Hello <b>bold</b> world.</p><!-- a COMMENT -->
    <div hidden>HIDDEN1</div><span style="display: none">HIDDEN2</span>
    <p>Second<br>line</p><noscript>NOSCRIPT</noscript>
    <table><tr><td>cell1</td><td>cell2</td></tr></table></body></html>"""
    doc = load_document(write(tmp_path / "page.html", html))
    assert doc.kind == "html" and doc.title == "The Page"
    for invisible in ("SCRIPT", "color", "COMMENT", "HIDDEN1", "HIDDEN2", "NOSCRIPT", "The Page"):
        assert invisible not in doc.text
    assert "Hello bold world." in doc.text  # inline tags do not break the sentence
    assert "Menu" not in doc.text  # navigation is page chrome, not content (issue 17)
    assert "Hello bold world.\n\nSecond\nline" in doc.text
    assert "cell1 cell2" in doc.text


def test_html_without_visible_text(tmp_path):
    with pytest.raises(LoadError, match="no visible text"):
        load_document(write(tmp_path / "x.htm", "<html><script>x()</script></html>"))


def test_pdf_pages_and_numbers(tmp_path):
    data = text_pdf(["Page one text.", "Page two says hello.", "Third page."], title="Manual")
    doc = load_document(write(tmp_path / "m.pdf", data))
    assert doc.kind == "pdf" and doc.title == "Manual"
    assert [p.number for p in doc.pages] == [1, 2, 3]
    for page, expected in zip(doc.pages, ["Page one text.", "Page two says hello.", "Third page."], strict=True):
        assert doc.text[page.start : page.end].strip() == expected
    assert doc.warnings == []


def test_pdf_some_pages_without_text_warns(tmp_path):
    doc = load_document(write(tmp_path / "m.pdf", text_pdf(["Text.", "", "", "More."])))
    assert doc.warnings == ["no extractable text on page(s) 2-3"]
    assert doc.title == "m"


@pytest.mark.parametrize(
    "data",
    [b"%PDF-1.4\n%garbage with no objects", b"this is not a pdf", b"%PDF-1.7\n" + bytes(range(256)) * 4],
    ids=["header-only", "no-header", "binary-junk"],
)
def test_corrupt_pdf(tmp_path, data):
    with pytest.raises(LoadError, match="^corrupt PDF: "):
        load_document(write(tmp_path / "bad.pdf", data))


def test_truncated_pdf(tmp_path):
    data = text_pdf(["Some text on the only page."])
    with pytest.raises(LoadError, match="corrupt PDF"):
        load_document(write(tmp_path / "cut.pdf", data[: len(data) // 3]))


def test_encrypted_pdf_needs_password(tmp_path):
    with pytest.raises(LoadError, match="encrypted PDF: a password is required"):
        load_document(write(tmp_path / "locked.pdf", text_pdf(["Top secret."], encrypt="pw")))


def test_encrypted_pdf_with_empty_user_password_opens(tmp_path):
    doc = load_document(write(tmp_path / "owner-only.pdf", text_pdf(["Readable text."], encrypt="")))
    assert "Readable text." in doc.text


def test_scanned_pdf_without_text(tmp_path):
    with pytest.raises(LoadError, match=r"no extractable text in 3 page\(s\).*OCR"):
        load_document(write(tmp_path / "scan.pdf", text_pdf(["", "", ""])))


def test_empty_file(tmp_path):
    for name in ("e.txt", "e.pdf", "e.html", "e.md"):
        with pytest.raises(LoadError, match="^empty file$"):
            load_document(write(tmp_path / name, b""))


def test_blank_text_file(tmp_path):
    with pytest.raises(LoadError, match="blank"):
        load_document(write(tmp_path / "b.txt", " \n\t\n "))


def test_binary_file_named_txt(tmp_path):
    png_like = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 8
    with pytest.raises(LoadError, match="binary file"):
        load_document(write(tmp_path / "image.txt", png_like))


def test_binary_without_nul_bytes(tmp_path):
    junk = bytes(b for b in range(1, 32) if b not in (9, 10, 13)) * 200
    with pytest.raises(LoadError, match="binary file|not a text file"):
        load_document(write(tmp_path / "junk.txt", junk))


def test_invalid_utf8_is_repaired_with_a_warning(tmp_path):
    data = "Grüße aus Köln. ".encode() * 10 + b"\xff\xfe broken \xc3" + b" Ende."
    doc = load_document(write(tmp_path / "damaged.txt", data))
    assert doc.encoding == "utf-8"
    assert doc.text.startswith("Grüße aus Köln.") and "\ufffd" in doc.text
    assert len(doc.warnings) == 1 and "invalid UTF-8" in doc.warnings[0]


def test_legacy_encoding_is_detected(tmp_path):
    text = "Le café était très animé ce soir-là, et les garçons servaient des crêpes à côté. " * 20
    doc = load_document(write(tmp_path / "fr.txt", text.encode("cp1252")))
    assert doc.text == text
    assert doc.warnings and "detected" in doc.warnings[0]


@pytest.mark.parametrize("encoding,bom", [("utf-16-le", codecs.BOM_UTF16_LE), ("utf-8", codecs.BOM_UTF8)])
def test_byte_order_marks(tmp_path, encoding, bom):
    doc = load_document(write(tmp_path / "bom.txt", bom + "Ünïcödé text.".encode(encoding)))
    assert doc.text == "Ünïcödé text."


def test_unsupported_extension(tmp_path):
    with pytest.raises(LoadError, match="unsupported file type '.odt'"):
        load_document(write(tmp_path / "x.odt", b"PK"))


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(LoadError, match="file not found"):
        load_document(tmp_path / "gone.txt")
    (tmp_path / "dir.txt").mkdir()
    with pytest.raises(LoadError, match="directory"):
        load_document(tmp_path / "dir.txt")


def test_size_limit(tmp_path):
    path = write(tmp_path / "big.txt", b"word " * 1000)
    with pytest.raises(LoadError, match=r"^file too large: 4.9 KiB > limit 1000 bytes \(raise it: --max-file-mb"):
        read_bytes(path, max_bytes=1000)
    assert len(read_bytes(path, max_bytes=None)) == 5000


def test_iter_files_recursive_sorted_and_filtered(tmp_path):
    for rel in ("b.txt", "a/z.md", "a/y.pdf", "a/deep/x.html", ".hidden/h.txt", "a/.secret.txt", "a/pic.png"):
        write(tmp_path / "root" / rel, "x")
    write(tmp_path / "single.odt", "x")
    found = [(p.relative_to(tmp_path).as_posix(), reason) for p, reason in iter_files([tmp_path / "root",
                                                                                       tmp_path / "single.odt"])]
    assert found == [
        ("root/b.txt", None),
        ("root/a/pic.png", "unsupported file type '.png'"),
        ("root/a/y.pdf", None),
        ("root/a/z.md", None),
        ("root/a/deep/x.html", None),
        ("single.odt", None),  # named explicitly: the loader will say what is wrong with it
    ]


def test_source_is_absolute(tmp_path, monkeypatch):
    write(tmp_path / "rel" / "a.txt", "text")
    monkeypatch.chdir(tmp_path)
    assert load_document("rel/a.txt").source == str(tmp_path / "rel" / "a.txt")
