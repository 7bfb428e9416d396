"""Safe file I/O: atomic writes (a temp file beside the target, fsync, then rename), and safetensors
files read whole into memory.

A reader (or a crash) sees either the old file or the new one, never half of one.

Temp files are named ``.<target name>.<pid>.<random>.tmp`` (folders the same). A writer that is
killed leaves its temp behind; the next atomic write to the same target removes the stale ones:
those whose writer (the pid in the name) is no longer running on this machine, and any not
modified for ``STALE_AFTER_S`` (a reused pid, or a writer on another machine). Temps of the old
naming, ``.<target name>.<random>.tmp``, go by age only. Nothing else in the folder is touched.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import load as _load_safetensors_bytes

STALE_AFTER_S = 15 * 60  # a temp not modified for this long belongs to no live write

_RANDOM = r"[a-z0-9_]{8}"  # tempfile's random part


@contextmanager
def atomic_path(target: str | Path):
    """Yield a temp path in the target's folder; on success it replaces the target."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(target), suffix=".tmp", dir=target.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
    try:
        yield Path(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def atomic_directory(target: str | Path):
    """Yield a temp folder beside `target`; on success it replaces `target` (a folder or file).

    The previous `target` is renamed aside first and removed only once the new one is in place,
    so a crash leaves the old folder, the new one, or the old one under `<name>.old`.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(target), suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        old = target.with_name(target.name + ".old")
        _remove(old)
        if target.exists():
            target.rename(old)
        tmp.rename(target)
        _remove(old)
    finally:
        _remove(tmp)


def remove_stale_temps(target: str | Path, now: float | None = None) -> list[Path]:
    """Remove the temp files and folders that killed atomic writes to `target` left; returns them.

    Never raises: a temp that vanishes or cannot be removed is left to the next write.
    """
    target = Path(target)
    pattern = re.compile(rf"\.{re.escape(target.name)}\.(?:(\d+)\.)?{_RANDOM}\.tmp")
    now = time.time() if now is None else now
    removed = []
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return removed
    for entry in entries:
        m = pattern.fullmatch(entry.name)
        if m is None:
            continue
        try:
            if entry.is_symlink():
                continue  # never ours: we create plain files and folders
            pid = int(m.group(1)) if m.group(1) else None
            idle = now - entry.stat(follow_symlinks=False).st_mtime
            if idle < STALE_AFTER_S and (pid is None or pid == os.getpid() or _alive(pid)):
                continue
            _remove(Path(entry.path))
            removed.append(Path(entry.path))
        except OSError:
            continue
    return removed


def _temp_prefix(target: Path) -> str:
    return f".{target.name}.{os.getpid()}."


def _alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (one of another user counts)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists but is not ours; anything else: assume alive
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(target: str | Path, write: Callable[[Path], None]) -> None:
    with atomic_path(target) as tmp:
        write(tmp)


def atomic_write_bytes(target: str | Path, data: bytes) -> None:
    atomic_write(target, lambda p: p.write_bytes(data))


def atomic_write_text(target: str | Path, text: str) -> None:
    atomic_write_bytes(target, text.encode("utf-8"))


def read_safetensors(path: str | Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """(metadata, tensors) of a safetensors file, copied into memory.

    safetensors' ``safe_open`` maps the file: its tensors stay backed by the file's pages, and if the
    file is truncated or rewritten in place after loading (another program, a non-atomic copy) the
    next read of such a tensor kills the process with SIGBUS. State and session files are small, so
    they are read whole. Errors as the library raises them (SafetensorError, ValueError, OSError).
    """
    data = Path(path).read_bytes()
    if len(data) < 8:
        raise ValueError(f"{len(data)} bytes: too short for a safetensors file")
    n = int.from_bytes(data[:8], "little")
    if n > len(data) - 8:
        raise ValueError(f"header of {n} bytes in a file of {len(data)}: truncated")
    header = json.loads(data[8 : 8 + n])
    if not isinstance(header, dict):
        raise ValueError("the safetensors header is not a JSON object")
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise ValueError("the safetensors metadata is not a map of strings")
    return meta, _load_safetensors_bytes(data)
