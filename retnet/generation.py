"""Generation over a RetentionState: prefill chunkwise, then decode token by token.

After generation the state has read the prompt and every generated token
(including the one that ended it), so a conversation can simply continue.

The repetition penalty applies to generated tokens only: in RAG the prompt
holds the passages, and the answer should be free to copy from them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from . import cuda_decode
from .state import RetentionState


@dataclass
class SamplingConfig:
    max_new_tokens: int = 128
    temperature: float = 0.0  # 0 means greedy
    top_k: int = 0  # 0 means no top-k filter
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    eos_token_id: int | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")


def next_token(logits: Tensor, cfg: SamplingConfig, generated: Tensor | None = None,
               generator: torch.Generator | None = None) -> Tensor:
    """Pick the next token for each row of logits [B, vocab]; `generated` [B, n] feeds the penalty."""
    penalty = cfg.repetition_penalty != 1.0 and generated is not None and generated.numel()
    if cfg.temperature == 0 and not penalty:
        return logits.argmax(dim=-1)  # greedy: the float32 copy would pick the same token
    logits = logits.float()
    if penalty:
        logits = logits.clone()  # scattered into below; the caller's logits stay as they are
        seen = torch.gather(logits, 1, generated)
        seen = torch.where(seen > 0, seen / cfg.repetition_penalty, seen * cfg.repetition_penalty)
        logits.scatter_(1, generated, seen)
    if cfg.temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits / cfg.temperature
    if cfg.top_k:
        kth = torch.topk(logits, min(cfg.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if cfg.top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        # Drop a token when the tokens before it already reach top_p (the first token always stays).
        drop = cumulative - sorted_logits.softmax(dim=-1) >= cfg.top_p
        logits = logits.scatter(1, order, sorted_logits.masked_fill(drop, float("-inf")))
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def make_generator(cfg: SamplingConfig, device) -> torch.Generator | None:
    """A seeded generator when cfg.seed is set, else None (torch's global RNG)."""
    if cfg.seed is None:
        return None
    g = torch.Generator(device=device)
    g.manual_seed(cfg.seed)
    return g


def _plain_head(model) -> bool:
    """True when the model's logits are its LM head over forward_hidden (not a subclass's own forward)."""
    from .model import RetNetForCausalLM

    return isinstance(model, RetNetForCausalLM) and type(model).forward is RetNetForCausalLM.forward


def prefill(model, input_ids: Tensor, state: RetentionState | None, chunk_lengths=None,
            attention_mask: Tensor | None = None, positions: Tensor | None = None) -> tuple[Tensor, RetentionState]:
    """Read the prompt with the chunkwise form; return the logits at each row's last real token.

    Only the logits that are used are computed: the LM head runs on the picked positions, never on the
    whole prompt (at batch 16 x 32k tokens full-vocabulary logits alone would be ~33 GB). `positions`
    [B] or [B, n] (token indices of each row) asks for other positions; the logits are then [B, vocab]
    or [B, n, vocab]. Default: each row's last real token (right padding) or the final column (left
    padding, no mask).
    """
    B, T = input_ids.shape
    if positions is None:
        if attention_mask is None:
            positions = torch.full((B,), T - 1, dtype=torch.long, device=input_ids.device)
        else:
            idx = torch.arange(T, device=input_ids.device).expand_as(input_ids)
            positions = torch.where(attention_mask.bool().to(input_ids.device), idx, torch.zeros_like(idx))
            positions = positions.max(dim=1).values
    positions = torch.as_tensor(positions, dtype=torch.long, device=input_ids.device)
    rows = torch.arange(B, device=input_ids.device)
    rows = rows[:, None] if positions.dim() == 2 else rows
    if not _plain_head(model):  # a model with its own forward: its logits are what it returns
        out = model(input_ids, state=state, mode="chunkwise", chunk_lengths=chunk_lengths,
                    attention_mask=attention_mask)
        return out.logits[rows, positions], out.state
    hidden, state = model.forward_hidden(input_ids, state, mode="chunkwise", chunk_lengths=chunk_lengths,
                                         attention_mask=attention_mask)
    return model.lm_head(hidden[rows, positions]), state


def _model_dtype_state(state: RetentionState, model) -> RetentionState:
    """The state with float32 layers again if the loop kept them in bf16 (``state_dtype``): what
    generate and TextStream return can be saved and loaded like any other state."""
    if all(t.dtype in (torch.float32, torch.float64) for t in state.layers):
        return state
    return RetentionState([t.float() for t in state.layers], state.offsets.clone(), state.fingerprint,
                          None if state.last_inputs is None else [t.clone() for t in state.last_inputs])


class DecodeLoop:
    """The one decode loop (gpt-fast's decode_n_tokens, as an object): sample the next token from the
    current logits, read it into the state with the recurrent form, repeat.

    Iterating yields each sampled token [B] *before* it is read: the caller reads it with ``read``
    (with a padding mask if rows have finished) to go on, or stops, e.g. at a marker it wants kept
    out of the state. ``generate``, ``TextStream`` and the app's ``AnswerStream`` all run this loop.

    On a CUDA device a token is read by replaying a CUDA graph of the whole single-token step
    (``retnet.cuda_decode``; ``cuda_graph=False`` or ``RETNET_CUDA_GRAPH=0`` turn it off, and
    ``state_dtype=torch.bfloat16`` keeps the decode state in bf16). The incoming state is never changed.
    ``loop.state`` is the state after the last read; on the graph path it is backed by the graph's
    buffers while this loop owns them, so it changes as the loop reads on: ``clone()`` it to keep a
    snapshot. The same holds for ``loop.logits``.
    """

    def __init__(self, model, logits: Tensor, state: RetentionState, cfg: SamplingConfig,
                 generator: torch.Generator | None = None,
                 logits_processor: Callable[[Tensor, Tensor], Tensor] | None = None, *,
                 cuda_graph: bool | None = None, state_dtype: torch.dtype | str | None = None):
        self.model, self.logits, self.state, self.cfg = model, logits, state, cfg
        self.generator = generator if generator is not None else make_generator(cfg, logits.device)
        self.generated = torch.empty(logits.shape[0], 0, dtype=torch.long, device=logits.device)
        # (logits [B, vocab], generated [B, n]) -> logits to sample from, e.g. a mask of allowed tokens;
        # self.logits stays the model's own.
        self.logits_processor = logits_processor
        self._decoder = None  # the GraphDecoder, taken at the first read
        self._wants_decoder = cuda_decode.wants_decoder(model, cuda_graph)
        self._state_dtype = cuda_decode.resolve_state_dtype(state_dtype)
        self._logits_static = False  # self.logits is the decoder's output buffer (see GraphDecoder._evict)

    @property
    def decoder(self):
        """The cuda_decode.GraphDecoder this loop reads through (taken at its first read), or None."""
        return self._decoder

    def sample(self) -> Tensor:
        if self._decoder is None:
            return self._sample()
        with self._decoder.lock:  # another loop on the same decoder must not overwrite our logits meanwhile
            return self._sample()

    def _sample(self) -> Tensor:
        logits = self.logits if self.logits_processor is None else self.logits_processor(self.logits, self.generated)
        return next_token(logits, self.cfg, self.generated, self.generator)

    @torch.no_grad()
    def read(self, tokens: Tensor, mask: Tensor | None = None) -> None:
        """Read tokens [B] (rows where ``mask`` is False are fed as padding: their state stays)."""
        if self._decoder is None and self._wants_decoder:
            self._decoder = cuda_decode.decoder_for(self.model, tokens.shape[0], self._state_dtype)
        dec = self._decoder
        if dec is None:
            step = self.model(tokens[:, None], state=self.state, mode="recurrent",
                              attention_mask=None if mask is None else mask[:, None])
            self.logits, self.state = step.logits[:, -1], step.state
        else:
            with dec.lock:
                dec.acquire(self)
                self.logits = dec.step(tokens, mask)
                self._logits_static = dec.use_graph
        self.generated = torch.cat([self.generated, tokens[:, None]], dim=1)

    def __iter__(self) -> Iterator[Tensor]:
        for n in range(self.cfg.max_new_tokens):
            yield self.sample()
            if self.generated.shape[1] != n + 1:
                raise RuntimeError("DecodeLoop: read() the sampled token before asking for the next one")


@torch.no_grad()
def generate(model, input_ids: Tensor, state: RetentionState | None = None, attention_mask=None,
             chunk_lengths=None, *, cuda_graph: bool | None = None, state_dtype: torch.dtype | str | None = None,
             **sampling) -> tuple[Tensor, RetentionState]:
    """Batched generation. Returns generated ids [B, n] (eos-padded after a row ends) and the state.

    A finished row is fed masked tokens, so its state stops changing at its last generated token.
    `cuda_graph` and `state_dtype` choose the decode path (see DecodeLoop); `sampling` is SamplingConfig.
    """
    cfg = SamplingConfig(**sampling)
    if input_ids.dim() != 2 or input_ids.shape[1] == 0:
        raise ValueError("generation needs prompt ids [batch, time] with at least one token")
    B = input_ids.shape[0]
    logits, state = prefill(model, input_ids, state, chunk_lengths, attention_mask)
    loop = DecodeLoop(model, logits, state, cfg, cuda_graph=cuda_graph, state_dtype=state_dtype)
    done = torch.zeros(B, dtype=torch.bool, device=input_ids.device)
    pad = cfg.eos_token_id if cfg.eos_token_id is not None else 0
    any_done = False  # padding (a mask) only once a row has finished: unmasked steps take the fast kernels
    for tok in loop:
        if any_done:
            tok = torch.where(done, torch.full_like(tok, pad), tok)
            loop.read(tok, mask=~done)
        else:
            loop.read(tok)
        if cfg.eos_token_id is not None:
            done |= tok == cfg.eos_token_id
            finished = int(done.sum())
            if finished == B:
                break
            any_done = finished > 0
    return loop.generated, _model_dtype_state(loop.state, model)


class StopTextBuffer:
    """Turns generated token ids into text that is safe to show, one token at a time.

    Bytes of a multi-byte character that spans tokens are held until the
    character is complete. Text that could be the start of a stop string is
    held back until it is known not to be one, so a stop string split over
    several tokens never leaks into the output; once one completes, the text
    is cut before it and `stopped` is set.
    """

    def __init__(self, tokenizer, stop: Sequence[str] = ()):
        from tokenizers.decoders import DecodeStream

        self.tokenizer = tokenizer
        self.stop = [s for s in stop if s]
        self.text = ""  # everything decoded so far (cut at a stop string)
        self.stopped = False
        self._decoder = DecodeStream(skip_special_tokens=True)
        self._hold = max((len(s) for s in self.stop), default=1) - 1
        self._emitted = 0  # how much of text has been released

    def push(self, token_id: int) -> str:
        """Read one token; return the text it releases (possibly empty)."""
        self.text += self._decoder.step(self.tokenizer, token_id) or ""
        hits = [i for i in (self.text.find(s, self._emitted) for s in self.stop) if i >= 0]
        if hits:
            self.text = self.text[: min(hits)]
            self.stopped = True
            return ""
        return self._release(len(self.text) - self._hold if self.stop else len(self.text))

    def flush(self) -> str:
        """The text still held back, at the end of generation."""
        return self._release(len(self.text))

    def _release(self, upto: int) -> str:
        if upto <= self._emitted:
            return ""
        piece = self.text[self._emitted : upto]
        self._emitted = upto
        return piece


class TextStream:
    """Iterate to get text pieces as they decode; afterwards read .text, .token_ids, .state, .stop_reason.

    Text comes out through a StopTextBuffer: characters are never split and
    stop strings never leak into the output.
    """

    def __init__(self, model, tokenizer, prompt_ids: Sequence[int] | Tensor, state: RetentionState | None = None,
                 stop: Sequence[str] = (), chunk_lengths=None, *, cuda_graph: bool | None = None,
                 state_dtype: torch.dtype | str | None = None, **sampling):
        self.model = model
        self.tokenizer = tokenizer
        self.prompt = torch.as_tensor(prompt_ids, dtype=torch.long).reshape(1, -1)
        self.state = state
        self.stop = [s for s in stop if s]
        self.chunk_lengths = chunk_lengths
        self.cfg = SamplingConfig(**sampling)
        self.cuda_graph, self.state_dtype = cuda_graph, state_dtype
        self.token_ids: list[int] = []
        self.text = ""
        self.stop_reason: str | None = None

    def __iter__(self) -> Iterator[str]:
        model = self.model
        device = model.embed.weight.device
        if self.prompt.shape[1] == 0:
            raise ValueError("an empty prompt gives no logits to start from; pass at least one token")
        text = StopTextBuffer(self.tokenizer, self.stop)
        with torch.no_grad():
            logits, self.state = prefill(model, self.prompt.to(device), self.state, self.chunk_lengths)
            loop = DecodeLoop(model, logits, self.state, self.cfg, cuda_graph=self.cuda_graph,
                              state_dtype=self.state_dtype)
            self.stop_reason = "length"
            for tokens in loop:
                tok = int(tokens[0])
                self.token_ids.append(tok)
                loop.read(tokens)  # every generated token enters the state, the ending one too
                self.state = loop.state
                if self.cfg.eos_token_id is not None and tok == self.cfg.eos_token_id:
                    self.stop_reason = "eos"
                    break
                piece = text.push(tok)
                if text.stopped:
                    self.stop_reason = "stop"
                    break
                if piece:
                    yield piece
            self.state = _model_dtype_state(self.state, model)
        rest = text.flush()
        if rest:
            yield rest
        self.text = text.text
