"""Load a file under its time budget: the text is extracted in a worker process that is killed
when the file's time is up.

A budget checked inside our own loops cannot stop a parser stalled in C code (zlib, regular
expressions, a library's inner loop), so the only robust stop is a process. One worker
(retrieval.load_worker) serves every file in turn and stays up between calls, so a small file
costs a round trip through two pipes (well under a millisecond), not a process start (~0.5 s,
paid once, and again only after a kill). The worker's stdin closing ends it, so it never
outlives this process.

``LoadLimits(max_seconds=None)`` loads in this process instead, with no time budget.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from .errors import LoadError
from .framing import document_from_message, receive, send
from .limits import LoadLimits, too_slow
from .loaders import load_document
from .types import Document

logger = logging.getLogger(__name__)

STARTUP_SECONDS = 120.0  # a worker that is not ready by then will not be
# The worker imports this package's loaders by path: never a ``retrieval`` folder that happens to
# be in the working directory, and not the package's __init__ (faiss, numpy, SQLite: ~1 s, unused).
_BOOT = """import sys, types
if sys.path and sys.path[0] == "":
    del sys.path[0]  # -c puts the working directory first: it must not shadow bs4 or pypdf either
package = types.ModuleType("retrieval")
package.__path__ = [sys.argv[1]]
sys.modules["retrieval"] = package
from retrieval.load_worker import main
sys.exit(main(sys.argv[2:]))
"""
_PACKAGE_DIR = str(Path(__file__).resolve().parent)


def load_limited(path: str | os.PathLike, data: bytes, limits: LoadLimits) -> Document:
    """``load_document(path, data)`` within ``limits``; every way it can go wrong is a LoadError."""
    if limits.max_seconds is None:
        return load_document(path, data, None, limits.max_decompressed_bytes)
    with _lock:
        return _worker(limits.max_memory_bytes).load(Path(path).absolute(), data, limits)


class LoaderProcess:
    """One worker process and the thread that reads its replies."""

    def __init__(self, memory_bytes: int | None) -> None:
        self.memory_bytes = memory_bytes
        self.owner = os.getpid()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _BOOT, _PACKAGE_DIR, str(memory_bytes or "none")],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            )
        except OSError as exc:
            raise LoadError(f"cannot start the loader process ({exc}); LoadLimits(max_seconds=None) loads "
                            f"in this process, without a time budget") from None
        self.replies: queue.Queue = queue.Queue()
        threading.Thread(target=self._read_replies, name="loader-replies", daemon=True).start()
        try:
            reply = self._reply(STARTUP_SECONDS)
        except queue.Empty:
            reply = None
        if reply is None or not reply[0].get("ready"):
            why = reply[0].get("error") if reply is not None else None
            self.kill(grace=2.0)
            raise LoadError(f"the loader process did not start ({why or self._death()})")

    def load(self, path: Path, data: bytes, limits: LoadLimits) -> Document:
        request = {"path": str(path), "max_seconds": limits.max_seconds,
                   "max_decompressed_bytes": limits.max_decompressed_bytes}
        try:
            try:
                send(self.proc.stdin, request, data)
            except (BrokenPipeError, OSError):
                self.kill()
                raise LoadError(f"the loader process died before reading the file ({self._death()})") from None
            started = time.monotonic()
            reply = self._reply(limits.max_seconds)
        except queue.Empty:
            self.kill()
            logger.warning("%s: killed the loader after %.1f s", path, time.monotonic() - started)
            raise LoadError(too_slow(limits.max_seconds)) from None
        except BaseException:  # Ctrl-C while it works: it would keep working on a file nobody waits for
            self.kill()
            raise
        if reply is None:
            self.kill(grace=2.0)
            raise LoadError(f"the loader crashed on this file ({self._death()})")
        header, payload = reply
        for name, level, message in header.get("logs", []):  # the worker's warnings, under our logging setup
            logging.getLogger(name).log(level, "%s (%s)", message, path.name)
        if "error" in header:
            raise LoadError(header["error"])
        return document_from_message(header, payload)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self, grace: float = 0.0) -> None:
        """Kill the worker; with `grace`, first give a worker that closed its pipe that long to exit, so
        its own exit status (not our SIGKILL) says how it died."""
        if grace and self.alive():
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        if self.alive():
            self.proc.kill()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        for pipe in (self.proc.stdin, self.proc.stdout):
            try:
                pipe.close()
            except OSError:
                pass

    def close(self) -> None:
        """Let it finish on its own: closing stdin ends its loop."""
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.kill()

    def _reply(self, timeout: float) -> tuple[dict, bytes] | None:
        """The next reply; None if the worker closed its end (died); queue.Empty after ``timeout``."""
        return self.replies.get(timeout=timeout)

    def _read_replies(self) -> None:
        try:
            while (message := receive(self.proc.stdout)) is not None:
                self.replies.put(message)
        except (OSError, ValueError):  # the pipe was closed under us by kill()
            pass
        self.replies.put(None)

    def _death(self) -> str:
        code = self.proc.poll()
        if code is None:
            return "no answer"
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            hint = " (out of memory?)" if -code == getattr(signal, "SIGKILL", 9) else ""
            return f"killed by {name}{hint}"
        return f"exit status {code}"


_lock = threading.Lock()
_current: LoaderProcess | None = None


def _worker(memory_bytes: int | None) -> LoaderProcess:
    """The shared worker, (re)started when it is gone, was forked from another process or has other limits."""
    global _current
    if _current is not None and (not _current.alive() or _current.owner != os.getpid()
                                 or _current.memory_bytes != memory_bytes):
        if _current.owner == os.getpid():
            _current.close()
        _current = None
    if _current is None:
        _current = LoaderProcess(memory_bytes)
    return _current


@atexit.register
def shutdown() -> None:
    """Stop the shared worker (it also stops by itself when this process ends)."""
    global _current
    idle = _lock.acquire(timeout=1)  # a thread may still be waiting on a file: then stop the worker anyway
    try:
        if _current is not None and _current.owner == os.getpid():
            _current.close() if idle else _current.kill()
        _current = None
    finally:
        if idle:
            _lock.release()
