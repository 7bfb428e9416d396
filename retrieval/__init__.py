"""Documents -> passages -> vectors -> FAISS collections. Knows nothing about RetNet.

    from retrieval import Collection
    col = Collection.open_or_create("manuals", data_dir="data/collections")
    report = col.add(["a.pdf", "docs/"])      # per-file results; bad files listed with reasons
    hits = col.search("how do I reset it?", k=8)
    for h in hits: print(h.score, h.title, h.page, h.text[:80])
"""

from .collection import Collection, default_data_dir, validate_name
from .embedder import (
    DEFAULT_MODEL_NAME,
    Embedder,
    HashEmbedder,
    SentenceTransformerEmbedder,
    default_model_path,
    embedder_from_name,
)
from .errors import CollectionBusyError, CollectionError, LoadError, RetrievalError
from .index import INDEX_KINDS, IVF_MIN_VECTORS
from .limits import LoadLimits
from .loaders import DEFAULT_MAX_FILE_BYTES, KINDS, content_id, file_kind, iter_files, load_document
from .report import FileResult, IngestReport
from .splitter import DEFAULT_MAX_TOKENS, Splitter, split_document
from .tokens import TokenCounter, approx_token_count, token_counter
from .types import Document, DocumentInfo, Page, Passage, SearchHit

__all__ = [
    "Collection",
    "CollectionBusyError",
    "CollectionError",
    "DEFAULT_MAX_FILE_BYTES",
    "DEFAULT_MAX_TOKENS",
    "DEFAULT_MODEL_NAME",
    "Document",
    "DocumentInfo",
    "Embedder",
    "FileResult",
    "HashEmbedder",
    "INDEX_KINDS",
    "IVF_MIN_VECTORS",
    "IngestReport",
    "KINDS",
    "LoadError",
    "LoadLimits",
    "Page",
    "Passage",
    "RetrievalError",
    "SearchHit",
    "SentenceTransformerEmbedder",
    "Splitter",
    "TokenCounter",
    "approx_token_count",
    "content_id",
    "default_data_dir",
    "default_model_path",
    "embedder_from_name",
    "file_kind",
    "iter_files",
    "load_document",
    "split_document",
    "token_counter",
    "validate_name",
]
