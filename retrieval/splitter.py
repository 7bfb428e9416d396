"""Documents -> passages that fit a token budget, cut at natural boundaries.

Each page is split on its own, so a passage never spans two pages and its page number
is exact. Within a page, text is cut at the coarsest boundary that works: paragraphs
(blank lines) first, then sentences, then line breaks, then words, and as a last
resort inside a very long word. Passages are packed greedily from sentences; when a
whole paragraph does not fit and the passage is already at least half full, the passage
ends at the paragraph break instead of starting the paragraph.

With ``overlap > 0`` a passage begins with the last sentences (up to ``overlap`` tokens)
of the previous one. Overlap counts against the budget, so passages never grow; by default it
is 15% of the budget (``DEFAULT_OVERLAP_SHARE``): a sentence or option block that ends one
passage also opens the next, where the embedder sees it near the start (all-MiniLM-L6-v2
reads 256 word pieces, and two thirds of 200-token passages are longer than that). Dev set
(benchmarks/results/retrieval_dev.md): hybrid recall@4 of single-passage questions 0.852 -> 0.890
with the title context; chosen on the even question ids, where 30 tokens (0.895) beat 0 (0.848)
and 50 (0.886).

Invariants (tested with hypothesis): ``doc.text[p.start:p.end] == p.text``; every
passage has ``count_tokens(p.text) <= max_tokens`` unless a single character exceeds it;
every non-space character of the document lies in some passage; passages never start
or end with whitespace.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .tokens import TokenCounter, token_counter
from .types import Document, Passage

DEFAULT_MAX_TOKENS = 200
DEFAULT_OVERLAP_SHARE = 0.15  # of max_tokens, when no overlap is given

_PARAGRAPH = re.compile(r"\n[^\S\n]*\n\s*")
# Sentence end: punctuation, optional closing quotes/brackets, then whitespace (cut);
# CJK full stops need no whitespace after them.
_SENTENCE = re.compile(r"[.!?\u2026]+[\"'\u201d\u2019)\]]*(\s+)|[\u3002\uff01\uff1f]+(\s*)")
_LINE = re.compile(r"\s*\n\s*")
_WORD = re.compile(r"\s+")
_SUB_SENTENCE = (_LINE, _WORD)
_NON_SPACE = re.compile(r"\S")


class _Unit(NamedTuple):
    start: int
    end: int
    tokens: int
    paragraph: bool = False  # a whole paragraph, cut into sentences only when needed


@dataclass(frozen=True)
class Splitter:
    """Splits documents into passages of at most ``max_tokens`` tokens.

    ``overlap``: tokens of the previous passage repeated at the start of the next; None means
    ``DEFAULT_OVERLAP_SHARE`` of ``max_tokens``. ``tokenizer`` is anything ``token_counter``
    accepts: None for the word-count fallback, a ``count(text) -> int`` callable, or a tokenizer
    with ``encode``.
    """

    max_tokens: int = DEFAULT_MAX_TOKENS
    overlap: int | None = None
    tokenizer: Any = None
    _count: TokenCounter = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError("max_tokens must be >= 1")
        if self.overlap is None:
            object.__setattr__(self, "overlap", int(self.max_tokens * DEFAULT_OVERLAP_SHARE))
        if not 0 <= self.overlap < self.max_tokens:
            raise ValueError("overlap must be >= 0 and < max_tokens")
        object.__setattr__(self, "_count", token_counter(self.tokenizer))

    def count_tokens(self, text: str) -> int:
        return self._count(text)

    def split(self, doc: Document) -> list[Passage]:
        return list(self.iter_passages(doc))

    def iter_passages(self, doc: Document) -> Iterator[Passage]:
        position = 0
        for page in doc.pages:
            for start, end, tokens in self.spans(doc.text, page.start, page.end):
                yield Passage(doc.id, position, doc.text[start:end], start, end, page.number, tokens)
                position += 1

    def spans(self, text: str, start: int = 0, end: int | None = None) -> Iterator[tuple[int, int, int]]:
        """``(start, end, tokens)`` of each passage of ``text[start:end]``."""
        end = len(text) if end is None else end
        count = self._count
        # Most paragraphs go into a passage whole, so they are counted once and only cut
        # into sentences when they do not fit (or a sentence tail is needed for overlap).
        paragraphs = (_Unit(s, e, count(text[s:e]), True) for s, e in _pieces(text, start, end, _PARAGRAPH))

        def sentences(paragraph: _Unit) -> list[_Unit]:
            return self._sentence_units(text, paragraph.start, paragraph.end)

        return _pack(text, paragraphs, self.max_tokens, self.overlap, count, sentences)

    def _sentence_units(self, text: str, start: int, end: int) -> list[_Unit]:
        units: list[_Unit] = []
        budget, count = self.max_tokens, self._count
        for s, e in _pieces(text, start, end, _SENTENCE):
            tokens = count(text[s:e])
            if tokens <= budget:
                units.append(_Unit(s, e, tokens))
            else:
                units.extend(_fit(text, s, e, budget, count, 0))
        return units


def split_document(
    doc: Document, max_tokens: int = DEFAULT_MAX_TOKENS, overlap: int | None = None, tokenizer: Any = None
) -> list[Passage]:
    """Convenience wrapper: ``Splitter(max_tokens, overlap, tokenizer).split(doc)``."""
    return Splitter(max_tokens, overlap, tokenizer).split(doc)


def _pieces(text: str, start: int, end: int, pattern: re.Pattern) -> list[tuple[int, int]]:
    """Non-blank spans of ``text[start:end]`` between the cut regions ``pattern`` finds.

    The cut is the last group that matched (the whitespace after a sentence end), or the
    whole match for patterns without groups. An empty cut (after CJK punctuation) sits
    at the end of the match.
    """
    out: list[tuple[int, int]] = []
    pos = start
    for m in pattern.finditer(text, start, end):
        group = m.lastindex or 0
        cut_start, cut_end = m.span(group)
        if cut_start == cut_end:
            cut_start = cut_end = m.end()
        if cut_start > pos:
            _add_stripped(text, pos, cut_start, out)
        pos = cut_end
    if end > pos:
        _add_stripped(text, pos, end, out)
    return out


def _add_stripped(text: str, start: int, end: int, out: list[tuple[int, int]]) -> None:
    if text[start].isspace():
        m = _NON_SPACE.search(text, start, end)
        if m is None:
            return
        start = m.start()
    while text[end - 1].isspace():
        end -= 1
    out.append((start, end))


def _fit(text: str, start: int, end: int, budget: int, count: TokenCounter, level: int) -> list[_Unit]:
    """Cut ``text[start:end]`` into units within budget, at line breaks, then words, then chars."""
    tokens = count(text[start:end])
    if tokens <= budget:
        return [_Unit(start, end, tokens)]
    if level >= len(_SUB_SENTENCE):
        return _hard_split(text, start, end, budget, count)
    pieces = _pieces(text, start, end, _SUB_SENTENCE[level])
    if len(pieces) <= 1:
        return _fit(text, start, end, budget, count, level + 1)
    return _merge(text, [u for s, e in pieces for u in _fit(text, s, e, budget, count, level + 1)], budget, count)


def _merge(text: str, units: list[_Unit], budget: int, count: TokenCounter) -> list[_Unit]:
    """Join neighbouring units greedily while the joined text fits the budget.

    A group grows on the sum of its units' counts and is counted exactly only when the sum
    says it is full and when it is closed: counting every join re-read the whole growing
    group once per word of a long unpunctuated line. A group whose exact count is over
    (tokenizers are not additive) hands its last units back.
    """
    out: list[_Unit] = []
    pending = deque(units)
    group: list[_Unit] = []
    known = extra = 0  # exact count of the group when extra == 0; else a sum estimate

    def close() -> None:
        tokens = known if not extra else count(text[group[0].start : group[-1].end])
        while tokens > budget and len(group) > 1:
            pending.appendleft(group.pop())
            tokens = count(text[group[0].start : group[-1].end])
        out.append(_Unit(group[0].start, group[-1].end, tokens))
        group.clear()

    while pending or group:
        if not pending:  # the last group; closing it may hand units back to pending
            close()
            continue
        unit = pending.popleft()
        if not group:
            group.append(unit)
            known, extra = unit.tokens, 0
            continue
        if known + extra + unit.tokens <= budget:
            group.append(unit)
            extra += unit.tokens
            continue
        if extra:  # the sum says full: decide on exact counts, as a join-by-join count would
            known, extra = count(text[group[0].start : group[-1].end]), 0
        if known + unit.tokens <= budget:
            merged = count(text[group[0].start : unit.end])
            if merged <= budget:
                group.append(unit)
                known = merged
                continue
        pending.appendleft(unit)
        close()
    return out


def _hard_split(text: str, start: int, end: int, budget: int, count: TokenCounter) -> list[_Unit]:
    """Longest prefixes within budget, for text with no spaces to cut at.

    Each cut gallops out from the previous unit's length and then bisects, so every count
    covers O(unit) characters: bisecting over the rest of the text made one long line
    quadratic. Same cuts as a plain binary search when counts grow with the prefix.
    """
    out: list[_Unit] = []
    step = budget  # first guess in characters; a token rarely covers less than one
    while start < end:
        lo, hi = start + 1, end  # the answer lies in [lo, hi]; at least one char per unit
        lo_tokens = -1  # count of text[start:lo] when known
        while lo < hi:  # gallop: double the window until it goes over budget
            probe = min(start + step, hi)
            tokens = count(text[start:probe])
            if tokens > budget:
                hi = probe - 1
                break
            lo, lo_tokens = probe, tokens
            step *= 2
        while lo < hi:
            mid = (lo + hi + 1) // 2
            tokens = count(text[start:mid])
            if tokens <= budget:
                lo, lo_tokens = mid, tokens
            else:
                hi = mid - 1
        if lo_tokens < 0:
            lo_tokens = count(text[start:lo])
        out.append(_Unit(start, lo, lo_tokens))
        step = lo - start
        start = lo
    return out


def _pack(
    text: str,
    paragraphs: Iterator[_Unit],
    budget: int,
    overlap: int,
    count: TokenCounter,
    sentences: Callable[[_Unit], list[_Unit]],
) -> Iterator[tuple[int, int, int]]:
    """Greedy packing of paragraph units (cut into sentence units on demand) into passages."""
    cur: list[_Unit] = []
    cur_tokens = 0
    n_overlap = 0  # leading units of ``cur`` repeated from the previous passage
    back: deque[_Unit] = deque()  # units a flush handed back because the exact count was over

    def flush() -> Iterator[tuple[int, int, int]]:
        """Emit ``cur`` as a passage; leave the overlap tail in ``cur``, overflow in ``back``."""
        nonlocal cur, cur_tokens, n_overlap
        back.clear()
        tokens = count(text[cur[0].start : cur[-1].end])
        # Counts of units may not add up exactly for subword tokenizers: check the real text.
        while tokens > budget and len(cur) > 1:
            if len(cur) > n_overlap + 1:
                back.appendleft(cur.pop())
            else:
                cur.pop(0)
                n_overlap -= 1
            tokens = count(text[cur[0].start : cur[-1].end])
        yield cur[0].start, cur[-1].end, tokens
        cur = _tail(cur, overlap, sentences)
        cur_tokens, n_overlap = sum(u.tokens for u in cur), len(cur)

    def feed(pending: deque[_Unit]) -> Iterator[tuple[int, int, int]]:
        nonlocal cur_tokens, n_overlap
        while pending:
            unit = pending[0]
            if cur_tokens + unit.tokens > budget and (cur or unit.paragraph):
                if unit.paragraph:  # does not fit whole: take it sentence by sentence
                    pending.popleft()
                    pending.extendleft(reversed(sentences(unit)))
                elif len(cur) > n_overlap:
                    yield from flush()
                    pending.extendleft(reversed(back))
                else:  # only overlap left and the next unit does not fit with it: shed overlap
                    cur_tokens -= cur.pop(0).tokens
                    n_overlap -= 1
                continue
            cur.append(pending.popleft())
            cur_tokens += unit.tokens

    for para in paragraphs:
        pending = deque([para])
        if len(cur) > n_overlap and 2 * cur_tokens >= budget and cur_tokens + para.tokens > budget:
            yield from flush()  # end at the paragraph break rather than split the paragraph
            pending.extendleft(reversed(back))
        yield from feed(pending)
    while len(cur) > n_overlap:
        yield from flush()
        yield from feed(deque(back))  # units pushed back by the exact count, packed again


def _tail(units: list[_Unit], overlap: int, sentences: Callable[[_Unit], list[_Unit]]) -> list[_Unit]:
    """The last units of a passage worth at most ``overlap`` tokens, never the whole passage."""
    tail: list[_Unit] = []
    if overlap <= 0:
        return tail
    tokens = 0
    units = list(units)
    while units:
        unit = units.pop()
        if units and tokens + unit.tokens <= overlap:
            tail.insert(0, unit)
            tokens += unit.tokens
        elif unit.paragraph and len(parts := sentences(unit)) > 1:
            units.extend(parts)  # look at its last sentences instead
        else:
            break
    return tail
