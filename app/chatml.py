"""The ChatML prompt format, for readers converted from chat Transformers (SmolLM2: see issue 12).

The reading turns the converted reader was fine-tuned on are this exact text
(training/uptrain_data.py and training/reading_data.py build them with the functions here)::

    <|im_start|>system\\n{instructions}<|im_end|>\\n            first turn of a session only
    <|im_start|>user\\nPassages:\\n[1] {passage}\\n\\n[2] {passage}\\n\\nQuestion: {question}<|im_end|>\\n
    <|im_start|>assistant\\n{answer}<|im_end|>\\n

Passages come most relevant last (nearest the question). A turn is tokenised as ONE text, so its
tokens are exactly those of training; chunks are then cut where passages start (a token belongs
to the chunk its first character is in), and a long passage is cut at sentence ends into chunks of
at most ``max_chunk`` tokens. Document and user text is neutralised (``<|im_end|>`` in a document
becomes ``< |im_end|>``) so it can never close a message.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .prompt import (
    PASSAGE_CHUNK,
    PROMPT_END_CHUNK,
    QUESTION_CHUNK,
    SYSTEM_CHUNK,
    TARGET_CHUNK,
    StopConventions,
    TurnTokens,
    neutralize,
    sentence_pieces,
)

IM_START, IM_END, ENDOFTEXT = "<|im_start|>", "<|im_end|>", "<|endoftext|>"
LAYOUT = "chatml"
CHAT_SYSTEM = "Answer the question using only the passages below. Quote the passage when you can."


def is_chat_tokenizer(tokenizer: Any) -> bool:
    """True for a tokenizer with ChatML's message tokens (and so a model trained on ChatML)."""
    token_to_id = getattr(tokenizer, "token_to_id", None)
    return token_to_id is not None and token_to_id(IM_START) is not None and token_to_id(IM_END) is not None


def passages_text(passages: Sequence[str]) -> str:
    """The ``Passages:`` block's body: numbered passages separated by blank lines, in the order given."""
    return "\n\n".join(f"[{i + 1}] {neutralize(p.strip())}" for i, p in enumerate(passages))


def user_message(question: str, passages: Sequence[str]) -> str:
    return f"Passages:\n{passages_text(passages)}\n\nQuestion: {neutralize(question.strip())}"


def render_chat_turn(question: str, passages: Sequence[str], *, system: str | None = CHAT_SYSTEM,
                     answer: str | None = None) -> str:
    """One reading turn as text (passages in the order given). ``system=None``: a later turn."""
    head = f"{IM_START}system\n{neutralize(system.strip())}{IM_END}\n" if system else ""
    turn = f"{head}{IM_START}user\n{user_message(question, passages)}{IM_END}\n{IM_START}assistant\n"
    return turn if answer is None else f"{turn}{neutralize(answer.strip())}{IM_END}\n"


def _text_of(p: Any) -> str:
    return p if isinstance(p, str) else p.text


def encode_chat_turn(tokenizer: Any, question: str, passages: Sequence[Any] = (), max_chunk: int = 256, *,
                     instructions: str | None = None, first_turn: bool = True,
                     answer: str | None = None) -> TurnTokens:
    """Lay out one turn (passages best first, as retrieved). ``first_turn`` adds the system message
    (``instructions``, default CHAT_SYSTEM); with ``answer`` the answer and ``<|im_end|>`` are the target."""
    if max_chunk < 16:
        raise ValueError(f"max_chunk must be at least 16 tokens, got {max_chunk}")
    order = list(range(len(passages)))[::-1]  # most relevant last
    system = (instructions or CHAT_SYSTEM) if first_turn else None
    # Segments as (text, kind, passage index); their concatenation is render_chat_turn's text.
    segments: list[tuple[str, str, int | None]] = []
    if system:
        segments.append((f"{IM_START}system\n{neutralize(system.strip())}{IM_END}\n", SYSTEM_CHUNK, None))
    segments.append((f"{IM_START}user\nPassages:\n", QUESTION_CHUNK, None))
    for n, i in enumerate(order):
        sep = "\n\n" if n else ""
        segments.append((f"{sep}[{n + 1}] {neutralize(_text_of(passages[i]).strip())}", PASSAGE_CHUNK, i))
    segments.append((f"\n\nQuestion: {neutralize(question.strip())}{IM_END}\n{IM_START}assistant\n",
                     PROMPT_END_CHUNK, None))
    if answer is not None:
        segments.append((f"{neutralize(answer.strip())}{IM_END}\n", TARGET_CHUNK, None))
    return _chunked(tokenizer, segments, max_chunk, order)


def _chunked(tokenizer: Any, segments: list[tuple[str, str, int | None]], max_chunk: int,
             order: list[int]) -> TurnTokens:
    text = "".join(s for s, _, _ in segments)
    enc = tokenizer.encode(text, add_special_tokens=False)
    ids, offsets = list(enc.ids), [start for start, _ in enc.offsets]
    # Character positions where a new chunk may start: segment starts, and sentence ends inside passages.
    seg_starts, cuts, pos = [], [], 0
    for s, kind, _ in segments:
        seg_starts.append(pos)
        if kind == PASSAGE_CHUNK:
            inner = pos
            for piece in sentence_pieces(s)[:-1]:
                inner += len(piece)
                cuts.append(inner)
        pos += len(s)
    out_ids, lengths, kinds, pidx, seg_end = [], [], [], [], []
    prompt_length = 0
    t = 0
    for j, (s, kind, p) in enumerate(segments):
        end_char = seg_starts[j] + len(s)
        start_t = t
        while t < len(ids) and (offsets[t] < end_char or j == len(segments) - 1):
            t += 1
        seg_ids = ids[start_t:t]
        seg_offsets = offsets[start_t:t]
        inner = [c for c in cuts if seg_starts[j] < c < end_char]
        pieces = _split(seg_ids, seg_offsets, inner, max_chunk)
        for k, piece in enumerate(pieces):
            out_ids.extend(piece)
            lengths.append(len(piece))
            kinds.append(kind)
            pidx.append(p)
            seg_end.append(k == len(pieces) - 1)
        if kind != TARGET_CHUNK:
            prompt_length = len(out_ids)
    return TurnTokens(out_ids, lengths, kinds, pidx, seg_end, prompt_length, LAYOUT, order)


def _split(ids: list[int], offsets: list[int], cuts: list[int], max_chunk: int) -> list[list[int]]:
    """Cut a segment's tokens into chunks of at most max_chunk, preferring the sentence ends in ``cuts``."""
    if len(ids) <= max_chunk:
        return [ids] if ids else []
    cut_set = set(cuts)
    allowed = {i for i, off in enumerate(offsets) if off in cut_set}
    chunks, start = [], 0
    while len(ids) - start > max_chunk:
        stop = max((i for i in allowed if start < i <= start + max_chunk), default=start + max_chunk)
        chunks.append(ids[start:stop])
        start = stop
    chunks.append(ids[start:])
    return chunks


def chat_stop_conventions(tokenizer: Any, extra_stop_strings: Sequence[str] = ()) -> StopConventions:
    """An answer ends at ``<|im_end|>`` (or a new message, or end of text); ``<|im_end|>\\n`` is read
    after every answer so the next turn starts with a fresh ``<|im_start|>``."""
    ids = {tokenizer.token_to_id(t) for t in (IM_END, IM_START, ENDOFTEXT)} - {None}
    end = tokenizer.encode(f"{IM_END}\n", add_special_tokens=False).ids
    strings = tuple(s for s in dict.fromkeys(extra_stop_strings) if s)
    return StopConventions(frozenset(ids), strings, tuple(end), tokenizer.token_to_id(IM_END))
