"""A per-document budget on the bytes a PDF's compressed streams inflate to.

pypdf limits each stream on its own (75 MB by default), so a small file of many highly
compressible streams inflates without bound: 2.7 MB ran to 2.3 GB (issue 16). Every stream
pypdf decodes goes through ``pypdf.filters.decode_stream_data``; while a budget is active in
this thread, a wrapper around that function adds up what it returns and stops the document
once the sum passes the budget. pypdf's own per-stream limits are lowered to the budget too,
so one stream cannot inflate far past it before it is counted.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

from .errors import LoadError
from .limits import mib

_active = threading.local()  # .budget: the DecompressionBudget of the extraction running in this thread
_install_lock = threading.Lock()
# pypdf's per-stream output limits (pypdf >= 6 Configuration fields), lowered to the document budget.
_STREAM_LIMITS = (
    "zlib_maximum_output_length", "lzw_maximum_output_length", "run_length_maximum_output_length",
    "jbig2_maximum_output_length", "brotli_maximum_output_length", "array_based_stream_maximum_output_length",
    "image_maximum_buffer_size",
)


class DecompressionLimitError(LoadError):
    """The document's streams inflated past its budget."""


class DecompressionBudget:
    """Bytes inflated so far by one document, and the page being read (None: the document's structure)."""

    def __init__(self, max_bytes: int | None) -> None:
        self.max_bytes = max_bytes
        self.used = 0
        self.page: int | None = None
        self.exceeded: DecompressionLimitError | None = None
        self.stream_limit: int | None = None  # pypdf's zlib output limit per stream while this budget runs

    def where(self) -> str:
        return f"page {self.page}" if self.page is not None else "the document's structure (before any page)"

    def charge(self, n: int) -> None:
        self.used += n
        if self.max_bytes is not None and self.used > self.max_bytes and self.exceeded is None:
            self.exceeded = DecompressionLimitError(
                f"decompression budget exceeded on {self.where()}: the document's compressed streams inflate to "
                f"more than {mib(self.max_bytes)} (a decompression bomb? raise "
                f"LoadLimits(max_decompressed_bytes=...) if the file is genuine)"
            )
        if self.exceeded is not None:
            raise self.exceeded

    def check(self) -> None:
        """Raise the budget error even if the library caught it on its way out."""
        if self.exceeded is not None:
            raise self.exceeded

    def error(self, exc: BaseException) -> LoadError:
        """The per-file error for a limit that stopped the extraction, naming the cause and the page."""
        if self.exceeded is not None:
            return self.exceeded
        if isinstance(exc, LoadError):
            return exc
        if isinstance(exc, MemoryError):
            return LoadError(f"out of memory while reading {self.where()} ({mib(self.used)} inflated so far)")
        detail = (str(exc).strip() or type(exc).__name__)[:200]
        limit = f" of {mib(self.stream_limit)}" if self.stream_limit else ""
        return LoadError(f"decompression limit reached on {self.where()}: a stream inflates past the per-stream "
                         f"limit{limit} (a decompression bomb? pypdf: {detail})")


@contextmanager
def decompression_budget(max_bytes: int | None) -> Iterator[DecompressionBudget]:
    """Count what pypdf inflates in this thread against ``max_bytes`` (None: count only)."""
    _install()
    budget = DecompressionBudget(max_bytes)
    outer = getattr(_active, "budget", None)
    _active.budget = budget
    try:
        with _stream_limits(max_bytes) as config:
            budget.stream_limit = getattr(config, "zlib_maximum_output_length", None)
            yield budget
        budget.check()
    finally:
        _active.budget = outer


def _install() -> None:
    """Wrap ``pypdf.filters.decode_stream_data`` once (pypdf looks it up at each call)."""
    import pypdf.filters as filters

    with _install_lock:
        original = filters.decode_stream_data
        if getattr(original, "_counts_budget", False):
            return

        def counted(stream):
            data = original(stream)
            budget = getattr(_active, "budget", None)
            if budget is not None:
                budget.charge(len(data))
            return data

        counted._counts_budget = True
        filters.decode_stream_data = counted


def _stream_limits(max_bytes: int | None):
    try:
        from pypdf import apply_configuration, get_configuration
    except ImportError:  # pypdf < 6: only the document budget applies
        return nullcontext()
    current = get_configuration()
    if max_bytes is None:
        return nullcontext(current)
    lowered = {name: min(getattr(current, name) or max_bytes, max_bytes)
               for name in _STREAM_LIMITS if hasattr(current, name)}
    return apply_configuration(**lowered)
