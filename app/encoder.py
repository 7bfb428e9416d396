"""The reader: a RetNet model + tokenizer that ingests laid-out turns into a recurrent state.

``Reader.ingest`` reads a turn (see app.prompt) with the chunkwise form, one chunk per
passage, into a state, and returns the next-token logits at the answer marker; the
decoder (app.decoder) continues from there with the recurrent form. The state's size
never changes; only what it has read does.

With a prefix cache, the state after every passage boundary is snapshotted under the
exact token prefix (app.cache), and a turn starting with a cached prefix restores the
deepest snapshot and encodes only the rest. By default snapshots are stored only for
turns read from an empty state (SNAPSHOT_POLICIES), so a long conversation does not
fill the cache with prefixes that cannot recur.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from retnet import CheckpointError, RetentionState, RetNetForCausalLM, load_tokenizer
from retnet.generation import SamplingConfig
from retnet.quantize import quantize_model

from . import prompt as L
from .cache import PrefixCache, chain_key, root_key
from .chatml import LAYOUT as CHAT_LAYOUT
from .chatml import chat_stop_conventions, encode_chat_turn, is_chat_tokenizer
from .defaults import DEFAULT_CACHE_BYTES, default_model_dir
from .errors import EmptyQuestionError, ModelNotFoundError, QuestionTooLongError
from .options import SAMPLING_FIELDS, AnswerOptions

# When to store prefix snapshots: "start" = only for turns read from an empty state (the start of a
# session, every one-shot ask, every LangChain call: where identical prefixes recur), at every passage
# end; "all" = also in the middle of conversations (useful only for forks that ask the same thing; costs a
# snapshot per passage per turn, up to the cache budget); "turn-end" = like "start", but only the state
# after the whole turn, so the turn is read in one forward call. On a GPU a call costs ~30-40 ms of
# per-layer overhead whatever its length, so a snapshot per passage made first turns 3-4x slower than
# follow-ups, for prefixes that rarely recur (benchmarks/results/rag_loop_h200.md). "auto" (the default)
# is "turn-end" for a model on a GPU and "start" elsewhere. Lookups happen for every turn either way.
SNAPSHOT_POLICIES = ("auto", "start", "all", "turn-end")


def snapshot_policy(policy: str, device: torch.device) -> str:
    """The policy a reader on `device` uses for `policy` ("auto" resolved by the device)."""
    if policy not in SNAPSHOT_POLICIES:
        raise ValueError(f"cache_snapshots must be one of {SNAPSHOT_POLICIES}, got {policy!r}")
    if policy == "auto":
        return "turn-end" if torch.device(device).type == "cuda" else "start"
    return policy


@dataclass
class Ingested:
    """A turn read into a state: the new state, the next-token logits [1, vocab], the prefix key."""

    state: RetentionState
    logits: Tensor
    key: bytes
    prompt_tokens: int
    cached_tokens: int
    seconds: float


def load_model(path: str | Path | None = None, device=None, quantize: str | None = None
               ) -> tuple[RetNetForCausalLM, Any]:
    """Model and tokenizer from a model directory (default: the bundled model), with clear errors.

    ``quantize``: "auto" (default; None reads $RETNET_QUANTIZE), "int8" or "none". "auto" runs large
    models (the converted SmolLM2 reader) with int8 Linear layers on the CPU, ~1.5x faster decoding for a
    small quality cost, and everything else in float (retnet.quantize; benchmarks/results/reader_cpu.md).
    """
    default = path is None
    path = Path(path).expanduser() if path is not None else default_model_dir()
    if not path.is_dir():
        hint = (" The bundled default model is missing (it ships as package data of retnet-rag: install the"
                " package with pip, see README); pass --model DIR or set RETNET_RAG_MODEL." if default else "")
        raise ModelNotFoundError(f"model directory {path} does not exist.{hint}")
    if not (path / "config.json").is_file():
        raise ModelNotFoundError(f"{path} is not a model directory (no config.json)")
    try:
        # Weights may ship in bf16 to keep the repository small; CPUs compute far faster in float32.
        on_cpu = device is None or torch.device(device).type == "cpu"
        import retnet.convert  # noqa: F401  (registers the fla format, so fla-hub directories load too)

        model = RetNetForCausalLM.from_pretrained(path, device=device, dtype=torch.float32 if on_cpu else None)
    except CheckpointError as e:
        raise ModelNotFoundError(f"cannot load the model in {path}: {e}") from None
    quantize_model(model, quantize)
    tokenizer = load_tokenizer(path)
    if tokenizer is None:
        raise ModelNotFoundError(f"{path} has no tokenizer.json; a model directory needs its tokenizer")
    return model.eval(), tokenizer


class Reader:
    """Model + tokenizer + layout conventions + prefix cache + sampling defaults.

    Shared by every session of a MultiDocQA; holds no conversation state itself.
    """

    def __init__(self, model: RetNetForCausalLM, tokenizer: Any, options: AnswerOptions | None = None, *,
                 cache: PrefixCache | int | None = DEFAULT_CACHE_BYTES, cache_snapshots: str = "auto", **overrides):
        """``options`` (default: AnswerOptions()) with keyword ``overrides`` of its fields, e.g. max_new_tokens=8."""
        self.options = options = AnswerOptions.build(options, **overrides)
        self.model = model.eval()
        self.tokenizer = tokenizer
        # The prompt format follows the tokenizer: ChatML for chat models (app.chatml), markers otherwise.
        self.chat = is_chat_tokenizer(tokenizer)
        self.layout = options.layout or (CHAT_LAYOUT if self.chat else L.DEFAULT_LAYOUT)
        if self.chat != (self.layout == CHAT_LAYOUT):
            raise ValueError(f"layout {self.layout!r} does not fit this tokenizer; use "
                             f"{CHAT_LAYOUT!r} for chat tokenizers and one of {L.LAYOUTS} otherwise")
        self.max_chunk = int(options.max_chunk or min(L.DEFAULT_MAX_CHUNK, model.config.max_chunk_length))
        self.max_question_tokens = options.max_question_tokens
        self.instructions = options.instructions
        if isinstance(cache, int):
            cache = PrefixCache(cache) if cache > 0 else None
        self.cache: PrefixCache | None = cache
        self.cache_snapshots = snapshot_policy(cache_snapshots, self.device)
        self.stops = (chat_stop_conventions if self.chat else L.stop_conventions)(tokenizer, options.stop)
        self.sampling = options.sampling

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None, device=None, *, quantize: str | None = None,
                        **options) -> Reader:
        """A reader over ``load_model(path, device, quantize)``; ``options`` as for Reader()."""
        model, tokenizer = load_model(path, device, quantize)
        return cls(model, tokenizer, **options)

    # -- basics ------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.model.embed.weight.device

    @property
    def fingerprint(self) -> str:
        return self.model.fingerprint()

    def new_state(self) -> RetentionState:
        return self.model.new_state(1)

    def root_key(self) -> bytes:
        return root_key(self.fingerprint)

    @property
    def state_bytes(self) -> int:
        return self.model.config.state_bytes() + 8

    def sampling_config(self, **overrides) -> SamplingConfig:
        """The reader's sampling settings with per-call ``overrides`` (None keeps a setting)."""
        unknown = set(overrides) - set(SAMPLING_FIELDS)
        if unknown:
            raise TypeError(f"unknown sampling options {sorted(unknown)}; known: {list(SAMPLING_FIELDS)}")
        chosen = {k: v for k, v in overrides.items() if v is not None}
        return dataclasses.replace(self.sampling, **chosen, eos_token_id=self.stops.end_token_id)

    def encode(self, text: str) -> list[int]:
        return L.encode_text(self.tokenizer, text)

    # -- turns -------------------------------------------------------------------------------
    def check_question(self, question: Any) -> str:
        """The question stripped; EmptyQuestionError / QuestionTooLongError for bad input."""
        if not isinstance(question, str):
            raise EmptyQuestionError(f"the question must be text, got {type(question).__name__}")
        q = question.strip()
        if not q:
            raise EmptyQuestionError("the question is empty: ask something")
        # Cheap bound first: no tokenizer gives fewer than one token per 64 characters of prose.
        n = len(self.encode(q)) if len(q) <= 64 * self.max_question_tokens else None
        if n is None or n > self.max_question_tokens:
            size = f"{n} tokens" if n is not None else f"{len(q)} characters"
            raise QuestionTooLongError(f"the question is too long ({size}); the limit is {self.max_question_tokens} "
                                       "tokens (max_question_tokens). Shorten it, or put long text in a document.")
        return q

    def layout_turn(self, question: str, passages: Sequence[Any] = (), *, first_turn: bool = False,
                    layout: str | None = None, instructions: str | None = None) -> L.TurnTokens:
        if self.chat:
            return encode_chat_turn(self.tokenizer, question, passages, self.max_chunk, first_turn=first_turn,
                                    instructions=instructions or self.instructions)
        return L.encode_turn(self.tokenizer, question, passages, layout or self.layout, self.max_chunk,
                             instructions=(instructions or self.instructions) if first_turn else None)

    def ingest(self, turn: L.TurnTokens, state: RetentionState, key: bytes) -> Ingested:
        return self.ingest_chunks(turn.prompt_ids, turn.prompt_chunk_lengths,
                                  turn.segment_end[: len(turn.prompt_chunk_lengths)], state, key)

    @torch.no_grad()
    def ingest_chunks(self, ids: Sequence[int], chunk_lengths: Sequence[int], snapshot_at: Sequence[bool],
                      state: RetentionState, key: bytes) -> Ingested:
        """Read ``ids`` (chunked as given) after ``state``; snapshot/restore at ``snapshot_at`` chunk ends."""
        if not ids or sum(chunk_lengths) != len(ids):
            raise ValueError("ingest needs at least one token and chunk lengths that sum to the number of ids")
        t0 = time.perf_counter()
        keys, k = [], key
        bounds = [0]
        for n in chunk_lengths:
            k = chain_key(k, ids[bounds[-1] : bounds[-1] + n])
            keys.append(k)
            bounds.append(bounds[-1] + n)
        start, logits, cached = 0, None, 0
        cache = self.cache
        store = (cache is not None and (self.cache_snapshots == "all" or int(state.offsets.max()) == 0)
                 and cache.worth_storing(cache.snapshot_bytes(state, self.model.config.vocab_size)))
        if self.cache_snapshots == "turn-end":  # one snapshot, after the whole turn: one forward call
            snapshot_at = [False] * (len(chunk_lengths) - 1) + [True]
        if cache is not None:
            i, snap = cache.lookup([kk if snapshot_at[j] else b"" for j, kk in enumerate(keys)])
            if snap is not None:
                state, logits = cache.restore(snap, self.device)
                start, cached = i + 1, bounds[i + 1]
        all_ids = torch.as_tensor(list(ids), dtype=torch.long, device=self.device)[None]
        # Group the remaining chunks into forward calls that end where a snapshot is taken.
        group: list[int] = []
        for j in range(start, len(chunk_lengths)):
            group.append(j)
            last = j == len(chunk_lengths) - 1
            snap_here = store and snapshot_at[j]
            if not (last or snap_here):
                continue
            lo, hi = bounds[group[0]], bounds[group[-1] + 1]
            hidden, state = self.model.forward_hidden(all_ids[:, lo:hi], state=state, mode="chunkwise",
                                                      chunk_lengths=[chunk_lengths[g] for g in group])
            logits = self.model.lm_head(hidden[:, -1]).float()
            if snap_here:
                cache.put(keys[j], state, logits, hi)
            group = []
        return Ingested(state, logits, keys[-1], len(ids), cached, time.perf_counter() - t0)

    @torch.no_grad()
    def feed(self, state: RetentionState, ids: Sequence[int]) -> tuple[RetentionState, Tensor | None]:
        """Read a few tokens (the end marker after an answer) with the recurrent form; returns the state and
        the last token's hidden state."""
        if not ids:
            return state, None
        x = torch.as_tensor(list(ids), dtype=torch.long, device=self.device)[None]
        hidden, state = self.model.forward_hidden(x, state=state, mode="recurrent")
        return state, hidden[:, -1]
