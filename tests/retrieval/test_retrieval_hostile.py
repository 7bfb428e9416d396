"""Hostile input: splitting stays linear on unspaced text; special files never hang ingest."""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from retrieval import Document, LoadError, Page, Splitter, approx_token_count, iter_files
from retrieval.loaders import read_bytes
from retrieval.splitter import _hard_split, _merge, _pieces, _Unit

from .retrieval_testdata import write


def doc_of(text: str) -> Document:
    return Document("d0", "mem", "t", "text", text, [Page(None, 0, len(text))])


class SpyCounter:
    """Counts tokens like the fallback and records how much text it was asked to read."""

    def __init__(self) -> None:
        self.calls = 0
        self.chars = 0

    def __call__(self, text: str) -> int:
        self.calls += 1
        self.chars += len(text)
        return approx_token_count(text)


# -- splitter -----------------------------------------------------------------------


@pytest.mark.parametrize("char", ["x", "\u6f22"], ids=["latin", "cjk"])
def test_unspaced_line_work_is_linear(char):
    """Characters the counter reads per input character must not grow with the input.

    Before the fix each cut bisected over the rest of the text, so this ratio grew with n
    (2 MB: ~8 CPU s; 8 MB: ~140 s).
    """
    ratios = []
    for n in (64 * 1024, 1024 * 1024):
        spy = SpyCounter()
        passages = Splitter(tokenizer=spy).split(doc_of(char * n))
        assert sum(len(p.text) for p in passages) == n
        assert all(p.tokens <= 200 for p in passages)
        assert spy.calls <= 20 * len(passages)  # a gallop and a bisection per cut
        ratios.append(spy.chars / n)
    assert ratios[1] <= 32 and ratios[1] <= 1.1 * ratios[0], ratios


def _reference_hard_split(text: str, budget: int, count) -> list[tuple[int, int]]:
    """The obvious version: bisect each cut over the whole rest of the text."""
    out, start, end = [], 0, len(text)
    while start < end:
        lo, hi = start + 1, end
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if count(text[start:mid]) <= budget:
                lo = mid
            else:
                hi = mid - 1
        out.append((start, lo))
        start = lo
    return out


def _subword_count(text: str) -> int:
    return len(re.findall(r"\w{1,3}|[^\w\s]", text)) + (1 if text.strip() else 0)


@settings(max_examples=200, deadline=None)
@given(
    text=st.text(alphabet="ab\u6f22.-xyz", min_size=1, max_size=400),
    budget=st.integers(1, 30),
    counter=st.sampled_from([approx_token_count, _subword_count, len]),
)
def test_hard_split_same_cuts_as_reference(text, budget, counter):
    units = _hard_split(text, 0, len(text), budget, counter)
    assert [(u.start, u.end) for u in units] == _reference_hard_split(text, budget, counter)
    assert all(u.tokens == counter(text[u.start : u.end]) for u in units)


def _reference_merge(text: str, units, budget: int, count):
    """The obvious version: count every join exactly (a passage-sized count per word)."""
    out = []
    for unit in units:
        if out and out[-1].tokens + unit.tokens <= budget:
            merged = count(text[out[-1].start : unit.end])
            if merged <= budget:
                out[-1] = _Unit(out[-1].start, unit.end, merged)
                continue
        out.append(unit)
    return out


@settings(max_examples=300, deadline=None)
@given(
    words=st.lists(
        st.sampled_from(["a", "bb", "word", "x" * 20, "e.g.", "--", "\u6f22\u5b57", "it's"]), min_size=1, max_size=80
    ),
    budget=st.integers(1, 30),
    counter=st.sampled_from([approx_token_count, _subword_count]),
)
def test_merge_same_units_as_join_by_join_reference(words, budget, counter):
    """Same cuts for counters that never grow when text is joined (word counts, most BPE)."""
    text = " ".join(words)
    units = [_Unit(s, e, counter(text[s:e])) for s, e in _pieces(text, 0, len(text), re.compile(r"\s+"))]
    assert _merge(text, units, budget, counter) == _reference_merge(text, units, budget, counter)


def test_long_unpunctuated_line_counts_each_word_about_once():
    spy = SpyCounter()
    n_words = 200_000
    passages = Splitter(tokenizer=spy).split(doc_of("word " * n_words))
    assert len(passages) == n_words // 200 and all(p.tokens == 200 for p in passages)
    assert spy.chars <= 12 * len("word " * n_words), spy.chars  # join-by-join read ~100x the text


# -- special files --------------------------------------------------------------------


def _read_in_thread(path: Path, **kwargs):
    """read_bytes in a daemon thread, so a regression hangs one test instead of the suite."""
    box: dict = {}

    def run() -> None:
        try:
            box["data"] = read_bytes(path, **kwargs)
        except Exception as exc:
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), f"reading {path} hung"
    return box


needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")


@needs_fifo
def test_fifo_given_directly_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.txt"
    os.mkfifo(fifo)
    box = _read_in_thread(fifo)
    assert isinstance(box.get("error"), LoadError) and str(box["error"]) == "not a regular file (FIFO)"


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")
@pytest.mark.parametrize("limit", [1024, None])
def test_dev_zero_is_refused_before_reading(limit):
    box = _read_in_thread(Path("/dev/zero"), max_bytes=limit)
    assert isinstance(box.get("error"), LoadError)
    assert str(box["error"]) == "not a regular file (character device)"


def test_limit_enforced_while_reading_not_from_st_size(tmp_path, monkeypatch):
    path = write(tmp_path / "grows.txt", b"x" * 5000)
    real_fstat = os.fstat

    class Lying:  # a file whose st_size says 10 bytes (a growing file, a lying filesystem)
        def __init__(self, info):
            self.st_mode, self.st_size = info.st_mode, 10

    monkeypatch.setattr(os, "fstat", lambda fd: Lying(real_fstat(fd)))
    with pytest.raises(LoadError, match=r"^file too large: more than the limit of 1000 bytes \(raise it: "):
        read_bytes(path, max_bytes=1000)
    assert read_bytes(path, max_bytes=5000) == b"x" * 5000  # exactly at the limit is fine


needs_symlinks = pytest.mark.skipif(os.name == "nt", reason="symlinks need privileges on Windows")


@needs_symlinks
def test_iter_files_skips_special_files_and_symlinks(tmp_path):
    outside = write(tmp_path / "outside" / "secret.txt", "outside the folder")
    root = tmp_path / "root"
    write(root / "a.txt", "inside")
    write(root / "sub" / "b.md", "inside too")
    (root / "link-out.txt").symlink_to(outside)
    (root / "link-in.txt").symlink_to(root / "a.txt")
    (root / "dangling.txt").symlink_to(tmp_path / "nowhere.txt")
    if hasattr(os, "mkfifo"):
        os.mkfifo(root / "pipe.txt")

    found = {p.relative_to(root).as_posix(): reason for p, reason in iter_files([root])}
    assert found["a.txt"] is None and found["sub/b.md"] is None
    for link in ("link-out.txt", "link-in.txt", "dangling.txt"):
        assert found[link] == "symbolic link, not followed"
    if hasattr(os, "mkfifo"):
        assert found["pipe.txt"] == "not a regular file (FIFO)"

    opted = {p.relative_to(root).as_posix(): reason for p, reason in iter_files([root], follow_symlinks=True)}
    assert opted["link-in.txt"] is None  # inside the folder: read when the user opts in
    assert opted["link-out.txt"].startswith("symbolic link to ") and opted["link-out.txt"].endswith(
        "outside the folder: not followed"
    )
    assert opted["dangling.txt"].endswith("outside the folder: not followed")


@needs_symlinks
def test_batch_with_fifo_symlink_and_device_ingests_the_rest(make_collection, tmp_path):
    outside = write(tmp_path / "outside" / "secret.txt", "Secret text about submarines.")
    root = tmp_path / "batch"
    write(root / "good.txt", "Plain text about gardening and tomatoes.")
    write(root / "sub" / "good.md", "# Boats\n\nNotes about sailing.")
    (root / "escape.txt").symlink_to(outside)
    if hasattr(os, "mkfifo"):
        os.mkfifo(root / "pipe.txt")
    explicit = [root]
    if os.path.exists("/dev/zero"):
        explicit.append(Path("/dev/zero"))
    col = make_collection()

    box: dict = {}
    thread = threading.Thread(target=lambda: box.setdefault("report", col.add(explicit)), daemon=True)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "ingest hung on a special file"
    by_name = {Path(r.path).name: r for r in box["report"].results}

    assert by_name["good.txt"].status == "added" and by_name["good.md"].status == "added"
    assert by_name["escape.txt"].status == "skipped" and by_name["escape.txt"].error == "symbolic link, not followed"
    if hasattr(os, "mkfifo"):
        assert by_name["pipe.txt"].status == "skipped"
        assert by_name["pipe.txt"].error == "not a regular file (FIFO)"
    if os.path.exists("/dev/zero"):
        assert by_name["zero"].status == "failed"
        assert by_name["zero"].error.startswith("not a regular file (character device)")
    assert len(col.documents()) == 2
    assert all("submarines" not in hit.text for hit in col.search("submarines"))


# -- HTML -----------------------------------------------------------------------------


def _reference_html_to_text(markup: str) -> str:
    """The tree-rewriting version the walk replaced (quadratic in depth): same output."""
    from bs4 import BeautifulSoup, Comment

    from retrieval import html as h

    soup = BeautifulSoup(markup, "html.parser")
    for tag in soup.find_all(list(h._INVISIBLE)):
        tag.decompose()
    for tag in soup.find_all(lambda t: t.has_attr("hidden") or h._DISPLAY_NONE.search(t.get("style", ""))):
        tag.decompose()
    for comment in soup.find_all(string=lambda s: isinstance(s, Comment)):
        comment.extract()
    for br in soup.find_all("br"):
        br.replace_with("\n")
    for tag in soup.find_all(list(h._BLOCK)):
        tag.insert_before("\n\n")
        tag.insert_after("\n\n")
    for tag in soup.find_all(list(h._CELLS)):
        tag.insert_after(" \t ")
    lines = (h._SPACES.sub(" ", line).strip() for line in soup.get_text().split("\n"))
    return h._BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


_html_bits = st.sampled_from(
    [
        "<div>",
        "</div>",
        "<p>",
        "</p>",
        "<span>",
        "</span>",
        "<b>",
        "</b>",
        "<br>",
        "<br/>",
        "<td>",
        "</td>",
        "<tr>",
        "<table>",
        "</table>",
        "<li>",
        "<ul>",
        "</ul>",
        "<script>",
        "</script>",
        "<style>",
        "</style>",
        "<div hidden>",
        '<span style="display:none">',
        '<p style="Visibility : hidden">',
        "<!-- note -->",
        "<![CDATA[cdata]]>",
        "<!DOCTYPE html>",
        "<h1>",
        "</h1>",
        "<head>",
        "</head>",
        "<title>",
        "</title>",
        "word",
        "Two words.",
        " ",
        "\n",
        "\t",
        "&amp;",
        "&nbsp;",
        "<",
        ">",
        "x\u00a0y",
        "<template>",
        "<svg>",
    ]
)


@settings(max_examples=300, deadline=None)
@given(parts=st.lists(_html_bits, max_size=60))
def test_html_walk_matches_tree_rewriting_reference(parts):
    from retrieval.html import html_to_text

    markup = "".join(parts)
    assert html_to_text(markup)[0] == _reference_html_to_text(markup)


@pytest.mark.parametrize("shape", ["closed", "unclosed", "hidden", "cells"])
def test_deep_html_is_one_walk_without_tree_edits(shape, monkeypatch):
    """20k levels: no recursion error, and no tree edit (each one walks the subtree)."""
    from bs4.element import PageElement, Tag

    from retrieval.html import html_to_text

    depth = 20_000
    markup = {
        "closed": "<div>" * depth + "deep text" + "</div>" * depth,
        "unclosed": "<div><b>" * depth + "deep text",
        "hidden": "<div>shown</div>" + "<div hidden>" * depth + "secret" + "</div>" * depth,
        "cells": "<table><tr><td>" * depth + "deep text",
    }[shape]

    def refuse(*args, **kwargs):
        raise AssertionError("html_to_text edited the tree")

    for name in ("insert_before", "insert_after", "replace_with", "extract"):
        monkeypatch.setattr(PageElement, name, refuse)
    monkeypatch.setattr(Tag, "decompose", refuse)
    text, _ = html_to_text(markup)
    assert text == ("shown" if shape == "hidden" else "deep text")
