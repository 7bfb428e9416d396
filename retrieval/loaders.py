"""Files -> Documents: PDF, plain text, markdown and HTML.

Every failure becomes a ``LoadError`` whose message is meant for the person who gave
us the file ("encrypted PDF: a password is required to read it"), so a batch can list
bad files next to the good ones.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from .errors import LoadError
from .html import html_to_text
from .pdf import extract_pdf
from .textdecode import decode_text
from .types import Document, Page

logger = logging.getLogger(__name__)

KINDS = {
    ".pdf": "pdf",
    ".txt": "text",
    ".text": "text",
    ".md": "markdown",
    ".markdown": "markdown",
    ".html": "html",
    ".htm": "html",
    ".xhtml": "html",
}
# Above this a file is refused rather than read into memory; callers may raise it.
DEFAULT_MAX_FILE_BYTES = 100 * 1024 * 1024
_PAGE_SEPARATOR = "\n\n"
_MD_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def file_kind(path: str | os.PathLike) -> str | None:
    """The document kind for a file name, or None if the extension is not supported."""
    return KINDS.get(Path(path).suffix.lower())


def content_id(data: bytes) -> str:
    """Stable document id: the first 16 hex digits (64 bits) of the SHA-256 of the bytes."""
    return hashlib.sha256(data).hexdigest()[:16]


def read_bytes(path: str | os.PathLike, max_bytes: int | None = DEFAULT_MAX_FILE_BYTES) -> bytes:
    """Read a whole file, turning OS errors and oversized files into LoadError."""
    try:
        size = os.stat(path).st_size
        if max_bytes is not None and size > max_bytes:
            raise LoadError(
                f"file too large: {size / 2**20:.1f} MiB > limit {max_bytes / 2**20:.1f} MiB"
                " (raise max_file_bytes to accept it)"
            )
        with open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        raise LoadError("file not found (deleted or moved before it could be read?)") from None
    except IsADirectoryError:
        raise LoadError("is a directory, not a file") from None
    except PermissionError:
        raise LoadError("permission denied") from None
    except OSError as exc:
        raise LoadError(f"cannot read file: {exc.strerror or exc}") from None


def load_document(
    path: str | os.PathLike,
    data: bytes | None = None,
    max_bytes: int | None = DEFAULT_MAX_FILE_BYTES,
) -> Document:
    """Load one file as a Document. ``data`` may carry bytes already read (to hash once)."""
    path = Path(path)
    kind = file_kind(path)
    if kind is None:
        raise LoadError(f"unsupported file type {path.suffix or '(no extension)'!r}")
    if data is None:
        data = read_bytes(path, max_bytes)
    if not data:
        raise LoadError("empty file")
    doc_id = content_id(data)
    if kind == "pdf":
        texts, title, warnings = extract_pdf(data)
        text, pages = _join_pages(texts)
        encoding = None
    else:
        decoded = decode_text(data)
        text, encoding, warnings = decoded.text, decoded.encoding, list(decoded.warnings)
        title = None
        if kind == "html":
            text, title = html_to_text(text)
        elif kind == "markdown":
            title = _markdown_title(text)
        if not text.strip():
            raise LoadError("no text: the file is blank" if kind != "html" else "no visible text in HTML")
        pages = [Page(None, 0, len(text))]
    return Document(
        id=doc_id,
        source=str(path.absolute()),  # provenance must survive a change of working directory
        title=title or path.stem,
        kind=kind,
        text=text,
        pages=pages,
        size_bytes=len(data),
        encoding=encoding,
        warnings=warnings,
    )


def _join_pages(texts: list[str]) -> tuple[str, list[Page]]:
    parts: list[str] = []
    pages: list[Page] = []
    pos = 0
    for number, text in enumerate(texts, start=1):
        if parts:
            parts.append(_PAGE_SEPARATOR)
            pos += len(_PAGE_SEPARATOR)
        parts.append(text)
        pages.append(Page(number, pos, pos + len(text)))
        pos += len(text)
    return "".join(parts), pages


def _markdown_title(text: str) -> str | None:
    match = _MD_HEADING.search(text[:20_000])
    return match.group(1).strip() if match else None


def iter_files(paths: Iterable[str | os.PathLike]) -> Iterator[tuple[Path, str | None]]:
    """Expand files and folders (recursively, sorted) into ``(path, reason_to_skip)``.

    A file named explicitly is always yielded (the loader reports its problems); inside
    folders, hidden entries are ignored and unsupported files come with a skip reason.
    Symlinked folders are not followed, so link cycles cannot recurse forever.
    """
    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            yield path, None
            continue
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                if name.startswith("."):
                    continue
                child = Path(root, name)
                if file_kind(child) is None:
                    yield child, f"unsupported file type {child.suffix or '(no extension)'!r}"
                else:
                    yield child, None
