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

from .defaults import DEFAULT_K, DEFAULT_MAX_NEW_TOKENS, DEFAULT_MAX_QUESTION_TOKENS
from .prompt import DEFAULT_LAYOUT, LAYOUTS

# SamplingConfig's fields a user sets (the end-of-answer token comes from the tokenizer's markers).
SAMPLING_FIELDS = tuple(f.name for f in dataclasses.fields(SamplingConfig) if f.name != "eos_token_id")


@dataclass(frozen=True)
class AnswerOptions:
    k: int = DEFAULT_K  # passages retrieved per turn
    rerank: bool = True  # re-rank dense hits by the question's exact terms (app.retrieve)
    layout: str = DEFAULT_LAYOUT  # prompt layout (app.prompt.LAYOUTS)
    instructions: str | None = None  # read once, at the start of a conversation
    max_chunk: int | None = None  # tokens per chunk (None: the prompt default, capped by the model)
    max_question_tokens: int = DEFAULT_MAX_QUESTION_TOKENS
    stop: tuple[str, ...] = ()  # extra stop strings
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(max_new_tokens=DEFAULT_MAX_NEW_TOKENS))

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"unknown layout {self.layout!r}; choose one of {LAYOUTS}")
        if self.max_question_tokens < 1:
            raise ValueError(f"max_question_tokens must be positive, got {self.max_question_tokens}")
        if self.k < 0:
            raise ValueError(f"k must be >= 0, got {self.k}")
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
