"""Where collections live and what they may be called."""

from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import CollectionError

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def default_data_dir() -> Path:
    """``$RETNET_RAG_DATA_DIR``, else ``~/.local/share/retnet-rag/collections``."""
    env = os.environ.get("RETNET_RAG_DATA_DIR")
    return Path(env) if env else Path.home() / ".local" / "share" / "retnet-rag" / "collections"


def validate_name(name: str) -> str:
    """Collection names are one plain path component: letters, digits, ``_ . -``.

    So ``..``, ``a/b``, ``/etc`` and the like can never leave the data directory.
    """
    if not is_valid_name(name):
        raise CollectionError(
            f"invalid collection name {name!r}: use 1-128 letters, digits, '_', '.', '-',"
            " starting with a letter or digit"
        )
    return name


def collection_dir(name: str, data_dir: str | os.PathLike | None) -> Path:
    """The folder of collection ``name`` under ``data_dir`` (default: default_data_dir())."""
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    path = root / validate_name(name)
    if path.resolve().parent != root.resolve():  # belt and braces against odd file systems
        raise CollectionError(f"collection {name!r} would lie outside {root}")
    return path


def is_valid_name(name: str) -> bool:
    return isinstance(name, str) and bool(_NAME.fullmatch(name))
