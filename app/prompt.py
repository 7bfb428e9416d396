"""Prompt layouts: how one turn (instructions, passages, question, answer) becomes tokens and chunks.

This is the ONE place the token layout is defined. The app encodes turns with it
and the training-data builder imports it, so the model is trained on exactly the
sequences it will read. It needs no torch and no retrieval: only a tokenizer with
``encode(text)`` (a ``tokenizers.Tokenizer`` or anything returning ids).

A turn is a list of chunks; each chunk is ingested as one chunk of the chunkwise
form, so chunk boundaries follow passage boundaries::

    [<|system|>instructions\\n]                       first turn of a session only, if any
    <|question|>question\\n                           "qpq" only
    <|passage|>title\\ntext\\n    ... one chunk per passage (a long passage is split
                                    inside at sentence boundaries into several chunks)
    <|question|>question\\n<|answer|>                 the model answers from here
    answer text<|endoftext|>                         generated (or, in training, the target)

Layouts (``LAYOUTS``), passages given best first as a retriever returns them:

- ``"qpq"``: question, passages with the most relevant LAST (nearest the answer,
  where retention has decayed least), then the question again.
- ``"pq"``: passages with the most relevant last, then the question. The
  instructions and passages come first, so a repeated passage set is a repeated
  token prefix and the prefix-state cache skips it entirely.
- ``"pq-best-first"``: passages in retrieval order (best first), then the question.

Multi-turn sessions simply concatenate turns: after an answer the state has read
``answer<|endoftext|>`` and the next turn's chunks follow.

Markers are the tokenizer's special tokens when it has them (one id each); with a
tokenizer that lacks them (e.g. a plain byte tokenizer in tests) the marker text is
encoded as ordinary text, so everything still works, just less compactly. Text
coming from documents or users is "neutralised" so that it can never contain a
marker (``<|question|>`` in a document becomes ``< |question|>``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

END = "<|endoftext|>"
PAD = "<|pad|>"
PASSAGE = "<|passage|>"
QUESTION = "<|question|>"
ANSWER = "<|answer|>"
SYSTEM = "<|system|>"
MARKERS = (END, PAD, PASSAGE, QUESTION, ANSWER, SYSTEM)

LAYOUTS = ("qpq", "pq", "pq-best-first")
# Provisional until the default model's layout evaluation (python -m evaluation.evaluate) picks the winner.
DEFAULT_LAYOUT = "qpq"
DEFAULT_MAX_CHUNK = 256  # tokens per chunk; a longer passage is split at sentence boundaries
MAX_TITLE_TOKENS = 48

# How an answer ends. The model is trained to end with END; a marker token (the model
# starting a new question or passage) also ends it; so does a blank line.
ANSWER_STOP_MARKERS = (END, QUESTION, PASSAGE, ANSWER, SYSTEM)
ANSWER_STOP_STRINGS = ("\n\n",)

# The one refusal sentence: what the app answers when the documents hold no answer (app.grounding),
# what the reading data teaches for unanswerable questions and what the dev-set scorer recognises.
REFUSAL = "That is not in the documents."


def is_refusal(text: str) -> bool:
    """True for the refusal sentence (whitespace and case aside)."""
    return " ".join(text.split()).lower() == REFUSAL.lower()

# Chunk kinds in TurnTokens.kinds
SYSTEM_CHUNK, QUESTION_CHUNK, PASSAGE_CHUNK, PROMPT_END_CHUNK, TARGET_CHUNK, ANSWER_CHUNK = (
    "system", "question", "passage", "prompt_end", "target", "answer")
# Message roles for encode_messages (chat histories, LangChain)
ROLES = ("system", "user", "assistant", "passage")
_ROLE_OF_MARKER = {SYSTEM: "system", QUESTION: "user", ANSWER: "assistant", PASSAGE: "passage"}

_MARKER_IN_TEXT = re.compile(r"<\|(?=[A-Za-z0-9_]+\|>)")
# A sentence ends at . ! ? (or CJK stops), optionally followed by closing quotes/brackets; the
# cut goes right after it, so the following whitespace starts the next piece (which keeps
# byte-level BPE tokenisation of the pieces equal to that of the whole), and at line breaks.
_SENTENCE_END = re.compile(r"[.!?\u2026\u3002\uff01\uff1f]+[\"'\u201d\u2019)\]]*(?=\s)|\n+")


@dataclass(frozen=True)
class PassageText:
    """What the layout needs of a passage. Any object with ``.text`` (and ``.title``) works too."""

    text: str
    title: str | None = None


@dataclass
class TurnTokens:
    """A laid-out turn: token ids, their chunking, and where the answer starts.

    ``sum(chunk_lengths) == len(ids)``. ``prompt_length`` counts the tokens up to and
    including the answer marker; with ``answer=`` the rest of ``ids`` is the answer
    followed by the end marker (the training target, see ``target_mask``).
    ``kinds[i]`` names chunk i; ``passage_index[i]`` is, for a passage chunk, the index
    of its passage in the order given; ``segment_end[i]`` is False for a chunk that is
    an inner piece of a split passage (a state snapshot there is not a passage boundary).
    """

    ids: list[int]
    chunk_lengths: list[int]
    kinds: list[str]
    passage_index: list[int | None]
    segment_end: list[bool]
    prompt_length: int
    layout: str
    passage_order: list[int] = field(default_factory=list)  # passage indices in the order laid out

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def prompt_ids(self) -> list[int]:
        return self.ids[: self.prompt_length]

    @property
    def prompt_chunk_lengths(self) -> list[int]:
        return [n for n, kind in zip(self.chunk_lengths, self.kinds, strict=True) if kind != TARGET_CHUNK]

    def target_mask(self) -> list[bool]:
        """True at tokens the model should learn to predict (the answer and its end marker)."""
        return [i >= self.prompt_length for i in range(len(self.ids))]

    def labels(self, ignore_index: int = -100) -> list[int]:
        """Next-token labels aligned with ``ids``: label[i] is the token after i, or ignore_index
        where that next token is not part of the target."""
        out = [ignore_index] * len(self.ids)
        for i in range(max(self.prompt_length - 1, 0), len(self.ids) - 1):
            out[i] = self.ids[i + 1]
        return out

    def chunk_spans(self) -> list[tuple[int, int]]:
        spans, start = [], 0
        for n in self.chunk_lengths:
            spans.append((start, start + n))
            start += n
        return spans


# -- tokenizer helpers -------------------------------------------------------------------------
def encode_text(tokenizer: Any, text: str) -> list[int]:
    """Token ids of plain text, without any special tokens a tokenizer would add around it."""
    if not text:
        return []
    try:
        out = tokenizer.encode(text, add_special_tokens=False)
    except TypeError:
        out = tokenizer.encode(text)
    return list(out.ids if hasattr(out, "ids") else out)


def marker_ids(tokenizer: Any, marker: str) -> list[int]:
    """The marker's single special-token id, or its text's ids when the tokenizer lacks it."""
    token_to_id = getattr(tokenizer, "token_to_id", None)
    if token_to_id is not None:
        tid = token_to_id(marker)
        if tid is not None:
            return [tid]
    return encode_text(tokenizer, marker)


def marker_token_id(tokenizer: Any, marker: str) -> int | None:
    """The marker's id if it is one token of this tokenizer, else None."""
    ids = marker_ids(tokenizer, marker)
    token_to_id = getattr(tokenizer, "token_to_id", None)
    if token_to_id is not None and token_to_id(marker) is not None:
        return ids[0]
    return None


def neutralize(text: str) -> str:
    """Make document or user text unable to contain a marker: ``<|x|>`` becomes ``< |x|>``."""
    return _MARKER_IN_TEXT.sub("< |", text)


def sentence_pieces(text: str) -> list[str]:
    """Cut text after each sentence end and at line breaks; ``"".join(pieces) == text``."""
    pieces, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        if m.end() > start:
            pieces.append(text[start : m.end()])
            start = m.end()
    if start < len(text):
        pieces.append(text[start:])
    return pieces


@dataclass(frozen=True)
class StopConventions:
    """How the decoder recognises the end of an answer for a given tokenizer."""

    stop_token_ids: frozenset[int]  # a sampled token in here ends the answer (it is not kept in the text)
    stop_strings: tuple[str, ...]  # text that ends the answer (cut from the text)
    end_ids: tuple[int, ...]  # fed into the state after every answer so the next turn starts clean
    end_token_id: int | None  # END as a single token, if the tokenizer has it


def stop_conventions(tokenizer: Any, extra_stop_strings: Sequence[str] = ()) -> StopConventions:
    ids, strings = set(), list(ANSWER_STOP_STRINGS)
    for marker in ANSWER_STOP_MARKERS:
        tid = marker_token_id(tokenizer, marker)
        if tid is not None:
            ids.add(tid)
        else:  # not a special token: it shows up as text
            strings.append(marker)
    for s in extra_stop_strings:
        if s and s not in strings:
            strings.append(s)
    return StopConventions(frozenset(ids), tuple(strings), tuple(marker_ids(tokenizer, END)),
                           marker_token_id(tokenizer, END))


# -- the layout --------------------------------------------------------------------------------
class _Builder:
    def __init__(self, tokenizer: Any, max_chunk: int):
        self.tok = tokenizer
        self.max_chunk = max_chunk
        self.ids: list[int] = []
        self.lengths: list[int] = []
        self.kinds: list[str] = []
        self.passage_index: list[int | None] = []
        self.segment_end: list[bool] = []

    def chunk(self, ids: list[int], kind: str, passage: int | None = None, end: bool = True) -> None:
        if not ids:
            return
        self.ids.extend(ids)
        self.lengths.append(len(ids))
        self.kinds.append(kind)
        self.passage_index.append(passage)
        self.segment_end.append(end)

    def segment(self, head: list[int], pieces: list[list[int]], kind: str, passage: int | None = None) -> None:
        """One logical segment (head + pieces), split into chunks of at most max_chunk at piece ends."""
        chunks: list[list[int]] = []
        cur = list(head)
        for piece in pieces:
            if len(cur) + len(piece) <= self.max_chunk:
                cur.extend(piece)
                continue
            if cur:
                chunks.append(cur)
            cur = []
            for i in range(0, len(piece), self.max_chunk):  # a piece longer than a chunk: hard cut
                part = piece[i : i + self.max_chunk]
                if len(part) == self.max_chunk:
                    chunks.append(part)
                else:
                    cur = list(part)
        if cur:
            chunks.append(cur)
        for j, c in enumerate(chunks):
            self.chunk(c, kind, passage, end=j == len(chunks) - 1)


def encode_turn(tokenizer: Any, question: str, passages: Sequence[Any] = (), layout: str = DEFAULT_LAYOUT,
                max_chunk: int = DEFAULT_MAX_CHUNK, instructions: str | None = None,
                answer: str | None = None) -> TurnTokens:
    """Lay out one turn. ``passages`` are best first (as retrieved): str, PassageText, or any
    object with ``.text`` and optionally ``.title`` (e.g. retrieval.SearchHit).

    ``instructions`` (first turn of a session) become a leading system chunk. With ``answer``
    the answer and the end marker are appended as a target chunk (training); without it
    the ids end with the answer marker, ready for the decoder.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {LAYOUTS}")
    if max_chunk < 16:
        raise ValueError(f"max_chunk must be at least 16 tokens, got {max_chunk}")
    b = _Builder(tokenizer, max_chunk)
    enc = lambda text: encode_text(tokenizer, text)  # noqa: E731
    if instructions and instructions.strip():
        b.segment(marker_ids(tokenizer, SYSTEM), [enc(p) for p in sentence_pieces(neutralize(instructions.strip())
                                                                                  + "\n")], SYSTEM_CHUNK)
    q_pieces = [enc(p) for p in sentence_pieces(neutralize(question.strip()) + "\n")]
    q_head = marker_ids(tokenizer, QUESTION)

    order = list(range(len(passages)))
    if layout in ("qpq", "pq"):
        order.reverse()  # most relevant last
    if layout == "qpq":
        b.segment(q_head, q_pieces, QUESTION_CHUNK)
    for i in order:
        p = passages[i]
        text = p if isinstance(p, str) else p.text
        title = None if isinstance(p, str) else getattr(p, "title", None)
        head = marker_ids(tokenizer, PASSAGE)
        if title and title.strip():
            head += enc(neutralize(" ".join(title.split())))[: min(MAX_TITLE_TOKENS, max_chunk // 4)] + enc("\n")
        body = neutralize(text.strip()) + "\n"
        b.segment(head, [enc(piece) for piece in sentence_pieces(body)], PASSAGE_CHUNK, passage=i)
    # The final question chunk carries the answer marker: the decoder continues right after it.
    b.segment(q_head, q_pieces + [marker_ids(tokenizer, ANSWER)], PROMPT_END_CHUNK)
    prompt_length = len(b.ids)
    if answer is not None:
        b.chunk(enc(neutralize(answer.strip())) + marker_ids(tokenizer, END), TARGET_CHUNK)
    return TurnTokens(b.ids, b.lengths, b.kinds, b.passage_index, b.segment_end, prompt_length, layout, order)


def render_turn(question: str, passages: Sequence[Any] = (), layout: str = DEFAULT_LAYOUT,
                instructions: str | None = None, answer: str | None = None) -> str:
    """The turn as text (markers written out), for reading and debugging. Tokenising this text
    with a tokenizer that has the markers gives the same tokens as ``encode_turn`` up to how
    byte-level BPE merges across piece boundaries."""

    class _Chars:
        def encode(self, text, add_special_tokens=False):
            return list(text)

        def token_to_id(self, marker):
            return marker

    turn = encode_turn(_Chars(), question, passages, layout, 10**9, instructions, answer)
    return "".join(turn.ids)


# -- chat histories ----------------------------------------------------------------------------
def split_marked_text(text: str) -> list[tuple[str, str]]:
    """Parse text that writes markers out (e.g. a LangChain prompt built with ``format_passages``)
    into ``(role, text)`` messages: ``<|system|>`` -> system, ``<|passage|>`` -> passage,
    ``<|question|>`` -> user, ``<|answer|>`` -> assistant (up to ``<|endoftext|>``).
    Text before the first marker is a user message if it is all there is, else a system one."""
    pattern = re.compile("|".join(re.escape(m) for m in (*_ROLE_OF_MARKER, END)))
    out: list[tuple[str, str]] = []
    pos, role = 0, None
    for m in pattern.finditer(text):
        chunk = text[pos : m.start()]
        if role is None:
            if chunk.strip():
                out.append(("lead", chunk))
        elif role != "end" and (chunk.strip() or role == "assistant"):
            out.append((role, chunk))
        role = _ROLE_OF_MARKER.get(m.group(), "end")
        pos = m.end()
    tail = text[pos:]
    if role is None:
        return [("user", tail)] if tail.strip() else []
    if role != "end" and (tail.strip() or role == "assistant"):
        out.append((role, tail))
    return [("system" if r == "lead" else r, t) for r, t in out]


def encode_messages(tokenizer: Any, messages: Sequence[tuple[str, str]], max_chunk: int = DEFAULT_MAX_CHUNK,
                    add_answer_marker: bool = True) -> TurnTokens:
    """Lay out a chat history with the same markers as ``encode_turn``.

    Roles: "system", "passage", "user" (a question), "assistant" (an earlier answer, read
    as ``<|answer|>text<|endoftext|>``). The result ends with the answer marker, ready for
    the decoder (unless ``add_answer_marker=False`` or the history already ends with an
    open answer). One user message gives the tokens of ``encode_turn(question, layout="pq")``.
    """
    if max_chunk < 16:
        raise ValueError(f"max_chunk must be at least 16 tokens, got {max_chunk}")
    b = _Builder(tokenizer, max_chunk)
    enc = lambda text: encode_text(tokenizer, text)  # noqa: E731
    answer = marker_ids(tokenizer, ANSWER)
    n = len(messages)
    open_answer = False  # the ids end with an answer marker that no answer follows yet
    for i, (role, text) in enumerate(messages):
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; choose one of {ROLES}")
        body = neutralize(text.strip())
        nxt = messages[i + 1][0] if i + 1 < n else None
        if role == "assistant":
            if i == n - 1 and not body:  # an open answer at the end: the model writes it
                if not open_answer:
                    b.chunk(answer, PROMPT_END_CHUNK)
                open_answer = True
                continue
            b.segment([] if open_answer else answer, [enc(p) for p in sentence_pieces(body)]
                      + [marker_ids(tokenizer, END)], ANSWER_CHUNK)
            open_answer = False
        elif role == "user":
            pieces = [enc(p) for p in sentence_pieces(body + "\n")]
            open_answer = nxt == "assistant" or (nxt is None and add_answer_marker)
            b.segment(marker_ids(tokenizer, QUESTION), pieces + ([answer] if open_answer else []),
                      PROMPT_END_CHUNK if nxt is None else QUESTION_CHUNK)
        elif body:
            marker, kind = (SYSTEM, SYSTEM_CHUNK) if role == "system" else (PASSAGE, PASSAGE_CHUNK)
            b.segment(marker_ids(tokenizer, marker), [enc(p) for p in sentence_pieces(body + "\n")], kind)
            open_answer = False
    if add_answer_marker and not open_answer:
        b.chunk(answer, PROMPT_END_CHUNK)
    return TurnTokens(b.ids, b.lengths, b.kinds, b.passage_index, b.segment_end, len(b.ids), "messages")
