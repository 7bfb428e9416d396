"""Per-layer decays (RetNetConfig.layer_decay_log): what uptrained converted models learn."""

from __future__ import annotations

import pytest
import torch

from retnet import RetNetConfig, RetNetForCausalLM
from tests.helpers import assert_modes_agree, make_model


def decays(layers: int, heads: int) -> list[list[float]]:
    return [[-0.05 * (h + 1) * (i + 2) for h in range(heads)] for i in range(layers)]


def test_each_layer_reads_its_own_decays_and_the_forms_agree():
    cfg = RetNetConfig.from_preset("tiny")
    model = make_model(layer_decay_log=decays(cfg.num_layers, cfg.num_heads))
    for i, layer in enumerate(model.layers):
        assert layer.retention._log_decay.on(torch.device("cpu")).tolist() == model.config.layer_decay_log[i]
    assert_modes_agree(model, (2, 23, [5, 11, 7], 3, 0))  # batch, length, chunks, prior tokens, seed


def test_saved_and_loaded(tmp_path):
    cfg = RetNetConfig.from_preset("tiny")
    model = make_model(layer_decay_log=decays(cfg.num_layers, cfg.num_heads))
    model.save_pretrained(tmp_path)
    again = RetNetForCausalLM.from_pretrained(tmp_path, dtype=torch.float64)
    assert again.config.layer_decay_log == model.config.layer_decay_log
    ids = torch.randint(0, cfg.vocab_size, (1, 9))
    assert torch.equal(again(ids).logits, model(ids).logits)


def test_old_configs_keep_their_identity_and_bad_values_are_refused():
    assert "layer_decay_log" not in RetNetConfig.from_preset("tiny").identity_dict()
    with pytest.raises(ValueError, match="lists of"):
        RetNetConfig.from_preset("tiny", layer_decay_log=[[-0.1, -0.2]])
    with pytest.raises(ValueError, match="negative"):
        RetNetConfig.from_preset("tiny", layer_decay_log=[[-0.1, 0.0], [-0.1, -0.2]])
