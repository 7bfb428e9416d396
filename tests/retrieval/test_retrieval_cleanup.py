"""Cleaner text (issue 17): HTML main content, PDF headers/footers/hyphenation/split words, Markdown titles."""

from __future__ import annotations

import io

import pytest
from pypdf import PdfReader, PdfWriter
from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

from retrieval import load_document
from retrieval.html import html_to_text
from retrieval.markdown import markdown_title
from retrieval.pdf_text import clean_pages

from .retrieval_testdata import text_pdf, write

# -- HTML ---------------------------------------------------------------------------------

CHROME = """
<header class="site"><a href="/">ACME Docs</a> <a href="/blog">Blog</a> <a href="/shop">Shop</a></header>
<nav><ul><li><a href="/a">Getting started</a></li><li><a href="/b">Reference</a></li></ul></nav>
<div role="navigation"><a href="/x">Breadcrumb home</a> / <a href="/y">Tools</a></div>
<div id="cookie-banner">We use cookies to improve your experience. <button>Accept all</button></div>
<aside class="sidebar"><h3>Related</h3><p>Sidebar teaser text</p></aside>
"""
FOOTER = """<footer><p>Copyright 2026 ACME Corp. All rights reserved.</p>
<ul><li><a href="/privacy">Privacy</a></li><li><a href="/terms">Terms</a></li></ul></footer>"""
ARTICLE = """
<h1>Compressing logs with zstd</h1>
<p>Use <code>zstd --long=27</code> to find matches across a large window.
See <a href="#levels">levels</a> for the trade-offs.</p>
<h2 id="levels">Levels</h2>
<p>Level 19 compresses best; level 1 is fastest.</p>
<table><tr><th>Level</th><th>Speed</th></tr><tr><td>1</td><td>fast</td></tr></table>
"""
CHROME_WORDS = ("ACME Docs", "Getting started", "Breadcrumb", "cookies", "Accept all", "Sidebar teaser",
                "Copyright", "Privacy", "Related")
CONTENT_WORDS = ("Compressing logs with zstd", "zstd --long=27", "See levels for the trade-offs.",
                 "Level 19 compresses best", "Level Speed", "1 fast")


def page(body: str) -> str:
    return f"<!doctype html><html><head><title>Logs | ACME</title></head><body>{body}</body></html>"


@pytest.mark.parametrize(
    "body",
    [
        CHROME + "<main>" + ARTICLE + "</main>" + FOOTER,
        CHROME + "<article>" + ARTICLE + "</article>" + FOOTER,
        CHROME + '<div class="content">' + ARTICLE + "</div>" + FOOTER,  # no main/article: the cuts alone
    ],
    ids=["main", "article", "div-soup"],
)
def test_html_drops_page_chrome_and_keeps_the_article(body):
    text, title = html_to_text(page(body))
    assert title == "Logs | ACME"
    for word in CONTENT_WORDS:
        assert word in text
    for word in CHROME_WORDS:
        assert word not in text
    full, _ = html_to_text(page(body), main_content=False)
    assert all(word in full for word in CHROME_WORDS + CONTENT_WORDS)


def test_html_article_header_and_footer_are_content():
    """Only the page's own header/footer is chrome; an article's byline and notes are its text."""
    body = ("<header><nav><a href='/'>Home</a></nav>Site banner</header><article><header><h1>Release 2.0</h1>"
            "<p>By Ada, 3 May</p></header><p>Body text.</p><section><header>Section intro</header><p>More.</p>"
            "</section><footer>Filed under compression.</footer></article><footer>Site footer</footer>")
    text, _ = html_to_text(page(body))
    assert "Site banner" not in text and "Site footer" not in text and "Home" not in text
    for word in ("Release 2.0", "By Ada, 3 May", "Body text.", "Filed under compression.", "Section intro"):
        assert word in text


def test_html_link_lists_go_prose_with_links_stays():
    links = "".join(f'<li><a href="/p{i}">Page number {i}</a></li>' for i in range(8))
    body = (f"<div><ul>{links}</ul></div>"
            '<div><p>Read the <a href="/m">manual</a>, the <a href="/f">FAQ</a> and the <a href="/w">wiki</a> '
            "before you file a bug: most questions about configuration are answered there already.</p></div>")
    text, _ = html_to_text(page(body))
    assert "Page number" not in text
    assert "Read the manual, the FAQ and the wiki before you file a bug" in text


def test_html_cuts_never_take_most_of_the_page():
    """A class name that looks like chrome on the element holding the page, or a page that is
    all links, must not lose the text."""
    body = '<div class="layout has-sidebar"><p>' + "Real content sentence. " * 20 + "</p></div>"
    assert "Real content sentence." in html_to_text(page(body))[0]
    only_links = "<ul>" + "".join(f'<li><a href="/{i}">Entry {i}</a></li>' for i in range(5)) + "</ul>"
    assert "Entry 4" in html_to_text(page(only_links))[0]  # nothing left: all visible text instead
    only_nav = "<nav><a href='/'>Home</a> <a href='/x'>Other</a></nav>"
    assert html_to_text(page(only_nav))[0] == "Home Other"


def test_html_several_mains_or_articles_read_the_page():
    body = "<article><p>First post.</p></article><article><p>Second post.</p></article><nav>Menu</nav>"
    text, _ = html_to_text(page(body))
    assert "First post." in text and "Second post." in text and "Menu" not in text


def test_html_loader_uses_main_content(tmp_path):
    doc = load_document(write(tmp_path / "p.html", page(CHROME + "<main>" + ARTICLE + "</main>" + FOOTER)))
    assert doc.title == "Logs | ACME" and "Privacy" not in doc.text and "zstd --long=27" in doc.text


@pytest.mark.parametrize("shape", ["nested-main", "nested-links"])
def test_html_main_content_stays_linear_on_deep_markup(shape, monkeypatch):
    """Issue 16: both walks (measure, then write) are iterative and look at each element once
    (20k levels: no recursion error, and tags examined at most twice each, at any depth)."""
    from retrieval import html

    depth = 20_000
    markup = {
        "nested-main": "<nav><a href='/'>x</a></nav><main>" + "<div>" * depth + "deep text" + "</div>" * depth,
        "nested-links": "<p>deep text</p>" + "<div><a href='/'>link</a>" * depth + "</div>" * depth,
    }[shape]
    looked = []
    real_hidden = html._hidden
    monkeypatch.setattr(html, "_hidden", lambda tag: looked.append(tag) or real_hidden(tag))
    text, _ = html_to_text(markup)
    assert "deep text" in text
    tags = markup.count("<div>") + markup.count("<a ") + 3
    assert len(looked) <= 2 * tags, (len(looked), tags)


# -- PDF -----------------------------------------------------------------------------------

_HELVETICA = {" ": 278, "T": 611, "b": 556, "e": 556, "h": 556, "i": 222, "l": 222, "o": 556, "s": 500, "t": 278}


def ops_pdf(streams: list[bytes]) -> bytes:
    """A PDF whose page i draws the raw content stream ``streams[i]`` (font /F1 = Helvetica)."""
    writer = PdfWriter()
    font = writer._add_object(DictionaryObject({
        NameObject("/Type"): NameObject("/Font"),
        NameObject("/Subtype"): NameObject("/Type1"),
        NameObject("/BaseFont"): NameObject("/Helvetica"),
    }))
    for ops in streams:
        pdf_page = writer.add_blank_page(612, 792)
        stream = DecodedStreamObject()
        stream.set_data(ops)
        pdf_page[NameObject("/Contents")] = writer._add_object(stream)
        pdf_page[NameObject("/Resources")] = DictionaryObject(
            {NameObject("/Font"): DictionaryObject({NameObject("/F1"): font})}
        )
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def justified_split(before: str, after: str, word_spacing: float = 3.0) -> bytes:
    """Text that a justifying typesetter (groff's gropdf) writes: word spacing ``Tw`` on, and a
    word continued by a second string placed exactly where the first one ends. pypdf leaves
    ``Tw`` out of the gap it measures, so it sees a gap and puts a space inside the word."""
    advance = sum(_HELVETICA[c] for c in before) * 11 / 1000 + word_spacing * before.count(" ")
    return (f"BT /F1 11 Tf {word_spacing} Tw 1 0 0 1 72 700 Tm ({before}) Tj {advance:.3f} 0 Td ({after}) Tj "
            f"0 Tw 1 0 0 1 72 600 Tm (It is built daily; it goes in to the tree, to the log and to the list.) Tj "
            f"1 0 0 1 72 580 Tm (Step into the tree in a minute; in short, go into it.) Tj ET").encode()


def test_pdf_split_word_is_joined():
    data = ops_pdf([justified_split("The tool is b", "uilt from the source tree.")])
    assert "is b uilt from" in PdfReader(io.BytesIO(data)).pages[0].extract_text()  # pypdf's own output
    cleaned = clean_pages([PdfReader(io.BytesIO(data)).pages[0].extract_text()])[0]
    assert "The tool is built from the source tree." in cleaned
    # "in to" stays two words: "in" and "to" are each as frequent on their own as "into" is.
    assert "goes in to the tree" in cleaned


def test_pdf_running_headers_footers_and_page_numbers_go(tmp_path):
    header = "ACME Compressor Manual"
    bodies = [f"Body of page {n}: the option --level={n} sets the level." for n in range(1, 7)]
    pages = [f"{header}\nChapter 2: Usage {n}\n{body}\nmore text on page {n}\n- {n} -"
             for n, body in enumerate(bodies, start=1)]
    doc = load_document(write(tmp_path / "manual.pdf", text_pdf(pages, title="Manual")))
    assert doc.text.count(header) == 1 and doc.text.count("Chapter 2: Usage") == 1  # first appearance kept
    assert "- 3 -" not in doc.text and "- 6 -" not in doc.text
    for page_info, body in zip(doc.pages, bodies, strict=True):
        assert body in doc.text[page_info.start : page_info.end]  # page offsets still right


def test_pdf_lines_that_merely_repeat_in_the_body_stay():
    pages = [f"Intro {n}\nText {n}.\nExample:\nls -l\nStep {n} done.\nmore\nend {n}" for n in range(5)]
    cleaned = clean_pages(pages)
    assert all("Example:" in p and "ls -l" in p for p in cleaned)  # mid-page lines are never chrome
    rare = ["Title page\nNotes\nalpha", "b\nc", "d\ne", "Notes\nx\ny", "z\nw", "f\ng", "Notes\nq\nr"]
    assert [p.count("Notes") for p in clean_pages(rare)] == [1, 0, 0, 1, 0, 0, 1]  # 3 pages, but far apart


def test_pdf_hyphenation_repaired(tmp_path):
    pages = [
        "A fourth method is to use pdfmom, which imple-\nments the full range of features.\n"
        "Pass the command-\nline options first.\nThe command-line parser is strict.",
        "Non-hyphenated text: well-\nknown rules apply.",
    ]
    doc = load_document(write(tmp_path / "h.pdf", text_pdf(pages)))
    assert "which implements\nthe full range" in doc.text
    assert "Pass the command-line\noptions first." in doc.text  # the document spells it with a hyphen
    assert "wellknown" in doc.text  # default: a soft hyphen (the document never says "well-known")


def test_pdf_cleanup_never_weighs_giant_words(monkeypatch):
    """Hostile pages (issue 16): a 200k-letter "word" next to its pieces must not reach the
    run-together test, which tries every cut of the word."""
    from retrieval import pdf_text

    weighed = []
    real = pdf_text._run_together
    monkeypatch.setattr(pdf_text, "_run_together", lambda word, *a: weighed.append(len(word)) or real(word, *a))
    giant = "x" * 200_000
    prose = "plain words here " * 700  # enough ordinary words that joining stays on
    # "xxx...x xx" joins into a word the document holds: only the length cap keeps it from being weighed.
    pages = [f"{giant[:-2]} xx\n{giant}-\nyy and b uilt", f"{giant} {giant}\nbuilt built\n{prose}"]
    cleaned = clean_pages(pages)
    assert "and built" in cleaned[0] and f"{giant}yy" in cleaned[0]  # hyphen join is linear and still done
    assert weighed and max(weighed) <= 100  # real words were weighed, the giant never


def test_pdf_ligatures_and_minus_signs_become_ascii():
    assert clean_pages(["Use the de\ufb01ned \ufb02ags: \u2212\u2212login"]) == ["Use the defined flags: --login"]


# -- Markdown titles ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "title"),
    [
        ("# Install Guide\n\nSteps.\n\n## Details", "Install Guide"),
        ("## Install\n\nSteps.\n\n## Usage\n", None),  # sections only: the file name, not "Install"
        ("Intro text\n\n## Install Guide ##\n\nSteps.", None),
        ('<p align="center"><img src="logo.png"></p>\n\n[![ci](b.svg)](x)\n\n# zstd\n\nFast.', "zstd"),
        ("Event Notify Test Runner\n========================\n\nText.", "Event Notify Test Runner"),
        ("Usage\n-----\n\nText.", None),
        ("---\ntitle: \"Release notes\"\ndate: 2026-01-01\n---\n\n## 1.2\n", "Release notes"),
        ("```sh\n# build it\nmake\n```\n\n## Build\n", None),  # a shell comment is not a heading
        ("~~~\n# not this\n~~~\n# The Real Title ##\n", "The Real Title"),
        ("no heading at all", None),
    ],
)
def test_markdown_title_rule(text, title):
    assert markdown_title(text) == title


def test_markdown_loader_falls_back_to_file_name(tmp_path):
    assert load_document(write(tmp_path / "zstd-README.md", "Intro.\n\n## Benchmarks\n\nFast.")).title == "zstd-README"
    assert load_document(write(tmp_path / "g.md", "# Guide\n\n## Install\n")).title == "Guide"
