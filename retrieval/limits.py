"""How much one file may cost to load: bytes read, seconds, decompressed bytes, memory.

Each limit ends in a per-file ``LoadError`` that names it and how to raise it, so a hostile or
broken file costs one line of an ingest report, never the batch. ``None`` switches a limit off.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MIB = 2**20
DEFAULT_MAX_FILE_BYTES = 100 * MIB
DEFAULT_MAX_SECONDS = 120.0
DEFAULT_MAX_DECOMPRESSED_BYTES = 256 * MIB
DEFAULT_MAX_MEMORY_BYTES = 4096 * MIB


@dataclass(frozen=True)
class LoadLimits:
    """Per-file budgets for turning a file into a Document (retrieval.loaders).

    - ``max_file_bytes``: bytes read from disk (counted while reading; sizes can lie).
    - ``max_seconds``: wall time to extract the text. With a budget, extraction runs in a
      separate worker process (retrieval.sandbox) that is killed when the budget ends, which
      also stops stalls inside C code; ``None`` extracts in this process, unbounded.
    - ``max_decompressed_bytes``: bytes a document may inflate to, summed over all its
      compressed streams (PDF), and the largest extracted text.
    - ``max_memory_bytes``: address space of the worker process (POSIX), a backstop for
      allocations no other budget counts.
    """

    max_file_bytes: int | None = DEFAULT_MAX_FILE_BYTES
    max_seconds: float | None = DEFAULT_MAX_SECONDS
    max_decompressed_bytes: int | None = DEFAULT_MAX_DECOMPRESSED_BYTES
    max_memory_bytes: int | None = DEFAULT_MAX_MEMORY_BYTES

    def __post_init__(self) -> None:
        for name in ("max_file_bytes", "max_seconds", "max_decompressed_bytes", "max_memory_bytes"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be positive or None, not {value!r}")
            if value == math.inf:  # no limit, said another way
                object.__setattr__(self, name, None)

    def to_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def mib(n: int) -> str:
    """Bytes for messages: 1.5 MiB, 600.0 KiB, 512 bytes."""
    if n >= MIB:
        return f"{n / MIB:.1f} MiB"
    return f"{n / 1024:.1f} KiB" if n >= 1024 else f"{n} bytes"


def too_large(size: int | None, max_bytes: int) -> str:
    """``size`` None: the file was longer than its size said (a device, a growing file)."""
    what = f"{mib(size)} > limit {mib(max_bytes)}" if size is not None else f"more than the limit of {mib(max_bytes)}"
    return (f"file too large: {what} (raise it: --max-file-mb on the command line, "
            f"LoadLimits(max_file_bytes=...) in Python)")


def too_slow(seconds: float) -> str:
    return (f"loading took longer than the {seconds:g} s budget per file (raise it: --max-file-seconds on the "
            f"command line, LoadLimits(max_seconds=...) in Python)")


def too_much_text(chars: int, max_bytes: int) -> str:
    return (f"extracted text too large: {chars:,} characters > limit {mib(max_bytes)} "
            f"(LoadLimits(max_decompressed_bytes=...))")
