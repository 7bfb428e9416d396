"""Session files: a conversation's state and transcript in one safetensors file.

The file holds the state's tensors and state header (so it is also a state file that
``retnet.RetentionState.load`` reads) plus two metadata entries: ``session``, a JSON object
(format, version, the state's prefix-cache key, the session's settings and its turns), and
``checksum``.

The checksum is a corruption check, not a seal: a SHA-256 over the session JSON and every tensor,
stored in the same file, so anyone who can write the file can recompute it. It catches damaged
bytes; it says nothing about who wrote the file. Nothing in a session file is trusted either way:
``read_session_file`` parses and validates all of it (state tensors, batch 1, dtype, finite values,
offsets, layer count and shapes against the model, key, every turn) before it returns, nothing is
unpickled or executed, so a hand-edited file can at worst hold a different, well-formed
conversation. A keyed MAC would add a per-user secret to manage and stop people from opening a
session file on another machine, for no protection the validation does not already give.

Every problem with a file, whatever its cause, is one error class: ``SessionFileError``
(``SessionModelMismatchError`` when the file is well formed but another model wrote it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

from retnet import RetentionState, StateMismatchError
from retnet.io import atomic_write, read_safetensors

from .errors import SessionFileError, SessionModelMismatchError
from .types import Answer, Source, Timings, Usage

SESSION_FORMAT = "retnet-rag-session"
SESSION_FORMAT_VERSION = 1

_KEY = re.compile(r"[0-9a-f]{64}")  # a SHA-256 prefix-cache key, hex


@dataclass
class SavedSession:
    """What a session file holds. ``settings`` (k, layout, instructions, documents) are informational:
    a loaded session keeps the settings it was opened with."""

    state: RetentionState
    key: bytes
    turns: list[Answer]
    name: str | None = None
    settings: dict = field(default_factory=dict)


# -- writing -------------------------------------------------------------------------------------------
def write_session_file(path: str | Path, saved: SavedSession) -> Path:
    """Write atomically (temp file + rename): a failed write leaves the previous file as it was.
    Any failure (a folder in the way, no permission, a full disk) is a SessionFileError."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise SessionFileError(f"cannot save the session to {path}: it is a folder; give a file name")
    tensors, header = saved.state.file_tensors(), saved.state.file_header()
    session = json.dumps({
        "format": SESSION_FORMAT, "format_version": SESSION_FORMAT_VERSION, "key": saved.key.hex(),
        **saved.settings, "name": saved.name, "saved_at": time.time(), "turns": [t.to_dict() for t in saved.turns]})
    metadata = {"header": json.dumps(header), "session": session, "checksum": corruption_checksum(session, tensors)}
    try:
        atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
    except (OSError, SafetensorError) as e:
        reason = getattr(e, "strerror", None) or str(e)
        raise SessionFileError(f"cannot save the session to {path}: {reason}") from e
    return path


def corruption_checksum(session_json: str, tensors: dict) -> str:
    """SHA-256 over the session JSON and every tensor's name, shape, dtype and bytes. Detects
    corruption only: it is not keyed, so it does not show who wrote the file."""
    h = hashlib.sha256(session_json.encode("utf-8"))
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(name.encode() + str(tuple(t.shape)).encode() + str(t.dtype).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# -- reading -------------------------------------------------------------------------------------------
def read_session_file(path: str | Path, model) -> SavedSession:
    """Everything a session file holds, parsed and checked end to end against ``model``."""
    path = Path(path).expanduser()
    where = f"session file {path}"
    if not path.exists():
        raise SessionFileError(f"no session file at {path}")
    if not path.is_file():
        raise SessionFileError(f"{path} is a folder, not a file" if path.is_dir() else
                               f"{path} is not a regular file (a device, pipe or socket?)")
    meta, tensors = _read_raw(path)
    if "session" not in meta:
        raise SessionFileError(f"{path} is a bare state file, not a session file (no transcript)")
    try:
        intact = meta.get("checksum") == corruption_checksum(meta["session"], tensors)
    except (TypeError, ValueError, RuntimeError):
        intact = False
    if not intact:
        raise SessionFileError(f"{where} is corrupted (checksum mismatch)")
    data = _session_json(meta["session"], where)
    state = _state(meta.get("header"), tensors, model, where)
    return SavedSession(state, _key(data.get("key"), where), _turns(data.get("turns", []), where),
                        _name(data.get("name"), where),
                        {k: data[k] for k in ("k", "layout", "instructions", "documents") if k in data})


def _read_raw(path: Path) -> tuple[dict, dict]:
    try:
        meta, tensors = read_safetensors(path)  # copied: a later change to the file cannot reach them
    except Exception as e:  # any reader failure on a damaged file is the same story for the user
        raise SessionFileError(f"cannot read session file {path}: it is truncated or corrupted "
                               f"({type(e).__name__}: {e})") from None
    return meta, tensors


def _session_json(text: str, where: str) -> dict:
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise SessionFileError(f"{where} is corrupted (bad transcript JSON: {e})") from None
    if not isinstance(data, dict):
        raise SessionFileError(f"{where} is corrupted (its session record is not a JSON object)")
    if data.get("format") != SESSION_FORMAT or data.get("format_version") != SESSION_FORMAT_VERSION:
        raise SessionFileError(f"{where} has session format {data.get('format')!r} version "
                               f"{data.get('format_version')!r}; this code reads {SESSION_FORMAT!r} version "
                               f"{SESSION_FORMAT_VERSION}")
    return data


def _state(header_json: Any, tensors: dict, model, where: str) -> RetentionState:
    """The state, well formed on its own (``RetentionState.from_file``), of this model, batch 1, in the
    model's state dtype and shapes."""
    try:
        header = json.loads(header_json or "null")
    except (ValueError, RecursionError) as e:
        raise SessionFileError(f"{where} holds a malformed state header ({e})") from None
    try:
        state = RetentionState.from_file(header, tensors, source=where)
    except StateMismatchError as e:  # its message names the file and the problem
        raise SessionFileError(str(e)) from None
    if state.fingerprint != model.fingerprint():
        raise SessionModelMismatchError(f"{where} was written by a different model (fingerprint "
                                        f"{state.fingerprint}, this model {model.fingerprint()}); load it with "
                                        f"the model that saved it")
    if state.batch_size != 1:
        raise SessionFileError(f"{where} holds a state of {state.batch_size} sequences; a session has one")
    try:
        state.check_layout(model.config, source=where)
    except StateMismatchError as e:
        raise SessionFileError(f"{e} (the file names this model, so it was damaged or edited)") from None
    want = model.new_state(1, device="meta").layers[0].dtype
    if state.layers[0].dtype != want:
        raise SessionFileError(f"{where} holds a {state.layers[0].dtype} state; this model's state is {want}")
    return state


def _key(key: Any, where: str) -> bytes:
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise SessionFileError(f"{where} is malformed: its state key must be 64 hex digits, got {_show(key)}")
    return bytes.fromhex(key)


def _name(name: Any, where: str) -> str | None:
    if name is not None and not isinstance(name, str):
        raise SessionFileError(f"{where} is malformed: its name must be text, got {_show(name)}")
    return name


def _turns(turns: Any, where: str) -> list[Answer]:
    if not isinstance(turns, list):
        raise SessionFileError(f"{where} is malformed: turns must be a list, got {_show(turns)}")
    answers = []
    for i, turn in enumerate(turns):
        problem = _turn_problem(turn)
        if problem is None:
            try:
                answers.append(Answer.from_dict(turn))
                continue
            except Exception as e:  # a safety net: the checks above should have said why
                problem = f"{type(e).__name__}: {e}"
        raise SessionFileError(f"{where} is malformed: turn {i + 1}: {problem}")
    return answers


def _turn_problem(turn: Any) -> str | None:
    """Why ``turn`` (a JSON value) is not an ``Answer.to_dict()`` record, or None."""
    if not isinstance(turn, dict):
        return f"expected an object, got {_show(turn)}"
    for name, kind, required in (("question", str, True), ("text", str, True), ("stop_reason", str, False),
                                 ("refused", bool, False), ("sources", list, False), ("quotes", list, False),
                                 ("usage", dict, False), ("timings", dict, False)):
        if name in turn:
            if not _is(turn[name], kind):
                return f"{name} must be {kind.__name__}, got {_show(turn[name])}"
        elif required:
            return f"no {name}"
    for key, cls in (("usage", Usage), ("timings", Timings)):
        problem = _record_problem(turn.get(key, {}), cls)
        if problem:
            return f"{key}: {problem}"
    sources = turn.get("sources", [])
    for j, s in enumerate(sources):
        problem = _record_problem(s, Source)
        if problem:
            return f"source {j + 1}: {problem}"
    numbers = [s["n"] for s in sources]
    if len(set(numbers)) != len(numbers):
        return f"sources repeat a citation number ({numbers})"
    texts = {s["n"]: s["text"] for s in sources}
    for j, q in enumerate(turn.get("quotes", [])):
        problem = _quote_problem(q, texts)
        if problem:
            return f"quote {j + 1}: {problem}"
    return None


def _quote_problem(q: Any, texts: dict[int, str]) -> str | None:
    if not isinstance(q, dict):
        return f"expected an object, got {_show(q)}"
    for name, kind, required in (("source", int, True), ("start", int, True), ("end", int, True),
                                 ("text", str, True), ("score", float, False), ("tokens", int, False)):
        if name not in q:
            if required:
                return f"no {name}"
        elif not _is(q[name], kind):
            return f"{name} must be {kind.__name__}, got {_show(q[name])}"
    if q["source"] not in texts:
        return f"cites source {q['source']}, which the turn does not have"
    if not 0 <= q["start"] <= q["end"] <= len(texts[q["source"]]):
        return f"offsets {q['start']}:{q['end']} lie outside its source's text"
    return None


def _record_problem(d: Any, cls) -> str | None:
    """Why ``d`` is not a ``dataclasses.asdict`` record of ``cls`` (required fields present, every known
    field of its annotated type; unknown fields are ignored), or None."""
    if not isinstance(d, dict):
        return f"expected an object, got {_show(d)}"
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name not in d:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                return f"no {f.name}"
        elif not _is(d[f.name], hints[f.name]):
            return f"{f.name} must be {_type_name(hints[f.name])}, got {_show(d[f.name])}"
    return None


def _is(value: Any, kind: Any) -> bool:
    """isinstance for JSON values: a bool is no number, an int is also a float."""
    kinds = typing.get_args(kind) or (kind,)
    if isinstance(value, bool):
        return bool in kinds
    if float in kinds:
        kinds = (*kinds, int)
    return isinstance(value, tuple(k for k in kinds if isinstance(k, type)))


def _type_name(kind: Any) -> str:
    return kind.__name__ if isinstance(kind, type) else str(kind)


def _show(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (dict, list, str, int, float, bool, type(None))) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
