"""Fixtures for retrieval tests: a fast fake embedder and collections in tmp dirs."""

from __future__ import annotations

import pytest

from retrieval import Collection, HashEmbedder


@pytest.fixture
def embedder() -> HashEmbedder:
    return HashEmbedder(dim=64)


@pytest.fixture
def data_dir(tmp_path):
    return tmp_path / "collections"


@pytest.fixture
def make_collection(data_dir, embedder):
    opened: list[Collection] = []

    def make(name: str = "docs", **options) -> Collection:
        options.setdefault("embedder", embedder)
        options.setdefault("progress", False)
        col = Collection.open_or_create(name, data_dir, **options)
        opened.append(col)
        return col

    yield make
    for col in opened:
        col.close()
