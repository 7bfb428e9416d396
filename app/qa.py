"""MultiDocQA: questions over a document collection, answered by RetNet from retrieved passages.

    from app import MultiDocQA
    qa = MultiDocQA("manuals")                 # open or create; default model and embedder
    qa.add(["manual.pdf", "docs/"])            # -> retrieval.IngestReport; an edited file replaces its old version
    qa.update(["docs/"])                       # also drops the documents of files deleted from docs/
    qa.remove(["manual.pdf"])                  # by path (file or folder) or document id
    a = qa.ask("How do I reset the device?")   # one-shot: a fresh state per question
    print(a.text); print(a.sources[0].cite())
    for piece in qa.stream("..."): print(piece, end="")
    with qa.session() as s: ...                # a conversation (see app.session)

All sessions of one MultiDocQA share the model and the prefix-state cache, so
asking over the same passages again does not re-encode them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .cache import PrefixCache
from .decoder import AnswerStream
from .defaults import DEFAULT_CACHE_BYTES, configure_threads
from .encoder import Reader, load_model
from .errors import CollectionNotFoundError
from .evidence import EvidenceScorer
from .options import AnswerOptions
from .retrieve import retrieve
from .session import Session
from .types import Answer, Source


class MultiDocQA:
    """A collection + a reader. ``collection`` is a name (opened, or created when ``create``), a
    ``retrieval.Collection``, or None (no retrieval: the model answers from the conversation alone).

    ``model`` is a model directory (default: the bundled model, see app.defaults), a
    ``RetNetForCausalLM`` (then ``tokenizer`` is required), or a ready ``Reader``.
    ``embedder`` is used when the collection is created (default: MiniLM); an existing
    collection reopens with the embedder it was built with. ``options`` (app.AnswerOptions) say how
    to answer: passages per turn, re-ranking, layout, sampling; keyword ``overrides`` of its fields
    (``k=2, max_new_tokens=64``) are applied on top. ``cache`` is the prefix-state cache (bytes or a
    PrefixCache; 0 or None: none).

    ``threads``: torch's CPU threads, as the CLI's ``--threads``. None (default): when MultiDocQA loads
    the model itself, the automatic choice (1 thread for small models, whose first answer is several
    times slower with more on a busy machine; app.defaults.configure_threads), unless $OMP_NUM_THREADS
    is set; a model object you pass is left to you. 0: the automatic choice for any model; N > 0:
    exactly N. torch's setting is process-wide, and a torch.set_num_threads call made before cannot
    be told apart from torch's default: keep yours with threads=torch.get_num_threads().

    ``quantize``: int8 weights when MultiDocQA loads the model ("auto", "int8", "none"; None reads
    $RETNET_QUANTIZE, default "auto": int8 for float32 CPU models of >= 50M parameters; retnet.quantize).
    """

    def __init__(self, collection: Any = "default", *, data_dir: str | os.PathLike | None = None,
                 model: Any = None, tokenizer: Any = None, embedder: Any = None, create: bool = True,
                 options: AnswerOptions | None = None, cache: PrefixCache | int | None = DEFAULT_CACHE_BYTES,
                 cache_snapshots: str = "auto", device=None, threads: int | None = None,
                 quantize: str | None = None, **overrides):
        self.options = options = AnswerOptions.build(options, **overrides)
        loads_model = model is None or isinstance(model, (str, os.PathLike))
        # The embedder loads in the background while the reader does: open the collection first, unless
        # the model directory is plainly missing (then load_model's error comes before any collection exists).
        early = loads_model and _has_config(model)
        if early:
            self.collection = self._open_collection(collection, data_dir, embedder, create)
        try:
            self.reader = self._reader(model, tokenizer, options, cache, cache_snapshots, device, threads, quantize)
        except BaseException:
            if early and isinstance(collection, (str, os.PathLike)):
                self.collection.close()
            raise
        if not early:
            self.collection = self._open_collection(collection, data_dir, embedder, create)
        self._owns_collection = isinstance(collection, str)
        # The refusal gate's answerability scorer for the collection's embedder (app.evidence).
        embedder = getattr(self.collection, "embedder", None)
        self._evidence = EvidenceScorer(embedder) if embedder is not None else None

    @staticmethod
    def _reader(model, tokenizer, options, cache, cache_snapshots, device, threads, quantize) -> Reader:
        if isinstance(model, Reader):
            reader = model
        elif model is None or isinstance(model, (str, os.PathLike)):
            m, tok = load_model(model, device, quantize)
            if threads is None and not os.environ.get("OMP_NUM_THREADS"):
                threads = 0
            reader = Reader(m, tokenizer or tok, options, cache=cache, cache_snapshots=cache_snapshots)
        else:
            if tokenizer is None:
                raise ValueError("a model object needs its tokenizer: MultiDocQA(model=model, tokenizer=tokenizer)")
            reader = Reader(model, tokenizer, options, cache=cache, cache_snapshots=cache_snapshots)
        if threads is not None:
            configure_threads(threads, reader.model)
        return reader

    # Passages per turn and re-ranking can be changed on an open MultiDocQA.
    @property
    def k(self) -> int:
        return self.options.k

    @k.setter
    def k(self, value: int) -> None:
        self.options = AnswerOptions.build(self.options, k=value)

    @property
    def rerank(self) -> bool:
        return self.options.rerank

    @rerank.setter
    def rerank(self, value: bool) -> None:
        self.options = AnswerOptions.build(self.options, rerank=value)

    @staticmethod
    def _open_collection(collection: Any, data_dir, embedder, create: bool):
        if collection is None or not isinstance(collection, (str, os.PathLike)):
            return collection
        from retrieval import Collection

        name = str(collection)
        if create:
            col = Collection.open_or_create(name, data_dir, embedder=embedder)
        else:
            require_collection(name, data_dir)
            col = Collection.open(name, data_dir, embedder=embedder)
        preload = getattr(col.embedder, "preload", None)
        if preload is not None:  # e.g. MiniLM: loaded in a thread while the reader loads or the first question is read
            preload()
        return col

    # -- documents -------------------------------------------------------------------------------
    def _need_collection(self):
        if self.collection is None:
            raise CollectionNotFoundError("this MultiDocQA has no collection; pass collection=NAME")
        return self.collection

    def add(self, paths: Any, progress: bool | None = None, follow_symlinks: bool = False):
        """Ingest files and folders into the collection; returns a retrieval.IngestReport. A file already
        here with other content (edited) replaces its old version; an unchanged one is skipped. Symbolic
        links inside folders are skipped unless ``follow_symlinks`` (then followed to files inside the
        folder only)."""
        return self._need_collection().add(paths, progress=progress, follow_symlinks=follow_symlinks)

    def update(self, paths: Any, progress: bool | None = None, follow_symlinks: bool = False):
        """Like ``add``, and also remove the documents of files under ``paths`` that no longer exist
        (they are listed as "removed" in the returned retrieval.IngestReport)."""
        return self._need_collection().update(paths, progress=progress, follow_symlinks=follow_symlinks)

    def remove(self, paths_or_ids: Any) -> list:
        """Remove documents by id or by path (a file, or a folder: every document from under it), in one
        transaction; returns their retrieval.DocumentInfo. If any name matches no document, nothing is
        removed (retrieval.CollectionError)."""
        return self._need_collection().remove_documents(paths_or_ids)

    def documents(self) -> list:
        return self._need_collection().documents()

    def search(self, question: str, k: int | None = None, documents: Any = None) -> list[Source]:
        """The passages a question would be answered from, best first."""
        q = self.reader.check_question(question)
        return [Source.from_hit(i + 1, h) for i, h in enumerate(self._retrieve(q, self.k if k is None else k,
                                                                                documents))]

    def _retrieve(self, question: str, k: int, documents: Any) -> list:
        return retrieve(self.collection, question, k, documents=documents, rerank=self.options.rerank)

    # -- asking --------------------------------------------------------------------------------
    def session(self, **options) -> Session:
        """A new conversation (options: k, layout, instructions, documents, name)."""
        options.setdefault("k", self.k)
        return Session(self.reader, self._retrieve, evidence=self._evidence, **options)

    def load_session(self, path: str | os.PathLike, **options) -> Session:
        return self.session(**options).load(path)

    def ask(self, question: str, **options) -> Answer:
        """One question, answered from a fresh state (no memory of earlier calls)."""
        return self.session().ask(question, **options)

    def stream(self, question: str, **options) -> AnswerStream:
        """Like ``ask``, streaming: iterate for text pieces, then ``.answer``."""
        return self.session().stream(question, **options)

    @property
    def model(self):
        return self.reader.model

    @property
    def tokenizer(self):
        return self.reader.tokenizer

    @property
    def cache(self) -> PrefixCache | None:
        return self.reader.cache

    def close(self) -> None:
        if self.collection is not None and self._owns_collection:
            self.collection.close()

    def __enter__(self) -> MultiDocQA:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        name = getattr(self.collection, "name", None)
        return f"MultiDocQA(collection={name!r}, layout={self.reader.layout!r}, k={self.k})"


def _has_config(model: str | os.PathLike | None) -> bool:
    from .defaults import default_model_dir

    path = Path(model).expanduser() if model is not None else default_model_dir()
    return (path / "config.json").is_file()


def require_collection(name: str, data_dir: str | os.PathLike | None = None, create_hint: str = "") -> None:
    """CollectionNotFoundError, naming the collections that exist and how to create this one, unless
    ``name`` is a valid collection name that exists under ``data_dir``."""
    from retrieval import Collection, CollectionError, default_data_dir, validate_name

    try:
        validate_name(name)
    except CollectionError as e:
        raise CollectionNotFoundError(str(e)) from None
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    known = Collection.list(root)
    if name not in known:
        raise CollectionNotFoundError(
            f"no collection {name!r} in {root}" + (f" (collections there: {', '.join(known)})" if known else
                                                   " (there are no collections yet)")
            + f"; create it with: retnet-rag ingest PATHS --collection {name}{create_hint}")
