"""Loading a session is all or nothing: every malformed file is a SessionFileError naming the problem,
and the session it was loaded into keeps its state, key, name and transcript."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import save_file

from app import SessionFileError, SessionModelMismatchError
from app.session_file import corruption_checksum


@dataclass
class Parts:
    """A session file taken apart: the state header and session JSON (parsed), and the tensors."""

    header: dict | str
    session: dict | str
    tensors: dict


def _saved(qa, path: Path) -> Path:
    s = qa.session()
    s.ask("What does gzip -k do?")
    return s.save(path)


def _rewrite(src: Path, dst: Path, mutate) -> Path:
    """Copy a session file with `mutate(parts)` applied and a recomputed checksum, so that what is
    checked is the validation, not the corruption check."""
    with safe_open(str(src), framework="pt") as f:
        meta = dict(f.metadata())
        tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
    parts = Parts(json.loads(meta["header"]), json.loads(meta["session"]), tensors)
    mutate(parts)
    meta["header"] = parts.header if isinstance(parts.header, str) else json.dumps(parts.header)
    meta["session"] = parts.session if isinstance(parts.session, str) else json.dumps(parts.session)
    meta["checksum"] = corruption_checksum(meta["session"], parts.tensors)
    save_file({k: t.contiguous() for k, t in parts.tensors.items()}, str(dst), metadata=meta)
    return dst


def _live_session(qa):
    s = qa.session(name="mine")
    s.ask("keep me?")
    return s


def _assert_refused(s, path, match, error=SessionFileError):
    state, key, name, turns = s.state.clone(), s.key, s.name, [t.to_dict() for t in s.turns]
    with pytest.raises(error, match=match):
        s.load(path)
    assert s.state.equal(state) and s.key == key and s.name == name
    assert [t.to_dict() for t in s.turns] == turns


def _layers(p: Parts) -> list[str]:
    return sorted(k for k in p.tensors if k != "offsets")


def _set(name, value):
    def mutate(p):
        p.session[name] = value
    return mutate


def _turn(**changes):
    def mutate(p):
        p.session["turns"][0].update(changes)
    return mutate


def _drop_turn_field(name):
    def mutate(p):
        del p.session["turns"][0][name]
    return mutate


def _source(**changes):
    def mutate(p):
        p.session["turns"][0]["sources"][0].update(changes)
    return mutate


def _quote(**changes):
    def mutate(p):
        n = p.session["turns"][0]["sources"][0]["n"]
        quote = {"source": n, "start": 0, "end": 4, "text": "The ", "score": 0.0, "tokens": 1}
        p.session["turns"][0]["quotes"] = [{**quote, **changes}]
    return mutate


def _tensors(fn):
    def mutate(p):
        for name in _layers(p):
            p.tensors[name] = fn(p.tensors[name])
    return mutate


def _batch_2(p):
    p.tensors = {k: torch.cat([t, t]) for k, t in p.tensors.items()}


def _nan(p):
    p.tensors["layer.0"] = p.tensors["layer.0"].clone()
    p.tensors["layer.0"].view(-1)[3] = float("nan")


def _inf(p):
    p.tensors["layer.1"] = p.tensors["layer.1"].clone()
    p.tensors["layer.1"].view(-1)[0] = float("-inf")


def _negative_offsets(p):
    p.tensors["offsets"] = torch.tensor([-7])


def _offsets_int32(p):
    p.tensors["offsets"] = p.tensors["offsets"].int()


def _one_layer_fewer(p):
    del p.tensors[_layers(p)[-1]]
    p.header["num_layers"] -= 1


def _one_layer_more(p):
    p.tensors[f"layer.{p.header['num_layers']}"] = p.tensors["layer.0"].clone()
    p.header["num_layers"] += 1


def _zero_layers(p):
    for name in _layers(p):
        del p.tensors[name]
    p.header["num_layers"] = 0


def _header_says_more_layers(p):
    p.header["num_layers"] += 1


def _renamed_key(p):
    p.tensors["layer.01"] = p.tensors.pop("layer.1")


def _extra_key(p):
    p.tensors["layer.x"] = p.tensors["layer.0"].clone()


def _header(**changes):
    def mutate(p):
        p.header.update(changes)
    return mutate


def _raw_header(text):
    def mutate(p):
        p.header = text
    return mutate


def _raw_session(text):
    def mutate(p):
        p.session = text
    return mutate


MALFORMED = {
    # the state
    "batch 2": (_batch_2, "state of 2 sequences"),
    "wrong dtype float64": (_tensors(torch.Tensor.double), "float64 state; this model's state is torch.float32"),
    "wrong dtype bfloat16": (_tensors(torch.Tensor.bfloat16), "all float32 or all float64"),
    "wrong dtype int32": (_tensors(torch.Tensor.int), "all float32 or all float64"),
    "NaN": (_nan, "non-finite"),
    "infinity": (_inf, "non-finite"),
    "negative offsets": (_negative_offsets, "negative token offsets"),
    "offsets not int64": (_offsets_int32, "offsets must be"),
    "one layer fewer": (_one_layer_fewer, "wrong shape for this model"),
    "one layer more": (_one_layer_more, "wrong shape for this model"),
    "zero layers": (_zero_layers, "num_layers must be a positive integer"),
    "wrong shapes": (_tensors(lambda t: t[..., :-1]), "wrong shape for this model"),
    "wrong rank": (_tensors(lambda t: t[0]), "expected 4 dimensions"),
    "header names missing layer": (_header_says_more_layers, "wrong tensors .*missing layer.2, unexpected none"),
    "header names a billion layers": (_header(num_layers=10**9), "missing 999999998 tensors"),
    "bad tensor key format": (_renamed_key, "wrong tensors .*unexpected layer.01"),
    "extra tensor key": (_extra_key, "unexpected layer.x"),
    "num_layers as text": (_header(num_layers="2"), "num_layers must be"),
    "last_inputs not a bool": (_header(last_inputs="yes"), "last_inputs must be"),
    "fingerprint not text": (_header(fingerprint=[1]), "fingerprint must be"),
    "header not JSON": (_raw_header("{not json"), "malformed state header"),
    "header not an object": (_raw_header("[1, 2]"), "not a retnet-rag state file"),
    # the session record
    "session not JSON": (_raw_session("{"), "bad transcript JSON"),
    "session not an object": (_raw_session("[]"), "not a JSON object"),
    "session format version": (_set("format_version", 2), "session format"),
    "bad key format": (_set("key", "zz" * 32), "state key must be 64 hex digits"),
    "key too short": (_set("key", "ab"), "state key must be"),
    "key not text": (_set("key", 7), "state key must be"),
    "name not text": (_set("name", {"a": 1}), "name must be text"),
    # the transcript
    "turns not a list": (_set("turns", {"0": {}}), "turns must be a list"),
    "turn not an object": (_set("turns", ["hello"]), "turn 1: expected an object"),
    "turn without question": (_drop_turn_field("question"), "turn 1: no question"),
    "question not text": (_turn(question=3), "question must be str"),
    "refused not a bool": (_turn(refused="no"), "refused must be bool"),
    "usage not numbers": (_turn(usage={"prompt_tokens": "many"}), "usage: prompt_tokens must be"),
    "sources not a list": (_turn(sources="none"), "sources must be list"),
    "source without text": (_source(text=None), "source 1: text must be"),
    "source number not int": (_source(n=1.5), "source 1: n must be"),
    "quote of a missing source": (_quote(source=99), "quote 1: cites source 99"),
    "quote outside its source": (_quote(start=5, end=10**6), "quote 1: offsets 5:1000000"),
    "quote without text": (_quote(text=False), "quote 1: text must be"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_session_file_changes_nothing(qa, tmp_path, case):
    mutate, match = MALFORMED[case]
    bad = _rewrite(_saved(qa, tmp_path / "good.session"), tmp_path / "bad.session", mutate)
    _assert_refused(_live_session(qa), bad, match)


def test_the_checksum_is_a_corruption_check_not_a_seal(qa, tmp_path):
    """Documented decision (app.session_file): a consistent edit with a recomputed checksum loads; every
    value in it was validated, so it is a well-formed conversation, no more."""
    good = _saved(qa, tmp_path / "good.session")
    edited = _rewrite(good, tmp_path / "edited.session", _turn(text="an edited answer"))
    s = qa.session()
    s.load(edited)
    assert s.turns[0].text == "an edited answer" and s.state.equal(qa.load_session(good).state)


def test_another_models_file_is_a_model_mismatch(qa, tmp_path):
    good = _saved(qa, tmp_path / "good.session")
    bad = _rewrite(good, tmp_path / "other.session", _header(fingerprint="0" * 16))
    _assert_refused(_live_session(qa), bad, "different model", SessionModelMismatchError)


@pytest.mark.parametrize("cut", [0, 7, 100, "half", "minus one"])
def test_truncated_file(qa, tmp_path, cut):
    data = _saved(qa, tmp_path / "good.session").read_bytes()
    n = {"half": len(data) // 2, "minus one": len(data) - 1}.get(cut, cut)
    bad = tmp_path / "cut.session"
    bad.write_bytes(data[:n])
    _assert_refused(_live_session(qa), bad, "truncated or corrupted")


def test_directory_missing_and_non_files(qa, tmp_path):
    s = _live_session(qa)
    _assert_refused(s, tmp_path, "is a folder, not a file")
    _assert_refused(s, tmp_path / "missing.session", "no session file")
    fifo = tmp_path / "pipe.session"
    os.mkfifo(fifo)  # opening it would block forever: it must never be opened
    _assert_refused(s, fifo, "not a regular file")
    _assert_refused(s, "/dev/null", "not a regular file")


@pytest.fixture
def corruption_case(qa, tmp_path):
    good = _saved(qa, tmp_path / "good.session")
    return good.read_bytes(), qa.load_session(good), _live_session(qa)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flips=st.lists(st.tuples(st.integers(0, 2**31), st.integers(1, 255)), min_size=1, max_size=4),
       cut=st.none() | st.integers(0, 2**31))
def test_random_corruption_is_refused_or_harmless(corruption_case, tmp_path, flips, cut):
    """Flipped bytes and cuts anywhere: a SessionFileError (session unchanged) or, when the damage lands
    where it changes nothing (JSON whitespace), exactly the saved conversation; never another error."""
    data, reference, s = corruption_case
    damaged = bytearray(data)
    for at, mask in flips:
        damaged[at % len(data)] ^= mask
    if cut is not None:
        damaged = damaged[: cut % len(data)]
    path = tmp_path / "damaged.session"
    path.write_bytes(bytes(damaged))
    state, turns = s.state.clone(), [t.to_dict() for t in s.turns]
    try:
        s.load(path)
    except SessionFileError:
        assert s.state.equal(state) and [t.to_dict() for t in s.turns] == turns
        return
    assert s.state.equal(reference.state) and s.key == reference.key
    assert [t.to_dict() for t in s.turns] == [t.to_dict() for t in reference.turns]


def test_save_to_a_folder_or_under_a_file_is_a_session_file_error(qa, tmp_path):
    s = _live_session(qa)
    with pytest.raises(SessionFileError, match="it is a folder"):
        s.save(tmp_path)
    (tmp_path / "plain.txt").write_text("x")
    with pytest.raises(SessionFileError, match="cannot save the session to"):
        s.save(tmp_path / "plain.txt" / "chat.session")
    assert len(s.turns) == 1 and s.save(tmp_path / "ok.session").is_file()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_save_into_a_read_only_folder(qa, tmp_path):
    s = _live_session(qa)
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(SessionFileError, match="Permission denied"):
            s.save(folder / "chat.session")
    finally:
        folder.chmod(0o700)


def test_next_save_removes_temp_files_of_killed_saves(qa, tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    pid = int(dead.stdout)
    folder = tmp_path / "sessions"
    folder.mkdir()
    leftovers = [folder / f".chat.session.{pid}.abcd1234.tmp", folder / f".chat.session.{pid}.zz_99xyz.tmp"]
    for p in leftovers:
        p.write_bytes(b"\0" * 1000)
    unrelated = folder / f".notes.txt.{pid}.abcd1234.tmp"  # another target's temp: not this save's business
    unrelated.write_bytes(b"x")
    _live_session(qa).save(folder / "chat.session")
    assert sorted(p.name for p in folder.iterdir()) == sorted(["chat.session", unrelated.name])


_FIELDS = ["question", "text", "stop_reason", "refused", "sources", "quotes", "usage", "timings", "n", "title",
           "source", "page", "score", "doc_id", "start", "end", "passage_id", "prompt_tokens", "tokens"]
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 10**12) | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(_FIELDS) | st.text(max_size=3), inner,
                                                                max_size=4),
    max_leaves=12)


@pytest.fixture
def saved_file(qa, tmp_path):
    return _saved(qa, tmp_path / "good.session"), _live_session(qa)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(where=st.sampled_from(["turns", "turn", "turn field", "source", "source field", "quotes"]),
       field=st.sampled_from(_FIELDS), value=_JSON)
def test_any_transcript_json_is_refused_or_usable(saved_file, tmp_path, where, field, value):
    """Arbitrary JSON in any part of the transcript (with a valid checksum): a SessionFileError, or a
    transcript whose answers format, serialise and highlight their quotes without error."""
    good, s = saved_file

    def mutate(p):
        turn = p.session["turns"][0]
        target = {"turns": (p.session, "turns"), "turn": (p.session["turns"], 0), "turn field": (turn, field),
                  "source": (turn["sources"], 0), "source field": (turn["sources"][0], field),
                  "quotes": (turn, "quotes")}[where]
        target[0][target[1]] = value

    bad = _rewrite(good, tmp_path / "fuzzed.session", mutate)
    before = [t.to_dict() for t in s.turns]
    try:
        s.load(bad)
    except SessionFileError:
        assert [t.to_dict() for t in s.turns] == before
        return
    for answer in s.turns:
        answer.format()
        json.dumps(answer.to_dict())
        for q in answer.quotes:
            q.highlight()


def test_a_loaded_session_survives_its_file_being_truncated(qa, tmp_path):
    """The loaded state is a copy: the file cut in place afterwards (a non-atomic copy, another program)
    must not reach it (a state mapped from the file would die with SIGBUS on the next read)."""
    path = _saved(qa, tmp_path / "s.session")
    s = qa.load_session(path)
    before = s.state.clone()
    with open(path, "r+b") as f:
        f.truncate(100)
    assert s.state.clone().equal(before)
    assert s.ask("And gzip -d?").text is not None
