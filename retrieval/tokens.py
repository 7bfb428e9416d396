"""Token counting for the splitter: a tokenizer's count, or a word-based estimate."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

TokenCounter = Callable[[str], int]

# One "token" is a CJK character (scripts written without spaces) or a run of up to 16
# other non-space characters, so a 40-character URL counts 3 and a long unspaced blob
# cannot hide inside one "word". Close enough to word count for prose.
_APPROX_TOKEN = re.compile(
    r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]"
    r"|[^\s\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]{1,16}"
)


def approx_token_count(text: str) -> int:
    """Word-count fallback used until a real tokenizer is given."""
    return len(_APPROX_TOKEN.findall(text))


def token_counter(tokenizer: Any = None) -> TokenCounter:
    """Adapt ``tokenizer`` to ``count(text) -> int``.

    Accepts None (word-count fallback), a callable returning an int, or an object with
    ``encode(text)`` returning a sequence of ids or an object with ``.ids``
    (``tokenizers.Tokenizer``). Special tokens are left out where the API allows,
    since they are not part of the passage.
    """
    if tokenizer is None:
        return approx_token_count
    if hasattr(tokenizer, "encode"):
        encode = tokenizer.encode

        def count(text: str) -> int:
            try:
                out = encode(text, add_special_tokens=False)
            except TypeError:
                out = encode(text)
            return len(out.ids) if hasattr(out, "ids") else len(out)

        return count
    if callable(tokenizer):
        return tokenizer
    raise TypeError(f"cannot count tokens with {type(tokenizer).__name__}: need a callable or .encode")
