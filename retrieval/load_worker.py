"""The loader worker, started by retrieval.sandbox (which imports only this package's loading modules, not
its __init__: code here and in the loaders imports its siblings relatively, never ``from retrieval import``).

Reads requests (a path, its bytes and the budgets) from stdin and answers each with a Document
or an error message on stdout, one at a time, until stdin closes. It holds nothing between
requests, so the parent may kill it at any moment (that is how a time budget ends) and start
another. Its address space is capped at MEMORY_BYTES (POSIX), so a file that allocates without
bound fails with a per-file error here instead of exhausting the machine.
"""

from __future__ import annotations

import logging
import os
import signal
import sys

from .errors import LoadError
from .framing import document_message, receive, send
from .limits import mib
from .loaders import load_document

_GRACE_SECONDS = 5.0  # the parent kills first; this is for when there is no parent any more
_MAX_LOG_RECORDS = 50  # per file: a damaged PDF can warn thousands of times


class _Collect(logging.Handler):
    """Keeps the warnings of one request, to be logged by the parent (under its logging setup)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[list] = []

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.records) < _MAX_LOG_RECORDS:
            self.records.append([record.name, record.levelno, record.getMessage()])


def main(argv: list[str]) -> int:
    memory = int(argv[0]) if argv and argv[0] != "none" else None
    _limit_resources(memory)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it kills us if needed
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a stray print in a library must not corrupt the replies
    logs = _Collect()
    logging.getLogger().addHandler(logs)
    logging.captureWarnings(True)
    requests = sys.stdin.buffer
    try:
        _preload()
    except ImportError as e:  # say which parser is missing instead of dying with a traceback
        send(out, {"ready": False, "error": f"a document parser is not installed: {e}"})
        return 1
    send(out, {"ready": True})
    while (message := receive(requests)) is not None:
        header, data = message
        logs.records = []
        _deadline(header.get("max_seconds"))
        reply, payload = _answer(header, data, memory)
        _deadline(None)
        try:
            send(out, {**reply, "logs": logs.records}, payload)
        except BrokenPipeError:  # the parent is gone
            return 0
    return 0


def _deadline(seconds: float | None) -> None:
    """SIGALRM (whose default action ends the process, even inside C code) a little after the parent's own
    budget: a worker orphaned by a killed parent stops by itself instead of working on forever."""
    if hasattr(signal, "setitimer"):
        signal.setitimer(signal.ITIMER_REAL, 0 if seconds is None else seconds + _GRACE_SECONDS)


def _answer(header: dict, data: bytes, memory: int | None) -> tuple[dict, bytes]:
    try:
        return document_message(load_document(header["path"], data, None, header.get("max_decompressed_bytes")))
    except LoadError as exc:
        return {"error": str(exc)}, b""
    except MemoryError:
        limit = f" (the loader may use {mib(memory)}; LoadLimits(max_memory_bytes=...))" if memory else ""
        return {"error": f"out of memory while extracting the text{limit}"}, b""
    except RecursionError:
        return {"error": "too deeply nested to extract"}, b""
    except Exception as exc:  # a loader bug costs one file
        return {"error": f"unexpected error: {type(exc).__name__}: {exc}"}, b""


def _limit_resources(memory: int | None) -> None:
    try:
        import resource
    except ImportError:  # not POSIX: the time budget still applies
        return
    for name, value in (("RLIMIT_AS", memory), ("RLIMIT_CORE", 0)):
        kind = getattr(resource, name, None)
        if kind is None or value is None:
            continue
        try:
            _, hard = resource.getrlimit(kind)
            if hard != resource.RLIM_INFINITY:
                value = min(value, hard)
            resource.setrlimit(kind, (value, hard))
        except (ValueError, OSError):
            pass


def _preload() -> None:
    """Import the parsers now, so that no file's budget pays for it."""
    import bs4  # noqa: F401
    import charset_normalizer  # noqa: F401
    import pypdf  # noqa: F401


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
