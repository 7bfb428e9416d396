"""app: retrieval + RetNet joined into a multi-document QA and memory system.

    from app import MultiDocQA
    qa = MultiDocQA("manuals")                    # default model (data/model) + MiniLM embedder
    qa.add(["docs/"])
    answer = qa.ask("How do I reset it?")         # answer.text, answer.sources
    with qa.session() as s:                       # a conversation: constant-size state
        s.ask("...")
        s.save("chat.session")

The rooms: prompt (the prompt format: the contract with the training data), options
(AnswerOptions), retrieve (search + re-rank), encoder (the Reader), decoder (AnswerStream),
session, cache, qa (MultiDocQA), langchain, cli.

Names are resolved on first use (PEP 562) so that ``import app.prompt``, which the
training-data builders run in many worker processes, does not import torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "MultiDocQA": "qa", "Answer": "types", "Source": "types", "Turn": "types", "Session": "session",
    "AnswerStream": "decoder", "Reader": "encoder", "PrefixCache": "cache", "AnswerOptions": "options",
    "retrieve": "retrieve", "AppError": "errors", "EmptyQuestionError": "errors",
    "QuestionTooLongError": "errors", "ModelNotFoundError": "errors", "CollectionNotFoundError": "errors",
    "SessionFileError": "errors", "SessionModelMismatchError": "errors", "LAYOUTS": "prompt",
    "DEFAULT_LAYOUT": "prompt", "encode_turn": "prompt", "TurnTokens": "prompt", "REFUSAL": "prompt",
    "Quote": "types",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'app' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value
