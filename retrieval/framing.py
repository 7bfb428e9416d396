"""Messages between the ingest process and its loader worker (retrieval.sandbox, retrieval.load_worker).

A message is a JSON header and a byte payload, each preceded by its length (8 bytes, big
endian). JSON, not pickle: nothing the worker sends back can run code here. A Document
travels as its fields in the header and its text, UTF-8, as the payload.
"""

from __future__ import annotations

import json
import struct
from typing import BinaryIO

from .types import Document, Page

_LENGTH = struct.Struct(">Q")


def send(stream: BinaryIO, header: dict, payload: bytes = b"") -> None:
    head = json.dumps(header).encode()
    stream.write(_LENGTH.pack(len(head)) + head + _LENGTH.pack(len(payload)))
    stream.write(payload)
    stream.flush()


def receive(stream: BinaryIO) -> tuple[dict, bytes] | None:
    """The next message, or None when the other side closed the stream."""
    head = _read_exactly(stream, _read_length(stream))
    payload = _read_exactly(stream, _read_length(stream))
    if head is None or payload is None:
        return None
    return json.loads(head), payload


def _read_length(stream: BinaryIO) -> int:
    raw = _read_exactly(stream, _LENGTH.size)
    return -1 if raw is None else _LENGTH.unpack(raw)[0]


def _read_exactly(stream: BinaryIO, n: int) -> bytes | None:
    if n < 0:
        return None
    data = stream.read(n)
    return data if data is not None and len(data) == n else None


def document_message(doc: Document) -> tuple[dict, bytes]:
    header = {
        "id": doc.id, "source": doc.source, "title": doc.title, "kind": doc.kind,
        "pages": [[p.number, p.start, p.end] for p in doc.pages],
        "size_bytes": doc.size_bytes, "encoding": doc.encoding, "warnings": list(doc.warnings),
    }
    return {"document": header}, doc.text.encode("utf-8", "surrogatepass")


def document_from_message(header: dict, payload: bytes) -> Document:
    d = header["document"]
    return Document(
        id=d["id"], source=d["source"], title=d["title"], kind=d["kind"],
        text=payload.decode("utf-8", "surrogatepass"),
        pages=[Page(number, start, end) for number, start, end in d["pages"]],
        size_bytes=d["size_bytes"], encoding=d["encoding"], warnings=list(d["warnings"]),
    )
