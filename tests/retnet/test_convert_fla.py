"""The fla converter: strict mapping of a model built with flash-linear-attention 0.6.0, retention against
fla's naive_retention, full logits against fla's own forward (Triton interpreter on CPU), and the errors."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file, save_file

from retnet import CheckpointError, RetNetForCausalLM, load_tokenizer
from retnet.convert import convert_checkpoint
from retnet.convert.__main__ import main as convert_main
from retnet.ops import naive_retention_chunkwise, naive_retention_parallel, naive_retention_recurrent
from tests.helpers import byte_tokenizer

# fla is imported on first use (its import takes most of a minute on a 2-core machine), and every test
# that builds an fla model is marked slow.
pytestmark = pytest.mark.slow


def fla_models():
    return pytest.importorskip("fla.models")

VOCAB = 100
CONFIGS = {
    # fla's defaults: fused gated norm (g_norm_swish_gate), fused SwiGLU.
    "fused": dict(hidden_size=64, num_hidden_layers=2, num_heads=4, intermediate_size=96),
    # unfused norm/MLP (g_norm), tied embeddings, other head shapes, MLP width from fla's hidden_ratio rule.
    "plain-tied": dict(hidden_size=64, num_hidden_layers=2, num_heads=2, expand_k=0.5, expand_v=1.5, hidden_ratio=1,
                       fuse_norm=False, fuse_swiglu=False, tie_word_embeddings=True, norm_eps=1e-5),
    # no learnable group-norm weight.
    "no-affine": dict(hidden_size=32, num_hidden_layers=1, num_heads=2, intermediate_size=48,
                      elementwise_affine=False),
}


def make_fla_dir(path, name: str, seed: int = 0):
    """Save a random fla RetNetForCausalLM (norm weights away from 1) with save_pretrained; return the model."""
    torch.manual_seed(seed)
    cfg = fla_models().RetNetConfig(vocab_size=VOCAB, fuse_cross_entropy=False, **CONFIGS[name])
    model = fla_models().RetNetForCausalLM(cfg)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0.0, p.shape[1] ** -0.5)
    model.save_pretrained(path, safe_serialization=True)
    byte_tokenizer().save(str(path / "tokenizer.json"))
    return model.eval()


@pytest.fixture(scope="module")
def fla_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("fla")
    return {name: (root / name, make_fla_dir(root / name, name, seed=i)) for i, name in enumerate(CONFIGS)}


def our_name(fla_key: str) -> str:
    """The expected translation, written out independently of the converter's tables."""
    rules = [("model.embeddings.", "embed."), ("model.norm.", "final_norm."), ("model.layers.", "layers."),
             (".attn_norm.", ".retention_norm."), (".attn.g_norm_swish_gate.", ".retention.out_norm."),
             (".attn.g_norm.", ".retention.out_norm."), (".attn.", ".retention."), (".mlp_norm.", ".ffn_norm."),
             (".mlp.gate_proj.", ".ffn.act_proj."), (".mlp.up_proj.", ".ffn.lin_proj."),
             (".mlp.down_proj.", ".ffn.down_proj.")]
    for old, new in rules:
        if old in fla_key:
            fla_key = fla_key.replace(old, new)
            if old.startswith(".attn") or old.startswith(".mlp"):
                break
    return fla_key


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_fla_parameter_maps_exactly(fla_dirs, name):
    path, fla_model = fla_dirs[name]
    ours = RetNetForCausalLM.from_pretrained(path)
    mine = ours.state_dict()
    theirs = fla_model.state_dict()
    for key, value in theirs.items():
        assert torch.equal(mine[our_name(key)], value), key
    assert {our_name(k) for k in theirs} == set(mine)
    cfg, fcfg = ours.config, fla_model.config
    attn = fla_model.model.layers[0].attn
    assert (cfg.num_heads, cfg.head_k_dim, cfg.head_v_dim) == (attn.num_heads, attn.head_k_dim, attn.head_v_dim)
    assert cfg.ffn_dim == fla_model.model.layers[0].mlp.intermediate_size
    assert (cfg.rotary_style, cfg.rotary_grid, cfg.qk_scale_on, cfg.embed_scale) == ("half", "power", "q", 1.0)
    assert cfg.group_norm_affine == bool(fcfg.elementwise_affine) and cfg.norm_eps == fcfg.norm_eps
    assert cfg.tie_embeddings == fcfg.tie_word_embeddings
    if cfg.tie_embeddings:
        assert ours.lm_head.weight is ours.embed.weight
    assert load_tokenizer(path) is not None  # tokenizer.json beside fla weights stays usable


@torch.no_grad()
def test_retention_core_matches_fla_naive_retention():
    from fla.ops.retention.naive import naive_retention

    g = torch.Generator().manual_seed(0)
    B, H, T, K, V = 2, 3, 37, 12, 20
    q, k = torch.randn(B, H, T, K, generator=g), torch.randn(B, H, T, K, generator=g)
    v = torch.randn(B, H, T, V, generator=g)
    ref = naive_retention(q, k, v)  # fla layout [B, H, T, D]; scales q by K**-0.5 itself
    log_decay = torch.tensor([math.log(1 - 2 ** (-5 - h)) for h in range(H)])
    q_, k_, v_ = ((x * K**-0.5 if x is q else x).transpose(1, 2) for x in (q, k, v))  # ours: [B, T, H, D]
    for o, _ in (naive_retention_parallel(q_, k_, v_, log_decay),
                 naive_retention_chunkwise(q_, k_, v_, log_decay, [5, 1, 16, 15]),
                 naive_retention_recurrent(q_, k_, v_, log_decay)):
        assert rel_err(o.transpose(1, 2), ref) < 1e-5


FLA_FORWARD = textwrap.dedent("""
    import sys
    import torch
    from triton.runtime import autotuner
    # The interpreter cannot benchmark: let every autotuned kernel take its first config.
    autotuner.Autotuner.prune_configs = lambda self, *args, **kwargs: self.configs[:1]
    from fla.models import RetNetForCausalLM
    from safetensors.torch import load_file, save_file

    ids = load_file(sys.argv[1])["ids"]
    out = {}
    for i, path in enumerate(sys.argv[3:]):
        model = RetNetForCausalLM.from_pretrained(path).float().eval()
        for layer in model.model.layers:
            layer.attn.mode = "parallel"  # fla's chunk kernels do not run in the interpreter; parallel does
        with torch.no_grad():
            out[f"{i}.full"] = model(ids).logits  # 70 tokens: fla's parallel_retention
            out[f"{i}.short"] = model(ids[:, :20]).logits  # <= 64 tokens: fused_recurrent_retention
            step = model(ids[:, :10], use_cache=True)
            logits, cache = [step.logits], step.past_key_values
            for t in range(10, 15):  # decoding with fla's cache
                step = model(ids[:, t : t + 1], past_key_values=cache, use_cache=True)
                logits.append(step.logits)
                cache = step.past_key_values
            out[f"{i}.decode"] = torch.cat(logits, 1)
    save_file({k: v.contiguous() for k, v in out.items()}, sys.argv[2])
""")


@torch.no_grad()
def test_full_logits_match_fla_forward_in_triton_interpreter(fla_dirs, tmp_path):
    pytest.importorskip("triton")
    names = ["fused", "plain-tied"]
    ids = torch.randint(0, VOCAB, (2, 70), generator=torch.Generator().manual_seed(3))
    save_file({"ids": ids}, str(tmp_path / "ids.safetensors"))
    script = tmp_path / "fla_forward.py"
    script.write_text(FLA_FORWARD)
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    run = subprocess.run([sys.executable, str(script), str(tmp_path / "ids.safetensors"), str(tmp_path / "out"),
                          *(str(fla_dirs[n][0]) for n in names)], env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    ref = load_file(str(tmp_path / "out"))
    for i, name in enumerate(names):
        ours = RetNetForCausalLM.from_pretrained(fla_dirs[name][0])
        assert rel_err(ours(ids, mode="parallel").logits, ref[f"{i}.full"]) < 1e-4, name
        assert rel_err(ours(ids, mode="chunkwise", chunk_lengths=[16, 30, 24]).logits, ref[f"{i}.full"]) < 1e-4
        assert rel_err(ours(ids[:, :20], mode="recurrent").logits, ref[f"{i}.short"]) < 1e-4
        head = ours(ids[:, :10], mode="chunkwise", chunk_lengths=[3, 7])
        logits, state = [head.logits], head.state
        for t in range(10, 15):
            step = ours(ids[:, t : t + 1], state=state, mode="recurrent")
            logits.append(step.logits)
            state = step.state
        assert rel_err(torch.cat(logits, 1), ref[f"{i}.decode"]) < 1e-4, name


# -- file layouts ------------------------------------------------------------------------------------------
def copy_dir(fla_dirs, tmp_path, name="fused"):
    dst = tmp_path / name
    shutil.copytree(fla_dirs[name][0], dst)
    return dst


def rewrite(path, change):
    tensors = load_file(str(path / "model.safetensors"))
    change(tensors)
    save_file(tensors, str(path / "model.safetensors"))


def test_sharded_weights_load(fla_dirs, tmp_path):
    path = copy_dir(fla_dirs, tmp_path)
    tensors = load_file(str(path / "model.safetensors"))
    (path / "model.safetensors").unlink()
    keys = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
    for file, names in shards.items():
        save_file({k: tensors[k] for k in names}, str(path / file))
    index = {"metadata": {}, "weight_map": {k: f for f, names in shards.items() for k in names}}
    (path / "model.safetensors.index.json").write_text(json.dumps(index))
    ours = RetNetForCausalLM.from_pretrained(path)
    assert torch.equal(ours.layers[1].retention.g_proj.weight, tensors["model.layers.1.attn.g_proj.weight"])

    original = index["weight_map"]["model.layers.0.attn.q_proj.weight"]
    index["weight_map"]["model.layers.0.attn.q_proj.weight"] = "model-00003-of-00002.safetensors"
    (path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="model-00003-of-00002.safetensors"):
        RetNetForCausalLM.from_pretrained(path)
    index["weight_map"]["model.layers.0.attn.q_proj.weight"] = original
    index["weight_map"]["model.layers.0.attn.extra"] = "model-00002-of-00002.safetensors"
    (path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=r"lists \['model\.layers\.0\.attn\.extra'\]"):
        RetNetForCausalLM.from_pretrained(path)


def test_legacy_fused_gate_proj_is_split(fla_dirs, tmp_path):
    path = copy_dir(fla_dirs, tmp_path)

    def fuse(t):
        for i in range(2):
            up = t.pop(f"model.layers.{i}.mlp.up_proj.weight")
            t[f"model.layers.{i}.mlp.gate_proj.weight"] = torch.cat([t[f"model.layers.{i}.mlp.gate_proj.weight"], up])

    rewrite(path, fuse)
    ours, ref = RetNetForCausalLM.from_pretrained(path), RetNetForCausalLM.from_pretrained(fla_dirs["fused"][0])
    for key, value in ref.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value), key


def test_convert_checkpoint_writes_our_directory(fla_dirs, tmp_path, capsys):
    src = fla_dirs["plain-tied"][0]
    report = convert_checkpoint(src, tmp_path / "ours", dtype="bfloat16")
    assert report["source"] == "fla" and report["dtype"] == "bfloat16" and "tokenizer.json" in report["tokenizer_files"]
    assert json.loads((tmp_path / "ours" / "config.json").read_text())["model_type"] == "retnet-rag"
    ours = RetNetForCausalLM.from_pretrained(tmp_path / "ours")
    ref = RetNetForCausalLM.from_pretrained(src, dtype=torch.bfloat16)
    ids = torch.randint(0, VOCAB, (1, 9))
    with torch.no_grad():
        assert torch.equal(ours(ids).logits, ref(ids).logits)
    assert load_tokenizer(tmp_path / "ours").encode("hi").ids == load_tokenizer(src).encode("hi").ids
    assert convert_main([str(src), str(tmp_path / "cli"), "--source", "fla"]) == 0
    assert "converted fla checkpoint" in capsys.readouterr().out
    assert convert_main([str(src), str(tmp_path / "cli")]) == 1  # exists
    assert "exists" in capsys.readouterr().err


# -- errors ------------------------------------------------------------------------------------------------
def test_unknown_key_is_named(fla_dirs, tmp_path):
    path = copy_dir(fla_dirs, tmp_path)
    rewrite(path, lambda t: t.update({"model.layers.0.attn.q_conv1d.weight": torch.zeros(64, 1, 4)}))
    with pytest.raises(CheckpointError, match=r"model\.layers\.0\.attn\.q_conv1d\.weight"):
        RetNetForCausalLM.from_pretrained(path)


def test_norm_weight_without_elementwise_affine_is_unknown(fla_dirs, tmp_path):
    path = copy_dir(fla_dirs, tmp_path, "no-affine")
    rewrite(path, lambda t: t.update({"model.layers.0.attn.g_norm_swish_gate.weight": torch.ones(16)}))
    with pytest.raises(CheckpointError, match=r"g_norm_swish_gate\.weight.*elementwise_affine=False"):
        RetNetForCausalLM.from_pretrained(path)


def test_missing_key_is_named(fla_dirs, tmp_path):
    path = copy_dir(fla_dirs, tmp_path)
    rewrite(path, lambda t: t.pop("model.layers.1.attn.g_norm_swish_gate.weight"))
    with pytest.raises(CheckpointError, match=r"missing keys \['model\.layers\.1\.attn\.g_norm_swish_gate\.weight'\]"):
        RetNetForCausalLM.from_pretrained(path)


def test_wrong_shape_is_named(fla_dirs, tmp_path):
    path = copy_dir(fla_dirs, tmp_path)
    rewrite(path, lambda t: t.update({"model.layers.0.attn.k_proj.weight": torch.zeros(32, 64)}))
    with pytest.raises(CheckpointError, match=r"model\.layers\.0\.attn\.k_proj\.weight has shape \(32, 64\)"):
        RetNetForCausalLM.from_pretrained(path)


def test_missing_config_and_weights_are_named(fla_dirs, tmp_path):
    path = copy_dir(fla_dirs, tmp_path)
    (path / "config.json").unlink()
    with pytest.raises(CheckpointError, match="config.json"):
        RetNetForCausalLM.from_pretrained(path)
    path = copy_dir(fla_dirs, tmp_path, "no-affine")
    (path / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="missing weights file .*model.safetensors"):
        RetNetForCausalLM.from_pretrained(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        RetNetForCausalLM.from_pretrained(tmp_path / "nowhere")


def test_corrupt_safetensors_is_named_and_nothing_is_written(fla_dirs, tmp_path):
    path = copy_dir(fla_dirs, tmp_path)
    (path / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json" + b"\0" * 64)
    with pytest.raises(CheckpointError, match="cannot read .*model.safetensors"):
        RetNetForCausalLM.from_pretrained(path)
    with pytest.raises(CheckpointError):
        convert_checkpoint(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_pickle_only_directory_is_refused(fla_dirs, tmp_path):
    path = copy_dir(fla_dirs, tmp_path)
    torch.save(load_file(str(path / "model.safetensors")), path / "pytorch_model.bin")
    (path / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"(?s)pytorch_model\.bin is a pickle file .*safe_serialization=True"):
        RetNetForCausalLM.from_pretrained(path)


@pytest.mark.parametrize("field, value", [
    ("num_kv_heads", 2),
    ("feature_map", "relu"),
    ("use_short_conv", True),
    ("use_output_gate", False),
    ("attn", {"layers": [1], "num_heads": 4, "num_kv_heads": 4, "qkv_bias": False, "window_size": None,
              "rope_theta": 10000.0}),
    ("attnres_block_size", 2),
    ("hidden_act", "powlu"),
])
def test_unsupported_config_names_the_field(fla_dirs, tmp_path, field, value):
    path = copy_dir(fla_dirs, tmp_path)
    raw = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**raw, field: value}))
    with pytest.raises(CheckpointError, match=rf"config\.json: {field}="):
        RetNetForCausalLM.from_pretrained(path)
