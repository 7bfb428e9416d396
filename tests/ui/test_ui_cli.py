"""`retnet-rag ui`: its flags, what it passes to ui.app.launch, and a clear error without Gradio."""

from __future__ import annotations

import sys

import pytest

from app import MultiDocQA
from app.cli import build_parser, main


def test_defaults_are_loopback_and_no_share():
    args = build_parser().parse_args(["ui"])
    assert (args.host, args.port, args.share) == ("127.0.0.1", 7860, False)


def test_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["ui", "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and "retnet-rag ui" in out
    assert all(flag in out for flag in ("--host", "--port", "--share", "--model", "--data-dir", "--embedder"))


def test_ui_calls_launch_with_the_flags(monkeypatch, tmp_path):
    pytest.importorskip("gradio")
    import ui.app
    from tests.app.app_testutil import special_tokenizer, tiny_model

    tok = special_tokenizer()
    tiny_model(vocab_size=tok.get_vocab_size()).save_pretrained(tmp_path / "m", tokenizer=tok)
    seen = {}
    monkeypatch.setattr(ui.app, "launch", lambda qa, **kw: seen.update(kw, qa=qa))
    assert main(["ui", "--model", str(tmp_path / "m"), "--data-dir", str(tmp_path / "c"), "--embedder", "hash",
                 "--port", "7999", "--max-new-tokens", "5"]) == 0
    assert isinstance(seen["qa"], MultiDocQA) and seen["qa"].options.sampling.max_new_tokens == 5
    assert (seen["host"], seen["port"], seen["share"], seen["collection"]) == ("127.0.0.1", 7999, False, None)
    assert seen["embedder"].name.startswith("hash") and str(seen["data_dir"]) == str(tmp_path / "c")


def test_without_gradio_the_error_says_what_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ui.app", None)  # import ui.app now raises ImportError
    assert main(["ui"]) != 0
    assert "pip install 'retnet-rag[ui]'" in capsys.readouterr().err


def test_an_unknown_start_collection_fails_before_loading_anything(tmp_path, capsys):
    pytest.importorskip("gradio")
    assert main(["ui", "--collection", "nope", "--data-dir", str(tmp_path)]) != 0
    assert "no collection 'nope'" in capsys.readouterr().err
