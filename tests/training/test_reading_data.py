"""training.reading_data: ChatML format, refusal share, loss mask, dev-set exclusion (CPU, synthetic documents)."""

from __future__ import annotations

import random
import re

import numpy as np
import pytest

from app.prompt import REFUSAL as APP_REFUSAL
from training import reading_data as rd
from training.uptrain_data import chatml

MAN = """NAME
       frob - frobnicate files

OPTIONS
       -v, --verbose
              Print a message for each file processed.

       -k, --keep
              Keep the original files after frobnicating them.

       -q, --quiet
              Suppress all warnings about missing files.

       -n, --dry-run
              Show what would be done without changing anything.

DESCRIPTION
       frob reads every file named on the command line and frobnicates it in place, unless told otherwise.
       The frobnication is reversible with unfrob, which reads the same options and writes the same logs.
"""
API = """zorp — Tools for zorping

zorp.spin(x)
    Return the spun value of x, rounded down.

zorp.Wheel.turn(n)
    Turn the wheel n times and return its new position.

zorp.Wheel.stop()
    Stop the wheel at once.

The wheel keeps its position between calls; nothing here touches files or the network in any way.
"""


def _docs(n_copies: int = 12) -> list[dict]:
    docs = []
    for i in range(n_copies):
        docs.append({"id": f"man{i}", "source_package": "coreutils", "title": f"frob{i}: frobnicate files",
                     "text": MAN.replace("frob", f"frob{i}"), "qa": [
                         {"kind": "man_option", "anchor": "-v, --verbose",
                          "answer": "Print a message for each file processed.",
                          "question": f"What does the -v option of frob{i} do?"},
                         {"kind": "man_option", "anchor": "-k, --keep",
                          "answer": "Keep the original files after frobnicating them.",
                          "question": f"What does the -k option of frob{i} do?"},
                         {"kind": "man_option", "anchor": "-q,", "answer": "--quiet Suppress all warnings.",
                          "question": f"What does the -q option of frob{i} do?"}]})
        docs.append({"id": f"api{i}", "source_package": "python3.11-doc", "title": f"zorp{i} — Tools",
                     "text": API.replace("zorp", f"zorp{i}"), "qa": [
                         {"kind": "api", "anchor": f"zorp{i}.spin",
                          "answer": "Return the spun value of x, rounded down.",
                          "question": f"What does the Python function zorp{i}.spin() do?"},
                         {"kind": "api", "anchor": "Wheel.stop", "answer": "Stop the wheel at once.",
                          "question": f"What does the Python method zorp{i}.Wheel.stop() do?"}]})
    return docs


def _tokenizer(tmp_path):
    pytest.importorskip("gguf")
    from retnet.convert.llama_gguf import gguf_tokenizer
    from tests.retnet.tiny_llama_gguf import write_tiny_llama_gguf

    path = tmp_path / "tiny.gguf"
    write_tiny_llama_gguf(path)
    return gguf_tokenizer(path)


def test_refusal_is_the_apps_sentence():
    assert rd.REFUSAL == APP_REFUSAL == "That is not in the documents."


def test_sessions_render_exactly_as_chatml():
    sessions = rd.build_sessions(_docs(), 200, random.Random(0), session_share=0.5)
    assert any(len(s) > 1 for s in sessions)
    for turns in sessions:
        text, spans = rd.render(turns)
        expected = "".join(chatml(t.passages, t.question, t.answer, system=i == 0) for i, t in enumerate(turns))
        assert text == expected
        assert text.count("<|im_start|>system\n") == 1 and text.startswith("<|im_start|>system\n")
        # every turn: Passages: with [i] items separated by blank lines, then the question, then the answer
        user_turns = re.findall(r"<\|im_start\|>user\nPassages:\n(.*?)\n\nQuestion: (.*?)<\|im_end\|>\n"
                                r"<\|im_start\|>assistant\n(.*?)<\|im_end\|>\n", text, flags=re.S)
        assert len(user_turns) == len(turns)
        for (body, q, a), t in zip(user_turns, turns, strict=True):
            assert body.startswith("[1] ") and q == t.question and a == t.answer
            for i in range(2, len(t.passages) + 1):
                assert f"\n\n[{i}] " in body
            assert (2 if t.answerable else 1) <= len(t.passages) <= 5  # gold + 1-4 distractors
        for (a, b), t in zip(spans, turns, strict=True):
            assert text[a:b] == t.answer + "<|im_end|>"


def test_answers_are_in_the_gold_passage_and_refusals_have_none():
    sessions = rd.build_sessions(_docs(), 300, random.Random(1))
    for t in (t for s in sessions for t in s):
        if t.answerable and not t.reverse:
            assert any(t.answer in p for p in t.passages)
        elif t.answerable:  # reverse: the passage holds the option / name the answer gives
            assert t.answer != rd.REFUSAL
        else:
            assert t.answer == rd.REFUSAL
            if t.kind == "man_option":
                assert not any(("--verbose" in p and "Print a message" in p) for p in t.passages if "-v" in t.question)


def test_refusal_share_is_within_range():
    sessions = rd.build_sessions(_docs(), 600, random.Random(2), refusal_share=0.22)
    turns = [t for s in sessions for t in s]
    share = sum(not t.answerable for t in turns) / len(turns)
    assert 0.17 <= share <= 0.28, share


def test_paraphrases_and_reverse_questions_appear():
    sessions = rd.build_sessions(_docs(), 400, random.Random(3))
    qs = [t.question for s in sessions for t in s]
    assert any(q.startswith(("how do i", "how do I", "How can I")) for q in qs)
    assert any(q == q.lower() and not q.endswith("?") for q in qs)  # lowercase / keyword-only
    rev = [t for s in sessions for t in s if t.reverse]
    assert rev and all(t.answer.startswith("Use ") or t.answer.endswith(")") or t.answer.startswith("-")
                       for t in rev if t.kind in ("man_option", "api"))
    assert rd.how_do_i("Keep the original files.") == "keep the original files"
    assert rd.how_do_i("Specifies the checksum algorithm.") == "specify the checksum algorithm"
    assert rd.how_do_i("like verbose but quieter") is None


def test_loss_mask_covers_exactly_the_assistant_tokens(tmp_path):
    tok = _tokenizer(tmp_path)
    sessions = rd.build_sessions(_docs(), 40, random.Random(4), session_share=0.6)
    tokenized = []
    for turns in sessions:
        ids, labels = rd.tokenize_session(tok, turns)
        assert len(ids) == len(labels)
        for k, t in enumerate(turns, 1):
            picked = [i for i, lab in zip(ids, labels, strict=True) if lab == k]
            assert tok.decode(picked, skip_special_tokens=False) == t.answer + "<|im_end|>"
        assert max(labels) == len(turns)
        tokenized.append((ids, labels))
    eos = tok.token_to_id("<|endoftext|>")
    row_len = max(len(ids) for ids, _ in tokenized) + 50
    rows, mask = rd.pack_rows(tokenized, eos, row_len, random.Random(0))
    assert rows.shape == mask.shape and rows.shape[1] == row_len
    assert int(mask.sum()) == sum(sum(1 for x in lab if x) for _, lab in tokenized)
    assert np.all(rows[mask == 1] != eos)


def test_no_dev_set_package():
    dev = rd.dev_packages()
    assert {"jq", "zstd", "nano", "xz-utils", "groff"} <= dev
    corpus = rd.corpus_packages()
    assert corpus and not (corpus & dev)
    ok = {"source_package": "coreutils", "title": "ls: list directory contents"}
    assert rd.allowed(ok, corpus, dev)
    assert not rd.allowed({"source_package": "zstd", "title": "zstd: compress"}, corpus | {"zstd"}, dev)
    assert not rd.allowed({"source_package": "manpages", "title": "nano: an editor"}, corpus, dev)
    assert not rd.allowed({"source_package": "not-in-corpus", "title": "x"}, corpus, dev)


def test_reverse_share_sets_how_many_turns_are_asked_in_reverse():
    def share(value):
        turns = [t for s in rd.build_sessions(_docs(), 300, random.Random(5), reverse_share=value) for t in s]
        return sum(t.reverse for t in turns) / len(turns)

    none, some, most = share(0.0), share(rd.REVERSE_SHARE), share(0.9)
    assert none == 0.0 and 0.0 < some < most
