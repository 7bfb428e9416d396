"""A named, persistent collection of documents: SQLite metadata + a FAISS index.

On disk, ``<data_dir>/<name>/`` holds:

- ``collection.sqlite3``: documents, passages, their vectors (float32 blobs), their BM25
  table (FTS5, lexical.py) and a ``generation`` counter. It is the source of truth; each
  batch of added documents and each deletion is one transaction that bumps the generation.
- ``index.<generation>.faiss``: the FAISS index as of that generation, written to a
  temporary file, fsynced and renamed into place.
- ``lock``: flock'ed by the one process allowed to write at a time.

A collection holds one version of each file. Adding a file whose path is already here with
other bytes (an edited file) replaces the old version: the store deletes it in the same
transaction that inserts the new one (store.py), and the index then adds the new passage ids
and removes the old ones. ``update`` also removes the documents of files that are gone;
``remove_documents`` deletes documents named by id or path in one transaction.

Why this survives ``kill -9`` at any moment: SQLite commits are atomic, so the store
always holds whole documents with all their passages and vectors, and either the old or
the new version of a replaced file, never both or neither. The index file is
only trusted when its name carries the store's current generation; a crash between a
commit and the next index save leaves an older file, which ``open`` notices and
replaces by rebuilding from the stored vectors. A half-written index is a ``*.tmp``
file, never a real one, and is deleted on the next open. So after any crash, reopening
gives an index holding exactly the passages of the store.

The index is saved at the end of each ``add``/``update``/``delete`` (and every
``checkpoint_seconds`` during a long ``add``, so a crash costs a smaller rebuild),
not after every batch: rewriting a large index file per batch would dominate ingest.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .context import DEFAULT_PASSAGE_CONTEXT, LEGACY_PASSAGE_CONTEXT, META_KEY, check_passage_context
from .embedder import Embedder, SentenceTransformerEmbedder, embedder_from_name
from .errors import CollectionError
from .index import INDEX_KINDS, VectorIndex, remove_temp_files
from .ingest import IngestBatch, fail, prepare_file, show_progress
from .limits import LoadLimits
from .loaders import iter_files
from .locking import exclusive_lock
from .names import collection_dir, default_data_dir, is_valid_name, validate_name
from .report import ADDED, DUPLICATE, REMOVED, FileResult, IngestReport
from .splitter import Splitter
from .store import Store, source_key
from .types import Document, DocumentInfo, Passage, SearchHit

logger = logging.getLogger(__name__)

_DB = "collection.sqlite3"
# Filtered search over an approximate index (HNSW, IVF) may miss passages of a small
# document set; up to this many passages the filter is answered exactly instead.
EXACT_FILTER_LIMIT = 50_000

__all__ = ["Collection", "default_data_dir", "validate_name"]


class Collection:
    """Documents -> passages -> vectors, searchable. Use ``create``, ``open`` or ``open_or_create``."""

    def __init__(
        self,
        path: Path,
        store: Store,
        embedder: Embedder,
        splitter: Splitter,
        *,
        limits: LoadLimits,
        progress: bool | None,
        batch_passages: int,
        checkpoint_seconds: float,
        lock_timeout: float | None,
    ) -> None:
        self.path = path
        self.name = path.name
        self.store = store
        self.embedder = embedder
        self.splitter = splitter
        self.limits = limits
        self.progress = progress
        self.batch_passages = batch_passages
        self.checkpoint_seconds = checkpoint_seconds
        self.lock_timeout = lock_timeout
        self.index_kind = store.get_meta("index_kind") or "flat"
        self.dim = int(store.get_meta("dim") or 0)
        # How passages are embedded (retrieval.context); kept for the collection's whole life.
        self.passage_context = check_passage_context(store.get_meta(META_KEY) or LEGACY_PASSAGE_CONTEXT)
        self._mutex = threading.RLock()
        self._generation = -1  # generation the in-memory index reflects
        self._saved_generation = -1
        self._index_behind = False  # an HNSW index that still holds removed passages (rebuilt before use)
        self.index = VectorIndex(self.index_kind, self.dim)
        with self._mutex:
            self._sync_index()

    # -- opening ----------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        name: str,
        data_dir: str | os.PathLike | None = None,
        *,
        embedder: Embedder | None = None,
        index: str = "flat",
        passage_context: str = DEFAULT_PASSAGE_CONTEXT,
        **options,
    ) -> Collection:
        """Create a new, empty collection; fails if it exists.

        ``index`` is "flat" (exact), "hnsw" or "ivf" (see retrieval.index). ``passage_context``:
        what passages are embedded with, "title" (their document's title in front) or "none"
        (see retrieval.context). Other options are those of ``open``.
        """
        if index not in INDEX_KINDS:
            raise CollectionError(f"index must be one of {INDEX_KINDS}, not {index!r}")
        check_passage_context(passage_context)
        path = collection_dir(name, data_dir)
        embedder = embedder or SentenceTransformerEmbedder()
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            raise CollectionError(f"collection {name!r} already exists in {path.parent}")
        # Build it under a hidden temporary name and rename it into place: readers and concurrent
        # creators see either no collection or a complete one, never a half-made directory.
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.creating-", dir=path.parent))
        try:
            store = Store(tmp / _DB)
            with store.transaction():
                store.set_meta("embedder", embedder.name)
                store.set_meta("dim", str(embedder.dim))
                store.set_meta("index_kind", index)
                store.set_meta(META_KEY, passage_context)
                store.set_meta("created_at", str(time.time()))
            store.close()
            try:
                os.rename(tmp, path)
            except OSError:  # another creator got there first
                raise CollectionError(f"collection {name!r} already exists in {path.parent}") from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        logger.info("created collection %s (%s index, embedder %s)", path, index, embedder.name)
        return cls.open(name, data_dir, embedder=embedder, **options)

    @classmethod
    def open(
        cls,
        name: str,
        data_dir: str | os.PathLike | None = None,
        *,
        embedder: Embedder | None = None,
        splitter: Splitter | None = None,
        limits: LoadLimits | None = None,
        progress: bool | None = None,
        batch_passages: int = 256,
        checkpoint_seconds: float = 300.0,
        lock_timeout: float | None = 60.0,
    ) -> Collection:
        """Open an existing collection.

        ``embedder`` defaults to the one the collection was built with (by name).
        ``splitter`` defaults to ``Splitter()`` (about 200 words per passage).
        ``limits``: what one file may cost to load (bytes, seconds, decompressed bytes; see
        retrieval.limits); a file over a limit fails on its own.
        ``progress``: show tqdm bars (None: only when stderr is a terminal).
        ``lock_timeout``: seconds to wait for another process writing the collection (None: forever).
        """
        path = collection_dir(name, data_dir)
        if not (path / _DB).exists():
            raise CollectionError(f"no collection {name!r} in {path.parent}")
        store = Store(path / _DB)
        try:
            stored = store.get_meta("embedder")
            if stored is None:  # another process is creating it: its lock ends when it is done
                with exclusive_lock(path / "lock", lock_timeout):
                    stored = store.get_meta("embedder")
                if stored is None:
                    raise CollectionError(f"collection {name!r} in {path.parent} is incomplete (no embedder)")
            if embedder is None:
                embedder = embedder_from_name(stored)
            elif embedder.name != stored:
                raise CollectionError(
                    f"collection {name!r} was built with embedder {stored!r}, not {embedder.name!r};"
                    " vectors of different models cannot be mixed"
                )
            return cls(
                path,
                store,
                embedder,
                splitter or Splitter(),
                limits=limits or LoadLimits(),
                progress=progress,
                batch_passages=batch_passages,
                checkpoint_seconds=checkpoint_seconds,
                lock_timeout=lock_timeout,
            )
        except BaseException:
            store.close()
            raise

    @classmethod
    def open_or_create(
        cls,
        name: str,
        data_dir: str | os.PathLike | None = None,
        *,
        embedder: Embedder | None = None,
        index: str = "flat",
        passage_context: str = DEFAULT_PASSAGE_CONTEXT,
        **options,
    ) -> Collection:
        """Open ``name`` if it exists (``index`` and ``passage_context`` are then ignored), else create it."""
        path = collection_dir(name, data_dir)
        if not (path / _DB).exists():
            try:
                return cls.create(name, data_dir, embedder=embedder, index=index, passage_context=passage_context,
                                  **options)
            except CollectionError:
                if not path.exists():
                    raise
                # Another process created it first: open theirs.
        return cls.open(name, data_dir, embedder=embedder, **options)

    @staticmethod
    def list(data_dir: str | os.PathLike | None = None) -> list[str]:
        """Names of the collections in ``data_dir``."""
        root = Path(data_dir) if data_dir is not None else default_data_dir()
        if not root.is_dir():
            return []
        return sorted(p.name for p in root.iterdir() if is_valid_name(p.name) and (p / _DB).is_file())

    @staticmethod
    def remove(name: str, data_dir: str | os.PathLike | None = None) -> None:
        """Delete a whole collection from disk."""
        path = collection_dir(name, data_dir)
        if not (path / _DB).exists():
            raise CollectionError(f"no collection {name!r} in {path.parent}")
        with exclusive_lock(path / "lock"):
            shutil.rmtree(path)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Collection:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __len__(self) -> int:
        """Number of passages."""
        with self._mutex:
            return self.store.passage_count()

    def __repr__(self) -> str:
        return f"Collection({self.name!r}, path={str(self.path)!r}, index={self.index_kind!r})"

    # -- reading ----------------------------------------------------------------------
    # One SQLite connection serves every thread (a Gradio app has several): the mutex
    # keeps a reader from seeing another thread's transaction half-way.
    def documents(self) -> list[DocumentInfo]:
        with self._mutex:
            return self.store.documents()

    def document(self, doc_id: str) -> DocumentInfo | None:
        with self._mutex:
            return self.store.document(doc_id)

    def passages(self, doc_id: str) -> list[Passage]:
        """All passages of a document, in order (empty if there is no such document)."""
        with self._mutex:
            return self.store.passages(doc_id)

    def search(self, query: str, k: int = 8, documents: str | Iterable[str] | None = None) -> list[SearchHit]:
        """The ``k`` passages closest to ``query``, best first; ``documents`` limits to those ids."""
        if k <= 0:
            return []
        with self._mutex:
            self._refresh()
            only = None
            if documents is not None:
                doc_ids = [documents] if isinstance(documents, str) else list(documents)
                only = self.store.passage_ids(doc_ids)
                if not len(only):
                    return []
            if self.index.ntotal == 0:
                return []
            query_vec = self._encode([query])
            if only is not None and self.index.layout != "flat" and len(only) <= EXACT_FILTER_LIMIT:
                scores, ids = self._exact_search(query_vec[0], only, k)
            else:
                found_scores, found_ids = self.index.search(query_vec, k, only)
                scores, ids = found_scores[0], found_ids[0]
            keep = ids >= 0
            return self._hits(scores[keep], ids[keep])

    def lexical_search(self, query: str, k: int = 8,
                       documents: str | Iterable[str] | None = None) -> list[SearchHit]:
        """The ``k`` best BM25 matches for ``query`` over every passage (SQLite FTS5), best first.

        Scores are BM25 (higher is better), not cosines. Any text is a valid query: FTS5 syntax
        in it is searched as words (see retrieval.lexical)."""
        if k <= 0:
            return []
        doc_ids = None if documents is None else [documents] if isinstance(documents, str) else list(documents)
        with self._mutex:
            found = self.store.bm25(query, k, doc_ids)
            return self._hits(np.array([s for _, s in found]), np.array([i for i, _ in found], dtype=np.int64))

    def _hits(self, scores: np.ndarray, ids: np.ndarray) -> list[SearchHit]:
        rows = self.store.hits(ids)
        hits = []
        for score, pid in zip(scores, ids, strict=True):
            row = rows.get(int(pid))
            if row is None:  # cannot happen while index and store agree; never crash a search on it
                logger.warning("passage %d is in the index but not in the store", pid)
                continue
            _, text, doc_id, title, source, page, start, end, position = row
            hits.append(SearchHit(float(score), text, doc_id, title, source, page, start, end, position, int(pid)))
        return hits

    def _exact_search(self, query: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores = self.store.vectors(ids, self.dim) @ query
        top = np.argsort(-scores, kind="stable")[:k]
        return scores[top], ids[top]

    # -- writing ----------------------------------------------------------------------
    def add(
        self, paths: str | os.PathLike | Iterable[str | os.PathLike], *, progress: bool | None = None,
        follow_symlinks: bool = False,
    ) -> IngestReport:
        """Ingest files and folders (recursively). Bad files are reported, never raised.

        Duplicates (same bytes as a document already here or earlier in the batch) are
        skipped and listed; a duplicate of a document whose own file is gone moves that document
        here (``IngestReport.moved``). Returns an IngestReport with one FileResult per file.

        Each file loads within ``self.limits``; one that fails, goes over a budget or times out
        costs itself only, and the files loaded before and after it are stored. Ctrl-C stores
        the files already loaded, then stops. Symbolic links inside folders are skipped unless
        ``follow_symlinks``, and even then only followed to files inside the folder given.
        """
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        paths = list(paths)
        named = {Path(p) for p in paths}
        report = IngestReport()
        started = time.perf_counter()
        with self._mutex, exclusive_lock(self.path / "lock", self.lock_timeout):
            self._refresh()
            files = list(iter_files(paths, follow_symlinks))
            show = self.progress if progress is None else progress
            bar = tqdm(total=len(files), unit="file", desc=f"ingest {self.name}",
                       disable=not show_progress(show, len(files)))
            batch = IngestBatch()
            seen: dict[str, str] = {}  # doc id -> source, for duplicates inside this batch
            last_save = time.monotonic()
            try:
                for path, skip_reason in files:
                    result, doc, passages = prepare_file(path, skip_reason, seen, self.store, self.splitter,
                                                         self.limits, follow_symlinks or path in named)
                    report.results.append(result)
                    if doc is not None:
                        batch.add(result, doc, passages)
                    if batch.passages >= self.batch_passages:
                        self._commit(batch, bar)
                        if time.monotonic() - last_save >= self.checkpoint_seconds:
                            self._save_index()
                            last_save = time.monotonic()
                    bar.update(1)
                self._commit(batch, bar)
                self._settle_duplicates(report, seen)
            except KeyboardInterrupt:
                logger.warning("interrupted: storing the %d file(s) loaded so far", len(batch.items))
                self._commit(batch, None)
                raise
            finally:
                bar.close()
                self._save_index()
        report.seconds = time.perf_counter() - started
        logger.info("collection %s: %s", self.name, report.summary().splitlines()[0])
        return report

    def _settle_duplicates(self, report: IngestReport, seen: dict[str, str]) -> None:
        """Keep one version per file after an add. A file skipped as a duplicate of a document that this
        add went on to replace (two copies of a file, one edited) is read again, or its bytes would be
        lost; and the old version of a file whose new bytes duplicate another file is deleted. A
        duplicate of a document whose own file is gone (the file was moved, or a checkout cloned anew) is
        where that document now lives: its recorded source becomes this path."""
        again = IngestBatch()
        stale: dict[str, FileResult] = {}
        moves: dict[str, FileResult] = {}
        for i, result in enumerate(report.results):
            if result.status != DUPLICATE:
                continue
            stored = self.store.document(result.doc_id)
            if stored is None:
                result, doc, passages = prepare_file(Path(result.path), None, seen, self.store, self.splitter,
                                                     self.limits)
                report.results[i] = result
                if doc is not None:
                    again.add(result, doc, passages)
            elif not result.unchanged:
                gone = source_key(stored.source) is not None and not os.path.lexists(stored.source)
                if gone and result.doc_id not in moves:  # the first copy of a moved file takes it
                    moves[result.doc_id] = result
                    result.moved_from, result.duplicate_of = stored.source, result.path
                for old in self.store.documents_at(result.path):
                    if old.id != result.doc_id:
                        stale[old.id] = result
        self._commit(again, None)
        if moves:  # recorded as loaders record a source: absolute, links kept
            self._apply(self.store.relocate_documents({d: str(Path(r.path).absolute()) for d, r in moves.items()}))
        if stale:
            self._delete(list(stale))
            for doc_id, result in stale.items():
                result.replaced.append(doc_id)

    def add_documents(self, docs: Iterable[Document]) -> IngestReport:
        """Ingest already-loaded Documents (e.g. text that never was a file)."""
        report = IngestReport()
        started = time.perf_counter()
        with self._mutex, exclusive_lock(self.path / "lock", self.lock_timeout):
            self._refresh()
            batch = IngestBatch()
            try:
                for doc in docs:
                    result = FileResult(doc.source, ADDED, doc.id, doc.title, warnings=list(doc.warnings))
                    report.results.append(result)
                    if self.store.document(doc.id) or doc.id in batch.ids:
                        result.status, result.duplicate_of = DUPLICATE, doc.source
                        continue
                    passages = self.splitter.split(doc)
                    if not passages:
                        fail(result, "no text to index")
                        continue
                    result.passages = len(passages)
                    batch.add(result, doc, passages)
                    if batch.passages >= self.batch_passages:
                        self._commit(batch, None)
                self._commit(batch, None)
            finally:
                self._save_index()
        report.seconds = time.perf_counter() - started
        return report

    def delete(self, doc_id: str) -> bool:
        """Remove a document and its passages; False if there was no such document."""
        with self._mutex, exclusive_lock(self.path / "lock", self.lock_timeout):
            self._refresh()
            if self.store.document(doc_id) is None:
                return False
            self._delete([doc_id])
            self._save_index()
        return True

    def find_documents(self, ref: str | os.PathLike) -> list[DocumentInfo]:
        """The documents ``ref`` names: the one with that id, else those loaded from that file or from
        files under that folder (by resolved or recorded path; the files need not exist any more)."""
        with self._mutex:
            doc = self.store.document(str(ref)) if isinstance(ref, str) else None
            return [doc] if doc is not None else self.store.documents_at(ref)

    def remove_documents(self, refs: str | os.PathLike | Iterable[str | os.PathLike]) -> list[DocumentInfo]:
        """Remove the documents named by ids or paths (see ``find_documents``) in one transaction;
        returns them. If any ref names no document, nothing is removed: CollectionError lists them."""
        refs = [refs] if isinstance(refs, (str, os.PathLike)) else list(refs)
        with self._mutex, exclusive_lock(self.path / "lock", self.lock_timeout):
            self._refresh()
            found: dict[str, DocumentInfo] = {}
            unknown = []
            for ref in refs:
                docs = self.find_documents(ref)
                unknown += [] if docs else [str(ref)]
                found.update((d.id, d) for d in docs)
            if unknown:
                raise CollectionError(f"no document with id or path {', '.join(map(repr, unknown))} in collection "
                                      f"{self.name!r}; nothing was removed")
            if found:
                self._delete(list(found))
                self._save_index()
        return list(found.values())

    def update(self, paths: str | os.PathLike | Iterable[str | os.PathLike], *,
               progress: bool | None = None, follow_symlinks: bool = False) -> IngestReport:
        """Bring the collection in step with files and folders: new files are added, changed ones
        replace their old version (as ``add`` does), unchanged ones are skipped, and the documents of
        files under ``paths`` that no longer exist are removed (listed as "removed" in the report).

        A path that does not exist is accepted when documents came from it (they are removed);
        otherwise CollectionError, before anything changes."""
        paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
        with self._mutex:
            gone: dict[str, DocumentInfo] = {}
            for path in paths:
                docs = self.store.documents_at(path)
                if not docs and not os.path.exists(path):
                    raise CollectionError(f"no such file or folder, and no document from it in collection "
                                          f"{self.name!r}: {path}")
                gone.update((d.id, d) for d in docs if not os.path.isfile(d.source))
            removed = self._remove_if_present(list(gone)) if gone else []
            report = self.add([p for p in paths if os.path.exists(p)], progress=progress,
                              follow_symlinks=follow_symlinks)
        for doc in removed:
            report.results.append(FileResult(doc.source, REMOVED, doc.id, doc.title, doc.passages,
                                             error="the file is gone"))
        return report

    def _remove_if_present(self, doc_ids: list[str]) -> list[DocumentInfo]:
        with self._mutex, exclusive_lock(self.path / "lock", self.lock_timeout):
            self._refresh()
            docs = [d for d in map(self.store.document, doc_ids) if d is not None]
            if docs:
                self._delete([d.id for d in docs])
                self._save_index()
        return docs

    def _delete(self, doc_ids: list[str]) -> None:
        """Delete documents from the store (one transaction), then from the index."""
        generation, ids = self.store.delete_documents(doc_ids)
        self._apply(generation, removed=ids)
        logger.info("collection %s: deleted %d document(s) (%d passages)", self.name, len(doc_ids), len(ids))

    # -- ingest steps (loading and splitting files: retrieval.ingest) ---------------------
    def _commit(self, batch: IngestBatch, bar) -> None:
        """Embed a batch, store it in one transaction, then add it to the index."""
        if not batch.items:
            return
        ready: list[tuple[Document, list[Passage], np.ndarray]] = []
        results: list[FileResult] = []
        try:
            vectors = self._encode(batch.texts(self.passage_context), bar)
            offset = 0
            for result, doc, passages in batch.items:
                ready.append((doc, passages, vectors[offset : offset + len(passages)]))
                results.append(result)
                offset += len(passages)
        except Exception as exc:
            if len(batch.items) == 1:
                fail(batch.items[0][0], f"embedding failed: {type(exc).__name__}: {exc}")
            else:  # find the culprit: embed document by document
                logger.warning("embedding a batch failed (%s); retrying file by file", exc)
                for item in batch.items:
                    self._commit(IngestBatch([item]), bar)
                batch.clear()
                return
        batch.clear()
        try:
            change = self.store.add_documents(ready)
        except Exception as exc:
            for result in results:
                fail(result, f"could not store: {type(exc).__name__}: {exc}")
            return
        for result in results:
            result.replaced = change.replaced.get(result.doc_id, [])
        self._apply(change.generation, [(ids, vecs) for (_, _, vecs), ids in zip(ready, change.added, strict=True)],
                    change.removed)

    def _encode(self, texts: Sequence[str], bar=None) -> np.ndarray:
        step = max(1, self.batch_passages)
        parts = []
        for i in range(0, len(texts), step):
            parts.append(self.embedder.encode(texts[i : i + step]))
            if bar is not None:
                bar.set_postfix(passages=i + len(parts[-1]), refresh=False)
        vectors = np.concatenate(parts) if parts else np.zeros((0, self.dim), np.float32)
        if vectors.shape != (len(texts), self.dim):
            raise CollectionError(f"embedder returned shape {vectors.shape}, expected ({len(texts)}, {self.dim})")
        return vectors

    # -- keeping the index in step with the store -------------------------------------
    def _apply(self, generation: int, added: Sequence[tuple[np.ndarray, np.ndarray]] = (),
               removed: np.ndarray | None = None) -> None:
        """Bring the in-memory index to ``generation`` after a store commit: add the new (ids, vectors),
        then remove the deleted ids (an index that cannot is rebuilt before its next use)."""
        try:
            for ids, vecs in added:
                self.index.add(ids, vecs)
            if removed is not None and len(removed) and not self.index.remove(removed):
                self._index_behind = True  # HNSW: one rebuild at the end of the add, not one per batch
            self._generation = generation
            if self.index.wants_rebuild():
                self._rebuild()
        except Exception:
            logger.exception("index update failed; rebuilding from the store")
            self._rebuild()

    def _refresh(self) -> None:
        """Pick up changes another process made since we last looked."""
        if self._index_behind:
            self._rebuild()
        if self.store.generation != self._generation:
            self._sync_index()

    def _sync_index(self) -> None:
        """Load the saved index of the store's generation, or rebuild it and save it."""
        generation = self.store.generation
        loaded = VectorIndex.load(self.path, generation, self.index_kind, self.dim)
        if loaded is not None and loaded.ntotal == self.store.passage_count() and self.store.generation == generation:
            self.index, self._generation, self._saved_generation = loaded, generation, generation
            return
        if self.store.passage_count():
            logger.info("collection %s: index is behind the store (generation %d); rebuilding", self.name, generation)
        self._rebuild()
        # Save only if no other process is writing: it owns the files until it is done.
        try:
            with exclusive_lock(self.path / "lock", timeout=0):
                remove_temp_files(self.path)
                if self.store.generation == self._generation:
                    self._save_index()
        except CollectionError:
            pass

    def _rebuild(self) -> None:
        with self.store.snapshot():
            generation = self.store.generation
            total = self.store.passage_count()
            self.index = VectorIndex.build(
                self.index_kind, self.dim, lambda: self.store.iter_vectors(self.dim), total
            )
        self._generation = generation
        self._index_behind = False

    def _save_index(self) -> None:
        if self._index_behind:
            self._rebuild()
        if self._generation != self._saved_generation:
            self.index.save(self.path, self._generation)
            self._saved_generation = self._generation
