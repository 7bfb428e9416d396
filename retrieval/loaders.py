"""Files -> Documents: PDF, plain text, markdown, HTML and, with the ``office`` extra, DOCX, PPTX and XLSX.

Every failure becomes a ``LoadError`` whose message is meant for the person who gave
us the file ("encrypted PDF: a password is required to read it"), so a batch can list
bad files next to the good ones.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path

from .errors import LoadError
from .html import html_to_text
from .limits import DEFAULT_MAX_DECOMPRESSED_BYTES, DEFAULT_MAX_FILE_BYTES, too_large, too_much_text
from .markdown import markdown_title
from .office import OFFICE_KINDS, extract_office, missing_extra
from .pdf import extract_pdf
from .pdf_text import clean_pages
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
    **OFFICE_KINDS,  # read only with the office extra installed (retrieval.office)
}
_PAGE_SEPARATOR = "\n\n"
_OFFICE = frozenset(OFFICE_KINDS.values())


def file_kind(path: str | os.PathLike) -> str | None:
    """The document kind for a file name, or None if the extension is not supported."""
    return KINDS.get(Path(path).suffix.lower())


def content_id(data: bytes) -> str:
    """Stable document id: the first 16 hex digits (64 bits) of the SHA-256 of the bytes."""
    return hashlib.sha256(data).hexdigest()[:16]


def read_bytes(path: str | os.PathLike, max_bytes: int | None = DEFAULT_MAX_FILE_BYTES,
               follow_symlinks: bool = True) -> bytes:
    """Read a whole regular file, turning OS errors, special and oversized files into LoadError.

    The file type is checked on the opened descriptor, before any read, so a FIFO or a
    device (``/dev/zero``) is refused instead of hanging or filling memory; the limit is
    enforced while reading, since ``st_size`` can lie (devices, files that grow). Without
    ``follow_symlinks`` a path that is a symbolic link when it is opened is refused (a file
    swapped for a link after its folder was listed).
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    if not follow_symlinks:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        # O_NONBLOCK: opening a FIFO with no writer would otherwise block forever.
        fd = os.open(path, flags)
        with open(fd, "rb", closefd=True) as fh:
            info = os.fstat(fd)
            if stat.S_ISDIR(info.st_mode):
                raise LoadError("is a directory, not a file")
            if not stat.S_ISREG(info.st_mode):
                raise LoadError(f"not a regular file ({_file_type(info.st_mode)})")
            if max_bytes is not None and info.st_size > max_bytes:
                raise LoadError(too_large(info.st_size, max_bytes))
            data = fh.read() if max_bytes is None else fh.read(max_bytes + 1)
            if max_bytes is not None and len(data) > max_bytes:
                raise LoadError(too_large(None, max_bytes))
            return data
    except FileNotFoundError:
        raise LoadError("file not found (deleted or moved before it could be read?)") from None
    except IsADirectoryError:
        raise LoadError("is a directory, not a file") from None
    except PermissionError:
        raise LoadError("permission denied") from None
    except OSError as exc:
        if not follow_symlinks and exc.errno == errno.ELOOP:
            raise LoadError("symbolic link (appeared after its folder was listed), not followed") from None
        raise LoadError(f"cannot read file: {exc.strerror or exc}") from None


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
    max_decompressed_bytes: int | None = DEFAULT_MAX_DECOMPRESSED_BYTES,
) -> Document:
    """Load one file as a Document. ``data`` may carry bytes already read (to hash once).

    This runs in the calling process with no time budget: ``retrieval.sandbox.load_limited``
    is the bounded way (a worker process killed when its time is up)."""
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
        texts, title, warnings = extract_pdf(data, max_decompressed_bytes)
        text, pages = _join_pages(clean_pages(texts))
        encoding = None
    elif kind in _OFFICE:
        office = extract_office(kind, data, max_decompressed_bytes)
        title, warnings, encoding = office.title, office.warnings, None
        if office.numbered:  # slides, sheets
            text, pages = _join_pages(office.pages)
        else:
            text = office.pages[0]
            pages = [Page(None, 0, len(text))]
        if not text.strip():
            raise LoadError(f"no text in this {kind.upper()} file")
    else:
        decoded = decode_text(data)
        text, encoding, warnings = decoded.text, decoded.encoding, list(decoded.warnings)
        title = None
        if kind == "html":
            text, title = html_to_text(text)
        elif kind == "markdown":
            title = markdown_title(text)
        if not text.strip():
            raise LoadError("no text: the file is blank" if kind != "html" else "no visible text in HTML")
        pages = [Page(None, 0, len(text))]
    if max_decompressed_bytes is not None and len(text) > max_decompressed_bytes:
        raise LoadError(too_much_text(len(text), max_decompressed_bytes))
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


def iter_files(paths: Iterable[str | os.PathLike], follow_symlinks: bool = False) -> Iterator[tuple[Path, str | None]]:
    """Expand files and folders (recursively, sorted) into ``(path, reason_to_skip)``.

    A file named explicitly is always yielded (the loader reports its problems); inside
    folders, hidden entries are ignored, and unsupported files, special files (FIFOs,
    devices, sockets) and symlinked files come with a skip reason. With
    ``follow_symlinks`` a symlinked file is read only if its target lies inside the folder
    given. Symlinked folders are never followed (listed as skipped), so link cycles cannot
    recurse forever.
    """
    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            yield path, None
            continue
        root_real = path.resolve()
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in [d for d in dirs if os.path.islink(os.path.join(root, d))]:
                dirs.remove(name)
                yield Path(root, name), "symbolic link to a folder, not followed"
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
    kind = file_kind(child)
    if kind is None:
        return f"unsupported file type {child.suffix or '(no extension)'!r}"
    return missing_extra(kind) if kind in _OFFICE else None
