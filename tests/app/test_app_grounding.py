"""Grounded answers (app.grounding): quotes are verbatim, their offsets are exact, refusals, and the option
off changes nothing."""

from __future__ import annotations

import io

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app import prompt as L
from app.decoder import AnswerStream
from app.encoder import Reader
from app.grounding import REFUSAL, Grounding, is_refusal, passage_tokens, passages_from_turn
from app.types import Answer, Quote, Source
from retnet.generation import DecodeLoop

from .app_testutil import scripted_tokens, special_tokenizer, tiny_model

GZIP = "Gzip compresses files with Lempel-Ziv coding. The -k option keeps the input files."
UNICODE = "Le café coûte 3 €. 日本語のテキスト. Emoji 🙂 ok."


def src(text: str, n: int = 1, start: int = 0, page: int | None = None, title: str = "doc") -> Source:
    return Source(n, title, f"{title}.txt", page, text, 1.0 / n, f"d{n}", start, start + len(text))


def stream_for(reader: Reader, sources, question: str = "What keeps the input?", **sampling) -> AnswerStream:
    turn = reader.layout_turn(question, sources, first_turn=True)
    ing = reader.ingest(turn, reader.new_state(), reader.root_key())
    return AnswerStream(reader, ing.state, ing.logits, ing.key, question=question, sources=sources,
                        sampling=reader.sampling_config(**sampling))


def ids_of(tok, text: str) -> list[int]:
    return L.encode_text(tok, text)


# -- the property the issue asks for -------------------------------------------------------------
_TOK = special_tokenizer()
_MODELS: dict[int, torch.nn.Module] = {}


def _model(seed: int):
    if seed not in _MODELS:
        _MODELS[seed] = tiny_model(vocab_size=_TOK.get_vocab_size(), seed=seed)
    return _MODELS[seed]


_TEXT = st.text(alphabet=st.sampled_from(list("abcxyz AB-_.,:!?\n\té日🙂€'\"()")), min_size=0, max_size=80)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts=st.lists(_TEXT, min_size=1, max_size=3), seed=st.integers(0, 2), temperature=st.sampled_from([0.0, 1.5]),
       sample_seed=st.integers(0, 10_000), max_chunk=st.sampled_from([16, 256]), min_tokens=st.sampled_from([1, 3]))
def test_grounded_answer_is_always_a_verbatim_span_of_a_passage_read(texts, seed, temperature, sample_seed, max_chunk,
                                                                   min_tokens):
    torch.set_num_threads(1)
    reader = Reader(_model(seed), _TOK, cache=None, max_chunk=max_chunk, grounded=True, refuse=False,
                    grounded_min_tokens=min_tokens, max_new_tokens=10)
    sources = [src(t, i + 1, start=7 * i) for i, t in enumerate(texts)]
    stream = stream_for(reader, sources, temperature=temperature, seed=sample_seed)
    pieces = list(stream)
    a = stream.answer
    assert "".join(pieces).strip() == a.text
    if not a.text:
        assert a.quotes == []
        return
    assert len(a.quotes) == 1  # no free tokens: the whole answer is one quote
    q = a.quotes[0]
    assert q.source in sources and q.text == a.text
    assert q.source.text[q.start : q.end] == q.text  # offsets point at exactly that text
    assert q.doc_start == q.source.start + q.start and q.doc_end - q.doc_start == len(q.text)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts=st.lists(_TEXT, min_size=1, max_size=3), sample_seed=st.integers(0, 10_000))
def test_free_tokens_keep_every_quote_verbatim(texts, sample_seed):
    torch.set_num_threads(1)
    reader = Reader(_model(0), _TOK, cache=None, grounded=True, refuse=False, grounded_free_tokens=3,
                    max_new_tokens=12)
    sources = [src(t, i + 1) for i, t in enumerate(texts)]
    stream = stream_for(reader, sources, temperature=1.5, seed=sample_seed)
    a = stream.result()
    assert stream.grounding.free_left >= 0
    for q in a.quotes:
        assert q.source.text[q.start : q.end] == q.text and q.text in a.text


# -- offsets ----------------------------------------------------------------------------------
def test_quote_offsets_in_passage_and_document(special_model, special_tok, monkeypatch):
    doc = "Preface.\n\n" + GZIP + "\n\nAfter."
    s = src(GZIP, start=doc.index(GZIP), page=3)
    reader = Reader(special_model, special_tok, grounded=True, refuse=False, max_new_tokens=32)
    scripted_tokens(monkeypatch, ids_of(special_tok, "The -k option") + [special_tok.token_to_id(L.END)])
    a = stream_for(reader, [src("Tar stores many files.", 2), s]).result()  # cites the right passage of two
    assert a.text == "The -k option" and a.stop_reason == "eos"
    (q,) = a.quotes
    assert q.source is not None and q.source.text == GZIP and q.page == 3
    assert (q.start, q.end) == (GZIP.index("The -k"), GZIP.index("The -k") + len("The -k option"))
    assert doc[q.doc_start : q.doc_end] == "The -k option"
    assert "[[The -k option]]" in q.highlight()


def test_multi_chunk_passage_tokens_are_what_the_model_read(special_model, special_tok, monkeypatch):
    long = " ".join(f"Sentence {i} says that option -{chr(97 + i)} does thing {i}." for i in range(8))
    s = src(long, title="manual")
    reader = Reader(special_model, special_tok, grounded=True, refuse=False, max_chunk=16, max_new_tokens=64)
    turn = reader.layout_turn("q?", [s], first_turn=True)
    spans = [sp for sp, kind in zip(turn.chunk_spans(), turn.kinds, strict=True) if kind == L.PASSAGE_CHUNK]
    assert len(spans) > 4  # split into many chunks, some inside sentences
    read = [t for lo, hi in spans for t in turn.ids[lo:hi]]
    p = passage_tokens(special_tok, s)
    assert read[-len(p.ids) :] == p.ids  # the body the grounding follows is the body the model read
    # a quote across chunk boundaries (each token is one byte here, chunks are 16 tokens)
    span = "option -b does thing 1. Sentence 2 says"
    scripted_tokens(monkeypatch, ids_of(special_tok, span) + [special_tok.token_to_id(L.END)])
    (q,) = stream_for(reader, [s]).result().quotes
    assert q.text == span and long[q.start : q.end] == span


def test_unicode_passage_offsets_are_in_characters(special_model, special_tok, monkeypatch):
    reader = Reader(special_model, special_tok, grounded=True, refuse=False, max_new_tokens=32)
    s = src(UNICODE)
    scripted_tokens(monkeypatch, ids_of(special_tok, "café coûte 3 €") + [special_tok.token_to_id(L.END)])
    (q,) = stream_for(reader, [s]).result().quotes
    assert q.text == "café coûte 3 €" and (q.start, q.end) == (3, 3 + len("café coûte 3 €"))


def test_quote_never_starts_or_ends_inside_a_character_or_word(special_tok):
    s = src(UNICODE)
    p = passage_tokens(special_tok, s)
    raw = (L.neutralize(UNICODE) + "\n").encode("utf-8")
    assert len(p.ids) == len(raw)  # one token per byte: a continuation byte is never a boundary
    for k, byte in enumerate(raw):
        if 0x80 <= byte < 0xC0:
            assert p.body_at[k] == -1 and not p.boundary[k]
    end = special_tok.token_to_id(L.END)
    g = Grounding([p], end)
    vocab = special_tok.get_vocab_size()
    allowed = g.allowed(vocab)
    assert allowed[ids_of(special_tok, "c")[0]] and not allowed[end]  # "café" may start; nothing quoted yet
    g.step(ids_of(special_tok, "c")[0], 0)
    assert not g.allowed(vocab)[end]  # "c|afé": inside a word
    for i, t in enumerate(ids_of(special_tok, "afé")):
        assert not g.allowed(vocab)[end]  # é is two bytes: never between them either
        g.step(t, 1 + i)
    assert g.allowed(vocab)[end]  # "café" then " ": a word boundary


def test_markers_in_a_passage_map_back_to_the_original_text(special_model, special_tok, monkeypatch):
    text = "Type <|question|> to ask."
    reader = Reader(special_model, special_tok, grounded=True, refuse=False, max_new_tokens=32)
    scripted_tokens(monkeypatch, ids_of(special_tok, "Type < |question|> to") + [special_tok.token_to_id(L.END)])
    a = stream_for(reader, [src(text)]).result()
    (q,) = a.quotes
    assert a.text == "Type < |question|> to"  # what the model read (neutralised)
    assert q.text == text[q.start : q.end] == "Type <|question|> to"  # offsets into the real text


def test_document_offsets_through_multidocqa(model, byte_tok, docs_dir, data_dir, monkeypatch):
    from app import MultiDocQA
    from retrieval import HashEmbedder
    from retrieval.loaders import load_document

    phrase = "The -k option keeps the input files."
    scripted_tokens(monkeypatch, ids_of(byte_tok, phrase))
    with MultiDocQA("docs", data_dir=data_dir, model=model, tokenizer=byte_tok, embedder=HashEmbedder(64), k=3,
                    max_new_tokens=len(ids_of(byte_tok, phrase)), grounded=True, refuse=False) as qa:
        qa.add(docs_dir, progress=False)
        a = qa.ask("Which gzip option keeps the input?")
    (q,) = a.quotes
    assert a.text == q.text == phrase and a.stop_reason == "length"
    assert load_document(q.source.source).text[q.doc_start : q.doc_end] == phrase


# -- ending, refusing, streaming ----------------------------------------------------------------
def test_stops_at_the_end_of_the_passage(special_model, special_tok, monkeypatch):
    s = src("Short passage here.")
    reader = Reader(special_model, special_tok, grounded=True, refuse=False, max_new_tokens=64)
    calls = scripted_tokens(monkeypatch, ids_of(special_tok, "here.\n"))
    a = stream_for(reader, [s]).result()
    assert a.text == "here." and a.stop_reason == "eos" and calls["n"] == len("here.\n")  # nothing after the end
    assert a.quotes[0].text == "here."


def test_end_marker_is_never_read_and_the_state_is_clean(special_model, special_tok, monkeypatch):
    reader = Reader(special_model, special_tok, grounded=True, refuse=False, max_new_tokens=32)
    end = special_tok.token_to_id(L.END)
    scripted_tokens(monkeypatch, ids_of(special_tok, "The -k") + [end])
    stream = stream_for(reader, [src(GZIP)])
    a = stream.result()
    assert a.text == "The -k" and stream.token_ids == ids_of(special_tok, "The -k")


def _state_after_refusal(model, tok, question, sources):
    plain = Reader(model, tok, max_new_tokens=8, grounded=False)
    turn = plain.layout_turn(question, sources, first_turn=True)
    ing = plain.ingest(turn, plain.new_state(), plain.root_key())
    state, _ = plain.feed(ing.state, ids_of(tok, REFUSAL) + list(plain.stops.end_ids))
    return state


def _same_state(a, b) -> bool:
    return torch.equal(a.offsets, b.offsets) and all(
        torch.allclose(x, y, atol=1e-5) for x, y in zip(a.layers, b.layers, strict=True))


@pytest.mark.parametrize("score", ["support", "logprob"])
def test_refusal_replaces_the_answer_in_text_and_state(special_model, special_tok, score, monkeypatch):
    # support: no term of the question is in the passage; logprob: every quote scores below 0
    question = "How do I split tmux windows?" if score == "support" else "What keeps the input?"
    threshold = 0.5 if score == "support" else 0.0
    reader = Reader(special_model, special_tok, grounded=True, refusal_score=score, refusal_threshold=threshold,
                    max_new_tokens=8)
    calls = scripted_tokens(monkeypatch, ids_of(special_tok, "The -k option"))
    stream = stream_for(reader, [src(GZIP)], question=question)
    pieces = list(stream)
    a = stream.answer
    assert pieces == [REFUSAL] and a.text == REFUSAL and is_refusal(a.text)
    assert a.refused and a.quotes == [] and a.stop_reason == "refused"
    assert (calls["n"] == 0) == (score == "support")  # "support" decides before decoding anything
    # the state read the refusal sentence and the end marker, as if the model had written them
    assert _same_state(stream.state, _state_after_refusal(special_model, special_tok, question, [src(GZIP)]))
    assert stream.token_ids == ids_of(special_tok, REFUSAL)


def test_support_is_the_share_of_question_terms_in_the_passages():
    from app.grounding import support

    assert support("Which gzip option keeps the input files?", [src(GZIP)]) == 1.0
    assert support("How do I split tmux windows?", [src(GZIP)]) == 0.0
    assert support("gzip with tmux?", [src("Tar."), src(GZIP)]) == 0.5
    assert support("what?", [src(GZIP)]) == 1.0  # nothing to look for


@pytest.mark.parametrize("score", ["support", "logprob"])
def test_no_refusal_above_the_threshold_and_pieces_still_stream(special_model, special_tok, score):
    reader = Reader(special_model, special_tok, grounded=True, refusal_score=score, refusal_threshold=-1e9,
                    max_new_tokens=8, grounded_min_tokens=6)
    stream = stream_for(reader, [src(GZIP)], question="How do I split tmux windows?")
    pieces = list(stream)
    a = stream.answer
    assert not a.refused and len(pieces) > 1 and "".join(pieces).strip() == a.text
    assert a.quotes and stream.grounding.score() < 0


def test_grounded_streaming_yields_pieces(special_model, special_tok):
    reader = Reader(special_model, special_tok, grounded=True, refuse=False, grounded_min_tokens=6,
                    max_new_tokens=8)
    stream = stream_for(reader, [src(GZIP)])
    pieces = list(stream)
    assert len(pieces) > 1 and "".join(pieces).strip() == stream.answer.text != ""


def test_option_off_leaves_generation_unchanged(special_model, special_tok):
    def plain_tokens(reader):  # the decode loop alone, as before grounding existed
        turn = reader.layout_turn("What keeps the input?", [src(GZIP)], first_turn=True)
        ing = reader.ingest(turn, reader.new_state(), reader.root_key())
        loop = DecodeLoop(reader.model, ing.logits, ing.state, reader.sampling_config())
        out = []
        for t in loop:
            if int(t[0]) in reader.stops.stop_token_ids:
                break
            out.append(int(t[0]))
            loop.read(t)
        return out

    for sampling in ({}, {"temperature": 1.0, "seed": 3}):
        reader = Reader(special_model, special_tok, max_new_tokens=16, grounded=False, **sampling)
        stream = stream_for(reader, [src(GZIP)])
        stream.result()
        assert stream.grounding is None and stream.answer.quotes == []
        want = plain_tokens(reader)
        assert stream.token_ids == want[: len(stream.token_ids)]
        assert len(stream.token_ids) == len(want) or stream.stop_reason == "stop"
    # grounded with nothing to quote: free generation, the same tokens
    g = Reader(special_model, special_tok, grounded=True, refuse=False, max_new_tokens=16)
    free = Reader(special_model, special_tok, max_new_tokens=16, grounded=False)
    assert stream_for(g, []).result().text == stream_for(free, []).result().text


# -- records and front ends -----------------------------------------------------------------------
def test_answer_round_trips_its_quotes(special_model, special_tok, monkeypatch):
    reader = Reader(special_model, special_tok, grounded=True, refuse=False, max_new_tokens=32)
    scripted_tokens(monkeypatch, ids_of(special_tok, "The -k option") + [special_tok.token_to_id(L.END)])
    a = stream_for(reader, [src("Other.", 1), src(GZIP, 2, page=2)]).result()
    b = Answer.from_dict(a.to_dict())
    assert [q.to_dict() for q in b.quotes] == [q.to_dict() for q in a.quotes]
    assert b.quotes[0].source is b.sources[1] and b.quotes[0].page == 2


def test_cli_marks_the_quote(special_tok):
    from app.cli import _print_sources

    s = src(GZIP, start=100, page=4)
    q = Quote(s, GZIP.index("The -k"), GZIP.index("The -k") + 13, "The -k option", -1.0, 13)
    out = io.StringIO()
    _print_sources([s], out=out, quotes=[q])
    text = out.getvalue()
    assert "(quoted)" in text and ">>The -k option<<" in text and f"chars {q.doc_start}-{q.doc_end}" in text
    assert "p. 4" in text


def test_langchain_metadata_carries_the_quotes(special_model, special_tok, monkeypatch):
    pytest.importorskip("langchain_core")
    from langchain_core.documents import Document
    from langchain_core.messages import HumanMessage

    from app.langchain import ChatRetNet, format_passages

    reader = Reader(special_model, special_tok, grounded=True, refuse=False, max_new_tokens=32)
    docs = [Document(page_content=GZIP, metadata={"title": "gzip"}), Document(page_content="Tar archives.")]
    scripted_tokens(monkeypatch, ids_of(special_tok, "The -k option") + [special_tok.token_to_id(L.END)])
    msg = ChatRetNet(reader=reader).invoke([HumanMessage(format_passages(docs) + L.QUESTION + "keep input?")])
    (q,) = msg.response_metadata["quotes"]
    assert msg.content == q["text"] == "The -k option" and msg.response_metadata["refused"] is False
    # the quote's passage is the gzip one (read last, as format_passages puts the best passage last)
    passages = passages_from_turn(special_tok, L.encode_messages(special_tok, L.split_marked_text(
        format_passages(docs) + L.QUESTION + "keep input?")))
    assert passages[q["source"] - 1].text[q["start"] : q["end"]] == "The -k option"


def test_quotes_start_after_whitespace_so_options_are_quoted_whole(special_tok):
    p = passage_tokens(special_tok, src("Use -k (on) or x."))
    g = Grounding([p], special_tok.token_to_id(L.END))
    allowed = g.allowed(special_tok.get_vocab_size())
    for ch in "U-(o":  # word starts after a space or an opening bracket
        assert allowed[ids_of(special_tok, ch)[0]], ch
    for ch in "sek)":  # inside a word, the "k" of "-k", a closing bracket
        assert not allowed[ids_of(special_tok, ch)[0]], ch


# -- free answers whose refusals the gate decides (AnswerOptions.free_refusal) ---------------------------
def test_free_answer_refused_by_the_gate_before_decoding(special_model, special_tok, monkeypatch):
    question = "How do I split tmux windows?"  # no term of it in the passage: support 0
    reader = Reader(special_model, special_tok, grounded=False, free_refusal="gate", refusal_threshold=0.5,
                    max_new_tokens=8)
    calls = scripted_tokens(monkeypatch, ids_of(special_tok, "The -k option"))
    stream = stream_for(reader, [src(GZIP)], question=question)
    assert list(stream) == [REFUSAL] and stream.answer.refused and calls["n"] == 0
    assert _same_state(stream.state, _state_after_refusal(special_model, special_tok, question, [src(GZIP)]))


@pytest.mark.parametrize("who", ["model", "gate"])
def test_the_gate_keeps_the_model_from_beginning_the_refusal(special_model, special_tok, who, monkeypatch):
    import retnet.generation as G

    first = special_tok.encode(REFUSAL).ids[0]
    real, seen = G.next_token, []

    def recording(logits, cfg, generated=None, generator=None):
        seen.append(float(logits[0, first]))
        return real(logits, cfg, generated, generator)

    monkeypatch.setattr(G, "next_token", recording)
    reader = Reader(special_model, special_tok, grounded=False, free_refusal=who, refusal_threshold=0.5,
                    max_new_tokens=4)
    # the same question the gate refuses above: with "model" it is decoded, and the refusal may begin
    stream = stream_for(reader, [src(GZIP)], question="What keeps the input?" if who == "gate" else
                        "How do I split tmux windows?")
    list(stream)
    assert not stream.answer.refused and len(seen) >= 2
    assert (seen[0] == float("-inf")) == (who == "gate")
    assert all(s > float("-inf") for s in seen[1:])  # only the first token is barred


def test_free_refusal_must_be_model_or_gate():
    from app.options import AnswerOptions

    with pytest.raises(ValueError, match="free_refusal"):
        AnswerOptions(free_refusal="never")


def test_support_finds_a_dotted_name_by_its_last_parts():
    from app.grounding import support

    text = "Compress.copy() returns a copy of the compression object."
    assert support("what does zlib.Compress.copy() do", [src(text)]) == 1.0
    assert support("what does zlib.copy do", [src(text)]) == 0.0  # one part alone is too common to count
    assert support("what does zlib.Decompress.copy() do", [src(text)]) == 0.0
