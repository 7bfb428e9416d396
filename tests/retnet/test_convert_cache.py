"""The conversion cache (retnet/convert/llama_gguf.py): a GGUF is hashed and converted once, the cached
safetensors give the same weights bit for bit, and a damaged, foreign or unwritable cache only costs time."""

from __future__ import annotations

import os
import sys

import pytest
import torch

pytest.importorskip("gguf")

import retnet.convert  # noqa: E402,F401  (registers the delta format)
from retnet import RetNetForCausalLM  # noqa: E402
from retnet.convert import llama_gguf as G  # noqa: E402
from retnet.convert.delta import write_delta_directory  # noqa: E402

from .test_convert_delta import random_delta  # noqa: E402
from .tiny_llama_gguf import write_tiny_llama_gguf  # noqa: E402


@pytest.fixture
def gguf_file(tmp_path, monkeypatch):
    monkeypatch.setenv(G.CACHE_ENV, str(tmp_path / "cache"))
    path = tmp_path / "tiny.gguf"
    write_tiny_llama_gguf(path, quantize=None)
    return path


def _forbid(monkeypatch, name):
    def fail(*args, **kwargs):
        raise AssertionError(f"{name} was called although the cache holds the answer")

    monkeypatch.setattr(G, name, fail)


def test_cached_conversion_is_bit_identical_and_reused(gguf_file, tmp_path, monkeypatch):
    cfg, sd = G.convert_llama_gguf(gguf_file)
    cfg1, sd1 = G.cached_convert_llama_gguf(gguf_file)  # converts and writes the cache
    file = G.converted_cache_file(G.file_sha256(gguf_file), tmp_path / "cache")
    assert file.is_file()
    _forbid(monkeypatch, "convert_llama_gguf")
    _forbid(monkeypatch, "file_sha256")
    cfg2, sd2 = G.cached_convert_llama_gguf(gguf_file)  # neither parses nor hashes the GGUF again
    for c in (cfg1, cfg2):
        assert c.to_dict() == cfg.to_dict()
    for got in (sd1, sd2):
        assert got.keys() == sd.keys()
        for name, t in sd.items():
            assert got[name].dtype == t.dtype and torch.equal(got[name], t), name


def test_hash_is_remembered_until_the_file_changes(gguf_file, monkeypatch):
    digest = G.cached_file_sha256(gguf_file)
    assert digest == G.file_sha256(gguf_file)
    calls = []
    real = G.file_sha256
    monkeypatch.setattr(G, "file_sha256", lambda p: calls.append(p) or real(p))
    assert G.cached_file_sha256(gguf_file) == digest and calls == []
    st = gguf_file.stat()
    os.utime(gguf_file, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched: hashed again
    assert G.cached_file_sha256(gguf_file) == digest and len(calls) == 1


def test_damaged_or_foreign_cache_files_are_converted_again(gguf_file, tmp_path):
    _, sd = G.convert_llama_gguf(gguf_file)
    G.cached_convert_llama_gguf(gguf_file)
    file = G.converted_cache_file(G.file_sha256(gguf_file), tmp_path / "cache")
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])  # truncated
    _, again = G.cached_convert_llama_gguf(gguf_file)
    assert all(torch.equal(again[k], v) for k, v in sd.items())
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(file), metadata={"format": "something else"})  # not ours
    _, again = G.cached_convert_llama_gguf(gguf_file)
    assert all(torch.equal(again[k], v) for k, v in sd.items())
    assert G._read_converted(file, G.file_sha256(gguf_file)) is not None  # replaced by a good one


def test_cache_can_be_switched_off_and_survives_an_unwritable_folder(gguf_file, tmp_path, monkeypatch):
    monkeypatch.setenv(G.CACHE_ENV, "off")
    assert G.cache_dir() is None
    G.cached_convert_llama_gguf(gguf_file)
    assert not (tmp_path / "cache").exists()
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")  # a file where the cache folder should be: nothing can be written (even as root)
    monkeypatch.setenv(G.CACHE_ENV, str(blocked))
    with pytest.warns(UserWarning, match="cannot"):
        cfg, _ = G.cached_convert_llama_gguf(gguf_file)
    assert cfg.num_layers == 2


def test_delta_directory_loads_the_same_model_cold_and_warm(gguf_file, tmp_path, monkeypatch):
    package = tmp_path / "site" / "cache_base_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "tiny.gguf").write_bytes(gguf_file.read_bytes())
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    sys.modules.pop("cache_base_pkg", None)
    base = {"format": "llama-gguf", "package": "cache_base_pkg", "file": "tiny.gguf",
            "sha256": G.file_sha256(gguf_file)}
    cfg, _ = G.convert_llama_gguf(gguf_file)
    folder = tmp_path / "reader"
    folder.mkdir()
    write_delta_directory(folder, cfg, base, random_delta(cfg), lora_scale=0.5)
    cold = RetNetForCausalLM.from_pretrained(folder, dtype=torch.float32)
    _forbid(monkeypatch, "convert_llama_gguf")
    _forbid(monkeypatch, "file_sha256")
    warm = RetNetForCausalLM.from_pretrained(folder, dtype=torch.float32)
    assert warm.fingerprint() == cold.fingerprint()
    for (name, a), (_, b) in zip(cold.state_dict().items(), warm.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
