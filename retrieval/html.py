"""Visible text of an HTML page (BeautifulSoup with the stdlib parser)."""

from __future__ import annotations

import re
from collections.abc import Iterator

_INVISIBLE = {"script", "style", "noscript", "template", "head", "svg", "canvas", "iframe", "object"}
# Elements that break a line in a browser: text on either side must not run together.
_BLOCK = {
    "address", "article", "aside", "blockquote", "dd", "details", "div", "dl", "dt", "fieldset",
    "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr",
    "li", "main", "nav", "ol", "p", "pre", "section", "summary", "table", "tr", "ul", "caption",
}
_CELLS = {"td", "th"}
_SPACES = re.compile(r"[ \t\r\f\v\u00a0]+")
_BLANK_LINES = re.compile(r"\n\s*\n\s*")
_DISPLAY_NONE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.I)


def html_to_text(markup: str) -> tuple[str, str | None]:
    """Return (visible text with paragraphs separated by blank lines, page title or None)."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(markup, "html.parser")
    title = _title(soup)
    text = "".join(_visible_strings(soup))
    lines = (_SPACES.sub(" ", line).strip() for line in text.split("\n"))
    text = _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()
    return text, title


def _visible_strings(soup) -> Iterator[str]:
    """Text and line breaks in document order, from one walk over the tree.

    A walk with an explicit stack: rewriting the tree (inserting breaks, removing hidden
    tags) costs the depth of the subtree per edit, quadratic on deeply nested markup, and
    recursion would hit Python's limit.
    """
    from bs4 import CData, NavigableString, Tag

    text_types = (NavigableString, CData)  # what get_text keeps: no comments, doctype, scripts
    stack: list[tuple[object, bool]] = [(soup, False)]
    while stack:
        node, leaving = stack.pop()
        if leaving:
            if node.name in _BLOCK:
                yield "\n\n"
            elif node.name in _CELLS:
                yield " \t "
            continue
        if not isinstance(node, Tag):
            if type(node) in text_types:
                yield str(node)
            continue
        if node.name in _INVISIBLE or _hidden(node):
            continue
        if node.name == "br":
            yield "\n"
            continue
        if node.name in _BLOCK:
            yield "\n\n"
        stack.append((node, True))
        stack.extend((child, False) for child in reversed(node.contents))


def _hidden(tag) -> bool:
    return tag.has_attr("hidden") or bool(_DISPLAY_NONE.search(tag.get("style", "") or ""))


def _title(soup) -> str | None:
    for tag in (soup.title, soup.find("h1")):
        if tag is not None:
            text = " ".join(tag.get_text().split())
            if text:
                return text
    return None
