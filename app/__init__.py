"""app: retrieval + RetNet joined into a multi-document QA and memory system.

    from app import MultiDocQA
    qa = MultiDocQA("manuals")                    # default model (data/model) + MiniLM embedder
    qa.add(["docs/"])
    answer = qa.ask("How do I reset it?")         # answer.text, answer.sources
    with qa.session() as s:                       # a conversation: constant-size state
        s.ask("...")
        s.save("chat.session")

Names are imported lazily, so ``import app.layout`` (used by the training-data
builder) pulls in neither torch nor the retrieval stack.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "MultiDocQA": "qa",
    "Answer": "types",
    "Source": "types",
    "Turn": "types",
    "Session": "session",
    "AnswerStream": "decoder",
    "Reader": "encoder",
    "PrefixCache": "cache",
    "AppError": "errors",
    "EmptyQuestionError": "errors",
    "QuestionTooLongError": "errors",
    "ModelNotFoundError": "errors",
    "CollectionNotFoundError": "errors",
    "SessionFileError": "errors",
    "SessionModelMismatchError": "errors",
    "SessionBusyError": "errors",
    "LAYOUTS": "layout",
    "DEFAULT_LAYOUT": "layout",
    "encode_turn": "layout",
    "TurnTokens": "layout",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'app' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
