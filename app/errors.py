"""Errors the app raises for bad input: each message says, for a person, what is wrong and what to do."""

from __future__ import annotations


class AppError(Exception):
    """Base class: the CLI prints these as one line, without a traceback."""


class EmptyQuestionError(AppError, ValueError):
    """The question is empty or only whitespace."""


class QuestionTooLongError(AppError, ValueError):
    """The question is longer than the configured limit."""


class ModelNotFoundError(AppError, FileNotFoundError):
    """No model directory where one was expected."""


class CollectionNotFoundError(AppError, LookupError):
    """A named collection does not exist (and was not asked to be created)."""


class SessionFileError(AppError, ValueError):
    """A session file is missing, corrupted, truncated, malformed or not a session file, or cannot be written."""


class SessionModelMismatchError(SessionFileError):
    """A session file was written by a different model than the one loaded."""
