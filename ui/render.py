"""What the page shows, as plain data and HTML: chat messages, the sources panel, the status line,
ingest results, document tables. No Gradio, no model: easy to test and to read."""

from __future__ import annotations

import html
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from app import Answer, Source

RESULT_HEADERS = ["file", "result", "passages", "detail"]
DOC_HEADERS = ["title", "kind", "pages", "passages", "size", "added"]


# -- chat ------------------------------------------------------------------------------------------
def messages(turns: Iterable[Answer], pending: tuple[str, str] | None = None) -> list[dict]:
    """Gradio 6 chat messages (role/content dicts) for a transcript, plus a question being answered."""
    out: list[dict] = []
    for t in turns:
        out += [{"role": "user", "content": t.question}, {"role": "assistant", "content": t.text or "(no answer)"}]
    if pending is not None:
        question, partial = pending
        out += [{"role": "user", "content": question}, {"role": "assistant", "content": partial or "…"}]
    return out


def status(session: Any, collection_label: str) -> str:
    """The line under the chat: the state's size is the same after any number of turns; tokens read grow."""
    return (f"**State** {human_bytes(session.state_bytes)} (constant) · **tokens read** {session.tokens_read:,} · "
            f"**turns** {len(session)} · **collection** {collection_label}")


def notice(message: str, ok: bool = False) -> str:
    return ("✅ " if ok else "⚠️ ") + message if message else ""


# -- sources ---------------------------------------------------------------------------------------
def sources_html(answer: Answer | Any | None) -> str:
    """One card per source of the answer (or of an AnswerStream, whose sources are known before its text):
    citation, score, passage text with any quoted span marked."""
    if answer is None:
        return '<div class="rr-empty">Sources of the last answer appear here.</div>'
    if not answer.sources:
        return '<div class="rr-empty">No sources: the collection returned no passages for this question.</div>'
    cards = []
    for s in answer.sources:
        body = _marked(s.text, quote_spans(answer, s))
        cards.append(
            f'<div class="rr-source" data-doc="{html.escape(s.doc_id)}"><div class="rr-cite">[{s.n}] '
            f'{html.escape(s.cite())} <span class="rr-score">score {s.score:.2f}</span></div>'
            f'<div class="rr-text">{body}</div></div>')
    return "\n".join(cards)


def _marked(text: str, spans: Sequence[tuple[int, int]]) -> str:
    out, at = [], 0
    for a, b in sorted(spans):
        if a < at:  # overlapping quotes: mark the union once
            a = at
        if a >= b:
            continue
        out += [html.escape(text[at:a]), "<mark>", html.escape(text[a:b]), "</mark>"]
        at = b
    out.append(html.escape(text[at:]))
    return "".join(out)


def quote_spans(answer: Answer, source: Source) -> list[tuple[int, int]]:
    """Character ranges of ``source.text`` that the answer quotes.

    ``Answer.quotes`` (grounded answers, ``app.types.Quote``: offsets into the passage) may be missing on
    older answers; dicts (``Quote.to_dict``) and document offsets are understood too. A span is only
    marked where the quoted text really is, so a mismatch shows nothing rather than the wrong words.
    """
    spans = []
    for q in getattr(answer, "quotes", None) or ():
        if not _quote_is_for(q, source):
            continue
        span = _locate(q, source)
        if span is not None:
            spans.append(span)
    return spans


def _field(q: Any, name: str) -> Any:
    return q.get(name) if isinstance(q, dict) else getattr(q, name, None)


def _quote_is_for(q: Any, s: Source) -> bool:
    ref = _field(q, "source")
    ref = _field(ref, "n") if ref is not None and not isinstance(ref, (int, str)) else ref
    n = _field(q, "n") if ref is None else ref
    if isinstance(n, int) and n != s.n:
        return False
    for name, mine in (("doc_id", s.doc_id), ("passage_id", s.passage_id)):
        theirs = _field(q, name)
        if theirs is not None and mine is not None and theirs != mine:
            return False
    return True


def _locate(q: Any, s: Source) -> tuple[int, int] | None:
    text = _field(q, "text")
    start, end = _field(q, "start"), _field(q, "end")
    doc_start, doc_end = _field(q, "doc_start"), _field(q, "doc_end")
    candidates = []
    if isinstance(start, int) and isinstance(end, int):  # app.types.Quote: offsets into the passage
        candidates.append((start, end))
    if isinstance(doc_start, int) and isinstance(doc_end, int):  # offsets into the document
        candidates.append((doc_start - s.start, doc_end - s.start))
    if isinstance(start, int) and isinstance(end, int):  # an older shape: document offsets as start/end
        candidates.append((start - s.start, end - s.start))
    for a, b in candidates:
        if 0 <= a < b <= len(s.text) and (not text or s.text[a:b] == text):
            return a, b
    if text:
        at = s.text.find(text)
        if at >= 0:
            return at, at + len(text)
    return None


# -- documents -------------------------------------------------------------------------------------
def result_rows(results: Iterable[Any]) -> list[list]:
    """retrieval.FileResult-like records -> rows of the upload results table."""
    rows = []
    for r in results:
        dup = f"same content as {Path(r.duplicate_of).name}" if r.duplicate_of else ""
        if getattr(r, "moved_from", None):
            dup = "already in the collection, whose copy of the file was gone: it keeps this one"
        detail = r.error or dup or "; ".join(r.warnings)
        rows.append([r.path, r.status, r.passages, detail or ""])
    return rows


def document_rows(docs: Iterable[Any]) -> list[list]:
    return [[d.title, d.kind, d.pages, d.passages, human_bytes(d.size_bytes),
             time.strftime("%Y-%m-%d %H:%M", time.localtime(d.added_at))] for d in docs]


def passages_markdown(title: str, passages: Sequence[Any], limit: int = 5) -> str:
    if not passages:
        return ""
    head = f"**{title}**: {len(passages)} passages" + (f" (first {limit})" if len(passages) > limit else "")
    body = [f"> {' '.join(p.text.split())[:400]}" + (f"  \n> *page {p.page}*" if p.page else "")
            for p in passages[:limit]]
    return "\n\n".join([head, *body])


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"
