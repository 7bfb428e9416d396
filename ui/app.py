"""The page: layout, event wiring, the queue, and ``launch()`` (what ``retnet-rag ui`` runs).

    from ui.app import launch
    launch(model="path/to/model", data_dir="collections", port=7860)     # blocks; 127.0.0.1 only

Model work (answers, ingestion) goes through Gradio's queue with a concurrency limit, so many users
at once wait their turn instead of failing or starving the CPU; the queue holds at most ``queue_size``
events, beyond which a user is told to retry. Light events (listing, switching, reset, save) have their
own lane so a long answer never blocks another user's page.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import gradio as gr

from app import MultiDocQA

from . import render
from .handlers import Handlers
from .users import Users
from .workspace import Workspace

CSS = """
#sources { max-height: 520px; overflow-y: auto; }
.rr-source { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 8px 10px; margin-bottom: 8px; }
.rr-cite { font-weight: 600; margin-bottom: 4px; }
.rr-score { font-weight: 400; opacity: 0.6; font-size: 0.85em; margin-left: 6px; }
.rr-text { white-space: pre-wrap; font-size: 0.9em; }
.rr-text mark { background: #ffe066; padding: 0 1px; }
.rr-empty { opacity: 0.6; font-style: italic; }
"""


def build(ws: Workspace, *, concurrency: int = 2) -> gr.Blocks:
    """The Blocks app over a workspace. ``concurrency``: answers and ingests running at once."""
    users = Users(ws)
    h = Handlers(ws, users)
    # Gradio's copies of uploads and downloads (a 50 MB upload included) go after an hour.
    with gr.Blocks(title="retnet-rag", delete_cache=(3600, 3600)) as demo:
        demo.users = users  # in-process callers can see who is connected (demo.users.live)
        browser_uid = gr.BrowserState(None, storage_key="retnet-rag-user", secret=ws.secret())
        gr.Markdown("## retnet-rag: ask your documents")
        with gr.Row():
            with gr.Column(scale=3):
                chat = gr.Chatbot(elem_id="chat", label="Conversation", height=440, buttons=["copy"])
                with gr.Row():
                    question = gr.Textbox(elem_id="question", show_label=False, scale=5, lines=1, max_lines=6,
                                          placeholder="Ask a question about your documents")
                    ask = gr.Button("Ask", elem_id="ask", variant="primary", scale=1)
                status = gr.Markdown(elem_id="status")
                notice = gr.Markdown(elem_id="notice")
                with gr.Row():
                    reset = gr.Button("Reset conversation", elem_id="reset", size="sm")
                    save = gr.Button("Save conversation", elem_id="save", size="sm")
                    load = gr.UploadButton("Load conversation", elem_id="load", size="sm", file_count="single")
                saved = gr.File(label="Saved conversation", elem_id="saved", visible=False, interactive=False)
            with gr.Column(scale=2):
                gr.Markdown("### Sources")
                sources = gr.HTML(elem_id="sources")
        with gr.Accordion("Documents and collections", open=True):
            with gr.Row():
                collection = gr.Dropdown(label="Collection", elem_id="collection", scale=2, allow_custom_value=False)
                new_name = gr.Textbox(label="New collection", elem_id="new-name", scale=2, placeholder="name")
                new_shared = gr.Checkbox(label="shared with every user", elem_id="new-shared", scale=1)
                create = gr.Button("Create", elem_id="create", scale=1)
            files = gr.File(label="Upload PDF, text, Markdown or HTML", elem_id="upload", file_count="multiple",
                            height=120)
            shared_ok = gr.Checkbox(label="add to shared collections (every user sees what you add)",
                                    elem_id="shared-ok")
            results = gr.Dataframe(headers=render.RESULT_HEADERS, elem_id="upload-results",
                                   label="Upload results", interactive=False, wrap=True)
            docs = gr.Dataframe(headers=render.DOC_HEADERS, elem_id="documents",
                                label="Documents in this collection", interactive=False)
            with gr.Row():
                doc = gr.Dropdown(label="Document", elem_id="document", scale=3)
                delete = gr.Button("Delete document", elem_id="delete", variant="stop", scale=1)
            preview = gr.Markdown(elem_id="preview")

        chat_out = [chat, sources, status]
        col_out = [collection, docs, doc, preview]
        light = {"concurrency_id": "light", "concurrency_limit": 8, "show_progress": "hidden"}
        model = {"concurrency_id": "model", "concurrency_limit": concurrency}

        demo.load(h.load, [browser_uid], [browser_uid, *chat_out, *col_out, notice], **light)
        demo.unload(h.unload)
        ask.click(h.ask, [question], [*chat_out, question, notice], api_name="ask", show_progress="minimal", **model)
        question.submit(h.ask, [question], [*chat_out, question, notice], api_visibility="private",
                        show_progress="minimal", **model)
        reset.click(h.reset, None, [*chat_out, notice], api_name="reset", **light)
        chat.clear(h.reset, None, [*chat_out, notice], api_visibility="private", **light)  # the chat's bin icon
        save.click(h.save, None, [saved, notice], api_name="save", **light)
        load.upload(h.load_conversation, [load], [*chat_out, notice], api_name="load", **light)
        collection.input(h.select_collection, [collection], [*col_out, status, notice], api_name="select", **light)
        create.click(h.create_collection, [new_name, new_shared], [*col_out, status, notice], api_name="create",
                     **light)
        files.upload(h.upload, [files, shared_ok], [results, *col_out, notice], api_name="upload",
                     concurrency_id="ingest", concurrency_limit=1, show_progress="full").then(
            lambda: None, None, [files], queue=False, show_progress="hidden")
        delete.click(h.delete_document, [doc, shared_ok], [*col_out, notice], api_name="delete", **light)
        doc.input(h.view_document, [doc], [preview], api_name="view", **light)
    return demo


def launch(model: Any = None, *, data_dir=None, embedder=None, users_dir=None, collection: str | None = None,
           host: str = "127.0.0.1", port: int = 7860, share: bool = False, concurrency: int = 2,
           queue_size: int = 64, max_file_mb: float = 20.0, block: bool = True, **options):
    """Serve the UI. ``model``: a MultiDocQA (its reader and answer options are used, its collection is
    not), a model directory, or None for the default model; ``options`` are AnswerOptions overrides for
    the latter two. ``embedder``: for new collections (default MiniLM); ``collection``: a shared
    collection new users start on. Returns Gradio's (app, local_url, share_url) when ``block`` is False."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # nothing leaves the machine
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per internal request is noise
    qa = model if isinstance(model, MultiDocQA) else MultiDocQA(None, model=model, **options)
    ws = Workspace(qa, data_dir=data_dir, users_dir=users_dir, embedder=embedder, max_file_mb=max_file_mb,
                   collection=collection)
    demo = build(ws, concurrency=concurrency)
    demo.queue(max_size=queue_size, default_concurrency_limit=concurrency)
    # Gradio refuses bigger uploads at the door; our own per-file limit (with a clearer message) is lower.
    return demo.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=not block,
                       theme=gr.themes.Soft(), css=CSS, max_file_size=f"{int(4 * max_file_mb)}mb", ssr_mode=False,
                       footer_links=["api"], show_error=True, quiet=not block,
                       # Gradio keeps a record (~140 KiB: each component's last value) per browser session
                       # ever seen, up to this many, even after the tab closed. Ours hold nothing that matters
                       # (users live in ui.users), so a small bound only caps memory.
                       state_session_capacity=256)
