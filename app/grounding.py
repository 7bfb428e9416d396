"""Grounded answers: generation restricted to spans of the passages the turn read.

With ``AnswerOptions.grounded`` the decoder masks the logits before every sampling step
(``Grounding`` is a logits processor of ``retnet.generation.DecodeLoop``) so that the answer
is a quote: its first token may start wherever a word starts in any passage, and every
later token must continue the passage token sequence from where the quote stands. All
passages holding the quote so far stay candidates (a set of positions, advanced in step:
a suffix automaton would do the same in less memory, but a turn reads a few thousand tokens).
Quotes start where a word starts (after whitespace or an opening bracket, so "-r" is quoted
whole) and end where one ends, never inside a character split over tokens: the end marker is
allowed wherever the quote could end; at the end of a passage it is the only choice, so the
answer ends there. ``grounded_min_tokens`` makes quotes at least that long, and a quote of
blanks never ends.

``grounded_free_tokens`` > 0 allows that many tokens outside quotes (connective text: "Use",
"It is"); a token that starts a new quote is read as one, any other is free. With 0 the
answer is one verbatim span.

The passages' token ids are those ``app.prompt`` laid out: the same ``neutralize``,
``sentence_pieces`` and per-piece encoding, so a passage split into several chunks is still
one token sequence here. (The ChatML layout, app.chatml, tokenises the whole turn as one text;
there the passage tokenised alone may differ from what was read at its first token. The
constraint is on text, so quotes are verbatim either way.) Token spans map back to character
offsets exactly through each token's bytes (a character split over tokens is never a quote
boundary).

Refusal (``AnswerOptions.refuse``): the answer is replaced by ``REFUSAL``, the one refusal
sentence (the dev-set scorer and the training data use it too), when its score is below
``refusal_threshold`` (default: ``REFUSAL_THRESHOLDS``, calibrated on the dev set). ``refusal_score``
picks the score:

- ``"evidence"`` (default): app.evidence's probability that the passages answer the question, from
  "support" (below) and the embedder's cosine of the question and the closest retrieved sentence;
  decided before decoding. Where the collection's embedder has no calibration (or the caller gives no
  scorer), the "support" gate at its own threshold decides instead. On the dev set it refuses about
  half of the unanswerable questions at 10% false refusals, "support" alone 17-43%
  (benchmarks/results/refusal_signals.md);
- ``"support"``: the share of the question's content terms (``app.retrieve.terms``)
  found in the passages read, decided before decoding, so streaming is unchanged. On the dev set
  (benchmarks/results/grounded_dev.md) it separates unanswerable from answerable questions about
  as well as the retrieval score, and unlike that score it does not change scale with the retriever
  (cosine, re-ranked cosine, reciprocal-rank fusion);
- ``"logprob"``: the mean log-probability, under the model's own (unmasked) distribution, of the
  tokens the answer quoted; known only at the end, so the answer's pieces are held until then.
  The bundled model is as confident in quotes for unanswerable questions as for answerable ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch
from torch import Tensor

from . import prompt as L
from .prompt import REFUSAL, is_refusal
from .types import Quote, Source

__all__ = ["REFUSAL", "REFUSAL_SCORES", "REFUSAL_THRESHOLDS", "Grounding", "PassageTokens", "is_refusal",
           "passage_tokens", "passages_from_turn", "support"]
REFUSAL_SCORES = ("evidence", "support", "logprob")
# Calibrated on the dev set: the highest refusal recall with at most 10% false refusals ("support" and
# "logprob" with the bundled model, benchmarks/grounded_dev.py; "evidence", a probability, by
# benchmarks/refusal_signals.py for app.evidence's calibration).
REFUSAL_THRESHOLDS = {"evidence": 0.706, "support": 0.625, "logprob": -7.26}


def support(question: str, sources: Sequence[Any]) -> float:
    """The share of the question's content terms that occur (as substrings, any case: "file" finds
    "files"; see ``_found`` for dotted names) in the passages' text; 1.0 for a question with no content
    terms."""
    from .retrieve import terms

    wanted = terms(question)
    if not wanted:
        return 1.0
    text = "\n".join(getattr(s, "text", s) for s in sources).lower()
    return sum(_found(t, text) for t in wanted) / len(wanted)


def _found(term: str, text: str) -> bool:
    """``term`` occurs in ``text``; a dotted name also by its last two or more parts: API references
    write "zlib.Compress.copy" as "Compress.copy()" in the class's section."""
    if term in text:
        return True
    parts = term.split(".")
    return any(".".join(parts[i:]) in text for i in range(1, len(parts) - 1))


_OPENERS = "([{<\"'`\u201c\u2018"


@lru_cache(maxsize=1)
def _byte_of_char() -> dict[str, int]:
    """Byte-level BPE's printable alphabet (GPT-2's bytes_to_unicode), inverted: character -> byte."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("\xa1"), ord("\xac") + 1), *range(ord("\xae"), 256)]
    chars, n = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + n)
            n += 1
    return {c: b for b, c in chars.items()}


def _token_bytes(tokenizer: Any, ids: Sequence[int]) -> list[bytes]:
    """Each token's bytes: from its byte-level alphabet string, else from decoding it alone."""
    table = _byte_of_char()
    out = []
    id_to_token = getattr(tokenizer, "id_to_token", None)
    for i in ids:
        tok = id_to_token(i) if id_to_token is not None else None
        if tok is not None and all(c in table for c in tok):
            out.append(bytes(table[c] for c in tok))
        else:
            out.append(tokenizer.decode([i]).encode("utf-8"))
    return out


def _whole_characters(tokenizer: Any) -> Tensor:
    """Tokens that are whole UTF-8 characters: free text made of them never leaves a character
    half-written before a quote starts, so quotes stay aligned with the decoded text."""
    n = tokenizer.get_vocab_size() if hasattr(tokenizer, "get_vocab_size") else len(tokenizer)
    mask = torch.zeros(n, dtype=torch.bool)
    for i, b in enumerate(_token_bytes(tokenizer, range(n))):
        try:
            mask[i] = bool(b.decode("utf-8"))
        except UnicodeDecodeError:
            pass
    return mask


@dataclass
class PassageTokens:
    """One passage as the model read it: its body's token ids and where each token starts.

    ``body_at[k]`` is the character offset in the laid-out body (``neutralize(text.strip()) + "\\n"``)
    where token k starts (``k == len(ids)``: the end), or -1 when it starts inside a character;
    ``orig_at[c]`` maps a body offset to an offset in ``source.text``; ``boundary[k]``: a quote may
    end before token k (a character boundary not inside a word); ``start[k]``: a quote may start at
    token k (its text starts after whitespace or an opening bracket or quote, so "-r" is quoted whole;
    byte-level BPE tokens often start with the space itself); ``text[k]``: token k is not all whitespace.
    """

    source: Source
    ids: list[int]
    body_at: list[int]
    orig_at: list[int]
    body: str
    boundary: list[bool]
    start: list[bool]
    text: list[bool]


def passage_tokens(tokenizer: Any, source: Source) -> PassageTokens | None:
    """The passage's tokens exactly as ``app.prompt.encode_turn`` lays them out (None if the tokenizer's
    tokens cannot be mapped back to the text byte for byte)."""
    text = source.text
    stripped = text.strip()
    lead = len(text) - len(text.lstrip())
    neutral = L.neutralize(stripped)
    body = neutral + "\n"
    # neutralize only inserts characters ("<|" -> "< |"): align greedily to map body offsets back.
    orig_at, i = [], 0
    for ch in neutral:
        orig_at.append(lead + i)
        if i < len(stripped) and stripped[i] == ch:
            i += 1
    orig_at += [lead + len(stripped)] * 2  # the trailing newline and the end
    ids = [t for piece in L.sentence_pieces(body) for t in L.encode_text(tokenizer, piece)]
    pieces = _token_bytes(tokenizer, ids)
    raw = body.encode("utf-8")
    if b"".join(pieces) != raw:
        return None
    char_at_byte, b = {}, 0
    for c, ch in enumerate(body):
        char_at_byte[b] = c
        b += len(ch.encode("utf-8"))
    char_at_byte[b] = len(body)
    body_at, b = [], 0
    for p in pieces:
        body_at.append(char_at_byte.get(b, -1))
        b += len(p)
    body_at.append(len(body))
    word = [ch.isalnum() or ch == "_" for ch in body] + [False]
    boundary = [c >= 0 and not (c > 0 and word[c - 1] and word[c]) for c in body_at]
    start = [ok and (c == 0 or body[c].isspace() or body[c - 1].isspace() or body[c - 1] in _OPENERS)
             for ok, c in zip(boundary[:-1], body_at[:-1], strict=True)]
    text = [not p.isspace() for p in pieces]  # bytes.isspace: ASCII whitespace; a split character counts as text
    return PassageTokens(source, ids, body_at, orig_at, body, boundary, start, text)


def passages_from_turn(tokenizer: Any, turn: L.TurnTokens) -> list[Source]:
    """The passages of a laid-out turn (e.g. LangChain's message history) as Sources numbered in the
    order they were read, text decoded from their tokens (title line included when there is one)."""
    out: list[Source] = []
    marker = L.marker_ids(tokenizer, L.PASSAGE)
    ids: list[int] = []
    for (lo, hi), kind, end in zip(turn.chunk_spans(), turn.kinds, turn.segment_end, strict=True):
        if kind != L.PASSAGE_CHUNK:
            continue
        ids += turn.ids[lo:hi]
        if end:
            body = ids[len(marker):] if ids[: len(marker)] == marker else ids
            text = tokenizer.decode(body)
            out.append(Source(len(out) + 1, f"passage {len(out) + 1}", "", None, text.strip(), 0.0, ""))
            ids = []
    return out


class Grounding:
    """The decode-time constraint and its bookkeeping, for one answer.

    Call it as a logits processor (``DecodeLoop(..., logits_processor=grounding)``); after each
    sampled token call ``step(token, raw_len)`` with the length of the answer text decoded before
    that token; at the end ``quotes(raw_text)`` gives the quoted spans as ``Quote`` records.
    """

    def __init__(self, passages: Sequence[PassageTokens], end_id: int | None, banned: Sequence[int] = (),
                 free_tokens: int = 0, min_tokens: int = 1, free_vocab: Tensor | None = None):
        if not passages:
            raise ValueError("grounding needs at least one passage")
        self.passages = list(passages)
        seq, owner, index, boundary, start, text = [], [], [], [], [], []
        for pi, p in enumerate(self.passages):  # best passage first: the lowest position wins ties
            for j, t in enumerate(p.ids):
                seq.append(t)
                owner.append(pi)
                index.append(j)
                boundary.append(p.boundary[j])
                start.append(p.start[j])
                text.append(p.text[j])
            seq.append(-1)  # the passage's end: nothing continues a quote past it
            owner.append(pi)
            index.append(len(p.ids))
            boundary.append(True)
            start.append(False)
            text.append(False)
        self.seq = torch.tensor(seq, dtype=torch.long)
        self.owner, self.index = owner, index
        self.boundary = torch.tensor(boundary, dtype=torch.bool)
        self.starts = torch.nonzero(torch.tensor(start, dtype=torch.bool)).squeeze(1)
        self.text = text  # a token with something other than whitespace
        self._has_text = False  # the open quote shows something (a quote of blanks may not end)
        self.end_id = end_id
        self.banned = torch.tensor([b for b in banned if b != end_id], dtype=torch.long)
        self.free_left = free_tokens
        self.free_vocab = free_vocab  # tokens allowed as free text (None: all)
        self.min_tokens = min_tokens  # a quote may end (or give way to free text) only after this many tokens
        self.active: Tensor | None = None  # positions of the token that would continue the open quote
        self._logps: list[float] = []  # the open quote's tokens' log-probabilities
        self._raw_start = 0
        self._spans: list[tuple[int, int, int, float, int, int]] = []  # passage, token a, b, score, raw lo, raw hi
        self._logp: Tensor | None = None

    @classmethod
    def for_sources(cls, tokenizer: Any, sources: Sequence[Source], end_id: int | None, banned: Sequence[int] = (),
                    free_tokens: int = 0, min_tokens: int = 1) -> Grounding | None:
        """A Grounding over the sources' passages, or None when none can be quoted."""
        passages = [p for p in (passage_tokens(tokenizer, s) for s in sources) if p is not None and p.ids]
        if not passages:
            return None
        free_vocab = _whole_characters(tokenizer) if free_tokens else None
        return cls(passages, end_id, banned, free_tokens, min_tokens, free_vocab)

    # -- the constraint ----------------------------------------------------------------------
    def allowed(self, vocab_size: int) -> Tensor:
        """The tokens allowed next, as a mask [vocab_size]."""
        mask = torch.zeros(vocab_size, dtype=torch.bool)
        can_end = bool(self._spans)
        if self.active is None:
            mask[self.seq[self.starts]] = True
            free = self.free_left > 0
        else:
            nxt = self.seq[self.active]
            mask[nxt[nxt >= 0]] = True
            # candidates quoted the same bytes but differ in what follows: one at a boundary is enough
            at_boundary = (bool(self.boundary[self.active].any()) and len(self._logps) >= self.min_tokens
                           and self._has_text)
            can_end = at_boundary or not mask.any()
            free = at_boundary and self.free_left > 0
        if free:
            if self.free_vocab is None:
                mask[:] = True
            else:
                n = min(vocab_size, self.free_vocab.numel())
                mask[:n] |= self.free_vocab[:n]
            if self.banned.numel():
                mask[self.banned] = False
        if self.end_id is not None and self.end_id < vocab_size:
            mask[self.end_id] = can_end or not mask.any()
        return mask

    def __call__(self, logits: Tensor, generated: Tensor) -> Tensor:
        self._logp = torch.log_softmax(logits[0].float(), dim=-1)
        mask = self.allowed(logits.shape[-1]).to(logits.device)
        return logits.masked_fill(~mask, float("-inf"))

    @property
    def done(self) -> bool:
        """True when only the end marker could follow (a quote reached its passage's end, no free tokens)."""
        return (self.active is not None and self.free_left <= 0 and bool((self.seq[self.active] < 0).all()))

    def step(self, token: int, raw_len: int) -> str:
        """Account for a sampled token; returns "quote" (it starts or continues one), "end" or "free"."""
        logp = float(self._logp[token]) if self._logp is not None and token < self._logp.numel() else 0.0
        self._logp = None
        if self.active is not None:
            hit = self.active[self.seq[self.active] == token]
            if hit.numel():
                self._has_text |= self.text[int(hit[0])]
                self.active = hit + 1
                self._logps.append(logp)
                return "quote"
            self._close(raw_len)
        else:
            hit = self.starts[self.seq[self.starts] == token]
            if hit.numel():
                self._has_text = self.text[int(hit[0])]
                self.active = hit + 1
                self._logps = [logp]
                self._raw_start = raw_len
                return "quote"
        if token == self.end_id:
            return "end"
        self.free_left -= 1
        return "free"

    def _close(self, raw_len: int) -> None:
        if self.active is None:
            return
        ends = self.active[self.boundary[self.active]]  # where the quote ends on a boundary, if anywhere
        end = int((ends if ends.numel() else self.active).min())  # best-ranked passage, earliest place in it
        n = len(self._logps)
        pi = self.owner[end]
        self._spans.append((pi, self.index[end] - n, self.index[end], sum(self._logps) / n, self._raw_start,
                            raw_len))
        self.active, self._logps = None, []

    # -- results -----------------------------------------------------------------------------
    def quotes(self, raw_text: str) -> list[Quote]:
        """The quoted spans, given the answer's decoded text (cut at a stop string, a character split
        at the very end dropped: the quote ends where the text does)."""
        self._close(len(raw_text))
        out = []
        for pi, a, _b, score, lo, hi in self._spans:
            p = self.passages[pi]
            hi = min(hi, len(raw_text))
            if hi <= lo:
                continue
            c0 = p.body_at[a]
            c1 = c0 + (hi - lo)  # the decoded text is the body's text from c0 on, character for character
            s, e = p.orig_at[c0], p.orig_at[min(c1, len(p.body))]
            text = p.source.text
            while s < e and text[s].isspace():
                s += 1
            while e > s and text[e - 1].isspace():
                e -= 1
            if e > s:
                out.append(Quote(p.source, s, e, text[s:e], score, _b - a))
        return out

    def score(self) -> float | None:
        """Mean log-probability of all quoted tokens (None when nothing was quoted)."""
        n = sum(sp[2] - sp[1] for sp in self._spans)
        if not n:
            return None
        return sum(sp[3] * (sp[2] - sp[1]) for sp in self._spans) / n
