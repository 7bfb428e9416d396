"""The chat REPL reports every save/load failure and stays open with the conversation intact."""

from __future__ import annotations

import builtins
import os

import pytest

from app import MultiDocQA
from app.cli import main


@pytest.fixture
def chat(capsys, monkeypatch, tiny_model_dir, data_dir, docs_dir):
    """Run `retnet-rag chat` on scripted input lines; returns (exit code, stdout, stderr)."""

    def run(lines, *extra):
        feed = iter(lines)

        def fake_input(prompt=""):
            try:
                return next(feed)
            except StopIteration:
                raise EOFError from None

        monkeypatch.setattr(builtins, "input", fake_input)
        code = main([str(a) for a in ["chat", "-c", "docs", "--add", docs_dir, "--data-dir", data_dir, "--model",
                                      tiny_model_dir, "--max-new-tokens", "4", "--embedder", "hash", *extra]])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def _questions(path, model_dir):
    return [t.question for t in MultiDocQA(None, model=str(model_dir)).load_session(path).turns]


def test_bad_save_and_load_paths_keep_the_chat_and_conversation(chat, tmp_path, tiny_model_dir):
    plain = tmp_path / "plain.txt"
    plain.write_text("not a folder")
    garbage = tmp_path / "garbage.session"
    garbage.write_bytes(os.urandom(500))
    empty = tmp_path / "empty.session"
    empty.write_bytes(b"")
    fifo = tmp_path / "pipe.session"
    os.mkfifo(fifo)
    good = tmp_path / "good.session"
    failing = [f"/save {tmp_path}", f"/save {plain}/chat.session", f"/load {tmp_path / 'missing.session'}",
               f"/load {tmp_path}", f"/load {garbage}", f"/load {empty}", f"/load {fifo}", f"/load {plain}"]
    code, out, err = chat(["What does tar -x do?", *failing, "And -c?", f"/save {good}", "/quit"])
    assert code == 0, err
    errors = [line for line in out.splitlines() if line.startswith("error: ")]
    assert len(errors) == len(failing), out
    assert "it is a folder" in errors[0] and "cannot save the session to" in errors[1]
    assert "no session file" in errors[2] and "is a folder, not a file" in errors[3]
    assert all("truncated or corrupted" in e for e in (errors[4], errors[5], errors[7]))
    assert "not a regular file" in errors[6]
    assert out.count("retnet> ") == 2 and f"(saved to {good})" in out and "Traceback" not in out + err
    assert _questions(good, tiny_model_dir) == ["What does tar -x do?", "And -c?"]


def test_load_of_a_malformed_session_keeps_the_conversation(chat, tmp_path, tiny_model_dir):
    first, second = tmp_path / "first.session", tmp_path / "second.session"
    code, _, err = chat(["one?", f"/save {first}", "/quit"])
    assert code == 0, err
    damaged = tmp_path / "damaged.session"
    data = bytearray(first.read_bytes())
    data[-10] ^= 0x55
    damaged.write_bytes(bytes(data))
    code, out, err = chat(["two?", f"/load {damaged}", "three?", f"/save {second}", "/quit"])
    assert code == 0, err
    assert "error: session file" in out and "checksum" in out
    assert _questions(second, tiny_model_dir) == ["two?", "three?"]


def test_failing_autosave_is_reported_and_the_chat_goes_on(chat, tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    code, out, err = chat(["one?", "two?", "/quit"], "--session", plain / "auto.session")
    assert code == 0, err
    assert out.count("retnet> ") == 2 and out.count("error: cannot save the session to") == 2
    assert "/save PATH" in out
