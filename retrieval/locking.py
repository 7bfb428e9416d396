"""An exclusive advisory lock on a file, so only one process writes a collection at a time."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import CollectionBusyError

try:
    import fcntl
except ImportError:  # not POSIX: no cross-process lock, single-writer is then up to the user
    fcntl = None


@contextmanager
def exclusive_lock(path: Path, timeout: float | None = 60.0) -> Iterator[None]:
    """Hold an flock on ``path``; wait up to ``timeout`` seconds (None: forever).

    The kernel drops the lock when the process dies, so a killed writer never leaves
    a collection locked.
    """
    if fcntl is None:
        yield
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline is not None and time.monotonic() >= deadline:
                    raise CollectionBusyError(
                        f"collection is busy: another process holds {path} (waited {timeout:g} s)"
                    ) from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
