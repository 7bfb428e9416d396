"""Model directories: save_pretrained / from_pretrained round trip and all-or-nothing loading."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from retnet import CheckpointError, RetNetConfig, RetNetForCausalLM, load_tokenizer
from tests.helpers import byte_tokenizer, make_model


@pytest.mark.parametrize("overrides", [dict(), dict(tie_embeddings=True, group_norm_affine=False)])
def test_roundtrip_gives_identical_logits_and_fingerprint(tmp_path, overrides):
    model = make_model(dtype=torch.float32, **overrides)
    model.save_pretrained(tmp_path, tokenizer=byte_tokenizer())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]
    loaded = RetNetForCausalLM.from_pretrained(tmp_path)
    ids = torch.randint(0, 256, (2, 9))
    assert torch.equal(model(ids).logits, loaded(ids).logits)
    assert loaded.fingerprint() == model.fingerprint()
    assert loaded.config == model.config
    assert load_tokenizer(tmp_path).encode("héllo").ids == byte_tokenizer().encode("héllo").ids
    if model.config.tie_embeddings:
        assert loaded.lm_head.weight is loaded.embed.weight


def test_dtype_and_config_json(tmp_path):
    make_model(dtype=torch.float32).save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["model_type"] == "retnet-rag" and cfg["rotary_style"] == "interleaved"
    half = RetNetForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert half.embed.weight.dtype == torch.bfloat16


def _edit_weights(tmp_path, edit):
    tensors = load_file(str(tmp_path / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(tmp_path / "model.safetensors"))


@pytest.mark.parametrize("damage,message", [
    (lambda t: t.pop("layers.1.ffn.down_proj.weight"), "missing keys.*layers.1.ffn.down_proj.weight"),
    (lambda t: t.update(extra=torch.zeros(1)), "unexpected keys.*extra"),
    (lambda t: t.update({"final_norm.weight": torch.zeros(7)}), "final_norm.weight has shape \\(7,\\)"),
])
def test_bad_weights_name_the_key(tmp_path, damage, message):
    make_model(dtype=torch.float32).save_pretrained(tmp_path)
    _edit_weights(tmp_path, damage)
    with pytest.raises(CheckpointError, match=message):
        RetNetForCausalLM.from_pretrained(tmp_path)


def test_missing_and_broken_files_name_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        RetNetForCausalLM.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="no config.json"):
        RetNetForCausalLM.from_pretrained(tmp_path)
    make_model(dtype=torch.float32).save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="model.safetensors"):
        RetNetForCausalLM.from_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="missing weights file"):
        RetNetForCausalLM.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        RetNetForCausalLM.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(CheckpointError, match="model_type 'gpt2'"):
        RetNetForCausalLM.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "retnet-rag", "rotary_style": "weird"}))
    with pytest.raises(CheckpointError, match="rotary_style"):
        RetNetForCausalLM.from_pretrained(tmp_path)


def test_presets_and_config_validation():
    for name, layers, hidden, heads in [("1.3b", 24, 2048, 8), ("2.7b", 32, 2560, 10), ("6.7b", 32, 4096, 16)]:
        cfg = RetNetConfig.from_preset(name)
        assert (cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.head_k_dim) == (layers, hidden, heads, 256)
        assert cfg.value_dim == 2 * hidden and cfg.ffn_dim == 2 * hidden
    with pytest.raises(ValueError, match="unknown preset"):
        RetNetConfig.from_preset("13b")
    with pytest.raises(ValueError, match="head_k_dim must be even"):
        RetNetConfig(head_k_dim=7)
    with pytest.raises(ValueError, match="unknown RetNetConfig fields"):
        RetNetConfig.from_dict({"hiden_size": 3})
