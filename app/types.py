"""Plain records: a cited source, an answer (one turn of a conversation), its usage and timings."""

from __future__ import annotations

import dataclasses
import textwrap
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Source:
    """A passage an answer was given from: which document, which page, which text."""

    n: int  # citation number within the turn, 1 = most relevant
    title: str
    source: str  # the file the document was loaded from
    page: int | None  # 1-based page for paged formats (PDF), else None
    text: str  # the passage text, as the model read it
    score: float  # retrieval score: cosine similarity (+ the lexical bonus when re-ranked, see app.retrieve)
    doc_id: str
    start: int = 0  # character offsets of the passage in the document's text
    end: int = 0
    passage_id: int | None = None

    @classmethod
    def from_hit(cls, n: int, hit: Any) -> Source:
        """From a retrieval.SearchHit."""
        return cls(n, hit.title, hit.source, hit.page, hit.text, float(hit.score), hit.doc_id, hit.start, hit.end,
                   getattr(hit, "passage_id", None))

    def cite(self) -> str:
        return f"{self.title}, p. {self.page}" if self.page is not None else self.title

    def snippet(self, width: int = 200) -> str:
        return textwrap.shorten(" ".join(self.text.split()), width=width, placeholder=" ...")

    def __str__(self) -> str:
        return f"[{self.n}] {self.cite()} ({self.source}): {self.snippet()}"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Source:
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})


@dataclass
class Quote:
    """A span of a passage that a grounded answer quoted (see app.grounding).

    ``source.text[start:end] == text`` and, for a passage from a collection, the document's text holds
    the same span at ``doc_start:doc_end`` (``source.start`` plus the passage offsets).
    """

    source: Source  # the passage quoted (one of the answer's sources)
    start: int  # character offsets into source.text
    end: int
    text: str
    score: float = 0.0  # mean log-probability of the quoted tokens under the model (unconstrained)
    tokens: int = 0  # answer tokens the quote took

    @property
    def page(self) -> int | None:
        return self.source.page

    @property
    def doc_start(self) -> int:
        return self.source.start + self.start

    @property
    def doc_end(self) -> int:
        return self.source.start + self.end

    def highlight(self, left: str = "[[", right: str = "]]") -> str:
        """The passage with the quoted span marked."""
        t = self.source.text
        return f"{t[: self.start]}{left}{t[self.start : self.end]}{right}{t[self.end :]}"

    def to_dict(self) -> dict:
        return {"source": self.source.n, "page": self.page, "start": self.start, "end": self.end,
                "doc_start": self.doc_start, "doc_end": self.doc_end, "text": self.text, "score": self.score,
                "tokens": self.tokens}

    @classmethod
    def from_dict(cls, d: dict, sources: list[Source]) -> Quote:
        """From ``to_dict``; ``source`` (a citation number) is looked up in ``sources``."""
        source = next(s for s in sources if s.n == d["source"])
        return cls(source, d["start"], d["end"], d["text"], d.get("score", 0.0), d.get("tokens", 0))


@dataclass
class Usage:
    prompt_tokens: int = 0  # tokens of the turn's layout (instructions, passages, question)
    cached_tokens: int = 0  # of those, restored from the prefix-state cache instead of encoded
    answer_tokens: int = 0  # generated tokens
    state_bytes: int = 0  # size of the recurrent state after the turn (constant per model)

    @property
    def encoded_tokens(self) -> int:
        return self.prompt_tokens - self.cached_tokens


@dataclass
class Timings:
    retrieve_s: float = 0.0
    encode_s: float = 0.0
    first_token_s: float = 0.0  # from the question to the first generated token (retrieval included)
    decode_s: float = 0.0  # from the first token to the end of the answer
    total_s: float = 0.0
    tokens_per_s: float = 0.0  # generated tokens / decode_s


@dataclass
class Answer:
    """One turn: the question, the answer text and the passages it was given.

    ``stop_reason``: "eos" (the model ended it), "stop" (a stop marker or string),
    "length" (max_new_tokens reached), "cancelled" (the stream was closed early) or "refused".
    A grounded answer (``AnswerOptions.grounded``) lists the spans it quoted in ``quotes``; a refused
    one has ``refused`` set and ``text == app.prompt.REFUSAL``.
    """

    question: str
    text: str
    sources: list[Source]
    stop_reason: str = ""
    usage: Usage = field(default_factory=Usage)
    timings: Timings = field(default_factory=Timings)
    quotes: list[Quote] = field(default_factory=list)
    refused: bool = False

    def __str__(self) -> str:
        return self.text

    def format(self, sources: bool = True, width: int = 200) -> str:
        """The answer, then its numbered sources (title, page, path, snippet)."""
        lines = [self.text]
        if sources and self.sources:
            lines += ["", "Sources:"]
            lines += [f"  [{s.n}] {s.cite()} - {s.source}\n      {s.snippet(width)}" for s in self.sources]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"question": self.question, "text": self.text, "stop_reason": self.stop_reason,
                "sources": [s.to_dict() for s in self.sources], "usage": dataclasses.asdict(self.usage),
                "timings": dataclasses.asdict(self.timings), "quotes": [q.to_dict() for q in self.quotes],
                "refused": self.refused}

    @classmethod
    def from_dict(cls, d: dict) -> Answer:
        usage = Usage(**_known(Usage, d.get("usage", {})))
        timings = Timings(**_known(Timings, d.get("timings", {})))
        sources = [Source.from_dict(s) for s in d.get("sources", [])]
        return cls(d["question"], d["text"], sources, d.get("stop_reason", ""), usage, timings,
                   [Quote.from_dict(q, sources) for q in d.get("quotes", [])], bool(d.get("refused", False)))


def _known(cls, d: dict) -> dict:
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in d.items() if k in names}


Turn = Answer  # a conversation's transcript is its list of answers
