"""The model side of the HTTP server: one thread answers chat requests, one at a time, from a bounded queue.

One model and one thread: the reader, its prefix cache and torch all stay on one thread, so requests
never race on them, and a long answer only delays the requests behind it. A full queue is refused
at once (``QueueFullError``, answered 503) instead of piling up. Each job reports to the web
framework's event loop through an asyncio queue of events:

    ("start", sources) -> ("piece", text)* -> ("done", Answer)     (or ("error", exception) at any point)

A job whose client went away is marked ``cancelled``: the worker skips it, or stops its answer at the
next token.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time

from . import prompt as L
from .decoder import AnswerStream
from .openai_api import APIError, ChatRequest, bad_request
from .types import Timings, Usage


class QueueFullError(Exception):
    """The request queue is full (or the worker is stopping)."""


class Job:
    """One request on its way through the worker; ``events`` is read on the event loop. ``collection``:
    a collection's name, or None for the server's own (its MultiDocQA)."""

    def __init__(self, request: ChatRequest, loop: asyncio.AbstractEventLoop, collection: str | None = None):
        self.request = request
        self.loop = loop
        self.collection = collection
        self.events: asyncio.Queue = asyncio.Queue()
        self.cancelled = threading.Event()

    def emit(self, kind: str, value=None) -> None:  # called on the worker thread
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, value))
        except RuntimeError:  # the event loop is closed: nobody is listening any more
            self.cancelled.set()


class ChatEngine:
    """Answers one ChatRequest with a MultiDocQA's reader (and its collection, if any), from a fresh state.
    Other collections of ``data_dir`` are opened on first use, sharing the reader and its options."""

    def __init__(self, qa, max_prompt_tokens: int, data_dir=None):
        self.qa = qa
        self.max_prompt_tokens = max_prompt_tokens
        self.data_dir = data_dir
        self._others: dict[str, object] = {}

    def qa_for(self, collection: str | None):
        if collection is None or collection == getattr(self.qa.collection, "name", None):
            return self.qa
        if collection not in self._others:
            from .qa import MultiDocQA

            self._others[collection] = MultiDocQA(collection, data_dir=self.data_dir, model=self.qa.reader,
                                                  create=False, options=self.qa.options)
        return self._others[collection]

    def close(self) -> None:
        for qa in self._others.values():
            qa.close()
        self._others.clear()

    def layout(self, request: ChatRequest, question: str, sources) -> L.TurnTokens:
        """The messages as a session would have read them, in the reader's own format (markers or ChatML):
        each earlier user message is a turn of ``reader.layout_turn`` followed by its answer and the end
        marker; then the question with its passages. System messages are the first turn's instructions,
        tool results passages of the next turn (ahead of the retrieved ones)."""
        reader = self.qa.reader
        parts: list[L.TurnTokens] = []
        system = [text for role, text in request.history if role == "system" and text.strip()]
        instructions = "\n".join(system) or None
        passages: list[str] = []
        pending: str | None = None  # a user message whose answer has not come yet

        def turn(q: str, answer: str | None, retrieved=()) -> None:
            hits = [*passages, *retrieved]
            passages.clear()
            parts.append(reader.layout_turn(q, hits, first_turn=not parts, instructions=instructions))
            if answer is not None:
                ids = L.encode_text(reader.tokenizer, L.neutralize(answer.strip())) + list(reader.stops.end_ids)
                n = reader.max_chunk
                lengths = [min(n, len(ids) - i) for i in range(0, len(ids), n)]
                parts.append(L.TurnTokens(ids, lengths, [L.ANSWER_CHUNK] * len(lengths), [None] * len(lengths),
                                          [True] * len(lengths), len(ids), parts[-1].layout))

        for role, text in request.history:
            if role == "passage":
                passages.append(text)
            elif role == "user":
                if pending is not None:
                    turn(pending, "")  # two questions in a row: the first one went unanswered
                pending = text
            elif role == "assistant":
                turn(pending or "", text)
                pending = None
        if pending is not None:
            turn(pending, "")
        turn(question, None, sources)
        return _join(parts)

    def run(self, job: Job) -> None:
        started = time.perf_counter()
        req, reader, qa = job.request, self.qa.reader, self.qa_for(job.collection)
        question = reader.check_question(req.question)
        sources = qa.search(question) if qa.collection is not None else []
        retrieved = time.perf_counter()
        turn = self.layout(req, question, sources)
        if turn.prompt_length > self.max_prompt_tokens:
            raise bad_request(f"the messages and passages take {turn.prompt_length} tokens; this server reads at most "
                              f"{self.max_prompt_tokens}. Send a shorter history.", "messages",
                              "context_length_exceeded")
        cfg = reader.sampling_config(max_new_tokens=req.max_tokens, temperature=req.temperature, top_p=req.top_p,
                                     seed=req.seed)
        ing = reader.ingest(turn, reader.new_state(), reader.root_key())
        stream = AnswerStream(reader, ing.state, ing.logits, ing.key, question=question, sources=sources,
                              sampling=cfg, stop_strings=[*reader.stops.stop_strings, *req.stop],
                              usage=Usage(ing.prompt_tokens, ing.cached_tokens),
                              timings=Timings(retrieve_s=retrieved - started, encode_s=ing.seconds), started=started)
        job.emit("start", sources)
        for piece in stream:
            if job.cancelled.is_set():
                stream.close()
                return
            job.emit("piece", piece)
        job.emit("done", stream.answer)


def _join(parts: list[L.TurnTokens]) -> L.TurnTokens:
    """Turns one after another as one prompt (every part is prompt: nothing in it is a target)."""
    if len(parts) == 1:
        return parts[0]
    ids = [i for p in parts for i in p.ids]
    return L.TurnTokens(ids, [n for p in parts for n in p.chunk_lengths], [k for p in parts for k in p.kinds],
                        [i for p in parts for i in p.passage_index], [e for p in parts for e in p.segment_end],
                        len(ids), parts[-1].layout, parts[-1].passage_order)


class ModelWorker:
    """A thread that runs ``engine.run(job)`` for queued jobs, one at a time; at most ``queue_size`` wait."""

    def __init__(self, engine: ChatEngine, queue_size: int = 16):
        if queue_size < 1:
            raise ValueError(f"queue_size must be at least 1, got {queue_size}")
        self.engine = engine
        self.queue_size = queue_size
        self._queue: queue.Queue[Job | None] = queue.Queue(maxsize=queue_size)
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="retnet-rag-model", daemon=True)

    @property
    def waiting(self) -> int:
        return self._queue.qsize()

    def start(self) -> None:
        self._thread.start()

    def submit(self, job: Job) -> None:
        if self._stopping:
            raise QueueFullError("the server is shutting down")
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise QueueFullError(f"the server is busy: {self.queue_size} requests are already waiting") from None

    def stop(self, timeout: float = 10.0) -> None:
        """Refuse new jobs, fail the waiting ones, let the running one end (its client is told), join."""
        self._stopping = True
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job.emit("error", APIError(503, "the server is shutting down"))
        self._queue.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout)
        self.engine.close()

    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            if job.cancelled.is_set():
                continue
            try:
                self.engine.run(job)
            except Exception as e:  # reported to that request only (app.server logs unexpected ones); next job
                job.emit("error", e)
