"""Sessions: multi-turn memory in a constant-size state, fork/reset, atomic save/load, bad input."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import app.session_file as session_file
from app import (
    EmptyQuestionError,
    MultiDocQA,
    QuestionTooLongError,
    SessionFileError,
    SessionModelMismatchError,
)
from app.encoder import Reader
from retnet import RetentionState

from .app_testutil import tiny_model


def same_state(a, b) -> bool:
    return a.equal(b)


def test_turns_accumulate_in_a_constant_state(qa):
    s = qa.session()
    nbytes = s.state_bytes
    a1 = s.ask("What does the -r option of rsync do?")
    read1 = s.tokens_read
    assert read1 == a1.usage.prompt_tokens + a1.usage.answer_tokens + len(qa.reader.stops.end_ids)
    a2 = s.ask("And gzip -d?")
    assert s.tokens_read == read1 + a2.usage.prompt_tokens + a2.usage.answer_tokens + len(qa.reader.stops.end_ids)
    assert s.state_bytes == nbytes == a2.usage.state_bytes
    assert [t.question for t in s.turns] == ["What does the -r option of rsync do?", "And gzip -d?"]
    assert s.transcript == [(a1.question, a1.text), (a2.question, a2.text)]
    assert s.sources == a2.sources and len(a2.sources) == 2
    # the second turn is read after the first: a fresh session asking it reads something else
    fresh = qa.session()
    fresh.ask("And gzip -d?")
    assert not same_state(fresh.state, s.state)


def test_fork_is_independent_and_deterministic(qa):
    s = qa.session()
    s.ask("What does tar -x do?")
    f = s.fork()
    assert same_state(f.state, s.state) and f.turns[0].text == s.turns[0].text
    before = s.state.clone()
    a = f.ask("And -c?")
    assert same_state(s.state, before) and len(s.turns) == 1 and len(f.turns) == 2
    b = s.ask("And -c?")  # same history, same question: same answer
    assert a.text == b.text and same_state(f.state, s.state)
    # mid-conversation prefixes are not snapshotted by default, so this was encoded again
    assert b.usage.cached_tokens == 0


def test_forks_share_snapshots_with_the_all_policy(model, byte_tok, docs_dir, data_dir):
    from retrieval import HashEmbedder

    with MultiDocQA("docs", data_dir=data_dir, model=model, tokenizer=byte_tok, embedder=HashEmbedder(64), k=2,
                    max_new_tokens=4, cache_snapshots="all") as qa:
        qa.add(docs_dir, progress=False)
        s = qa.session()
        s.ask("What does tar -x do?")
        f = s.fork()
        a, b = f.ask("And -c?"), s.ask("And -c?")
        assert a.text == b.text and a.usage.cached_tokens == 0 and b.usage.cached_tokens == b.usage.prompt_tokens


def test_long_conversations_do_not_fill_the_cache(qa):
    s = qa.session()
    s.ask("What does tar -x do?")
    entries = len(qa.cache)
    for i in range(5):
        s.ask(f"follow-up {i}?")
    assert len(qa.cache) == entries


def test_reset_forgets_everything(qa):
    s = qa.session()
    s.ask("What does rsync -n do?")
    s.reset()
    assert s.turns == [] and s.tokens_read == 0 and s.sources == []
    assert same_state(s.state, qa.reader.new_state())
    assert s.key == qa.reader.root_key()


def test_instructions_are_read_once_per_conversation(qa, monkeypatch):
    s = qa.session(instructions="Answer in one sentence.")
    seen = []
    orig = qa.reader.layout_turn
    monkeypatch.setattr(qa.reader, "layout_turn", lambda *a, **k: seen.append(k["first_turn"]) or orig(*a, **k))
    s.ask("one?")
    s.ask("two?")
    s.reset()
    s.ask("three?")
    assert seen == [True, False, True]


def test_stream_then_close_keeps_the_partial_answer(qa):
    qa.reader.sampling = qa.reader.sampling_config(max_new_tokens=20)
    s = qa.session()
    stream = s.stream("What does tar -z do?")
    next(stream)
    stream.close()
    assert stream.stop_reason == "cancelled" and len(s.turns) == 1 and s.turns[0].stop_reason == "cancelled"
    # asking again while a stream is open closes the open one first
    open_stream = s.stream("Another?")
    s.ask("Third?")
    assert open_stream.finished and [t.question for t in s.turns] == ["What does tar -z do?", "Another?", "Third?"]


def test_save_load_round_trip_continues_identically(any_qa, tmp_path):
    qa = any_qa
    s = qa.session()
    s.ask("What does the -r option of rsync do?")
    path = s.save(tmp_path / "chat.session")
    loaded = qa.load_session(path)
    assert same_state(loaded.state, s.state) and loaded.key == s.key
    assert [t.to_dict() for t in loaded.turns] == [t.to_dict() for t in s.turns]
    assert loaded.turns[0].sources[0].text == s.turns[0].sources[0].text
    assert s.ask("Next?").text == loaded.ask("Next?").text
    assert same_state(loaded.state, s.state)
    # the file is also a plain state file of this model
    st = RetentionState.load(path, model=qa.model)
    assert st.nbytes == s.state_bytes and (st.last_inputs is not None) == qa.model.config.token_shift


def test_save_is_one_file_and_leaves_no_temp_files(qa, tmp_path):
    s = qa.session()
    s.ask("q?")
    d = tmp_path / "sessions"
    s.save(d / "a.session")
    s.save(d / "a.session")
    assert sorted(p.name for p in d.iterdir()) == ["a.session"]


def test_failed_save_keeps_the_previous_file(qa, tmp_path, monkeypatch):
    s = qa.session()
    s.ask("first?")
    path = s.save(tmp_path / "sessions" / "chat.session")
    before = path.read_bytes()
    s.ask("second?")

    def broken_save(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(session_file, "save_file", broken_save)
    with pytest.raises(SessionFileError, match="cannot save the session to .*disk full"):
        s.save(path)
    assert path.read_bytes() == before and sorted(p.name for p in path.parent.iterdir()) == ["chat.session"]
    monkeypatch.undo()
    assert len(qa.load_session(path).turns) == 1


def _saved(qa, tmp_path) -> Path:
    s = qa.session()
    s.ask("What does gzip -k do?")
    return s.save(tmp_path / "good.session")


def _assert_load_fails(qa, path, error, match):
    s = qa.session()
    s.ask("keep me?")
    state, turns = s.state.clone(), list(s.turns)
    with pytest.raises(error, match=match):
        s.load(path)
    assert same_state(s.state, state) and s.turns == turns  # nothing lost


def test_truncated_session_file(qa, tmp_path):
    path = _saved(qa, tmp_path)
    data = path.read_bytes()
    for cut in (len(data) // 2, 100, 7):
        bad = tmp_path / f"cut{cut}.session"
        bad.write_bytes(data[:cut])
        _assert_load_fails(qa, bad, SessionFileError, "truncated or corrupted|truncated, corrupted")


def test_corrupted_session_file(qa, tmp_path):
    path = _saved(qa, tmp_path)
    data = bytearray(path.read_bytes())
    data[-20] ^= 0xFF  # a flipped bit in the tensor data
    bad = tmp_path / "flipped.session"
    bad.write_bytes(bytes(data))
    _assert_load_fails(qa, bad, SessionFileError, "checksum")
    garbage = tmp_path / "garbage.session"
    garbage.write_bytes(os.urandom(300))
    _assert_load_fails(qa, garbage, SessionFileError, "cannot read")
    _assert_load_fails(qa, tmp_path / "missing.session", SessionFileError, "no session file")
    _assert_load_fails(qa, tmp_path, SessionFileError, "not a file")
    bare = tmp_path / "bare.state"
    qa.reader.new_state().save(bare)
    _assert_load_fails(qa, bare, SessionFileError, "bare state file")


def test_session_from_a_different_model(qa, byte_tok, tmp_path):
    path = _saved(qa, tmp_path)
    other = MultiDocQA(None, model=Reader(tiny_model(seed=5), byte_tok))
    s = other.session()
    with pytest.raises(SessionModelMismatchError, match="different model"):
        s.load(path)
    assert s.turns == [] and s.tokens_read == 0


def test_bad_questions_change_nothing(qa):
    s = qa.session()
    s.ask("first?")
    state = s.state.clone()
    for q in ("", "   \n\t ", None):
        with pytest.raises(EmptyQuestionError):
            s.ask(q)
    with pytest.raises(QuestionTooLongError, match="limit is"):
        s.ask("why " * 2000)
    with pytest.raises(QuestionTooLongError):
        s.ask("x" * 10**6)
    assert same_state(s.state, state) and len(s.turns) == 1


def _rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


@pytest.mark.slow
def test_500_turns_constant_state_and_flat_memory(qa):
    qa.reader.sampling = qa.reader.sampling_config(max_new_tokens=4)
    questions = ["What does rsync -r do?", "How do I decompress with gzip?", "What does tar -x do?",
                 "Which option keeps input files?", "What is a dry run?"]
    s = qa.session()
    nbytes = s.state_bytes
    shapes = [tuple(t.shape) for t in s.state.layers]
    rss = []
    for i in range(500):
        a = s.ask(questions[i % len(questions)] + f" ({i})")
        assert s.state_bytes == nbytes and a.usage.state_bytes == nbytes
        if i in (49, 499):
            rss.append(_rss_bytes())
    assert [tuple(t.shape) for t in s.state.layers] == shapes and len(s.turns) == 500
    assert s.tokens_read > 500 * 100  # it really read all of that
    assert rss[1] - rss[0] < 20 * 2**20, f"RSS grew by {(rss[1] - rss[0]) / 2**20:.1f} MiB over 450 turns"
