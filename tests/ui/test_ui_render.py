"""What the page shows: chat messages, the sources panel with quoted spans marked, the status line."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from app import Answer, Source
from ui import render

TEXT = "The -r option copies directories recursively. The -n option performs a dry run."


def source(n=1, start=100, text=TEXT, doc_id="d1"):
    return Source(n, "rsync", "/docs/rsync.txt", 2, text, 0.5, doc_id, start, start + len(text), passage_id=7)


def answer(quotes=None, sources=None):
    a = Answer("What does -r do?", "It copies directories.", sources if sources is not None else [source()])
    if quotes is not None:
        a.quotes = quotes
    return a


def test_messages_are_gradio_6_role_dicts():
    msgs = render.messages([answer()], pending=("And -n?", ""))
    assert [m["role"] for m in msgs] == ["user", "assistant", "user", "assistant"]
    assert msgs[1]["content"] == "It copies directories." and msgs[3]["content"] == "…"


def test_sources_without_quotes_show_document_page_and_text_escaped():
    html = render.sources_html(answer(sources=[source(text="a <b>bold</b> claim")]))
    assert "[1] rsync, p. 2" in html and "&lt;b&gt;bold&lt;/b&gt;" in html and "<mark>" not in html
    assert "No sources" in render.sources_html(answer(sources=[]))
    assert "appear here" in render.sources_html(None)


@pytest.mark.parametrize("quote", [
    # app.types.Quote: offsets into the passage, the source object itself
    SimpleNamespace(source=source(), start=4, end=13, text="-r option"),
    # Quote.to_dict(): the citation number and document offsets too
    {"source": 1, "start": 4, "end": 13, "doc_start": 104, "doc_end": 113, "text": "-r option"},
    # document offsets only, no text
    {"source": 1, "doc_start": 104, "doc_end": 113},
    # text only
    {"text": "-r option"},
])
def test_quoted_span_is_marked(quote):
    html = render.sources_html(answer([quote]))
    assert "The <mark>-r option</mark> copies" in html


def test_quotes_for_other_sources_or_with_wrong_text_mark_nothing():
    two = [source(), source(n=2, doc_id="d2")]
    html = render.sources_html(answer([{"source": 2, "start": 4, "end": 13, "text": "-r option"}], two))
    assert html.count("<mark>") == 1  # only in source 2's card
    assert "<mark>" not in render.sources_html(answer([{"source": 1, "start": 0, "end": 5, "text": "nope!"}]))
    assert "<mark>" not in render.sources_html(answer([{"source": 1, "start": 50, "end": 500}]))


class FakeSession:
    state_bytes = 3 * 2**20
    tokens_read = 12345

    def __len__(self):
        return 2


def test_status_shows_constant_state_and_tokens_read():
    line = render.status(FakeSession(), "docs (mine)")
    assert "3.0 MiB (constant)" in line and "12,345" in line and "**turns** 2" in line


def test_result_rows_name_the_file_and_the_reason():
    r = SimpleNamespace(path="x.pdf", status="failed", passages=0, error="encrypted PDF", duplicate_of=None,
                        warnings=[])
    d = SimpleNamespace(path="y.txt", status="duplicate", passages=0, error=None, duplicate_of="/srv/u/a.txt",
                        warnings=[])
    m = SimpleNamespace(path="z.txt", status="duplicate", passages=0, error=None, duplicate_of="/srv/u/z.txt",
                        warnings=[], moved_from="/srv/u/old.txt")
    assert render.result_rows([r, d, m]) == [["x.pdf", "failed", 0, "encrypted PDF"],
                                             ["y.txt", "duplicate", 0, "same content as a.txt"],
                                             ["z.txt", "duplicate", 0, "already in the collection, whose copy of "
                                                                       "the file was gone: it keeps this one"]]


def test_the_apps_own_quote_type_is_highlighted():
    import app.types

    quote_type = getattr(app.types, "Quote", None)
    if quote_type is None:
        pytest.skip("app.types has no Quote yet")
    s = source()
    html = render.sources_html(answer([quote_type(s, 4, 13, "-r option")], [s]))
    assert "The <mark>-r option</mark> copies" in html
