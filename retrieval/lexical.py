"""BM25 over a collection's passages: an SQLite FTS5 table beside the passages table.

``passages_fts`` holds one row per passage (rowid = passage id) with the passage text and
its document's title. The store writes it in the same transactions as the passages, so
every commit leaves the two in step, and a killed process leaves both as they were
(see collection.py). Collections made before the table existed get it on open:
``ensure_fts`` creates and fills it in one transaction.

The table keeps its own copy of the text (a plain FTS5 table) rather than pointing at
``passages`` (an external-content table): titles live in ``documents``, and a plain
table cannot be corrupted by a delete that passes the wrong old values.

Queries are built from user text by ``fts_query``, never passed through: FTS5's query
language gives meaning to quotes, ``*``, ``-``, ``AND``/``OR``/``NOT``, ``NEAR(``, ``col:``.
Each whitespace-separated piece becomes a quoted phrase of its word characters, so
``--keep`` searches ``keep``, ``zlib.decompress`` the two adjacent words, and ``node_modules``
``node`` next to ``modules``; the phrases are OR-ed and BM25 ranks by how many and how
rare the matched ones are.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Sequence

FTS_TABLE = "passages_fts"
# Porter stemming: "symlinks"/"symlink", "sorted"/"sort", "keys"/"key" meet.
_CREATE = (f"CREATE VIRTUAL TABLE {FTS_TABLE} USING fts5(text, title, tokenize = 'porter unicode61')")
TITLE_WEIGHT = 0.5  # bm25 column weights: a title is shared by all passages of its document
MAX_PHRASES = 64  # a pasted page of text stays a query, not a scan of every posting list

_WORD = re.compile(r"\w+")
_STOP = frozenset("""
a an the of to in on at by for with from and or not no is are was were be been being do does did doing what which
who whom whose when where why how this that these those it its as into than then there their they you your i we he
she me my our his her them can could should would will shall may might must about if so such any all some each
im ive id dont doesnt s t also too just get got want make use using way ones one
""".split())


def ensure_fts(conn: sqlite3.Connection) -> bool:
    """Create and fill the FTS table if this store has none (an older collection). True if it did.

    One IMMEDIATE transaction: two processes opening an old collection at once migrate it once.
    """
    if _has_table(conn):
        return False
    conn.execute("BEGIN IMMEDIATE")
    try:
        if _has_table(conn):
            conn.execute("COMMIT")
            return False
        conn.execute(_CREATE)
        conn.execute(
            f"INSERT INTO {FTS_TABLE} (rowid, text, title)"
            " SELECT p.id, p.text, d.title FROM passages p JOIN documents d ON d.id = p.doc_id"
        )
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return True


def _has_table(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (FTS_TABLE,)).fetchone() is not None


def add_rows(conn: sqlite3.Connection, ids: Sequence[int], texts: Sequence[str], title: str) -> None:
    """Index passages (inside the caller's transaction)."""
    conn.executemany(f"INSERT INTO {FTS_TABLE} (rowid, text, title) VALUES (?, ?, ?)",
                     ((int(i), t, title) for i, t in zip(ids, texts, strict=True)))


def delete_document_rows(conn: sqlite3.Connection, doc_id: str) -> None:
    """Unindex a document's passages (inside the caller's transaction, before the passages go)."""
    conn.execute(f"DELETE FROM {FTS_TABLE} WHERE rowid IN (SELECT id FROM passages WHERE doc_id = ?)", (doc_id,))


def fts_query(text: str) -> str:
    """A safe FTS5 MATCH expression for free text: quoted phrases OR-ed; "" when nothing is left."""
    phrases: list[str] = []
    seen: set[str] = set()
    for piece in text.lower().split():
        words = _WORD.findall(piece)
        # Stop words go, but not as option names: "-i", "-a" and "-T" are what a question is about.
        if not words or (all(w in _STOP for w in words) and not piece.lstrip("\"'(`").startswith("-")):
            continue
        phrase = " ".join(words)  # word characters only: nothing left to escape
        if phrase not in seen:
            seen.add(phrase)
            phrases.append(f'"{phrase}"')
            if len(phrases) == MAX_PHRASES:
                break
    return " OR ".join(phrases)


def bm25_search(conn: sqlite3.Connection, query: str, k: int,
                doc_ids: Sequence[str] | None = None) -> list[tuple[int, float]]:
    """``(passage id, score)`` of the ``k`` best BM25 matches, best first (score > 0, higher better).

    ``doc_ids`` limits the search to the passages of those documents.
    """
    match = fts_query(query)
    if not match or k <= 0:
        return []
    score = f"bm25({FTS_TABLE}, 1.0, {TITLE_WEIGHT})"
    sql = f"SELECT rowid, {score} FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH ?"
    args: list = [match]
    if doc_ids is not None:
        # One JSON parameter instead of a list of "?": a filter may name more documents than SQLite takes.
        sql += " AND rowid IN (SELECT id FROM passages WHERE doc_id IN (SELECT value FROM json_each(?)))"
        args.append(json.dumps(list(doc_ids)))
    rows = conn.execute(f"{sql} ORDER BY {score} LIMIT ?", (*args, int(k))).fetchall()
    return [(int(pid), -float(s)) for pid, s in rows]  # FTS5's bm25() is negative: lower is better
