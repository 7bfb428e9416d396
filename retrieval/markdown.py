"""The title of a Markdown file: what its author called it, or nothing (the caller uses the file name).

In order: a ``title:`` in YAML front matter; else the document's first heading, if it is a
top-level one (``# Title`` or ``Title`` underlined with ``===``), after any logo, badges or
intro lines. A file whose first heading is ``## Install`` has no title of its own: that
heading names its first section, and citing every passage of the file as "Install" would be
wrong (issue 17). Lines inside fenced code blocks (a shell comment ``# build``) are not
headings.
"""

from __future__ import annotations

import re

_SCAN_CHARS = 20_000  # a title is near the top; a file with none there gets its file name
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
# Patterns only find where a heading starts; the text is trimmed in Python, as regular
# expressions that trim (lazy text, then optional spaces and #s) backtrack quadratically on
# long runs of spaces.
_ATX = re.compile(r"^ {0,3}(#{1,6})(?=[ \t]|$)")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_FRONT_TITLE = re.compile(r"^title[ \t]*:", re.I)


def markdown_title(text: str) -> str | None:
    """The file's own title, or None when it has none (see the module docstring)."""
    lines = text[:_SCAN_CHARS].lstrip("\ufeff").splitlines()
    start = 0
    if lines and lines[0].strip() == "---":
        for i in range(1, len(lines)):
            if lines[i].strip() in ("---", "..."):
                start = i + 1
                for line in lines[1:i]:
                    found = _FRONT_TITLE.match(line)
                    title = line[found.end() :].strip().strip("'\"").strip() if found else ""
                    if title:
                        return " ".join(title.split())
                break
    fence = None
    previous = ""  # the previous line, if it could be the text of a Setext heading
    for line in lines[start:]:
        opened = _FENCE.match(line)
        if fence is not None:
            if opened and opened.group(1)[0] == fence[0] and len(opened.group(1)) >= len(fence):
                fence = None
            continue
        if opened:
            fence, previous = opened.group(1), ""
            continue
        atx = _ATX.match(line)
        if atx:
            title = _atx_text(line[atx.end() :])
            return title if len(atx.group(1)) == 1 and title else None
        setext = _SETEXT.match(line)
        if setext and previous:
            return " ".join(previous.split()) if setext.group(1)[0] == "=" else None
        previous = line if line.strip() and not line.startswith("    ") else ""
    return None


def _atx_text(rest: str) -> str:
    """The text of an ATX heading line after its opening #s: trimmed, closing #s dropped."""
    text = rest.strip(" \t")
    closed = text.rstrip("#")
    if closed != text and (not closed or closed[-1] in " \t"):
        text = closed.rstrip(" \t")
    return " ".join(text.split())
