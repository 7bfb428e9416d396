"""Main text of an HTML page (BeautifulSoup with the stdlib parser).

Two walks over the tree, each visiting every node once (deeply nested markup stays linear,
issue 16): the first counts, bottom up, the visible characters of every element and how
many of them sit inside links; the second writes the visible text, leaving out the page's
chrome. Chrome is what a reader skips: navigation (``<nav>``, ``role=navigation``, menus,
link lists), the page's own header and footer (not those of an article or a section),
sidebars (``<aside>``), form controls, cookie and consent banners. When the page marks its
main content (one ``<main>``, or one ``<article>``) only that part is read.

Heuristic cuts (class and id names, link density) never take a block holding half of the
page's text, and a page whose selection comes out empty falls back to all visible text.
Measured against trafilatura in ``benchmarks/results/text_extraction.md``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

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

# Chrome by element or ARIA role: always left out.
_CHROME_TAGS = {"nav", "aside", "menu", "select", "button"}
_CHROME_ROLES = {
    "navigation", "banner", "contentinfo", "complementary", "search", "menu", "menubar", "toolbar",
    "alertdialog", "dialog",
}
# A <header>/<footer> belongs to the page (and is chrome) unless it sits inside one of these.
_SECTIONING = {"article", "aside", "main", "nav", "section"}
# Chrome by class or id name (one token of the attribute); only for blocks under half the page.
_CHROME_NAME = re.compile(
    r"^(?:.*[-_])?(?:nav|navbar|navigation|menu|menubar|sidebar|breadcrumbs?|footer|site-?header|page-?header"
    r"|masthead|skip-?links?|share|sharing|social|related|toc)(?:[-_].*)?$|cookie|consent|gdpr",
    re.I,
)
# Link lists: containers with at least this many links covering more than this share of their text.
_LINK_CONTAINERS = {
    "div", "section", "ul", "ol", "dl", "table", "tbody", "blockquote", "header", "footer", "details",
    "form", "center", "span",
}
_MIN_LINKS = 3
_MAX_LINK_DENSITY = 0.5
_MAX_CHROME_SHARE = 0.5  # heuristic cuts never take a block with this share of the page's text
_MIN_MAIN_SHARE = 0.25  # a <main>/<article> is trusted when it holds this share of the text


def html_to_text(markup: str, main_content: bool = True) -> tuple[str, str | None]:
    """Return (text with paragraphs separated by blank lines, page title or None).

    With ``main_content`` (the default) the page's chrome is left out (see the module
    docstring); without it, every visible string is kept.
    """
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(markup, "html.parser")
    title = _title(soup)
    if main_content:
        sizes, landmarks = _measure(soup)
        root, in_section = _main_root(soup, sizes, landmarks)
        text = _tidy(_visible_strings(root, _chrome_test(sizes, sizes[id(root)][0]), in_section))
        if text:
            return text, title
    return _tidy(_visible_strings(soup)), title


def _tidy(parts: Iterator[str]) -> str:
    lines = (_SPACES.sub(" ", line).strip() for line in "".join(parts).split("\n"))
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def _visible_strings(
    root, drop: Callable[[object, bool], bool] | None = None, in_section: bool = False
) -> Iterator[str]:
    """Text and line breaks in document order, from one walk over the tree.

    ``drop(tag, in_section)`` leaves a subtree out; ``in_section`` says whether the tag sits
    inside sectioning content (article, aside, main, nav, section).

    A walk with an explicit stack: rewriting the tree (inserting breaks, removing hidden
    tags) costs the depth of the subtree per edit, quadratic on deeply nested markup, and
    recursion would hit Python's limit.
    """
    from bs4 import CData, NavigableString, Tag

    text_types = (NavigableString, CData)  # what get_text keeps: no comments, doctype, scripts
    stack: list[tuple[object, bool, bool]] = [(root, False, in_section)]
    while stack:
        node, leaving, inside = stack.pop()
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
        if node.name in _INVISIBLE or _hidden(node) or (drop is not None and drop(node, inside)):
            continue
        if node.name == "br":
            yield "\n"
            continue
        if node.name in _BLOCK:
            yield "\n\n"
        stack.append((node, True, inside))
        inside = inside or node.name in _SECTIONING
        stack.extend((child, False, inside) for child in reversed(node.contents))


def _measure(soup) -> tuple[dict[int, list[int]], tuple[list, list]]:
    """``id(tag) -> [visible characters, characters inside links, links]`` for every visible
    tag (whitespace not counted), from one walk: each tag adds its totals to its parent's
    when the walk leaves it. Also the visible ``<main>`` (or ``role=main``) and ``<article>``
    tags, in document order."""
    from bs4 import CData, NavigableString, Tag

    text_types = (NavigableString, CData)
    sizes: dict[int, list[int]] = {id(soup): [0, 0, 0]}
    mains: list = []
    articles: list = []
    stack: list[tuple[object, bool]] = [(soup, False)]
    while stack:
        node, leaving = stack.pop()
        if leaving:
            size = sizes[id(node)]
            if node.name == "a" and node.has_attr("href"):
                size[1], size[2] = size[0], size[2] + 1
            parent = sizes.get(id(node.parent)) if node.parent is not None else None
            if parent is not None:
                for i in range(3):
                    parent[i] += size[i]
            continue
        if not isinstance(node, Tag):
            if type(node) in text_types and node.parent is not None:
                sizes[id(node.parent)][0] += len("".join(node.split()))
            continue
        if node is not soup and (node.name in _INVISIBLE or _hidden(node)):
            continue
        sizes.setdefault(id(node), [0, 0, 0])
        if node.name == "main" or _role(node) == "main":
            mains.append(node)
        elif node.name == "article":
            articles.append(node)
        stack.append((node, True))
        stack.extend((child, False) for child in reversed(node.contents))
    return sizes, (mains, articles)


def _main_root(soup, sizes: dict[int, list[int]], landmarks: tuple[list, list]):
    """(the element holding the main content, whether it is sectioning content).

    The one visible ``<main>`` (or ``role=main``), else the one ``<article>``, when it holds
    at least a quarter of the page's text; else the whole page."""
    total = sizes[id(soup)][0]
    for found in landmarks:
        if len(found) == 1 and total and sizes[id(found[0])][0] >= _MIN_MAIN_SHARE * total:
            return found[0], True
        if found:
            break  # several mains (or articles): not one main part, read the page
    return soup, False


def _chrome_test(sizes: dict[int, list[int]], page_chars: int) -> Callable[[object, bool], bool]:
    limit = _MAX_CHROME_SHARE * page_chars

    def is_chrome(tag, in_section: bool) -> bool:
        name = tag.name
        if name in _CHROME_TAGS or _role(tag) in _CHROME_ROLES:
            return True
        if name == "dialog" and not tag.has_attr("open"):
            return True
        if name in ("header", "footer") and not in_section:
            return True
        if name in ("html", "body", "main", "article"):
            return False
        chars, link_chars, links = sizes.get(id(tag), (0, 0, 0))
        if chars > limit:
            return False
        if name in _LINK_CONTAINERS and links >= _MIN_LINKS and link_chars > _MAX_LINK_DENSITY * chars:
            return True
        names = (tag.get("class") or []) + (tag.get("id") or "").split()
        return any(_CHROME_NAME.search(token) for token in names if isinstance(token, str))

    return is_chrome


def _role(tag) -> str | None:
    role = tag.get("role")
    return role.split()[0].lower() if isinstance(role, str) and role.strip() else None


def _hidden(tag) -> bool:
    return tag.has_attr("hidden") or bool(_DISPLAY_NONE.search(tag.get("style", "") or ""))


def _title(soup) -> str | None:
    for tag in (soup.title, soup.find("h1")):
        if tag is not None:
            text = " ".join(tag.get_text().split())
            if text:
                return text
    return None
