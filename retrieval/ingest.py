"""Ingest steps before anything is stored: load and split one file, and hold a batch of loaded
documents until the collection embeds and stores them together (retrieval.collection).

A file is read here (a regular file only, within ``max_file_bytes``), checked for duplicates,
then extracted within its time and decompression budgets (retrieval.sandbox) and split. Every
problem, a budget included, becomes that file's error; the batch goes on without it."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from .context import NONE, embedding_text
from .errors import LoadError
from .limits import LoadLimits
from .loaders import content_id, read_bytes
from .report import ADDED, DUPLICATE, FAILED, SKIPPED, FileResult
from .sandbox import load_limited
from .splitter import Splitter
from .types import Document, Passage

logger = logging.getLogger("retrieval.collection")


def prepare_file(path: Path, skip_reason: str | None, seen: dict[str, str], store, splitter: Splitter,
                 limits: LoadLimits, follow_symlinks: bool = True) -> tuple[FileResult, Document | None, list[Passage]]:
    """Load and split one file; any problem becomes the FileResult's error.

    ``follow_symlinks=False`` for files found inside folders when links are not followed: a
    file swapped for a link after the folder was listed is then refused, not read."""
    result = FileResult(str(path), FAILED)
    if skip_reason is not None:
        result.status, result.error = SKIPPED, skip_reason
        return result, None, []
    try:
        data = read_bytes(path, limits.max_file_bytes, follow_symlinks)
        doc_id = content_id(data)
        existing = store.document(doc_id)
        duplicate_of = existing.source if existing else seen.get(doc_id)
        if duplicate_of is not None:
            result.status, result.doc_id, result.duplicate_of = DUPLICATE, doc_id, duplicate_of
            return result, None, []
        doc = load_limited(path, data, limits)
        del data
        passages = splitter.split(doc)
        if not passages:
            raise LoadError("no text to index")
    except LoadError as exc:
        result.error = str(exc)
        logger.warning("skipping %s: %s", path, exc)
        return result, None, []
    except Exception as exc:  # a loader bug must cost one file, not the batch
        result.error = f"unexpected error: {type(exc).__name__}: {exc}"
        logger.exception("unexpected error loading %s", path)
        return result, None, []
    seen[doc.id] = doc.source
    result.status, result.doc_id, result.title = ADDED, doc.id, doc.title
    result.passages, result.warnings = len(passages), list(doc.warnings)
    for warning in doc.warnings:
        logger.info("%s: %s", path, warning)
    return result, doc, passages


def fail(result: FileResult, error: str) -> None:
    """Mark a file failed with ``error`` (logged): it costs that file only."""
    result.status, result.error, result.passages = FAILED, error, 0
    logger.warning("failed %s: %s", result.path, error)


class IngestBatch:
    """Loaded documents waiting to be embedded and stored together."""

    def __init__(self, items: list | None = None) -> None:
        self.items: list[tuple[FileResult, Document, list[Passage]]] = items or []
        self.passages = sum(len(p) for _, _, p in self.items)
        self.ids = {doc.id for _, doc, _ in self.items}

    def add(self, result: FileResult, doc: Document, passages: list[Passage]) -> None:
        self.items.append((result, doc, passages))
        self.passages += len(passages)
        self.ids.add(doc.id)

    def texts(self, context: str = NONE) -> list[str]:
        """What the embedder sees for each passage, in order (retrieval.context)."""
        return [embedding_text(p.text, doc.title, context) for _, doc, passages in self.items for p in passages]

    def clear(self) -> None:
        self.items, self.passages, self.ids = [], 0, set()


def show_progress(progress: bool | None, n: int) -> bool:
    if progress is None:
        return n > 1 and sys.stderr.isatty()
    return progress
