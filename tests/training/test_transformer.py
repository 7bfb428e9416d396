"""The same-size Transformer baseline: causality, KV-cache generation, checkpoints, size matching,
training through the RetNet trainer, and answering evaluation episodes like the RetNet reader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from app.errors import ModelNotFoundError
from app.prompt import PassageText, encode_turn, stop_conventions
from evaluation.transformer_answerer import TransformerAnswerer
from retnet import CheckpointError, RetNetConfig, RetNetForCausalLM, load_tokenizer
from training.trainer import TrainConfig, Trainer
from training.transformer import KVCache, TransformerConfig, TransformerForCausalLM, transformer_config_like

from .test_trainer import config as train_config

SHIPPED = Path(__file__).resolve().parents[2] / "data" / "model"


def make_transformer(seed: int = 0, dtype=torch.float64, std: float = 0.3, **overrides) -> TransformerForCausalLM:
    """Random weights large enough that attention is far from uniform; norm weights away from 1."""
    torch.manual_seed(seed)
    fields = dict(vocab_size=97, hidden_size=24, num_layers=2, num_heads=3, ffn_dim=40)
    model = TransformerForCausalLM(TransformerConfig(**{**fields, **overrides}))
    model.reset_parameters(std=std)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.uniform_(0.5, 1.5)
    return model.to(dtype).eval()


def parameter_count(model_class, cfg) -> int:
    with torch.device("meta"):
        model = model_class(cfg)
    return sum(p.numel() for p in model.parameters())  # a tied head is the embedding: counted once


# -- the model ----------------------------------------------------------------------------------
def test_future_tokens_never_change_earlier_logits():
    model = make_transformer()
    ids = torch.randint(0, 97, (2, 23), generator=torch.Generator().manual_seed(1))
    logits = model(ids).logits
    assert logits.shape == (2, 23, 97)
    for t in (0, 7, 21):
        changed = ids.clone()
        changed[:, t + 1:] = (changed[:, t + 1:] + 1 + torch.arange(22 - t)) % 97
        other = model(changed).logits
        torch.testing.assert_close(other[:, : t + 1], logits[:, : t + 1], rtol=1e-12, atol=1e-12)
        assert not torch.allclose(other[:, t + 1:], logits[:, t + 1:])


def test_cached_pieces_equal_one_forward():
    """Reading a sequence in pieces through the KV cache (prefill, several tokens, one token)
    gives the logits of reading it at once: the masks and rotary positions line up."""
    model = make_transformer(seed=3)
    ids = torch.randint(0, 97, (2, 19), generator=torch.Generator().manual_seed(2))
    whole = model(ids, mode="parallel").logits
    cache = KVCache(19)
    pieces = [model(ids[:, a:b], cache=cache).logits for a, b in ((0, 7), (7, 12), (12, 13), (13, 19))]
    assert cache.length == 19
    torch.testing.assert_close(torch.cat(pieces, dim=1), whole, rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="cache"):
        model(ids[:, :1], cache=cache)
    with pytest.raises(ValueError, match="mode"):
        model(ids, mode="sideways")


def test_kv_cache_greedy_equals_full_recompute():
    model = make_transformer(seed=5)
    prompt = [3, 14, 15, 92, 65, 35, 89, 79, 32]
    ids, expected = list(prompt), []
    for _ in range(12):  # greedy by reading the whole sequence again for every token
        tok = int(model(torch.tensor([ids])).logits[0, -1].argmax())
        expected.append(tok)
        ids.append(tok)
    assert model.generate_greedy(prompt, 12, set()) == expected
    assert len(set(expected)) > 1  # a degenerate model would not test much
    # A stop token ends the answer and is not part of it.
    assert model.generate_greedy(prompt, 12, {expected[3]}) == expected[: expected.index(expected[3])]
    assert model.generate_greedy(prompt, 0, set()) == []
    with pytest.raises(ValueError, match="empty prompt"):
        model.generate_greedy([], 4, set())


def test_save_load_round_trip(tmp_path):
    model = make_transformer(seed=7)
    tokenizer = load_tokenizer(SHIPPED)
    model.save_pretrained(tmp_path / "m", tokenizer=tokenizer)
    raw = json.loads((tmp_path / "m" / "config.json").read_text())
    assert raw["model_type"] == "transformer-baseline" and raw["ffn_dim"] == 40
    assert "lm_head.weight" not in load_file(str(tmp_path / "m" / "model.safetensors"))  # tied: stored once
    assert load_tokenizer(tmp_path / "m").to_str() == tokenizer.to_str()
    loaded = TransformerForCausalLM.from_pretrained(tmp_path / "m")
    assert loaded.lm_head.weight is loaded.embed.weight and loaded.config == model.config
    ids = torch.randint(0, 97, (2, 11))
    assert torch.equal(loaded(ids).logits, model(ids).logits)
    f32 = TransformerForCausalLM.from_pretrained(tmp_path / "m", dtype=torch.float32)
    assert f32.embed.weight.dtype == torch.float32
    untied = make_transformer(tie_embeddings=False)
    untied.save_pretrained(tmp_path / "u")
    assert torch.equal(TransformerForCausalLM.from_pretrained(tmp_path / "u")(ids).logits, untied(ids).logits)


def test_load_errors_name_the_problem(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        TransformerForCausalLM.from_pretrained(tmp_path / "nothing")
    with pytest.raises(CheckpointError, match="retnet-rag"):
        TransformerForCausalLM.from_pretrained(SHIPPED)
    model = make_transformer()
    model.save_pretrained(tmp_path / "m")
    weights = load_file(str(tmp_path / "m" / "model.safetensors"))
    bigger = make_transformer(ffn_dim=48)
    bigger.save_pretrained(tmp_path / "wrong_shape")
    (tmp_path / "wrong_shape" / "config.json").write_text((tmp_path / "m" / "config.json").read_text())
    with pytest.raises(CheckpointError, match="size mismatch"):
        TransformerForCausalLM.from_pretrained(tmp_path / "wrong_shape")
    from safetensors.torch import save_file

    del weights["layers.1.ffn.down_proj.weight"]
    save_file(weights, str(tmp_path / "m" / "model.safetensors"))
    with pytest.raises(CheckpointError, match="layers.1.ffn.down_proj.weight"):
        TransformerForCausalLM.from_pretrained(tmp_path / "m")
    raw = json.loads((tmp_path / "m" / "config.json").read_text())
    (tmp_path / "m" / "config.json").write_text(json.dumps({**raw, "heads": 3}))
    with pytest.raises(CheckpointError, match="heads"):
        TransformerForCausalLM.from_pretrained(tmp_path / "m")


@pytest.mark.parametrize("retnet", [
    pytest.param(lambda: RetNetConfig.from_json(SHIPPED / "config.json"), id="shipped"),
    pytest.param(lambda: RetNetConfig.from_preset("tiny"), id="tiny"),
    pytest.param(lambda: RetNetConfig.from_preset("small"), id="small"),
    pytest.param(lambda: RetNetConfig.from_preset("1.3b"), id="1.3b"),
])
def test_config_like_matches_the_retnet_size(retnet):
    r = retnet()
    t = transformer_config_like(r)
    target = parameter_count(RetNetForCausalLM, r)
    assert abs(parameter_count(TransformerForCausalLM, t) - target) <= 0.01 * target
    assert (t.vocab_size, t.hidden_size, t.num_layers, t.tie_embeddings) == (
        r.vocab_size, r.hidden_size, r.num_layers, r.tie_embeddings)
    assert t.head_dim == min(64, r.hidden_size) and t.num_heads * t.head_dim == r.hidden_size
    with torch.device("meta"):
        assert TransformerForCausalLM(t).num_parameters == parameter_count(TransformerForCausalLM, t)


def test_config_like_overrides_and_errors():
    r = RetNetConfig.from_preset("tiny")
    assert transformer_config_like(r, ffn_dim=10).ffn_dim == 10
    assert transformer_config_like(r, num_heads=4).num_heads == 4
    with pytest.raises(ValueError, match="more parameters"):
        transformer_config_like(RetNetConfig.from_preset("tiny", ffn_dim=1, head_k_dim=2, head_v_dim=2))
    with pytest.raises(ValueError, match="heads"):
        TransformerConfig(vocab_size=10, hidden_size=30, num_layers=1, num_heads=4, ffn_dim=8)


# -- training -----------------------------------------------------------------------------------
def transformer_run(tmp_path, out: str, **kw) -> TrainConfig:
    return train_config(tmp_path, out_dir=str(tmp_path / out), arch="transformer",
                        model={"like_retnet": {"preset": "tiny", "vocab_size": 64}}, **kw)


def test_trainer_trains_and_resumes_the_transformer(tmp_path):
    straight = Trainer(transformer_run(tmp_path, "a"), device="cpu")
    assert isinstance(straight.model, TransformerForCausalLM)
    first = straight.evaluate()
    straight.train()
    assert straight.evaluate() < 0.7 * first
    loaded = TransformerForCausalLM.from_pretrained(tmp_path / "a" / "last")
    assert torch.equal(loaded.embed.weight, straight.model.embed.weight)

    half = Trainer(transformer_run(tmp_path, "b"), device="cpu")
    half.train(until=17)
    resumed = Trainer(transformer_run(tmp_path, "b"), device="cpu")
    assert resumed.step == 17
    resumed.train()
    for p, q in zip(straight.model.parameters(), resumed.model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_train_config_arch_and_model_specs(tmp_path):
    with pytest.raises(ValueError, match="retnet.*transformer"):
        train_config(tmp_path, arch="mamba")
    like = transformer_run(tmp_path, "x").model_config()
    assert like == transformer_config_like(RetNetConfig.from_preset("tiny", vocab_size=64))
    fields = dict(vocab_size=64, hidden_size=16, num_layers=1, num_heads=2, ffn_dim=24)
    direct = train_config(tmp_path, arch="transformer", model=fields)
    assert direct.model_config() == TransformerConfig(**fields)
    assert isinstance(direct.build_model(), TransformerForCausalLM)
    assert isinstance(train_config(tmp_path).build_model(), RetNetForCausalLM)  # the default arch
    shipped = json.loads((SHIPPED / "config.json").read_text())  # a model directory's config.json as it is
    assert train_config(tmp_path, arch="transformer", model={"like_retnet": shipped}).model_config() == (
        transformer_config_like(RetNetConfig.from_json(SHIPPED / "config.json")))
    with pytest.raises(ValueError, match="hidden"):
        train_config(tmp_path, arch="transformer", model={**fields, "hidden": 3}).model_config()
    overridden = train_config(tmp_path, arch="transformer",
                              model={"like_retnet": {"preset": "tiny"}, "max_position": 128})
    assert overridden.model_config().max_position == 128
    (tmp_path / "t.json").write_text(json.dumps({"out_dir": "o", "arch": "transformer", "model": fields,
                                                 "train_sources": [["a.npz", 1.0]]}))
    assert TrainConfig.from_json(tmp_path / "t.json").model_config() == TransformerConfig(**fields)


# -- answering episodes -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def answerer_dir(tmp_path_factory):
    tokenizer = load_tokenizer(SHIPPED)
    model = make_transformer(seed=11, dtype=torch.float32, std=0.05, vocab_size=tokenizer.get_vocab_size(),
                             hidden_size=32, num_heads=2, ffn_dim=48)
    path = tmp_path_factory.mktemp("answerer") / "model"
    model.to(torch.bfloat16).save_pretrained(path, tokenizer=tokenizer)  # stored in bf16, read in float32
    return path


QUESTION = "Where was the treaty signed?"
PASSAGES = [PassageText("The treaty was signed in Paris in 1951.", "Treaty of Paris"),
            PassageText("Rome hosted the later conference."), "A third passage, given as a plain string."]


def test_answerer_reads_the_retnet_prompt(answerer_dir):
    answerer = TransformerAnswerer(answerer_dir)
    assert answerer.name == "transformer" and answerer.model.embed.weight.dtype == torch.float32
    tokenizer = load_tokenizer(SHIPPED)
    for layout in ("qpq", "pq"):
        text, prompt_tokens = answerer.answer(QUESTION, PASSAGES, layout, 12)
        prompt = encode_turn(tokenizer, QUESTION, PASSAGES, layout=layout).prompt_ids
        assert isinstance(text, str) and prompt_tokens == len(prompt)
        # The same text as decoding the greedy continuation of that prompt and ending it at a stop string.
        stops = stop_conventions(tokenizer)
        raw = tokenizer.decode(answerer.model.generate_greedy(prompt, 12, stops.stop_token_ids))
        for s in stops.stop_strings:
            raw = raw.split(s)[0]
        assert text == raw.strip()


def test_answerer_ends_at_stop_strings_and_strips(answerer_dir, monkeypatch):
    answerer = TransformerAnswerer(answerer_dir)
    tokenizer = answerer.tokenizer
    ids = tokenizer.encode("  Paris, in 1951.\n\nQuestion: what else?").ids
    consumed = []

    def scripted(prompt, max_new_tokens, stop_token_ids):
        for tok in ids[:max_new_tokens]:
            consumed.append(tok)
            yield tok

    monkeypatch.setattr(answerer.model, "greedy_tokens", scripted)
    text, _ = answerer.answer(QUESTION, PASSAGES, "qpq", 48)
    assert text == "Paris, in 1951."
    assert len(consumed) < len(ids)  # decoding stopped at the blank line
    consumed.clear()
    assert answerer.answer(QUESTION, PASSAGES, "qpq", 3)[0] == tokenizer.decode(ids[:3]).strip()


def test_answerer_errors(tmp_path, answerer_dir):
    with pytest.raises(ModelNotFoundError, match="transformer-baseline"):
        TransformerAnswerer(SHIPPED)  # a RetNet directory
    make_transformer().save_pretrained(tmp_path / "no_tokenizer")
    with pytest.raises(ModelNotFoundError, match="tokenizer"):
        TransformerAnswerer(tmp_path / "no_tokenizer")
