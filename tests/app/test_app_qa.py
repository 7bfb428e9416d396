"""MultiDocQA: collections, answers with cited sources, streaming, the prefix cache across asks, errors."""

from __future__ import annotations

import pytest

from app import Answer, CollectionNotFoundError, ModelNotFoundError, MultiDocQA
from app.encoder import Reader
from retrieval import HashEmbedder

from .app_testutil import text_pdf


def test_ask_cites_documents_pages_and_passages(qa, docs_dir):
    a = qa.ask("What does the -r option of rsync do?")
    assert isinstance(a, Answer) and a.question == "What does the -r option of rsync do?"
    assert len(a.sources) == 2 and [s.n for s in a.sources] == [1, 2]
    top = a.sources[0]
    assert top.title == "rsync" and top.source == str(docs_dir / "rsync.txt") and "-r option" in top.text
    assert top.page is None and top.score >= a.sources[1].score
    assert (docs_dir / "rsync.txt").read_text()[top.start : top.end] == top.text
    formatted = a.format()
    assert "Sources:" in formatted and "[1] rsync" in formatted
    assert a.usage.prompt_tokens > 0 and a.usage.answer_tokens <= 6 and a.stop_reason in ("eos", "stop", "length")
    assert a.timings.first_token_s > 0 and a.timings.total_s >= a.timings.first_token_s


def test_pdf_sources_carry_page_numbers(qa, tmp_path):
    pdf = tmp_path / "manual.pdf"
    pdf.write_bytes(text_pdf(["Installation. Unpack the archive first.",
                              "Calibration. Hold the zebra button for five seconds to calibrate."]))
    report = qa.add(pdf, progress=False)
    assert report.ok, report.summary()
    hit = qa.search("How do I calibrate with the zebra button?", k=1)[0]
    assert hit.page == 2 and "zebra" in hit.text and hit.cite().endswith("p. 2")


def test_stream_yields_the_answer(qa):
    stream = qa.stream("How does gzip decompress?")
    pieces = list(stream)
    assert "".join(pieces).strip() == stream.answer.text
    assert stream.answer.sources[0].title == "Gzip"


def test_ask_is_stateless_and_reuses_the_prefix_cache(model, byte_tok, docs_dir, data_dir):
    with MultiDocQA("docs", data_dir=data_dir, model=model, tokenizer=byte_tok, embedder=HashEmbedder(64), k=2,
                    layout="pq", max_new_tokens=5) as qa:
        qa.add(docs_dir, progress=False)
        first = qa.ask("What does tar -x do?")
        again = qa.ask("What does tar -x do?")
        assert again.text == first.text and again.usage.cached_tokens == again.usage.prompt_tokens
        other = qa.ask("What does tar -x do with archives?")  # same passages, other question
        assert [s.doc_id for s in other.sources] == [s.doc_id for s in first.sources]
        assert 0 < other.usage.cached_tokens < other.usage.prompt_tokens
        assert qa.cache.stats()["hits"] == 2


def test_documents_filter_and_k(qa):
    gzip_id = next(d.id for d in qa.documents() if d.title == "Gzip")
    a = qa.ask("What does the -r option do?", documents=[gzip_id], k=1)
    assert [s.doc_id for s in a.sources] == [gzip_id]
    assert qa.ask("anything?", k=0).sources == []


def test_no_collection_answers_from_the_conversation(model, byte_tok):
    qa = MultiDocQA(None, model=model, tokenizer=byte_tok, max_new_tokens=3)
    assert qa.ask("hello?").sources == []
    with pytest.raises(CollectionNotFoundError):
        qa.add("x")


def test_unknown_collection_is_a_clear_error(model, byte_tok, data_dir):
    with pytest.raises(CollectionNotFoundError, match="no collection 'nope'.*retnet-rag ingest"):
        MultiDocQA("nope", data_dir=data_dir, model=Reader(model, byte_tok), create=False)
    with pytest.raises(CollectionNotFoundError, match="invalid collection name"):
        MultiDocQA("../etc", data_dir=data_dir, model=Reader(model, byte_tok), create=False)


def test_missing_model_is_a_clear_error(tmp_path, monkeypatch):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        MultiDocQA(None, model=tmp_path / "no-model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="not a model directory"):
        MultiDocQA(None, model=tmp_path / "empty")
    monkeypatch.setenv("RETNET_RAG_MODEL", str(tmp_path / "default-model"))
    with pytest.raises(ModelNotFoundError, match="bundled default model is missing"):
        MultiDocQA(None)


def test_model_dir_without_tokenizer(tmp_path, model):
    model.save_pretrained(tmp_path / "m")
    with pytest.raises(ModelNotFoundError, match="no tokenizer.json"):
        MultiDocQA(None, model=tmp_path / "m")


def test_model_dir_loads(tiny_model_dir):
    qa = MultiDocQA(None, model=tiny_model_dir, max_new_tokens=3)
    assert qa.reader.stops.end_token_id is not None  # the saved tokenizer has the markers
    assert qa.ask("hi?").usage.answer_tokens <= 3


@pytest.mark.slow  # loads the real embedder
def test_real_minilm_embedder_finds_meaning(tmp_path, model, byte_tok):
    """The one test with the real all-MiniLM-L6-v2: retrieval by meaning, not shared words."""
    from retrieval import SentenceTransformerEmbedder

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "cats.txt").write_text("Felines purr when they are content and sleep most of the day.")
    (docs / "cars.txt").write_text("The engine needs fresh oil every ten thousand kilometres.")
    with MultiDocQA("st", data_dir=tmp_path / "cols", model=model, tokenizer=byte_tok,
                    embedder=SentenceTransformerEmbedder(), k=1, max_new_tokens=2) as qa:
        qa.add(docs, progress=False)
        assert qa.ask("How often should I service my vehicle's motor?").sources[0].title == "cars"
        assert qa.ask("Why does my kitty make a rumbling noise?").sources[0].title == "cats"
