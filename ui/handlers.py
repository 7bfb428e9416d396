"""The page's event handlers: each finds the caller's user from its Gradio session, calls the app, and
returns what the page shows. Errors a person can cause become a message in the page (and a toast); the
conversation and collections are left as they were."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import gradio as gr

from app import AppError
from retrieval import CollectionError

from . import render, uploads
from .users import User, Users
from .workspace import MINE, SHARED, Workspace

STREAM_EVERY_S = 0.05  # page updates while an answer streams: smooth to read, cheap for the queue
USER_ERRORS = (AppError, CollectionError, OSError)


class Handlers:
    def __init__(self, ws: Workspace, users: Users):
        self.ws = ws
        self.users = users

    def _user(self, request: gr.Request) -> User:
        return self.users.for_tab(request.session_hash)

    # -- views -------------------------------------------------------------------------------------
    def chat_view(self, user: User) -> tuple:
        last = user.session.turns[-1] if user.session.turns else None
        return (render.messages(user.session.turns), render.sources_html(last),
                render.status(user.session, user.label()))

    def collection_view(self, user: User) -> tuple:
        qa = user.open()
        docs = qa.documents() if qa is not None else []
        return (gr.Dropdown(choices=user.collection_refs(), value=user.collection),
                render.document_rows(docs), gr.Dropdown(choices=[(d.title, d.id) for d in docs], value=None), "")

    # -- page life ---------------------------------------------------------------------------------
    def load(self, browser_uid: str | None, request: gr.Request):
        """A page (re)load: resume the browser's user, or start one."""
        user, message = self.users.attach(request.session_hash, browser_uid)
        with user.lock:
            return (user.uid, *self.chat_view(user), *self.collection_view(user), render.notice(message))

    def unload(self, request: gr.Request) -> None:
        self.users.detach(request.session_hash)

    # -- chat --------------------------------------------------------------------------------------
    def ask(self, question: str, request: gr.Request):
        """Stream the answer into the chat; outputs: chat, sources, status, question box, notice."""
        user = self._user(request)
        session = user.session
        try:
            stream = session.stream(question or "")
        except USER_ERRORS as e:
            gr.Warning(str(e))
            yield (*self.chat_view(user), question, render.notice(str(e)))
            return
        last, text = 0.0, ""
        try:
            yield (render.messages(session.turns, (stream.question, "")), render.sources_html(stream),  # retrieved
                   render.status(session, user.label()), "", "")
            for piece in stream:
                text += piece
                if time.monotonic() - last >= STREAM_EVERY_S:
                    last = time.monotonic()
                    yield (render.messages(session.turns, (stream.question, text)), gr.skip(), gr.skip(), gr.skip(),
                           gr.skip())
        finally:
            stream.close()  # a closed tab keeps the partial answer in the conversation
        message = ""
        try:
            user.save()
        except USER_ERRORS as e:
            message = render.notice(f"the answer is here but the conversation could not be saved: {e}")
        yield (*self.chat_view(user), "", message)

    def reset(self, request: gr.Request):
        user = self._user(request)
        with user.lock:
            user.session.reset()
            message = self._save(user, "conversation reset")
            return (*self.chat_view(user), message)

    def save(self, request: gr.Request):
        """The conversation as a downloadable session file (state + transcript)."""
        user = self._user(request)
        # Outside the user's folder (Gradio serves only what it copies to its cache); one file per user.
        folder = Path(tempfile.gettempdir()) / "retnet-rag-ui-saves" / user.uid
        try:
            folder.mkdir(parents=True, exist_ok=True)
            for old in folder.glob("*.session"):
                old.unlink(missing_ok=True)
            path = user.session.save(folder / f"conversation-{time.strftime('%Y%m%d-%H%M%S')}.session")
        except USER_ERRORS as e:
            gr.Warning(f"could not save: {e}")
            return gr.File(visible=False), render.notice(f"could not save the conversation: {e}")
        return gr.File(value=str(path), visible=True), render.notice("saved: download the file below", ok=True)

    def load_conversation(self, file: str | None, request: gr.Request):
        """Replace the conversation with a saved one; a bad file leaves the current one untouched."""
        user = self._user(request)
        if not file:
            return (*self.chat_view(user), "")
        with user.lock:
            try:
                user.session.load(file)
            except USER_ERRORS as e:
                gr.Warning(str(e))
                return (*self.chat_view(user), render.notice(f"{e}. Your conversation is unchanged."))
            return (*self.chat_view(user), self._save(user, f"loaded {len(user.session)} turns"))

    @staticmethod
    def _save(user: User, done: str) -> str:
        try:
            user.save()
        except USER_ERRORS as e:
            return render.notice(f"{done}, but it could not be saved for a reload: {e}")
        return render.notice(done, ok=True)

    # -- collections -------------------------------------------------------------------------------
    def select_collection(self, ref: str, request: gr.Request):
        user = self._user(request)
        with user.lock:
            try:
                user.select(ref)
            except USER_ERRORS as e:
                return (*self.collection_view(user), render.status(user.session, user.label()),
                        render.notice(str(e)))
            return (*self.collection_view(user), render.status(user.session, user.label()), "")

    def create_collection(self, name: str, shared: bool, request: gr.Request):
        user = self._user(request)
        name = (name or "").strip()
        with user.lock:
            try:
                ref = f"{SHARED if shared else MINE}:{name}"
                user.open(ref, create=True)
                user.select(ref)
            except USER_ERRORS as e:
                return (*self.collection_view(user), render.status(user.session, user.label()),
                        render.notice(str(e)))
            return (*self.collection_view(user), render.status(user.session, user.label()),
                    render.notice(f"collection {name!r} ready: upload documents into it", ok=True))

    def upload(self, files: list[str] | None, shared_ok: bool, request: gr.Request,
               progress=gr.Progress()):  # noqa: B008 (Gradio injects the progress tracker this way)
        """Ingest uploads into the selected collection, showing each file's result as it is known.
        Outputs: results table, collection dropdown, documents table, document dropdown, preview, notice."""
        user = self._user(request)
        files = list(files or [])
        if not files:
            return
        kind, _, name = user.collection.partition(":")
        if kind == SHARED and not shared_ok:
            msg = (f"{name!r} is shared with every user: tick 'add to shared collections' to upload into it, "
                   "or choose one of your own collections")
            yield ([], *self.collection_view(user), render.notice(msg))
            return
        # No user lock across the yields: Gradio may resume a generator on another thread, and the
        # collection guards its own writes.
        with user.lock:
            try:
                qa = user.open(create=True)  # the user's own default collection is made on first upload
                user.select(user.collection)
            except USER_ERRORS as e:
                qa, error = None, str(e)
        if qa is None:
            yield ([], *self.collection_view(user), render.notice(error))
            return
        rows, results = [], []
        progress((0, len(files)), desc="ingesting", unit="files")
        for r in uploads.ingest(qa, files, user.uploads_dir, self.ws.max_file_bytes):
            results.append(r)
            rows += render.result_rows([r])
            progress((len(results), len(files)), desc=f"ingested {r.path}", unit="files")
            yield (rows, *self.collection_view(user), render.notice(f"{len(results)} of {len(files)} files done",
                                                                   ok=True))
        added = [r for r in results if r.status == "added"]
        bad = [r for r in results if r.status == "failed"]
        msg = (f"{len(added)} added ({sum(r.passages for r in added)} passages) to {user.label()}"
               + (f"; {len(bad)} not added: " + "; ".join(f"{r.path}: {r.error}" for r in bad) if bad else ""))
        yield (rows, *self.collection_view(user), render.notice(msg, ok=not bad))

    def delete_document(self, doc_id: str | None, shared_ok: bool, request: gr.Request):
        user = self._user(request)
        with user.lock:
            qa = user.open()
            if not doc_id or qa is None:
                return (*self.collection_view(user), render.notice("choose a document to delete"))
            if user.collection.startswith(f"{SHARED}:") and not shared_ok:
                return (*self.collection_view(user),
                        render.notice("this collection is shared: tick 'add to shared collections' to change it"))
            if qa.collection.document(doc_id) is None:
                return (*self.collection_view(user), render.notice("that document is no longer in the collection"))
            info = qa.remove(doc_id)[0]
            source = Path(info.source)
            if source.parent == user.uploads_dir:
                source.unlink(missing_ok=True)
            return (*self.collection_view(user), render.notice(f"deleted {info.title}", ok=True))

    def view_document(self, doc_id: str | None, request: gr.Request) -> str:
        user = self._user(request)
        qa = user.open()
        if not doc_id or qa is None:
            return ""
        info = qa.collection.document(doc_id)
        return render.passages_markdown(info.title, qa.collection.passages(doc_id)) if info else ""
