"""Fixtures for tests/retnet: converted weights are cached in a temporary folder, never in ~/.cache."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _conversion_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("RETNET_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "retnet-cache"))
