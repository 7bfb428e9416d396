"""AnswerOptions: how the app answers (retrieval, prompt layout, sampling), as one object.

The CLI, MultiDocQA and the Reader take one AnswerOptions instead of spelling out every setting;
keyword overrides are routed by name (sampling fields into ``sampling``) and unknown names fail.

    opts = AnswerOptions.build(k=2, max_new_tokens=64, temperature=0.7)
    qa = MultiDocQA("manuals", options=opts)       # or MultiDocQA("manuals", k=2, max_new_tokens=64)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from retnet.generation import SamplingConfig

from .chatml import LAYOUT as CHAT_LAYOUT
from .defaults import DEFAULT_K, DEFAULT_MAX_NEW_TOKENS, DEFAULT_MAX_QUESTION_TOKENS
from .prompt import LAYOUTS

ALL_LAYOUTS = (*LAYOUTS, CHAT_LAYOUT)  # marker layouts for marker tokenizers, ChatML for chat ones

# SamplingConfig's fields a user sets (the end-of-answer token comes from the tokenizer's markers).
SAMPLING_FIELDS = tuple(f.name for f in dataclasses.fields(SamplingConfig) if f.name != "eos_token_id")


@dataclass(frozen=True)
class AnswerOptions:
    k: int = DEFAULT_K  # passages retrieved per turn
    rerank: bool = True  # re-rank dense hits by the question's exact terms (app.retrieve)
    layout: str | None = None  # prompt layout (app.prompt.LAYOUTS, or "chatml"); None: the model's own
    instructions: str | None = None  # read once, at the start of a conversation
    max_chunk: int | None = None  # tokens per chunk (None: the prompt default, capped by the model)
    max_question_tokens: int = DEFAULT_MAX_QUESTION_TOKENS
    stop: tuple[str, ...] = ()  # extra stop strings
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(max_new_tokens=DEFAULT_MAX_NEW_TOKENS))
    # Grounded answers (app.grounding): generation restricted to spans of the passages the turn read.
    # Defaults measured on the dev set with the bundled model (benchmarks/results/grounded_dev.md).
    grounded: bool = True
    grounded_free_tokens: int = 0  # tokens of connective text allowed outside quotes, per answer
    grounded_min_tokens: int = 16  # a quote ends no sooner than this many tokens (or its passage's end)
    refuse: bool = True  # grounded: answer app.prompt.REFUSAL when the refusal score is below the threshold
    # "evidence" (app.evidence: question terms in the passages + the closest sentence's cosine; "support" where
    # the embedder has no calibration), "support" (question terms found in the passages) or "logprob"
    refusal_score: str = "evidence"
    refusal_threshold: float | None = None  # None: the score's calibrated threshold (app.grounding.REFUSAL_THRESHOLDS)
    # Free answers: who refuses. "model": the model may write the refusal sentence itself (no gate);
    # "gate": the refusal gate ("evidence" or "support") refuses before decoding and the model may not begin
    # the refusal sentence (a reader that refuses when unsure, as the SmolLM2 reader does, answers instead).
    free_refusal: str = "model"

    def __post_init__(self) -> None:
        if self.layout is not None and self.layout not in ALL_LAYOUTS:
            raise ValueError(f"unknown layout {self.layout!r}; choose one of {ALL_LAYOUTS}")
        if self.max_question_tokens < 1:
            raise ValueError(f"max_question_tokens must be positive, got {self.max_question_tokens}")
        if self.k < 0:
            raise ValueError(f"k must be >= 0, got {self.k}")
        if self.refusal_score not in ("evidence", "support", "logprob"):  # app.grounding.REFUSAL_SCORES
            raise ValueError(f"refusal_score must be 'evidence', 'support' or 'logprob', got {self.refusal_score!r}")
        if self.free_refusal not in ("model", "gate"):
            raise ValueError(f"free_refusal must be 'model' or 'gate', got {self.free_refusal!r}")
        if self.grounded_min_tokens < 1:
            raise ValueError(f"grounded_min_tokens must be >= 1, got {self.grounded_min_tokens}")
        if self.grounded_free_tokens < 0:
            raise ValueError(f"grounded_free_tokens must be >= 0, got {self.grounded_free_tokens}")
        object.__setattr__(self, "stop", tuple(self.stop))

    @classmethod
    def build(cls, base: AnswerOptions | None = None, **overrides) -> AnswerOptions:
        """``base`` (default: the defaults) with ``overrides``; None values keep the base's setting."""
        base = base or cls()
        overrides = {k: v for k, v in overrides.items() if v is not None}
        own = {f.name for f in dataclasses.fields(cls)} - {"sampling"}
        unknown = set(overrides) - own - set(SAMPLING_FIELDS)
        if unknown:
            raise TypeError(f"unknown options {sorted(unknown)}; known: {sorted(own | set(SAMPLING_FIELDS))}")
        sampling = {k: v for k, v in overrides.items() if k in SAMPLING_FIELDS}
        mine = {k: v for k, v in overrides.items() if k in own}
        return dataclasses.replace(base, sampling=dataclasses.replace(base.sampling, **sampling), **mine)
