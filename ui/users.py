"""Per-browser users: each has its own conversation (an app.Session), its own collections and uploads,
kept in its own folder under an unguessable id.

A browser keeps its id (encrypted) in local storage; a page load attaches the tab to that user, resuming
the conversation saved on disk after every turn. When the last tab of a user closes, the user's session
and collections are saved and freed from memory. API clients (gradio_client) never run the page's load
event: their first call attaches them to a new user, keyed by their Gradio session.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import threading
from pathlib import Path

from app import AppError, MultiDocQA
from retrieval import Collection, CollectionError

from .workspace import MINE, SHARED, Workspace, bind

logger = logging.getLogger(__name__)

_UID = re.compile(r"[A-Za-z0-9_-]{22}")
DEFAULT_COLLECTION = "my-documents"


class User:
    def __init__(self, ws: Workspace, uid: str):
        self.ws = ws
        self.uid = uid
        self.folder = ws.users_dir / uid
        self.tabs: set[str] = set()
        self.private: dict[str, MultiDocQA] = {}
        self.collection = ws.start_collection or f"{MINE}:{DEFAULT_COLLECTION}"
        self.lock = threading.RLock()  # two tabs of one browser share the user: one change at a time
        self.session = ws.new_session(None)

    @property
    def collections_dir(self) -> Path:
        return self.folder / "collections"

    @property
    def uploads_dir(self) -> Path:
        return self.folder / "uploads"

    @property
    def conversation_file(self) -> Path:
        return self.folder / "conversation.session"

    # -- collections -------------------------------------------------------------------------------
    def collection_refs(self) -> list[tuple[str, str]]:
        """(label, ref) for the dropdown: the user's own collections, then the shared ones."""
        mine = sorted(set(Collection.list(self.collections_dir)) | {DEFAULT_COLLECTION})
        return ([(f"{n} (mine)", f"{MINE}:{n}") for n in mine]
                + [(f"{n} (shared)", f"{SHARED}:{n}") for n in self.ws.shared_names()])

    def open(self, ref: str | None = None, create: bool = False) -> MultiDocQA | None:
        """The collection ``ref`` (default: the selected one); None for an own collection not made yet."""
        kind, _, name = (ref or self.collection).partition(":")
        if kind == SHARED:
            return self.ws.shared(name, create=create)
        if kind != MINE:
            raise CollectionError(f"unknown collection {ref!r}")
        if name not in self.private:
            if not create and name not in Collection.list(self.collections_dir):
                return None
            self.collections_dir.mkdir(parents=True, exist_ok=True)
            self.private[name] = self.ws.open(name, self.collections_dir)
        return self.private[name]

    def select(self, ref: str) -> MultiDocQA | None:
        """Make ``ref`` the collection the next questions retrieve from."""
        kind, _, name = ref.partition(":")
        if kind not in (MINE, SHARED) or not name:
            raise CollectionError(f"unknown collection {ref!r}")
        qa = self.open(ref)
        if qa is None and kind == SHARED:
            raise CollectionError(f"there is no shared collection {name!r}")
        self.collection = ref
        bind(self.session, qa)
        return qa

    def select_or_own(self, ref: str) -> None:
        """``select(ref)``, or the user's own default collection when ``ref`` is gone (deleted, renamed)."""
        try:
            self.select(ref)
        except CollectionError:
            self.select(f"{MINE}:{DEFAULT_COLLECTION}")

    def label(self) -> str:
        kind, _, name = self.collection.partition(":")
        return f"{name} ({kind})"

    # -- persistence -------------------------------------------------------------------------------
    def save(self) -> None:
        """The conversation and the selected collection, so that a reload (or a restart) resumes them."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.session.save(self.conversation_file)
        (self.folder / "user.json").write_text(json.dumps({"collection": self.collection}))

    def resume(self) -> str:
        """Load what ``save`` wrote; returns a message for the page when something could not be restored."""
        try:
            ref = json.loads((self.folder / "user.json").read_text()).get("collection") or self.collection
        except (OSError, ValueError, AttributeError):
            ref = self.collection
        self.select_or_own(ref)
        if self.conversation_file.exists():
            try:
                self.session.load(self.conversation_file)
            except AppError as e:  # e.g. the server now runs another model: start afresh, keep the file
                return f"your earlier conversation could not be restored ({e}); starting a new one"
        return ""

    def close(self) -> None:
        self.session.close()
        for qa in self.private.values():
            qa.close()
        self.private.clear()


class Users:
    """Users by id and by Gradio session (one per tab)."""

    def __init__(self, ws: Workspace):
        self.ws = ws
        self._by_uid: dict[str, User] = {}
        self._by_tab: dict[str, User] = {}
        self._lock = threading.Lock()

    def attach(self, tab: str, uid: str | None = None) -> tuple[User, str]:
        """The user with id ``uid`` (in memory, or resumed from disk), else a new one, now bound to ``tab``.
        Returns the user and a message for the page ("" when all is well)."""
        message = ""
        with self._lock:
            old = self._by_tab.get(tab)
            if old is not None and old.uid == uid:
                return old, ""
            user = self._by_uid.get(uid) if isinstance(uid, str) and _UID.fullmatch(uid) else None
            if user is None:
                known = isinstance(uid, str) and _UID.fullmatch(uid) and (self.ws.users_dir / uid).is_dir()
                user = User(self.ws, uid if known else secrets.token_urlsafe(16))
                message = user.resume() if known else ""
                if not known:
                    user.select_or_own(user.collection)
                self._by_uid[user.uid] = user
                logger.info("user %s %s (%d live)", user.uid[:6], "resumed" if known else "new", len(self._by_uid))
            user.tabs.add(tab)
            self._by_tab[tab] = user
        if old is not None and old is not user:
            self.detach(tab, only=old)
        return user, message

    def for_tab(self, tab: str) -> User:
        with self._lock:
            user = self._by_tab.get(tab)
        return user if user is not None else self.attach(tab)[0]

    def detach(self, tab: str, only: User | None = None) -> None:
        """The tab closed: when it was its user's last, save the user and free it."""
        with self._lock:
            user = only or self._by_tab.pop(tab, None)
            if user is None:
                return
            user.tabs.discard(tab)
            if user.tabs:
                return
            self._by_uid.pop(user.uid, None)
            logger.info("user %s closed (%d live)", user.uid[:6], len(self._by_uid))  # in order of the counts
        with user.lock:
            try:
                user.save()
            except (OSError, AppError) as e:
                logger.warning("user %s: could not save the conversation: %s", user.uid[:6], e)
            user.close()

    @property
    def live(self) -> int:
        return len(self._by_uid)

    def close(self) -> None:
        for tab in list(self._by_tab):
            self.detach(tab)
