"""Everyday-use details (issue 17): --version, the convert CLI's --overwrite hint, torch threads chosen by
MultiDocQA, no weight-loading progress bar from the app's embedder."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import pytest
import torch

from app.cli import main, package_version

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def _pyproject_version() -> str:
    return re.search(r'^version\s*=\s*"([^"]+)"', PYPROJECT.read_text(), re.M).group(1)


def test_version_flag(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"retnet-rag {package_version()}"


def test_version_comes_from_metadata_else_pyproject(monkeypatch):
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "9.8.7")
    assert package_version() == "9.8.7"

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    assert package_version() == _pyproject_version()


def test_convert_existing_destination_names_the_flag(capsys, tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "dst").mkdir()
    (tmp_path / "dst" / "keep.txt").write_text("x")
    assert main(["convert", str(tmp_path / "src"), str(tmp_path / "dst"), "--source", "fla"]) == 1
    err = capsys.readouterr().err
    assert "--overwrite" in err and "overwrite=True" not in err and "exists and is not empty" in err
    # Python callers keep the library's own wording.
    from retnet.convert import convert_checkpoint

    with pytest.raises(FileExistsError, match=r"overwrite=True"):
        convert_checkpoint(tmp_path / "src", tmp_path / "dst", "fla")


# -- threads -----------------------------------------------------------------------------------------
@pytest.fixture
def two_threads(monkeypatch, special_model, special_tok):
    """Start from torch's multi-thread setting (the conftest pins 1) with no OMP_NUM_THREADS. Loading a
    model directory returns the tiny model (a first real load pays seconds of torch's lazy imports)."""
    import app.qa

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(app.qa, "load_model", lambda path, device=None, quantize=None: (special_model, special_tok))
    torch.set_num_threads(2)


def test_multidocqa_picks_one_thread_for_a_small_model_it_loads(two_threads, tiny_model_dir):
    from app import MultiDocQA

    MultiDocQA(None, model=tiny_model_dir)
    assert torch.get_num_threads() == 1


def test_multidocqa_threads_are_the_users_choice(two_threads, tiny_model_dir, monkeypatch, special_model,
                                                   special_tok):
    from app import MultiDocQA

    MultiDocQA(None, model=tiny_model_dir, threads=2)  # an explicit count wins
    assert torch.get_num_threads() == 2
    MultiDocQA(None, model=special_model, tokenizer=special_tok)  # a model object: left to its owner
    assert torch.get_num_threads() == 2
    MultiDocQA(None, model=special_model, tokenizer=special_tok, threads=0)  # 0: automatic for any model
    assert torch.get_num_threads() == 1
    torch.set_num_threads(2)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the environment's choice is kept
    MultiDocQA(None, model=tiny_model_dir)
    assert torch.get_num_threads() == 2


# -- progress bars -----------------------------------------------------------------------------------
@pytest.mark.slow  # loads sentence-transformers and MiniLM (~7 s)
def test_embedder_loads_without_a_progress_bar(capfd):
    from transformers.utils import logging as hf_logging

    from retrieval.embedder import SentenceTransformerEmbedder

    before = hf_logging.is_progress_bar_enabled()
    assert SentenceTransformerEmbedder().dim == 384
    out = capfd.readouterr()
    assert "Loading weights" not in out.err + out.out and "it/s" not in out.err
    assert hf_logging.is_progress_bar_enabled() == before  # the user's own transformers calls are untouched
