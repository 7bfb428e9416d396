"""Fixtures for app tests: tiny float32 models, byte tokenizers (with and without marker tokens),
small document folders and collections built with the fast HashEmbedder."""

from __future__ import annotations

import pytest
import torch

from app.encoder import Reader
from retrieval import HashEmbedder
from tests.helpers import byte_tokenizer

from .app_testutil import DOCS, special_tokenizer, tiny_model


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models are dominated by thread hand-offs: on a busy 2-core machine one thread is ~10x faster."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def byte_tok():
    return byte_tokenizer()


@pytest.fixture(scope="session")
def special_tok():
    return special_tokenizer()


@pytest.fixture(scope="session")
def model():
    return tiny_model()


@pytest.fixture(scope="session")
def special_model(special_tok):
    return tiny_model(vocab_size=special_tok.get_vocab_size())


@pytest.fixture
def reader(model, byte_tok):
    return Reader(model, byte_tok, max_new_tokens=8)


@pytest.fixture
def special_reader(special_model, special_tok):
    return Reader(special_model, special_tok, max_new_tokens=8)


@pytest.fixture
def docs_dir(tmp_path):
    d = tmp_path / "docs"
    d.mkdir()
    for name, text in DOCS.items():
        (d / name).write_text(text)
    return d


@pytest.fixture
def data_dir(tmp_path):
    return tmp_path / "collections"


def _open_qa(model, byte_tok, docs_dir, data_dir):
    from app import MultiDocQA

    with MultiDocQA("docs", data_dir=data_dir, model=model, tokenizer=byte_tok, embedder=HashEmbedder(64), k=2,
                    max_new_tokens=6) as qa:
        qa.add(docs_dir, progress=False)
        yield qa


@pytest.fixture
def qa(model, byte_tok, docs_dir, data_dir):
    yield from _open_qa(model, byte_tok, docs_dir, data_dir)


@pytest.fixture(params=[False, True], ids=["plain", "token-shift"])
def any_qa(request, model, byte_tok, docs_dir, data_dir):
    """`qa` over the tiny model, and over a tiny model with token shift (its state also holds last inputs)."""
    yield from _open_qa(tiny_model(token_shift=True) if request.param else model, byte_tok, docs_dir, data_dir)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A saved tiny model directory (config + weights + tokenizer.json), as the CLI and LangChain load it."""
    path = tmp_path_factory.mktemp("tiny-model")
    tok = special_tokenizer()
    tiny_model(vocab_size=tok.get_vocab_size(), seed=1).save_pretrained(path, tokenizer=tok)
    return path
