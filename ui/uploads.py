"""Uploaded files into a collection, one file at a time so that the page can show each result as it comes.

Files are checked before any work (kind by extension, size) and copied into the user's own uploads
folder: the collection records where a document came from, and Gradio's temporary copies do not last.
Everything else (reading PDFs, bad encodings, corrupt files, duplicates) is the collection's job; its
per-file report says what went wrong, in words for a person.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from app import MultiDocQA
from retrieval import KINDS

SUPPORTED = sorted(KINDS)


@dataclass
class Rejected:
    """A file refused before ingestion; shaped like retrieval.FileResult for the results table."""

    path: str
    error: str
    status: str = "failed"
    passages: int = 0
    duplicate_of: str | None = None
    warnings: list[str] = field(default_factory=list)


def check(path: Path, max_bytes: int) -> str | None:
    """Why ``path`` cannot be ingested, or None."""
    if path.suffix.lower() not in KINDS:
        return (f"unsupported file type {path.suffix or '(none)'!r}: upload PDF, text, Markdown or HTML "
                f"({', '.join(SUPPORTED)})")
    size = path.stat().st_size
    if size > max_bytes:
        return f"too large: {size / 2**20:.1f} MiB; the limit is {max_bytes / 2**20:.0f} MiB per file"
    return None


def ingest(qa: MultiDocQA, files: Sequence[str | os.PathLike], into: Path, max_bytes: int) -> Iterator[object]:
    """Add ``files`` to ``qa``'s collection; yields one result per file (a FileResult or Rejected)."""
    into.mkdir(parents=True, exist_ok=True)
    for f in files:
        src = Path(f)
        name = _safe_name(src.name)
        why = check(src, max_bytes)
        if why is not None:
            yield Rejected(name, why)
            continue
        dest = _free_path(into / name)
        shutil.copyfile(src, dest)
        report = qa.add([str(dest)], progress=False)
        # Keep only what the collection holds: what it added, and a file it already held whose stored copy
        # was gone (moved here, or restored at the same path). Decided before the paths are renamed below.
        keep = bool(report.added or report.moved or report.unchanged)
        for r in report.results:
            r.path = name  # the name the user knows, not the server's path
            yield r
        if not keep:
            dest.unlink(missing_ok=True)


def _safe_name(name: str) -> str:
    name = re.sub(r"[^\w.\- ]", "_", Path(name).name).strip(" .") or "upload"
    return name[:120]


def _free_path(path: Path) -> Path:
    n, candidate = 1, path
    while candidate.exists():
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
        n += 1
    return candidate
