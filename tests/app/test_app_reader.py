"""Encoder (passage-aligned chunkwise ingestion), prefix-state cache and the streaming decoder."""

from __future__ import annotations

import pytest
import torch

from app import prompt as L
from app.cache import PrefixCache, chain_key
from app.decoder import AnswerStream
from app.encoder import Reader

from .app_testutil import scripted_tokens

PASSAGES = [L.PassageText("Rsync copies files. The -r option recurses into directories.", "rsync"),
            L.PassageText("Gzip compresses files. The -d option decompresses them.", "gzip"),
            L.PassageText("Tar stores many files in one archive.", "tar")]


def close(a, b, tol=2e-4):
    return torch.allclose(a, b, rtol=tol, atol=tol)


def states_close(s1, s2, tol=2e-4):
    return torch.equal(s1.offsets, s2.offsets) and all(close(a, b, tol) for a, b in zip(s1.layers, s2.layers,
                                                                                         strict=True))


def fresh(reader):
    return reader.new_state(), reader.root_key()


def test_ingest_is_the_models_chunkwise_forward(model, byte_tok):
    reader = Reader(model, byte_tok, cache=None, max_chunk=48)
    turn = reader.layout_turn("What does -r do?", PASSAGES)
    assert len(turn.prompt_chunk_lengths) > 5  # passages split inside at sentences
    ing = reader.ingest(turn, *fresh(reader))
    ids = torch.tensor([turn.prompt_ids])
    ref = model(ids, mode="chunkwise", chunk_lengths=turn.prompt_chunk_lengths)
    assert close(ing.logits, ref.logits[:, -1]) and states_close(ing.state, ref.state)
    # passage-aligned chunks are only a schedule: the recurrent form reads the same thing
    rec = model(ids, mode="recurrent")
    assert close(ing.logits, rec.logits[:, -1], 1e-3) and states_close(ing.state, rec.state, 1e-3)
    assert ing.prompt_tokens == len(turn.prompt_ids) and ing.cached_tokens == 0
    assert int(ing.state.offsets[0]) == len(turn.prompt_ids)


def test_prefix_cache_restores_passages_and_gives_the_same_state(model, byte_tok):
    plain = Reader(model, byte_tok, cache=None, layout="pq")
    cached = Reader(model, byte_tok, cache=PrefixCache(2**24), layout="pq")
    first = cached.ingest(cached.layout_turn("What does -r do?", PASSAGES), *fresh(cached))
    assert first.cached_tokens == 0
    turn = cached.layout_turn("What does -d do?", PASSAGES)
    second = cached.ingest(turn, *fresh(cached))
    passages_end = sum(n for n, k in zip(turn.chunk_lengths, turn.kinds, strict=True) if k == L.PASSAGE_CHUNK)
    assert second.cached_tokens == passages_end > 0  # only the question was encoded
    ref = plain.ingest(turn, *fresh(plain))
    assert close(second.logits, ref.logits) and states_close(second.state, ref.state)
    assert cached.cache.hits == 1 and cached.cache.misses == 1


def test_identical_turn_is_not_encoded_at_all(model, byte_tok, monkeypatch):
    reader = Reader(model, byte_tok, layout="qpq")
    turn = reader.layout_turn("Same question?", PASSAGES)
    a = reader.ingest(turn, *fresh(reader))
    calls = []
    orig = model.forward_hidden
    monkeypatch.setattr(model, "forward_hidden", lambda *a, **k: calls.append(1) or orig(*a, **k))
    b = reader.ingest(turn, *fresh(reader))
    assert calls == [] and b.cached_tokens == b.prompt_tokens
    assert torch.equal(a.logits, b.logits) and states_close(a.state, b.state, 0)
    # the restored state is a private copy: the cache's snapshot is untouched by what follows
    b.state.layers[0].add_(1.0)
    c = reader.ingest(turn, *fresh(reader))
    assert states_close(a.state, c.state, 0)


def test_qpq_prefix_differs_per_question(model, byte_tok):
    reader = Reader(model, byte_tok, layout="qpq")
    reader.ingest(reader.layout_turn("First?", PASSAGES), *fresh(reader))
    other = reader.ingest(reader.layout_turn("Second?", PASSAGES), *fresh(reader))
    assert other.cached_tokens == 0  # the question comes first, so nothing is shared


def test_cache_key_covers_the_whole_history(model, byte_tok):
    reader = Reader(model, byte_tok, layout="pq")
    turn = reader.layout_turn("q?", PASSAGES)
    a = reader.ingest(turn, *fresh(reader))
    # the same turn read after something else is a different prefix: no hit
    later = reader.ingest(turn, a.state, a.key)
    assert later.cached_tokens == 0
    assert later.key != a.key


def test_cache_is_lru_and_bounded_in_bytes(model, byte_tok):
    state = model.new_state()
    logits = torch.zeros(1, model.config.vocab_size)
    one = state.nbytes + logits.numel() * 4
    cache = PrefixCache(int(2.5 * one))
    for i in range(3):
        assert cache.put(bytes([i]), state, logits, tokens=i)
    assert len(cache) == 2 and cache.nbytes <= cache.max_bytes and cache.evictions == 1
    assert bytes([0]) not in cache
    assert cache.lookup([bytes([1])])[0] == 0  # touch 1, so 2 is now the oldest
    cache.put(bytes([3]), state, logits, tokens=3)
    assert bytes([1]) in cache and bytes([2]) not in cache
    assert not PrefixCache(one - 1).put(b"x", state, logits, 0)  # larger than the whole budget


def test_many_turns_never_exceed_the_cache_budget(model, byte_tok):
    budget = 6 * (model.new_state().nbytes + 4 * model.config.vocab_size)
    reader = Reader(model, byte_tok, layout="pq", cache=budget)
    for i in range(12):
        reader.ingest(reader.layout_turn(f"q{i}?", [f"passage {i}.", f"other {i}."]), *fresh(reader))
        assert reader.cache.nbytes <= budget
    assert reader.cache.evictions > 0


def test_no_snapshots_when_too_few_fit(model, byte_tok, monkeypatch):
    """A budget for fewer than MIN_ENTRIES snapshots: a first turn is read in one forward call, nothing is
    copied into the cache, and the result is the same as without a cache."""
    from app.cache import MIN_ENTRIES

    one = PrefixCache.snapshot_bytes(model.new_state(), model.config.vocab_size)
    calls = []
    orig = model.forward_hidden
    monkeypatch.setattr(model, "forward_hidden", lambda *a, **k: calls.append(1) or orig(*a, **k))
    for budget, stored in ((MIN_ENTRIES * one - 1, False), (MIN_ENTRIES * one, True)):
        reader = Reader(model, byte_tok, layout="pq", cache=budget)
        calls.clear()
        turn = reader.layout_turn("What does -r do?", PASSAGES)
        ing = reader.ingest(turn, *fresh(reader))
        assert (len(reader.cache) > 0) == stored
        assert (len(calls) == 1) == (not stored)  # with snapshots, one call per passage end
        ref = Reader(model, byte_tok, layout="pq", cache=None).ingest(turn, *fresh(reader))
        assert close(ing.logits, ref.logits) and states_close(ing.state, ref.state)


def test_turn_end_snapshots_read_a_turn_in_one_call(model, byte_tok, monkeypatch):
    """"turn-end" (the GPU default): a first turn is one forward call and one snapshot, after the whole
    turn; the same turn again is not encoded at all; a turn sharing only the passages is encoded in full."""
    calls = []
    orig = model.forward_hidden
    monkeypatch.setattr(model, "forward_hidden", lambda *a, **k: calls.append(1) or orig(*a, **k))
    reader = Reader(model, byte_tok, layout="pq", cache_snapshots="turn-end")
    turn = reader.layout_turn("What does -r do?", PASSAGES)
    first = reader.ingest(turn, *fresh(reader))
    assert len(calls) == 1 and len(reader.cache) == 1
    ref = Reader(model, byte_tok, layout="pq", cache=None).ingest(turn, *fresh(reader))
    assert close(first.logits, ref.logits) and states_close(first.state, ref.state)
    calls.clear()
    again = reader.ingest(turn, *fresh(reader))
    assert calls == [] and again.cached_tokens == again.prompt_tokens
    other = reader.ingest(reader.layout_turn("What does -d do?", PASSAGES), *fresh(reader))
    assert other.cached_tokens == 0 and len(calls) == 1


def test_the_snapshot_policy_follows_the_device():
    from app.encoder import snapshot_policy

    assert snapshot_policy("auto", torch.device("cuda", 0)) == "turn-end"
    assert snapshot_policy("auto", torch.device("cpu")) == "start"
    assert snapshot_policy("all", torch.device("cuda")) == "all"
    with pytest.raises(ValueError, match="cache_snapshots must be one of"):
        snapshot_policy("sometimes", torch.device("cpu"))


# -- decoder ------------------------------------------------------------------------------------
def _ingest(reader, question="What does -r do?"):
    turn = reader.layout_turn(question, PASSAGES)
    return turn, reader.ingest(turn, *fresh(reader))


def _reference_state(model, ids):
    return model(torch.tensor([ids]), mode="chunkwise", chunk_size=64).state


def _run(reader, ing, **kw):
    stream = AnswerStream(reader, ing.state, ing.logits, ing.key, **kw)
    pieces = list(stream)
    return stream, pieces


def test_answer_tokens_and_end_marker_enter_the_state(special_reader, special_tok, monkeypatch):
    end = special_tok.token_to_id(L.END)
    answer = special_tok.encode("Hi there").ids
    scripted_tokens(monkeypatch, [*answer, end])
    turn, ing = _ingest(special_reader)
    stream, pieces = _run(special_reader, ing, sampling=special_reader.sampling_config(max_new_tokens=20))
    assert "".join(pieces) == stream.text == "Hi there" and stream.stop_reason == "eos"
    assert stream.token_ids == answer
    ref = _reference_state(special_reader.model, turn.prompt_ids + answer + [end])
    assert states_close(stream.state, ref)
    assert stream.key == chain_key(ing.key, answer + [end])


@pytest.mark.parametrize("stop", ["eos", "marker"])
def test_the_end_marker_goes_through_a_static_decoder(special_reader, special_tok, monkeypatch, stop):
    """With a static decoder (a CUDA graph on a GPU; here its eager fallback on the CPU) the end marker is read
    by the answer's own loop instead of an eager forward: the same state, and the session's own copy of it."""
    from retnet import cuda_decode

    monkeypatch.setattr(cuda_decode, "wants_decoder", lambda model, cuda_graph: True)
    end, question = special_tok.token_to_id(L.END), special_tok.token_to_id(L.QUESTION)
    answer = special_tok.encode("Hi there").ids
    scripted_tokens(monkeypatch, [*answer, end if stop == "eos" else question])
    turn, ing = _ingest(special_reader)
    stream, _ = _run(special_reader, ing, sampling=special_reader.sampling_config(max_new_tokens=20))
    assert stream.text == "Hi there" and stream._loop._decoder is not None
    assert states_close(stream.state, _reference_state(special_reader.model, turn.prompt_ids + answer + [end]))
    buffers = {t.data_ptr() for t in stream._loop._decoder.layers}
    assert not buffers & {t.data_ptr() for t in stream.state.layers}


def test_marker_token_stops_and_is_replaced_by_the_end_marker(special_reader, special_tok, monkeypatch):
    end, question = special_tok.token_to_id(L.END), special_tok.token_to_id(L.QUESTION)
    answer = special_tok.encode("Yes").ids
    scripted_tokens(monkeypatch, [*answer, question, 65, 66])
    turn, ing = _ingest(special_reader)
    stream, _ = _run(special_reader, ing)
    assert stream.text == "Yes" and stream.stop_reason == "stop"
    assert states_close(stream.state, _reference_state(special_reader.model, turn.prompt_ids + answer + [end]))


def test_stop_string_never_leaks(special_reader, special_tok, monkeypatch):
    ids = special_tok.encode("First line\n\nmore text").ids
    scripted_tokens(monkeypatch, ids)
    _, ing = _ingest(special_reader)
    special_reader.sampling = special_reader.sampling_config(max_new_tokens=40)
    stream, pieces = _run(special_reader, ing)
    assert stream.text == "First line" and stream.stop_reason == "stop"
    assert "\n" not in "".join(pieces)


def test_marker_text_is_a_stop_string_without_special_tokens(reader, byte_tok, monkeypatch):
    scripted_tokens(monkeypatch, byte_tok.encode(f"ok{L.QUESTION}next").ids)
    reader.sampling = reader.sampling_config(max_new_tokens=30)
    _, ing = _ingest(reader)
    stream, pieces = _run(reader, ing)
    assert stream.text == "ok" and "<" not in "".join(pieces) and stream.stop_reason == "stop"


def test_length_limit_and_split_characters(special_reader, special_tok, monkeypatch):
    ids = special_tok.encode("héllo wörld").ids  # é and ö are two byte-tokens each
    scripted_tokens(monkeypatch, ids)
    turn, ing = _ingest(special_reader)
    stream, pieces = _run(special_reader, ing, sampling=special_reader.sampling_config(max_new_tokens=3))
    assert stream.stop_reason == "length" and stream.token_ids == ids[:3] and stream.text == "hé"
    assert all("\ufffd" not in p for p in pieces)
    end = special_tok.token_to_id(L.END)
    assert states_close(stream.state, _reference_state(special_reader.model, turn.prompt_ids + ids[:3] + [end]))


def test_extra_stop_strings_and_sampling_options(special_reader, special_tok, monkeypatch):
    scripted_tokens(monkeypatch, special_tok.encode("alpha STOP beta").ids)
    _, ing = _ingest(special_reader)
    stream, _ = _run(special_reader, ing, stop_strings=["STOP"], sampling=special_reader.sampling_config(
        max_new_tokens=30))
    assert stream.text == "alpha" and stream.stop_reason == "stop"
    with pytest.raises(TypeError, match="unknown sampling"):
        special_reader.sampling_config(bogus=1)


def test_real_sampling_is_reproducible_with_a_seed(special_reader):
    _, ing = _ingest(special_reader)
    cfg = special_reader.sampling_config(temperature=1.0, top_k=20, seed=7, max_new_tokens=6)
    a, _ = _run(special_reader, ing, sampling=cfg)
    b, _ = _run(special_reader, ing, sampling=cfg)
    assert a.token_ids == b.token_ids and len(a.token_ids) <= 6
