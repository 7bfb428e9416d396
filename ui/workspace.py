"""What all users of one UI server share: the reader (model, prefix cache, answer options), the embedder,
the shared collections, and where each user's own things live.

Collections are opened through ``app.MultiDocQA`` with the shared reader, so every collection answers
with the same model and options. A collection reference is ``"shared:NAME"`` (under the data directory,
visible to everyone, as the CLI sees it) or ``"mine:NAME"`` (under the user's own folder).
"""

from __future__ import annotations

import os
import secrets
import threading
from pathlib import Path
from typing import Any

from app import MultiDocQA
from app.defaults import default_data_dir, make_embedder
from app.retrieve import retrieve  # the module, not the lazily exported name: app.retrieve is both
from retrieval import Collection, CollectionError

SHARED, MINE = "shared", "mine"


class Workspace:
    """``qa``: a MultiDocQA whose reader and options every collection uses (its own collection is unused).
    ``data_dir``: the shared collections (default: the app's). ``users_dir``: per-user folders
    (default: ``<data_dir>/.ui-users``, a name no collection can have). ``embedder``: for new collections
    (default: MiniLM, loaded once on first use). ``collection``: a shared collection new users start on
    (default: their own, empty one)."""

    def __init__(self, qa: MultiDocQA, *, data_dir: str | os.PathLike | None = None,
                 users_dir: str | os.PathLike | None = None, embedder: Any = None, max_file_mb: float = 20.0,
                 collection: str | None = None):
        self.qa = qa
        self.data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
        self.users_dir = Path(users_dir) if users_dir is not None else self.data_dir / ".ui-users"
        self.users_dir.mkdir(parents=True, exist_ok=True)
        self.max_file_bytes = int(max_file_mb * 2**20)
        self.start_collection = f"{SHARED}:{collection}" if collection else None  # where new users begin
        self._embedder = embedder
        self._shared: dict[str, MultiDocQA] = {}
        self._lock = threading.Lock()

    @property
    def embedder(self):
        with self._lock:
            if self._embedder is None:
                self._embedder = make_embedder("minilm")
            return self._embedder

    @property
    def reader(self):
        return self.qa.reader

    def new_session(self, collection: MultiDocQA | None):
        session = self.qa.session()
        bind(session, collection)
        return session

    # -- collections -------------------------------------------------------------------------------
    def shared_names(self) -> list[str]:
        return Collection.list(self.data_dir)

    def shared(self, name: str, create: bool = False) -> MultiDocQA:
        """A shared collection, opened once for all users."""
        with self._lock:
            qa = self._shared.get(name)
        if qa is None:
            if not create and name not in self.shared_names():
                raise CollectionError(f"there is no shared collection {name!r}")
            mine = self.open(name, self.data_dir)
            with self._lock:
                qa = self._shared.setdefault(name, mine)
            if qa is not mine:  # another user opened it at the same moment
                mine.close()
        return qa

    def open(self, name: str, root: Path) -> MultiDocQA:
        """Open or create collection ``name`` under ``root`` with the shared reader. An existing collection
        built with another embedder reopens with its own."""
        def make(embedder):
            return MultiDocQA(name, data_dir=root, model=self.reader, options=self.qa.options, embedder=embedder,
                              create=True)
        try:
            return make(self.embedder)
        except CollectionError as e:
            if "embedder" not in str(e):
                raise
            return make(None)

    def secret(self) -> str:
        """The key that encrypts each browser's user id in its local storage; kept so ids survive restarts."""
        path = self.users_dir / ".browser-secret"
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(32))
        return path.read_text().strip()

    def close(self) -> None:
        with self._lock:
            shared, self._shared = list(self._shared.values()), {}
        for qa in shared:
            qa.close()


def bind(session, collection: MultiDocQA | None) -> None:
    """Let the conversation go on over ``collection``: its next questions retrieve from there (the state,
    which remembers earlier turns, stays). Uses app.retrieve, the one retriever QA and sessions use."""
    if collection is None:
        session.retriever = None
        return
    col, rerank = collection.collection, collection.options.rerank
    session.retriever = lambda question, k, documents: retrieve(col, question, k, documents=documents, rerank=rerank)
