"""The app's model loading picks int8 weights for large models on the CPU (app.encoder.load_model's
``quantize``): "auto" keeps small models in float, "int8" / "none" / $RETNET_QUANTIZE choose."""

from __future__ import annotations

import pytest
import torch

from app.encoder import Reader, load_model
from retnet import quantize as Q

from .app_testutil import special_tokenizer, tiny_model

pytestmark = pytest.mark.skipif(not Q.int8_available(), reason="this torch cannot multiply int8 matrices on the CPU")


@pytest.fixture
def model_dir(tmp_path):
    path = tmp_path / "model"
    tok = special_tokenizer()
    tiny_model(vocab_size=tok.get_vocab_size()).save_pretrained(path, tokenizer=tok)
    return path


def _int8_layers(model) -> int:
    return sum(isinstance(m, Q.Int8Linear) for m in model.modules())


def test_auto_keeps_small_models_in_float_and_quantizes_large_ones(model_dir, monkeypatch):
    monkeypatch.delenv(Q.ENV_VAR, raising=False)
    m, _ = load_model(model_dir)
    assert _int8_layers(m) == 0 and Q.quantization_of(m) == "none"
    monkeypatch.setattr(Q, "AUTO_MIN_LINEAR_PARAMS", 0)  # as if the model were large
    m, _ = load_model(model_dir)
    assert _int8_layers(m) > 0 and Q.quantization_of(m) == "int8"


def test_explicit_choice_and_environment(model_dir, monkeypatch):
    monkeypatch.delenv(Q.ENV_VAR, raising=False)
    m, _ = load_model(model_dir, quantize="int8")
    assert _int8_layers(m) == sum(1 for _ in tiny_model().modules() if isinstance(_, torch.nn.Linear))
    monkeypatch.setenv(Q.ENV_VAR, "int8")
    m, _ = load_model(model_dir)
    assert Q.quantization_of(m) == "int8"
    m, _ = load_model(model_dir, quantize="none")  # the argument wins over the environment
    assert Q.quantization_of(m) == "none"
    with pytest.raises(ValueError, match="unknown quantization"):
        load_model(model_dir, quantize="fp8")


def test_int8_reader_answers_and_shares_the_float_prefix_keys(model_dir):
    f = Reader.from_pretrained(model_dir, quantize="none", max_new_tokens=4)
    q = Reader.from_pretrained(model_dir, quantize="int8", max_new_tokens=4)
    assert q.root_key() == f.root_key()  # same fingerprint: states and sessions move between the two
    turn = q.layout_turn("what does -k do?", ["The -k option keeps the input files."], first_turn=True)
    ing_q = q.ingest(turn, q.new_state(), q.root_key())
    ing_f = f.ingest(turn, f.new_state(), f.root_key())
    assert ing_q.logits.shape == ing_f.logits.shape
    assert (ing_q.logits - ing_f.logits).abs().max() < 0.5 * ing_f.logits.std()


def test_thread_choice_counts_int8_weights(model_dir, monkeypatch):
    """configure_threads picks one thread for small models: an int8 model is as large as its float one."""
    from app import defaults

    f, _ = load_model(model_dir, quantize="none")
    q, _ = load_model(model_dir, quantize="int8")
    assert defaults._weights(q) >= defaults._weights(f)
    monkeypatch.setattr(defaults, "SMALL_MODEL_PARAMS", defaults._weights(f))  # f is just "large"
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert defaults.configure_threads(None, q) == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("flag,expected", [("int8", "int8"), ("none", "none")])
def test_cli_quantize_flag_reaches_the_loaded_model(flag, expected, tiny_model_dir, data_dir, docs_dir,
                                                    monkeypatch, capsys):
    import app.qa
    from app.cli import main

    loaded = []
    real = app.qa.load_model

    def spy(*args, **kwargs):
        model, tok = real(*args, **kwargs)
        loaded.append(model)
        return model, tok

    monkeypatch.setattr(app.qa, "load_model", spy)
    monkeypatch.setenv(Q.ENV_VAR, "none" if flag == "int8" else "int8")  # the flag wins over the environment
    code = main([str(a) for a in ["ask", "What does tar -x do?", "-c", "docs", "--add", docs_dir, "--data-dir",
                                  data_dir, "--model", tiny_model_dir, "--max-new-tokens", "2", "--embedder",
                                  "hash", "--quantize", flag]])
    assert code == 0, capsys.readouterr().err
    assert [Q.quantization_of(m) for m in loaded] == [expected]
