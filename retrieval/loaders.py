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
import stat
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
    """Read a whole regular file, turning OS errors, special and oversized files into LoadError.

    The file type is checked on the opened descriptor, before any read, so a FIFO or a
    device (``/dev/zero``) is refused instead of hanging or filling memory; the limit is
    enforced while reading, since ``st_size`` can lie (devices, files that grow).
    """
    try:
        # O_NONBLOCK: opening a FIFO with no writer would otherwise block forever.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
        with open(fd, "rb", closefd=True) as fh:
            info = os.fstat(fd)
            if stat.S_ISDIR(info.st_mode):
                raise LoadError("is a directory, not a file")
            if not stat.S_ISREG(info.st_mode):
                raise LoadError(f"not a regular file ({_file_type(info.st_mode)})")
            if max_bytes is not None and info.st_size > max_bytes:
                raise LoadError(_too_large(f"{info.st_size / 2**20:.1f} MiB", max_bytes))
            data = fh.read() if max_bytes is None else fh.read(max_bytes + 1)
            if max_bytes is not None and len(data) > max_bytes:
                raise LoadError(_too_large(f"more than {max_bytes / 2**20:.1f} MiB", max_bytes))
            return data
    except FileNotFoundError:
        raise LoadError("file not found (deleted or moved before it could be read?)") from None
    except IsADirectoryError:
        raise LoadError("is a directory, not a file") from None
    except PermissionError:
        raise LoadError("permission denied") from None
    except OSError as exc:
        raise LoadError(f"cannot read file: {exc.strerror or exc}") from None


def _too_large(size: str, max_bytes: int) -> str:
    return f"file too large: {size} > limit {max_bytes / 2**20:.1f} MiB (raise max_file_bytes to accept it)"


def _file_type(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "directory"),
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISLNK, "symbolic link"),
    ):
        if test(mode):
            return name
    return "special file"


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


def iter_files(paths: Iterable[str | os.PathLike], follow_symlinks: bool = False) -> Iterator[tuple[Path, str | None]]:
    """Expand files and folders (recursively, sorted) into ``(path, reason_to_skip)``.

    A file named explicitly is always yielded (the loader reports its problems); inside
    folders, hidden entries are ignored, and unsupported files, special files (FIFOs,
    devices, sockets) and symlinked files come with a skip reason. With
    ``follow_symlinks`` a symlinked file is read only if its target lies inside the folder
    given. Symlinked folders are never followed, so link cycles cannot recurse forever.
    """
    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            yield path, None
            continue
        root_real = path.resolve()
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                if name.startswith("."):
                    continue
                child = Path(root, name)
                yield child, _skip_reason(child, root_real, follow_symlinks)


def _skip_reason(child: Path, root_real: Path, follow_symlinks: bool) -> str | None:
    """Why a file found inside a folder is not read, or None to read it."""
    try:
        mode = child.lstat().st_mode
        if stat.S_ISLNK(mode):
            if not follow_symlinks:
                return "symbolic link, not followed"
            target = child.resolve()
            if not target.is_relative_to(root_real):
                return f"symbolic link to {target}, outside the folder: not followed"
            mode = target.stat().st_mode
    except OSError:
        return None  # vanished or unreadable: the loader gives the clear error
    if not stat.S_ISREG(mode):
        return f"not a regular file ({_file_type(mode)})"
    if file_kind(child) is None:
        return f"unsupported file type {child.suffix or '(no extension)'!r}"
    return None
