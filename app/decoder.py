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
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence

import torch

from retnet import RetentionState
from retnet.generation import DecodeLoop, SamplingConfig, StopTextBuffer

from .cache import chain_key
from .types import Answer, Source, Timings, Usage


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
                 on_finish: Callable[[AnswerStream], None] | None = None, lock=None):
        self.reader = reader
        self.state = state
        self.key = key
        self.question = question
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
        self._gen = self._run()

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
        loop = DecodeLoop(self.reader.model, self._logits, self.state, self.cfg)
        reason = "length"
        for tokens in loop:
            tok = int(tokens[0])
            if not self.token_ids and self.timings.first_token_s == 0.0:
                self.timings.first_token_s = time.perf_counter() - self.started
                self._t_first = time.perf_counter()
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
                yield piece
        self._finish(reason)
        rest = text.flush()
        if rest:
            yield rest

    def _finish(self, reason: str) -> None:
        if self.finished:
            return
        self.finished = True
        self.stop_reason = reason
        end = list(self.reader.stops.end_ids)
        self.state, _ = self.reader.feed(self.state, end)
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
        self._answer = Answer(self.question, self.text, self.sources, reason, self.usage, self.timings)
        if self._on_finish is not None:
            self._on_finish(self)

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

