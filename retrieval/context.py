"""What a passage is embedded as: its text, with its document's title in front ("contextual header").

A passage of a manual rarely names the program it documents ("-k: keep the source file"), while
the question does ("which zstd option keeps the source file?"). Embedding the passage after its
document's title gives the vector that missing context. Only the vector sees the title: the
stored passage, the text the reader reads and the BM25 row (which has the title in a column of
its own, lexical.py) are unchanged. Dev set (benchmarks/results/retrieval_dev.md): dense recall@4
of single-passage questions 0.681 -> 0.790; hybrid+rerank 0.838 -> 0.852.

A collection records how its vectors were made (meta ``passage_context``), and keeps to it:
collections made before this existed say nothing and go on embedding plain text, so their old
and new vectors stay comparable. Rebuilding such a collection gives it the title context.
"""

from __future__ import annotations

from .errors import CollectionError

META_KEY = "passage_context"
NONE, TITLE = "none", "title"
PASSAGE_CONTEXTS = (NONE, TITLE)
DEFAULT_PASSAGE_CONTEXT = TITLE
LEGACY_PASSAGE_CONTEXT = NONE  # collections whose meta does not say


def check_passage_context(context: str) -> str:
    if context not in PASSAGE_CONTEXTS:
        raise CollectionError(f"passage_context must be one of {PASSAGE_CONTEXTS}, not {context!r}")
    return context


def embedding_text(text: str, title: str, context: str) -> str:
    """The text the embedder sees for a passage ``text`` of a document called ``title``."""
    title = " ".join(title.split())
    if context == TITLE and title:
        return f"{title}\n{text}"
    return text
