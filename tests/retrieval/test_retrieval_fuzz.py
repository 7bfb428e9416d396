"""Fuzzing the loaders and the splitter (issue 16): random bytes, random nested HTML, random unicode.

Every case must end, within hypothesis' per-example deadline, in a Document or a LoadError
(never another exception), and what comes out must keep the loaders' and the splitter's
promises. Deadlines are generous (a busy 2-core machine) but catch anything superlinear.
"""

from __future__ import annotations

import codecs
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from retrieval import Document, LoadError, Page, Splitter, load_document
from retrieval.html import html_to_text
from retrieval.textdecode import decode_text

from .retrieval_testdata import text_pdf
from .test_retrieval_splitter import check_invariants, subword_count

FUZZ = settings(max_examples=150, deadline=5000, suppress_health_check=[HealthCheck.too_slow])


def _load(name: str, data: bytes) -> Document | None:
    """load_document on bytes in memory: a Document, or None for a LoadError."""
    try:
        doc = load_document(Path("/fuzz") / name, data)
    except LoadError as exc:
        assert str(exc).strip(), "a LoadError must say why"
        return None
    assert doc.text.strip()
    assert doc.pages and all(0 <= p.start <= p.end <= len(doc.text) for p in doc.pages)
    assert [p.start for p in doc.pages] == sorted(p.start for p in doc.pages)
    return doc


# -- random bytes through every loader --------------------------------------------------------------

_mixed_bytes = st.one_of(
    st.binary(max_size=4096),
    st.text(max_size=1500).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.text(max_size=1500).map(lambda t: t.encode("utf-16")),
    st.lists(st.sampled_from([b"\xef\xbb\xbf", b"\xff\xfe", b"\x00", b"caf\xe9 ", b"\xe2\x82", b"word ", b"\n\n",
                              b"<p>", b"</p>", b"<!--", b"# T\n", b"%PDF-1.4\n"]), max_size=200).map(b"".join),
)


@FUZZ
@given(data=_mixed_bytes, name=st.sampled_from(["f.txt", "f.md", "f.html", "f.pdf"]))
def test_any_bytes_load_or_fail_clearly(data, name):
    _load(name, data)


def _mutate(data: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    out = bytearray(data)
    for where, cut, insert in edits:
        at = where % (len(out) + 1)
        out[at : at + cut] = insert
    return bytes(out)


_PDF = text_pdf(["First page about kites.", "", "Third page (with parens) and \\ backslash."], title="Fuzz")


@settings(max_examples=150, deadline=10000, suppress_health_check=[HealthCheck.too_slow])
@given(edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 64), st.binary(max_size=16)),
                      min_size=1, max_size=6))
def test_damaged_pdfs_load_or_fail_clearly(edits):
    doc = _load("f.pdf", _mutate(_PDF, edits))
    if doc is not None:
        assert doc.kind == "pdf" and [p.number for p in doc.pages] == list(range(1, len(doc.pages) + 1))


_printable = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=2000)


@FUZZ
@given(text=_printable)
def test_utf8_text_decodes_to_itself(text):
    if text.startswith("\ufeff"):
        text = "x" + text
    try:
        decoded = decode_text(text.encode("utf-8"))
    except LoadError:
        assert not text  # only empty input fails
        return
    assert decoded.text == text and decoded.encoding == "utf-8" and not decoded.warnings


@FUZZ
@given(text=_printable.filter(lambda t: t.strip()), encoding=st.sampled_from(["utf-16", "utf-32"]))
def test_text_with_a_byte_order_mark_decodes_to_itself(text, encoding):
    assert decode_text(text.encode(encoding)).text == text
    assert decode_text(codecs.BOM_UTF8 + text.encode("utf-8")).text == text


# -- random nested HTML ---------------------------------------------------------------------------

_VISIBLE = ["div", "p", "span", "b", "i", "section", "article", "li", "ul", "td", "tr", "table", "h2", "blockquote",
            "em", "font", "x-custom"]
_HIDDEN = ["script", "style", "template", "noscript"]


@st.composite
def html_trees(draw, depth=0):
    """(markup, visible words, hidden words): nested elements, some left unclosed, with unique words."""
    counter = draw(st.shared(st.builds(lambda: [0]), key="words"))

    def word(kind: str) -> str:
        counter[0] += 1
        return f"{kind}{counter[0]}z"

    parts, shown, hidden = [], [], []
    for _ in range(draw(st.integers(0, 4 if depth < 6 else 0))):
        choice = draw(st.sampled_from(["text", "element", "hidden", "junk"]))
        if choice == "text":
            w = word("vis")
            parts.append(f" {w} ")
            shown.append(w)
        elif choice == "hidden":
            tag, w = draw(st.sampled_from(_HIDDEN)), word("hid")
            parts.append(f"<{tag}>{w}</{tag}>")
            hidden.append(w)
        elif choice == "junk":
            parts.append(draw(st.sampled_from(["<br>", "<br/>", "<!-- c -->", "&amp;", "&nbsp;", "<hr>", "</b>",
                                               "<img src=x>", "& ", "<!DOCTYPE html>", "</nope>"])))
        else:
            tag = draw(st.sampled_from(_VISIBLE))
            attrs = draw(st.sampled_from(["", ' class="a"', " data-x='1'", " id=main", ' title="<b>"']))
            inner, s, h = draw(html_trees(depth=depth + 1))
            close = f"</{tag}>" if draw(st.booleans()) else ""
            parts.append(f"<{tag}{attrs}>{inner}{close}")
            shown += s
            hidden += h
    return "".join(parts), shown, hidden


@FUZZ
@given(tree=html_trees())
def test_random_html_keeps_visible_words_in_order_and_drops_hidden_ones(tree):
    markup, shown, hidden = tree
    text, _ = html_to_text(markup, main_content=False)
    found = [w for w in text.split() if w.startswith(("vis", "hid"))]
    assert found == shown  # every visible word, once, in document order
    assert not set(hidden) & set(text.split())


@FUZZ
@given(tree=html_trees(), depth=st.integers(0, 3000), tag=st.sampled_from(["div", "b", "td", "li", "span"]))
def test_deeply_nested_random_html_loads(tree, depth, tag):
    markup = f"<{tag}>" * depth + tree[0] + f"</{tag}>" * (depth // 2)
    text, _ = html_to_text(markup)
    assert isinstance(text, str)
    _load("f.html", markup.encode())


# -- random unicode through the splitter ----------------------------------------------------------

_unicode_pieces = st.one_of(
    st.text(max_size=40),  # any code point but surrogates: combining marks, astral, controls, U+2028, U+0085
    st.sampled_from(["\u3002", "\u6f22" * 50, "x" * 300, ". ", "\n\n", "\u2028", "\u0085", "\r\n", "\u00a0",
                     "e\u0301", "\U0001f600" * 20, "\t\x0b\x0c", "!!!", " \u200b "]),
)


@FUZZ
@given(pieces=st.lists(_unicode_pieces, max_size=60), budget=st.integers(1, 50),
       overlap_frac=st.floats(0, 0.9), counter=st.sampled_from([None, subword_count, len]))
def test_splitter_on_random_unicode(pieces, budget, overlap_frac, counter):
    text = "".join(pieces)
    overlap = min(budget - 1, int(budget * overlap_frac))
    splitter = Splitter(max_tokens=budget, overlap=overlap, tokenizer=counter)
    doc = Document("d", "s", "t", "text", text, [Page(None, 0, len(text))])
    check_invariants(doc, splitter.split(doc), splitter)
