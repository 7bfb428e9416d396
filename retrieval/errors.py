"""Exceptions raised by the retrieval package."""


class RetrievalError(Exception):
    """Base class for errors from this package."""


class LoadError(RetrievalError):
    """A file could not be turned into a Document; the message says why, for a person."""


class CollectionError(RetrievalError):
    """A collection cannot be opened or used as asked (bad name, wrong embedder, locked...)."""


class CollectionBusyError(CollectionError):
    """Another process kept the collection's write lock for longer than we were willing to wait."""
