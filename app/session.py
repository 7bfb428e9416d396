"""A conversation over documents: a constant-size recurrent state, a transcript and per-turn sources.

    s = qa.session()
    s.ask("What does -r do?")          # retrieves, ingests the passages, answers; the state remembers
    s.ask("And -n?")                   # the model still has the first turn in its state
    s.save("chat.session")             # one file, written atomically
    t = s.fork()                       # an independent copy of the conversation
    s.reset()                          # back to an empty state

The state's size depends only on the model, never on how long the conversation
is. The transcript (questions, answers, sources) is kept for people and for the
session file; the model never rereads it.

A session file (app.session_file) is one safetensors file: the state, the
transcript as JSON and a SHA-256 corruption check (not a seal against editing).
It is written to a temporary file and renamed over the target, so a failed save
leaves the previous file intact. Loading is all or nothing: the whole file is
parsed and validated against the model before anything in the session changes;
a truncated, corrupted, malformed or other model's file is a SessionFileError.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from retnet import RetentionState

from .decoder import AnswerStream
from .defaults import DEFAULT_K
from .retrieve import conversation_query
from .session_file import SavedSession, read_session_file, write_session_file
from .types import Answer, Source, Timings, Usage

Retriever = Callable[[str, int, Any], Sequence[Any]]  # (search text, k, documents) -> SearchHits, best first


class Session:
    """State + transcript + sources of one conversation. Not shared between threads (guarded by a lock)."""

    def __init__(self, reader, retriever: Retriever | None = None, *, k: int = DEFAULT_K, layout: str | None = None,
                 instructions: str | None = None, documents: Any = None, name: str | None = None,
                 evidence: Callable[[str, Sequence[Source]], float | None] | None = None):
        self.reader = reader
        self.retriever = retriever
        self.evidence = evidence  # answerability of a turn's passages for the refusal gate (app.evidence)
        self.k = k
        self.layout = layout
        self.instructions = instructions
        self.documents = documents  # restrict retrieval to these document ids (None: all)
        self.name = name
        self.turns: list[Answer] = []
        self.state: RetentionState = reader.new_state()
        self.key: bytes = reader.root_key()
        self._lock = threading.RLock()
        self._pending: AnswerStream | None = None

    # -- asking ----------------------------------------------------------------------------------
    def ask(self, question: str, **options) -> Answer:
        """Answer a question (retrieval, ingestion, decoding); the turn joins the conversation."""
        return self.stream(question, **options).result()

    def stream(self, question: str, *, k: int | None = None, documents: Any = None, layout: str | None = None,
               stop: Sequence[str] | None = None, **sampling) -> AnswerStream:
        """Like ``ask`` but returns an AnswerStream to iterate for text pieces. The turn joins the
        conversation when the stream ends (or is closed). Asking again before that closes it."""
        started = time.perf_counter()
        reader = self.reader
        q = reader.check_question(question)
        cfg = reader.sampling_config(**sampling)
        with self._lock:
            if self._pending is not None and not self._pending.finished:
                self._pending.close()
            k = self.k if k is None else k
            docs = self.documents if documents is None else documents
            # A follow-up ("and descending?") is searched with the conversation's earlier turns.
            query = conversation_query(self.transcript, q)
            hits = list(self.retriever(query, k, docs)) if self.retriever is not None and k > 0 else []
            retrieved = time.perf_counter()
            sources = [Source.from_hit(i + 1, h) for i, h in enumerate(hits)]
            first = int(self.state.offsets[0]) == 0
            turn = reader.layout_turn(q, hits, first_turn=first, layout=layout or self.layout,
                                      instructions=self.instructions)
            ing = reader.ingest(turn, self.state, self.key)
            stop_strings = None if stop is None else [*reader.stops.stop_strings, *stop]
            stream = AnswerStream(reader, ing.state, ing.logits, ing.key, question=q, sources=sources, sampling=cfg,
                                  stop_strings=stop_strings, usage=Usage(ing.prompt_tokens, ing.cached_tokens),
                                  timings=Timings(retrieve_s=retrieved - started, encode_s=ing.seconds),
                                  started=started, on_finish=self._commit, lock=self._lock, evidence=self.evidence,
                                  gate_text=query)
            self._pending = stream
            return stream

    def _commit(self, stream: AnswerStream) -> None:
        self.state, self.key = stream.state, stream.key
        self.turns.append(stream._answer)
        if self._pending is stream:
            self._pending = None

    def _settle(self) -> None:
        if self._pending is not None and not self._pending.finished:
            self._pending.close()

    # -- views ---------------------------------------------------------------------------------
    @property
    def sources(self) -> list[Source]:
        """The sources of the last turn."""
        return list(self.turns[-1].sources) if self.turns else []

    @property
    def transcript(self) -> list[tuple[str, str]]:
        return [(t.question, t.text) for t in self.turns]

    @property
    def state_bytes(self) -> int:
        return self.state.nbytes

    @property
    def tokens_read(self) -> int:
        return int(self.state.offsets[0])

    def __len__(self) -> int:
        return len(self.turns)

    def __repr__(self) -> str:
        return f"Session({len(self.turns)} turns, {self.tokens_read} tokens read, state {self.state_bytes} bytes)"

    # -- lifecycle -----------------------------------------------------------------------------
    def fork(self) -> Session:
        """An independent copy: both conversations can go on separately from here."""
        with self._lock:
            self._settle()
            other = Session(self.reader, self.retriever, k=self.k, layout=self.layout, instructions=self.instructions,
                            documents=self.documents, name=self.name, evidence=self.evidence)
            other.state, other.key = self.state.clone(), self.key
            other.turns = [Answer.from_dict(t.to_dict()) for t in self.turns]
            return other

    def reset(self) -> None:
        """Forget everything: an empty state and transcript."""
        with self._lock:
            self._settle()
            self.state, self.key, self.turns = self.reader.new_state(), self.reader.root_key(), []

    def close(self) -> None:
        with self._lock:
            self._settle()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- persistence ---------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write state + transcript to one file, atomically (temp file + rename). A failure (a folder in
        the way, no permission, a full disk) raises SessionFileError and keeps the previous file."""
        with self._lock:
            self._settle()
            settings = {"k": self.k, "layout": self.layout, "instructions": self.instructions,
                        "documents": _jsonable_documents(self.documents)}
            return write_session_file(path, SavedSession(self.state, self.key, list(self.turns), self.name, settings))

    def load(self, path: str | Path) -> Session:
        """Replace this session's state and transcript with a saved one, all or nothing: the whole file is
        read and checked first (see app.session_file), so on any error (missing, truncated, corrupted,
        malformed, another model's file: SessionFileError) this session is left exactly as it was.
        Settings (k, layout, documents) stay those this session was opened with."""
        saved = read_session_file(path, self.reader.model)
        state = saved.state.to(self.reader.device)
        with self._lock:
            self._settle()
            self.state, self.key, self.turns = state, saved.key, saved.turns
            self.name = saved.name if saved.name is not None else self.name
        return self


def _jsonable_documents(documents: Any) -> Any:
    if documents is None or isinstance(documents, str):
        return documents
    return list(documents)
