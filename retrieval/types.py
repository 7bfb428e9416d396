"""Plain data records shared by loaders, splitter, store and collection."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Page:
    """A span of ``Document.text`` that came from one page (1-based ``number``).

    Formats without pages (text, markdown, html) have one page with ``number=None``.
    """

    number: int | None
    start: int
    end: int


@dataclass
class Document:
    """A loaded file: its full text plus where each page lies in it."""

    id: str  # content hash of the file bytes: the same bytes always get the same id
    source: str  # absolute path the file was loaded from
    title: str
    kind: str  # "pdf", "text", "markdown", "html", "docx", "pptx" or "xlsx"
    text: str
    pages: list[Page]
    size_bytes: int = 0
    encoding: str | None = None
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Passage:
    """A slice of a document: ``document.text[start:end] == text``."""

    doc_id: str
    position: int  # 0-based index of the passage within its document
    text: str
    start: int
    end: int
    page: int | None
    tokens: int


@dataclass(frozen=True)
class DocumentInfo:
    """What a collection remembers about a document (no full text)."""

    id: str
    title: str
    source: str
    kind: str
    pages: int
    passages: int
    size_bytes: int
    added_at: float  # unix time


@dataclass(frozen=True)
class SearchHit:
    """One search result: a passage, its score and where it came from."""

    score: float  # inner product of normalized vectors (cosine similarity)
    text: str
    doc_id: str
    title: str
    source: str
    page: int | None
    start: int
    end: int
    position: int
    passage_id: int
