"""The retnet-rag command: subcommands, help, streaming answers with sources, chat commands, clear errors."""

from __future__ import annotations

import builtins
import subprocess

import pytest

from app.cli import build_parser, main

SUBCOMMANDS = ("ingest", "ask", "chat", "convert", "collections")


@pytest.fixture
def base(tiny_model_dir, data_dir):
    return ["--data-dir", str(data_dir)], ["--model", str(tiny_model_dir), "--max-new-tokens", "4"]


def run(capsys, argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_help_for_every_subcommand(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    assert f"retnet-rag {command}" in capsys.readouterr().out


def test_top_level_help_lists_subcommands(capsys):
    assert main([]) == 2
    out = capsys.readouterr().out
    assert all(c in out for c in SUBCOMMANDS)
    assert set(SUBCOMMANDS) <= set(build_parser()._subparsers._group_actions[0].choices)


def test_ingest_then_ask_prints_answer_and_sources(capsys, base, docs_dir):
    col, model = base
    code, out, err = run(capsys, ["ingest", docs_dir, "-c", "docs", *col, "--embedder", "hash"])
    assert code == 0 and "3 added" in out and "3 documents" in out
    code, out, err = run(capsys, ["ask", "What does the -r option of rsync do?", "-c", "docs", *col, *model,
                                  "--k", "2"])
    assert code == 0, err
    assert "Sources:" in out and "[1] rsync - " in out and "-r option copies directories" in out
    assert "tokens/s" in err
    code, out, _ = run(capsys, ["collections", *col])
    assert "docs: 3 documents" in out and "Gzip" in out


def test_ask_with_add_creates_the_collection(capsys, base, docs_dir):
    col, model = base
    code, out, err = run(capsys, ["ask", "How does gzip decompress?", "-c", "fresh", "--add", docs_dir, *col, *model,
                                  "--embedder", "hash", "--json"])
    assert code == 0, err
    import json

    answer = json.loads(out)
    assert answer["question"] == "How does gzip decompress?" and answer["sources"][0]["title"] == "Gzip"
    assert "3 added" in err


def test_free_switches_grounding_off(capsys, base, docs_dir):
    import json

    col, model = base
    args = ["ask", "How does gzip decompress?", "-c", "g", "--add", docs_dir, *col, *model, "--embedder", "hash",
            "--json"]
    code, grounded, err = run(capsys, args)
    assert code == 0, err
    code, free, err = run(capsys, [*args, "--free"])
    assert code == 0, err
    # grounded answers are quotes of the passages (or the refusal); free ones carry no quotes
    assert json.loads(grounded).get("quotes") or json.loads(grounded)["text"] == "That is not in the documents."
    assert not json.loads(free).get("quotes")


def test_ask_session_file_continues_the_conversation(capsys, base, docs_dir, tmp_path):
    col, model = base
    session = tmp_path / "s.session"
    args = ["-c", "docs", "--add", docs_dir, *col, *model, "--embedder", "hash", "--session", session]
    assert run(capsys, ["ask", "first?", *args])[0] == 0
    assert run(capsys, ["ask", "second?", *args])[0] == 0
    from app import MultiDocQA

    qa = MultiDocQA(None, model=model[1])
    assert [t.question for t in qa.load_session(session).turns] == ["first?", "second?"]


@pytest.mark.parametrize("question", ["", "   ", "\n\t"])
def test_empty_question(capsys, base, question):
    col, model = base
    code, out, err = run(capsys, ["ask", question, "-c", "docs", *col, *model])
    assert code == 2 and "the question is empty" in err and "Traceback" not in err
    assert err.count("\n") == 1


def test_question_too_long(capsys, base, docs_dir):
    col, model = base
    code, _, err = run(capsys, ["ask", "why " * 500, "-c", "docs", "--add", docs_dir, *col, *model,
                                "--embedder", "hash", "--max-question-tokens", "64"])
    assert code == 1 and "too long" in err and "Traceback" not in err


def test_unknown_collection(capsys, base):
    col, model = base
    code, out, err = run(capsys, ["ask", "hello?", "-c", "nope", *col, *model])
    assert code == 1 and "no collection 'nope'" in err and "retnet-rag ingest" in err and "Traceback" not in err
    code, out, err = run(capsys, ["chat", "-c", "nope", *col, *model])
    assert code == 1 and "no collection 'nope'" in err


def test_missing_model_fails_before_ingesting(capsys, data_dir, docs_dir, tmp_path):
    code, out, err = run(capsys, ["ask", "q?", "-c", "x", "--add", docs_dir, "--data-dir", data_dir, "--model",
                                  tmp_path / "nowhere", "--embedder", "hash"])
    assert code == 1 and "model directory" in err and "does not exist" in err
    assert not (data_dir / "x").exists()


def test_missing_file_to_add(capsys, base, tmp_path):
    col, model = base
    code, _, err = run(capsys, ["ingest", tmp_path / "missing.pdf", "-c", "docs", *col])
    assert code == 2 and "no such file or folder" in err


def test_chat_commands(capsys, base, docs_dir, tmp_path, monkeypatch):
    col, model = base
    saved = tmp_path / "chat.session"
    bad = tmp_path / "bad.session"
    bad.write_bytes(b"not a session")
    lines = iter(["What does tar -x do?", "/sources", f"/save {saved}", "And -c?", "/reset", "/sources",
                  f"/load {bad}", f"/load {saved}", "/bogus", "   ", "/quit"])
    monkeypatch.setattr(builtins, "input", lambda prompt="": next(lines))
    code, out, err = run(capsys, ["chat", "-c", "docs", "--add", docs_dir, *col, *model, "--embedder", "hash"])
    assert code == 0, err
    assert out.count("retnet> ") == 2
    assert "Sources:" in out and "[1] tar" in out
    assert f"(saved to {saved})" in out and "(conversation reset)" in out and "(no answer yet)" in out
    assert "error: cannot read session file" in out and "(loaded" in out and "1 turns" in out
    assert "unknown command /bogus" in out


def test_chat_autosaves_and_ends_on_eof(capsys, base, docs_dir, tmp_path, monkeypatch):
    col, model = base
    session = tmp_path / "auto.session"
    answers = iter(["hello?"])

    def fake_input(prompt=""):
        try:
            return next(answers)
        except StopIteration:
            raise EOFError from None

    monkeypatch.setattr(builtins, "input", fake_input)
    code, _, err = run(capsys, ["chat", "-c", "docs", "--add", docs_dir, *col, *model, "--embedder", "hash",
                                "--session", session])
    assert code == 0 and session.is_file()


def test_convert_reports_bad_input(capsys, tmp_path):
    code, _, err = run(capsys, ["convert", tmp_path / "nothing", tmp_path / "out", "--source", "fla"])
    assert code in (1, 2) and "retnet-rag: error:" in err and "Traceback" not in err


def test_convert_passes_options_through(capsys, tmp_path, monkeypatch):
    import retnet.convert

    seen = {}

    def fake_convert(src, dst, source="auto", **options):
        seen.update(src=src, dst=dst, source=source, **options)
        if options.get("overwrite") is False:
            raise FileExistsError(f"{dst} exists and is not empty (pass overwrite=True to replace it)")
        return {"source": "fla", "src": str(src), "dst": str(dst), "num_parameters": 123, "dtype": "bfloat16",
                "config": {"num_layers": 2, "hidden_size": 8, "num_heads": 2}, "tokenizer_files": []}

    monkeypatch.setattr(retnet.convert, "convert_checkpoint", fake_convert)
    (tmp_path / "src").mkdir()
    code, out, _ = run(capsys, ["convert", tmp_path / "src", tmp_path / "dst", "--dtype", "bfloat16", "--overwrite"])
    assert code == 0 and "converted" in out and "123 parameters" in out
    assert seen["source"] == "auto" and seen["dtype"] == "bfloat16" and seen["overwrite"] is True
    code, _, err = run(capsys, ["convert", tmp_path / "src", tmp_path / "dst", "--source", "fla"])
    assert code == 1 and "exists and is not empty" in err


@pytest.mark.slow  # a subprocess
def test_console_script_is_installed():
    out = subprocess.run(["retnet-rag", "ask", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--collection" in out.stdout
