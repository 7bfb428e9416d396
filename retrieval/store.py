"""SQLite metadata store of a collection: documents, passages and their vectors.

This is the collection's source of truth. Every change (a batch of documents added,
documents deleted) is one transaction that also bumps ``generation``; the FAISS
index on disk is a cache named after the generation it reflects (see index.py), and
can always be rebuilt from the vectors kept here as float32 blobs. The BM25 table
(``passages_fts``, see lexical.py) is written in the same transactions as the passages.

A collection keeps one version per file: ``documents.path`` is the resolved path of the
document's source (``source_key``), and adding a document whose path is already held by
another (an edited file: new bytes, new id) deletes the old one in the same transaction,
so a reader sees either the old version or the new one, never both or neither.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import numpy as np

from . import lexical
from .types import Document, DocumentInfo, Passage

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    source TEXT NOT NULL,
    kind TEXT NOT NULL,
    pages INTEGER NOT NULL,
    passages INTEGER NOT NULL,
    size_bytes INTEGER NOT NULL,
    encoding TEXT,
    added_at REAL NOT NULL,
    path TEXT  -- source_key(source): one version per path; NULL for sources that are no path
);
CREATE TABLE IF NOT EXISTS passages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused, so FAISS ids stay unambiguous
    doc_id TEXT NOT NULL REFERENCES documents(id),
    position INTEGER NOT NULL,
    page INTEGER,
    start INTEGER NOT NULL,
    "end" INTEGER NOT NULL,
    tokens INTEGER NOT NULL,
    text TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS passages_by_doc ON passages (doc_id, position);
-- Vectors apart from text, so rebuilding the index reads only what it needs.
CREATE TABLE IF NOT EXISTS vectors (id INTEGER PRIMARY KEY, vector BLOB NOT NULL);
"""


class Store:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE) in ``transaction``.
        self.conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        # WAL survives a killed process without losing committed work; NORMAL sync is
        # durable against process crashes (only power loss may drop the last commits).
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute("PRAGMA busy_timeout=30000")
        self.conn.executescript(_SCHEMA)  # idempotent (IF NOT EXISTS)
        with self.transaction():
            if self.get_meta("schema_version") is None:
                self.set_meta("schema_version", str(SCHEMA_VERSION))
                self.set_meta("generation", "0")
        lexical.ensure_fts(self.conn)  # new stores, and stores made before BM25 existed
        _ensure_path_column(self.conn)  # stores made before documents could be replaced

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Reads inside see one consistent state, even while another process writes (WAL)."""
        self.conn.execute("BEGIN")
        try:
            yield
        finally:
            self.conn.execute("COMMIT")

    # -- meta -------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self.conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    @property
    def generation(self) -> int:
        return int(self.get_meta("generation") or 0)

    def _bump_generation(self) -> int:
        generation = self.generation + 1
        self.set_meta("generation", str(generation))
        return generation

    # -- writes -----------------------------------------------------------------------
    def add_documents(self, batch: Sequence[tuple[Document, Sequence[Passage], np.ndarray]]) -> Change:
        """Insert documents with their passages and vectors in one transaction.

        A stored document with the same path (``source_key``) and another id is an older version
        of the same file: it is deleted in the same transaction. Returns the new generation, per
        document the passage ids given out, the passage ids deleted, and per document the ids of
        the versions it replaced.
        """
        ids_per_doc: list[np.ndarray] = []
        removed: list[np.ndarray] = []
        replaced: dict[str, list[str]] = {}
        now = time.time()
        with self.transaction() as conn:
            row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'passages'").fetchone()
            next_id = (row[0] if row else 0) + 1
            for doc, passages, vectors in batch:
                key = source_key(doc.source)
                if key is not None:
                    old = [r[0] for r in conn.execute("SELECT id FROM documents WHERE path = ? AND id != ?",
                                                      (key, doc.id))]
                    if old:
                        removed.append(self._delete(conn, old))
                        replaced[doc.id] = old
                conn.execute(
                    "INSERT INTO documents (id, title, source, kind, pages, passages, size_bytes, encoding, added_at,"
                    " path) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (doc.id, doc.title, doc.source, doc.kind, len(doc.pages), len(passages),
                     doc.size_bytes, doc.encoding, now, key),
                )
                ids = np.arange(next_id, next_id + len(passages), dtype=np.int64)
                next_id += len(passages)
                conn.executemany(
                    'INSERT INTO passages (id, doc_id, position, page, start, "end", tokens, text)'
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    ((int(i), doc.id, p.position, p.page, p.start, p.end, p.tokens, p.text)
                     for i, p in zip(ids, passages, strict=True)),
                )
                vectors = np.ascontiguousarray(vectors, dtype=np.float32)
                conn.executemany(
                    "INSERT INTO vectors (id, vector) VALUES (?, ?)",
                    ((int(i), v.tobytes()) for i, v in zip(ids, vectors, strict=True)),
                )
                lexical.add_rows(conn, ids, [p.text for p in passages], doc.title)
                ids_per_doc.append(ids)
            generation = self._bump_generation()
        return Change(generation, ids_per_doc, _concat(removed), replaced)

    def relocate_documents(self, sources: dict[str, str]) -> int:
        """Record new source paths for stored documents (doc id -> source; files that moved, same bytes)
        in one transaction; returns the new generation. Passages, vectors and ids stay as they are."""
        with self.transaction() as conn:
            conn.executemany("UPDATE documents SET source = ?, path = ? WHERE id = ?",
                             ((source, source_key(source), doc_id) for doc_id, source in sources.items()))
            generation = self._bump_generation()
        return generation

    def delete_documents(self, doc_ids: Iterable[str]) -> tuple[int, np.ndarray]:
        """Delete documents (unknown ids are ignored) in one transaction; returns the new generation
        and the passage ids removed."""
        with self.transaction() as conn:
            ids = self._delete(conn, list(doc_ids))
            generation = self._bump_generation()
        return generation, ids

    def delete_document(self, doc_id: str) -> tuple[int, np.ndarray]:
        """Delete a document; returns the new generation and the passage ids removed."""
        return self.delete_documents([doc_id])

    def _delete(self, conn: sqlite3.Connection, doc_ids: list[str]) -> np.ndarray:
        """Delete documents with their passages, vectors and BM25 rows (inside the caller's transaction)."""
        ids = self._passage_ids(conn, doc_ids)
        for doc_id in doc_ids:
            lexical.delete_document_rows(conn, doc_id)
            conn.execute("DELETE FROM vectors WHERE id IN (SELECT id FROM passages WHERE doc_id = ?)", (doc_id,))
            conn.execute("DELETE FROM passages WHERE doc_id = ?", (doc_id,))
            conn.execute("DELETE FROM documents WHERE id = ?", (doc_id,))
        return ids

    # -- reads ------------------------------------------------------------------------
    def document(self, doc_id: str) -> DocumentInfo | None:
        row = self.conn.execute(f"SELECT {_DOC_COLUMNS} FROM documents WHERE id = ?", (doc_id,)).fetchone()
        return DocumentInfo(*row) if row else None

    def documents(self) -> list[DocumentInfo]:
        rows = self.conn.execute(f"SELECT {_DOC_COLUMNS} FROM documents ORDER BY added_at, source")
        return [DocumentInfo(*row) for row in rows]

    def documents_at(self, path: str | os.PathLike) -> list[DocumentInfo]:
        """Documents loaded from the file ``path``, or from files under the folder ``path``; matched by
        resolved path and by the source path as recorded (the files need not exist any more)."""
        key, source = os.path.realpath(path), os.path.abspath(path)
        # Ranges, not substr(): each term can use its index (documents_by_path, documents_by_source).
        rows = self.conn.execute(
            f"SELECT {_DOC_COLUMNS} FROM documents WHERE path = ? OR (path >= ? AND path < ?)"
            " OR source = ? OR (source >= ? AND source < ?) ORDER BY source",
            (key, *_under(key), source, *_under(source)),
        )
        return [DocumentInfo(*row) for row in rows]

    def passage_count(self) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM vectors").fetchone()[0]

    def passage_ids(self, doc_ids: Iterable[str]) -> np.ndarray:
        return self._passage_ids(self.conn, list(doc_ids))

    @staticmethod
    def _passage_ids(conn: sqlite3.Connection, doc_ids: list[str]) -> np.ndarray:
        ids: list[int] = []
        for chunk in _chunks(doc_ids, 500):
            marks = ",".join("?" * len(chunk))
            ids.extend(r[0] for r in conn.execute(f"SELECT id FROM passages WHERE doc_id IN ({marks})", chunk))
        return np.array(sorted(ids), dtype=np.int64)

    def bm25(self, query: str, k: int, doc_ids: Sequence[str] | None = None) -> list[tuple[int, float]]:
        """``(passage id, BM25 score)`` of the ``k`` best lexical matches over all passages, best first."""
        return lexical.bm25_search(self.conn, query, k, doc_ids)

    def iter_vectors(self, dim: int, batch: int = 20_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """All (ids, vectors) in id order, a batch at a time."""
        last = 0
        while True:
            rows = self.conn.execute(
                "SELECT id, vector FROM vectors WHERE id > ? ORDER BY id LIMIT ?", (last, batch)
            ).fetchall()
            if not rows:
                return
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), dim)
            yield ids, vecs
            last = int(ids[-1])

    def passages(self, doc_id: str) -> list[Passage]:
        rows = self.conn.execute(
            'SELECT doc_id, position, text, start, "end", page, tokens FROM passages WHERE doc_id = ?'
            " ORDER BY position",
            (doc_id,),
        )
        return [Passage(*row) for row in rows]

    def vectors(self, ids: Sequence[int], dim: int) -> np.ndarray:
        """Vectors of the given passage ids, in the same order."""
        found: dict[int, bytes] = {}
        for chunk in _chunks([int(i) for i in ids], 500):
            marks = ",".join("?" * len(chunk))
            found.update(self.conn.execute(f"SELECT id, vector FROM vectors WHERE id IN ({marks})", chunk))
        blob = b"".join(found[int(i)] for i in ids)
        return np.frombuffer(blob, dtype=np.float32).reshape(len(ids), dim)

    def hits(self, ids: Sequence[int]) -> dict[int, tuple]:
        """Passage rows joined with their document, keyed by passage id."""
        out: dict[int, tuple] = {}
        for chunk in _chunks([int(i) for i in ids], 500):
            marks = ",".join("?" * len(chunk))
            rows = self.conn.execute(
                'SELECT p.id, p.text, p.doc_id, d.title, d.source, p.page, p.start, p."end", p.position'
                f" FROM passages p JOIN documents d ON d.id = p.doc_id WHERE p.id IN ({marks})",
                chunk,
            )
            out.update((row[0], row) for row in rows)
        return out


_DOC_COLUMNS = "id, title, source, kind, pages, passages, size_bytes, added_at"


class Change(NamedTuple):
    """What one ``add_documents`` transaction did."""

    generation: int
    added: list[np.ndarray]  # per document of the batch, the passage ids given out
    removed: np.ndarray  # passage ids of the older versions deleted
    replaced: dict[str, list[str]]  # new document id -> ids of the older versions it replaced


def source_key(source: str) -> str | None:
    """What identifies "the same file" across versions: the resolved absolute path of ``source``.
    None (never replaced) for a source that is no absolute path, such as a name given to a
    Document that never was a file."""
    return os.path.realpath(source) if source and os.path.isabs(source) else None


def _under(folder: str) -> tuple[str, str]:
    """Bounds of the strings that start with ``folder`` + a separator (SQLite compares UTF-8 bytes,
    which orders as code points do)."""
    start = folder if folder.endswith(os.sep) else folder + os.sep
    return start, start[:-1] + chr(ord(start[-1]) + 1)


def _concat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def _ensure_path_column(conn: sqlite3.Connection) -> None:
    """Give a store made before ``documents.path`` existed the column, filled from the sources
    (one IMMEDIATE transaction, so two processes opening it at once migrate it once), and its index."""
    if not _has_path_column(conn):
        conn.execute("BEGIN IMMEDIATE")
        try:
            if not _has_path_column(conn):
                conn.execute("ALTER TABLE documents ADD COLUMN path TEXT")
                rows = conn.execute("SELECT id, source FROM documents").fetchall()
                conn.executemany("UPDATE documents SET path = ? WHERE id = ?",
                                 ((source_key(source), doc_id) for doc_id, source in rows))
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    conn.execute("CREATE INDEX IF NOT EXISTS documents_by_path ON documents (path)")
    conn.execute("CREATE INDEX IF NOT EXISTS documents_by_source ON documents (source)")


def _has_path_column(conn: sqlite3.Connection) -> bool:
    return any(row[1] == "path" for row in conn.execute("PRAGMA table_info(documents)"))


def _chunks(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
