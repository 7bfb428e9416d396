"""The decoder: stream an answer from an ingested state with the recurrent form.

Every generated token is read into the state as it is produced. The answer ends
at the end marker, at any other layout marker (the model starting a new question
or passage), at a stop string, or at ``max_new_tokens``; in every case the end
marker is then read into the state, so the state holds
``...<|answer|>answer text<|endoftext|>`` and the next turn starts clean. A stop
marker itself is never read (the end marker takes its place); a stop string's
tokens were read before it could be recognised and stay.

Text is held back while it could still be the start of a stop string, so a stop
string never leaks into the output, and bytes of a character split over tokens
are held until the character is complete.

With ``AnswerOptions.grounded`` (and passages to quote) the loop samples under
``app.grounding.Grounding``'s mask and the answer carries its quotes. With
``refuse`` a weak answer is ``REFUSAL`` and the state reads that sentence
instead: decided before decoding for the "evidence" and "support" scores, after it for "logprob"
(whose pieces are held until then).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence

import torch

from retnet import RetentionState
from retnet.generation import DecodeLoop, SamplingConfig, StopTextBuffer

from .cache import chain_key
from .grounding import REFUSAL, REFUSAL_THRESHOLDS, Grounding, support
from .types import Answer, Quote, Source, Timings, Usage


def _refusal_threshold(opts, score: str) -> float:
    """The threshold below which ``score`` refuses: the options' own, else the calibrated one."""
    return REFUSAL_THRESHOLDS[score] if opts.refusal_threshold is None else opts.refusal_threshold


class NoRefusalStart:
    """Logits processor for free answers whose refusals the gate decides (``free_refusal="gate"``): the
    first token may not be the refusal sentence's first token, so the model answers instead of refusing."""

    def __init__(self, token_id: int):
        self.token_id = token_id

    def __call__(self, logits: torch.Tensor, generated: torch.Tensor) -> torch.Tensor:
        if generated.shape[1]:
            return logits
        out = logits.clone()
        out[:, self.token_id] = float("-inf")
        return out


class AnswerStream:
    """Iterate for text pieces as they are decoded. Afterwards: ``.text``, ``.answer`` (an Answer
    with sources), ``.stop_reason``, ``.token_ids``, ``.state``.

    ``close()`` before the end keeps the partial answer (stop_reason "cancelled"); ``answer``
    (or ``result()``) runs the stream to the end if needed.
    """

    def __init__(self, reader, state: RetentionState, logits: torch.Tensor, key: bytes, *, question: str = "",
                 sources: Sequence[Source] = (), sampling: SamplingConfig | None = None,
                 stop_strings: Sequence[str] | None = None, usage: Usage | None = None,
                 timings: Timings | None = None, started: float | None = None,
                 on_finish: Callable[[AnswerStream], None] | None = None, lock=None,
                 evidence: Callable[[str, Sequence[Source]], float | None] | None = None,
                 gate_text: str | None = None):
        self.reader = reader
        self.state = state
        self.key = key
        self.question = question
        # What the refusal gate scores: a session passes its search text, so a follow-up ("and for
        # directories?") is judged with the conversation's terms, as its passages were found.
        self.gate_text = question if gate_text is None else gate_text
        self.sources = list(sources)
        self.cfg = sampling or reader.sampling_config()
        self.stop_strings = [s for s in (reader.stops.stop_strings if stop_strings is None else stop_strings) if s]
        self.usage = usage or Usage()
        self.timings = timings or Timings()
        self.started = started if started is not None else time.perf_counter()
        self.token_ids: list[int] = []
        self.text = ""
        self.stop_reason: str | None = None
        self.finished = False
        self._logits = logits
        self._raw = ""
        self._on_finish = on_finish
        self._lock = lock
        self._answer: Answer | None = None
        self.quotes: list[Quote] = []
        self.refused = False
        self._before: RetentionState | None = None
        self._loop: DecodeLoop | None = None
        opts = getattr(reader, "options", None)
        self.grounding: Grounding | None = None
        self._check_logprob: float | None = None  # the threshold for the quote's mean log-prob, if that decides
        self._refuse_first = False
        self._no_refusal: NoRefusalStart | None = None  # free answers whose refusal the gate decides
        if opts is not None and opts.grounded and self.sources:
            stops = reader.stops
            self.grounding = Grounding.for_sources(reader.tokenizer, self.sources, stops.end_token_id,
                                                   sorted(stops.stop_token_ids), opts.grounded_free_tokens,
                                                   opts.grounded_min_tokens)
            if self.grounding is not None and opts.refuse:
                if opts.refusal_score == "logprob":
                    self._check_logprob = _refusal_threshold(opts, "logprob")
                else:
                    self._refuse_first = self._gate_refuses(opts, evidence)
        elif opts is not None and self.sources and opts.refuse and opts.free_refusal == "gate":
            self._refuse_first = self._gate_refuses(opts, evidence)
            self._no_refusal = NoRefusalStart(reader.encode(REFUSAL)[0])
        self._gen = self._run()

    def _gate_refuses(self, opts, evidence) -> bool:
        """The refusal decided before decoding: by the "evidence" score (app.evidence) where the caller
        gives a scorer that has a calibration for its embedder, else by "support" at its calibrated
        threshold (an "evidence" threshold means nothing on the support scale)."""
        text = self.gate_text
        if opts.refusal_score == "evidence":
            score = evidence(text, self.sources) if evidence is not None else None
            if score is not None:
                return score < _refusal_threshold(opts, "evidence")
            return support(text, self.sources) < REFUSAL_THRESHOLDS["support"]
        return support(text, self.sources) < _refusal_threshold(opts, "support")

    # -- iteration -----------------------------------------------------------------------------
    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        if self._lock is None:
            return next(self._gen)
        with self._lock:
            return next(self._gen)

    def _run(self) -> Iterator[str]:
        stops = self.reader.stops
        text = StopTextBuffer(self.reader.tokenizer, self.stop_strings)
        if self._refuse_first:  # nothing to decode: the passages do not hold what the question asks about
            self.timings.first_token_s = time.perf_counter() - self.started
            self._t_first = time.perf_counter()
            self._before = self.state
            self._finish("refused")
            yield self.text
            return
        grounding = self.grounding
        loop = self._loop = DecodeLoop(self.reader.model, self._logits, self.state, self.cfg,
                                       logits_processor=grounding if grounding is not None else self._no_refusal)
        # A refusal replaces the answer in the state too: keep the state from before it.
        self._before = self.state.clone() if self._check_logprob is not None else None
        held: list[str] = []
        reason = "length"
        for tokens in loop:
            tok = int(tokens[0])
            if not self.token_ids and self.timings.first_token_s == 0.0:
                self.timings.first_token_s = time.perf_counter() - self.started
                self._t_first = time.perf_counter()
            if grounding is not None:
                grounding.step(tok, len(text.text))
            if tok in stops.stop_token_ids:  # a marker is never read: _finish reads the end marker instead
                reason = "eos" if tok == stops.end_token_id else "stop"
                break
            self.token_ids.append(tok)
            loop.read(tokens)
            self.state = loop.state
            piece = text.push(tok)
            self._raw = text.text
            if text.stopped:
                reason = "stop"
                break
            if piece:
                if self._before is None:
                    yield piece
                else:
                    held.append(piece)
            if grounding is not None and grounding.done:  # the quote reached the end of its passage
                reason = "eos"
                break
        rest = text.flush()
        self._finish(reason)
        if self.refused:
            yield self.text
            return
        yield from held
        if rest:
            yield rest

    def _finish(self, reason: str) -> None:
        if self.finished:
            return
        self.finished = True
        self.stop_reason = reason
        if reason == "refused":
            self._refuse()
        elif self.grounding is not None:
            self.quotes = self.grounding.quotes(self._raw)
            score = self.grounding.score()
            if self._check_logprob is not None and reason != "cancelled" and (
                    score is None or score < self._check_logprob):
                self._refuse()
        end = list(self.reader.stops.end_ids)
        self.state = self._read_end_marker(end)
        self.key = chain_key(self.key, self.token_ids + end)
        now = time.perf_counter()
        if self.timings.first_token_s == 0.0:  # no token was sampled (max_new_tokens == 0)
            self.timings.first_token_s = now - self.started
            self._t_first = now
        self.timings.decode_s = now - self._t_first
        self.timings.total_s = now - self.started
        n = len(self.token_ids)
        self.timings.tokens_per_s = n / self.timings.decode_s if self.timings.decode_s > 0 and n else 0.0
        self.text = self._raw.strip()
        self.usage.answer_tokens = n
        self.usage.state_bytes = self.state.nbytes
        self._answer = Answer(self.question, self.text, self.sources, self.stop_reason, self.usage, self.timings,
                              list(self.quotes), self.refused)
        if self._on_finish is not None:
            self._on_finish(self)

    def _read_end_marker(self, end: list[int]) -> RetentionState:
        """The state after the end marker. Where the answer's own loop runs a static decoder (a CUDA graph)
        and holds this state, the marker's few tokens go through it (one graph replay each): the eager
        forward that ``Reader.feed`` runs costs tens of milliseconds of per-layer overhead on a GPU."""
        loop = self._loop
        if end and loop is not None and loop.decoder is not None and loop.state is self.state:
            for tok in end:
                loop.read(torch.tensor([tok], dtype=torch.long, device=loop.generated.device))
            return loop.state.clone()  # the session's own copy, not a view of the decoder's shared buffers
        return self.reader.feed(self.state, end)[0]

    def _refuse(self) -> None:
        """Replace the answer with the refusal sentence, in the text and in the state."""
        ids = self.reader.encode(REFUSAL)
        self.state, _ = self.reader.feed(self._before, ids)
        self.token_ids, self._raw, self.quotes = ids, REFUSAL, []
        self.refused, self.stop_reason = True, "refused"

    # -- ending ---------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop here. A started answer is kept as it is (stop_reason "cancelled") and enters the
        state like any other answer; a stream never iterated is finished without decoding."""
        if self.finished:
            return
        if self._lock is None:
            self._close()
        else:
            with self._lock:
                self._close()

    def _close(self) -> None:
        self._gen.close()
        self._finish("cancelled")

    def result(self) -> Answer:
        """Run to the end (if not already) and return the Answer."""
        for _ in self:
            pass
        assert self._answer is not None
        return self._answer

    @property
    def answer(self) -> Answer:
        return self.result()

    def __enter__(self) -> AnswerStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

