"""Answerers: one interface over the models the evaluation compares.

An answerer answers one question from given passages (best first; empty for closed book) with a
given prompt layout, greedily, from nothing read before, and says how many prompt tokens it read.
``RetNetAnswerer`` does exactly what the app does for a one-shot question (app.prompt +
app.encoder + app.decoder); the same-size Transformer baseline lives in ``evaluation.transformer_answerer``.
``load_answerer`` picks the class from the model directory's config.json.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from app.defaults import default_model_dir
from app.errors import ModelNotFoundError
from app.prompt import PassageText
from retnet import CheckpointError
from retnet.checkpoint import read_config_dict


@runtime_checkable
class Answerer(Protocol):
    name: str

    def answer(self, question: str, passages: list[PassageText], layout: str,
               max_new_tokens: int) -> tuple[str, int]:
        """Greedy answer text and the number of prompt tokens."""
        ...


class RetNetAnswerer:
    """The app's reader: lay out the turn, ingest it from an empty state, decode greedily."""

    def __init__(self, model_dir: str | Path | None = None, device: str = "cpu", *, reader=None,
                 name: str | None = None):
        from app.encoder import Reader

        self.reader = reader if reader is not None else Reader.from_pretrained(model_dir, device=device, cache=None)
        self.model = self.reader.model
        self.name = name or (getattr(self.model.config, "extra", None) or {}).get("name") or _model_name(model_dir)
        self._root = self.reader.root_key()

    def answer(self, question: str, passages: Sequence[PassageText], layout: str,
               max_new_tokens: int) -> tuple[str, int]:
        from app.decoder import AnswerStream

        reader = self.reader
        turn = reader.layout_turn(question, list(passages), first_turn=True, layout=layout)
        ing = reader.ingest(turn, reader.new_state(), self._root)
        cfg = reader.sampling_config(max_new_tokens=max_new_tokens, temperature=0.0)
        return AnswerStream(reader, ing.state, ing.logits, ing.key, sampling=cfg).result().text, ing.prompt_tokens


def _model_name(model_dir: str | Path | None) -> str:
    path = Path(model_dir) if model_dir is not None else default_model_dir()
    return path.resolve().name or "retnet"


def read_model_config(model_dir: str | Path | None) -> dict:
    """config.json of a model directory (default: the bundled model), with clear errors."""
    path = Path(model_dir).expanduser() if model_dir is not None else default_model_dir()
    try:
        return read_config_dict(path)
    except CheckpointError as e:
        raise ModelNotFoundError(str(e)) from None


def load_answerer(model_dir: str | Path | None = None, device: str = "cpu") -> Answerer:
    """The answerer for a model directory: ``model_type == "transformer-baseline"`` -> the
    Transformer baseline (evaluation.transformer_answerer.TransformerAnswerer), anything else -> the RetNet reader."""
    from training.transformer import MODEL_TYPE as TRANSFORMER_MODEL_TYPE

    config = read_model_config(model_dir)
    if config.get("model_type") == TRANSFORMER_MODEL_TYPE:
        from .transformer_answerer import TransformerAnswerer

        return TransformerAnswerer(model_dir, device=device)
    return RetNetAnswerer(model_dir, device=device)
