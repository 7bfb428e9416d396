"""Builders for small test files (PDFs made with pypdf itself) and consistency checks."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import faiss
import numpy as np
from pypdf import PdfWriter
from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject


def _escape(text: str) -> bytes:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)").encode("latin-1")


def text_pdf(pages: list[str], title: str | None = None, encrypt: str | None = None) -> bytes:
    """A PDF whose page i shows ``pages[i]`` (lines split on newlines) in Helvetica.

    An empty string gives a page without text, as a scanned page looks to a text extractor.
    """
    writer = PdfWriter()
    font = writer._add_object(
        DictionaryObject(
            {
                NameObject("/Type"): NameObject("/Font"),
                NameObject("/Subtype"): NameObject("/Type1"),
                NameObject("/BaseFont"): NameObject("/Helvetica"),
            }
        )
    )
    for text in pages:
        page = writer.add_blank_page(612, 792)
        if not text:
            continue
        ops = [b"BT /F1 11 Tf 14 TL 72 740 Td"]
        for line in text.split("\n"):
            ops.append(b"(" + _escape(line) + b") Tj T*")
        ops.append(b"ET")
        stream = DecodedStreamObject()
        stream.set_data(b"\n".join(ops))
        page[NameObject("/Contents")] = writer._add_object(stream)
        page[NameObject("/Resources")] = DictionaryObject(
            {NameObject("/Font"): DictionaryObject({NameObject("/F1"): font})}
        )
    if title:
        writer.add_metadata({"/Title": title})
    if encrypt is not None:
        writer.encrypt(user_password=encrypt, owner_password="owner-secret", algorithm="AES-128")
    import io

    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    path.write_bytes(data)
    return path


def on_disk_state(collection_dir: Path) -> dict:
    """What a fresh process would find on disk, read without the Collection class."""
    conn = sqlite3.connect(str(collection_dir / "collection.sqlite3"))
    try:
        generation = int(conn.execute("SELECT value FROM meta WHERE key='generation'").fetchone()[0])
        n_vectors = conn.execute("SELECT COUNT(*) FROM vectors").fetchone()[0]
        n_passages = conn.execute("SELECT COUNT(*) FROM passages").fetchone()[0]
        per_doc = conn.execute(
            "SELECT d.id, d.passages, (SELECT COUNT(*) FROM passages p WHERE p.doc_id = d.id) FROM documents d"
        ).fetchall()
        orphans = conn.execute(
            "SELECT COUNT(*) FROM passages p WHERE NOT EXISTS (SELECT 1 FROM documents d WHERE d.id = p.doc_id)"
        ).fetchone()[0]
        fts_mismatch = fts_out_of_step(conn)
    finally:
        conn.close()
    index_file = collection_dir / f"index.{generation}.faiss"
    index_ntotal = faiss.read_index(str(index_file)).ntotal if index_file.exists() else None
    return {
        "generation": generation,
        "vectors": n_vectors,
        "passages": n_passages,
        "per_doc": per_doc,
        "orphans": orphans,
        "fts_mismatch": fts_mismatch,
        "index_ntotal": index_ntotal,
    }


def fts_out_of_step(conn: sqlite3.Connection) -> int:
    """Passages missing from the BM25 table, rows of it with no passage, and rows whose text or
    title differs from their passage's (0 when the two are in step)."""
    ids = {r[0] for r in conn.execute("SELECT id FROM passages")}
    fts = {r[0] for r in conn.execute("SELECT rowid FROM passages_fts")}
    differ = conn.execute(
        "SELECT COUNT(*) FROM passages p JOIN passages_fts f ON f.rowid = p.id JOIN documents d ON d.id = p.doc_id"
        " WHERE f.text != p.text OR f.title != d.title"
    ).fetchone()[0]
    return len(ids ^ fts) + differ


def assert_consistent(col) -> None:
    """Index and metadata agree: same passage ids, per-document counts right."""
    state = on_disk_state(col.path)
    assert state["vectors"] == state["passages"]
    assert state["orphans"] == 0
    assert state["fts_mismatch"] == 0
    for doc_id, recorded, actual in state["per_doc"]:
        assert recorded == actual, doc_id
    assert col.index.ntotal == state["passages"]
    index = col.index.index
    if isinstance(index, faiss.IndexIDMap):
        index_ids = np.sort(faiss.vector_to_array(index.id_map))
        store_ids = np.array(
            sorted(r[0] for r in col.store.conn.execute("SELECT id FROM passages")), dtype=np.int64
        )
        np.testing.assert_array_equal(index_ids, store_ids)
