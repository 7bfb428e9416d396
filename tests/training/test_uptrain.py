"""training.uptrain / adapter / softmax_teacher on a tiny random Llama GGUF (CPU)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("gguf")

from retnet.convert.llama_gguf import from_llama_gguf  # noqa: E402
from tests.retnet.tiny_llama_gguf import write_tiny_llama_gguf  # noqa: E402
from training.adapter import LoRALinear, attach_adapter, load_adapter, merge_adapter, save_adapter  # noqa: E402
from training.softmax_teacher import teacher_forward, teacher_generate  # noqa: E402
from training.uptrain import TokenStream, distill_loss, run_stage, transfer_loss  # noqa: E402

H, KV, D, L = 4, 2, 64, 2
K = D // H
OFF = torch.autocast("cpu", enabled=False)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    hf = write_tiny_llama_gguf(path, layers=L, heads=H, kv_heads=KV, hidden=D)
    return path, {k: torch.from_numpy(v).double() for k, v in hf.items()}


def naive_llama_logits(hf: dict, ids: torch.Tensor, eps: float) -> torch.Tensor:
    """A plain softmax-attention Llama over the original (Hugging Face layout) weights, float64."""
    def rms(x, w):
        return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w

    def rope(z, pos):  # z [T, heads, K]; pairs (i, i + K/2)
        theta = 10000.0 ** (-torch.arange(0, K, 2, dtype=torch.float64) / K)
        ang = pos[:, None].double() * theta
        cos, sin = ang.cos()[:, None], ang.sin()[:, None]
        a, b = z[..., : K // 2], z[..., K // 2:]
        return torch.cat([a * cos - b * sin, b * cos + a * sin], -1)

    T = ids.shape[0]
    pos = torch.arange(T)
    x = hf["model.embed_tokens.weight"][ids]
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    for i in range(L):
        p = f"model.layers.{i}."
        h = rms(x, hf[p + "input_layernorm.weight"])
        q = rope((h @ hf[p + "self_attn.q_proj.weight"].T).view(T, H, K), pos)
        k = rope((h @ hf[p + "self_attn.k_proj.weight"].T).view(T, KV, K), pos).repeat_interleave(H // KV, 1)
        v = (h @ hf[p + "self_attn.v_proj.weight"].T).view(T, KV, K).repeat_interleave(H // KV, 1)
        s = torch.einsum("thk,shk->hts", q, k) / K**0.5
        a = torch.einsum("hts,shk->thk", s.masked_fill(~causal, float("-inf")).softmax(-1), v).reshape(T, D)
        x = x + a @ hf[p + "self_attn.o_proj.weight"].T
        h = rms(x, hf[p + "post_attention_layernorm.weight"])
        x = x + (F.silu(h @ hf[p + "mlp.gate_proj.weight"].T) * (h @ hf[p + "mlp.up_proj.weight"].T)) @ hf[
            p + "mlp.down_proj.weight"].T
    return rms(x, hf["model.norm.weight"]) @ hf["model.embed_tokens.weight"].T


def test_teacher_is_the_llama(tiny):
    path, hf = tiny
    model = from_llama_gguf(path).double()
    attach_adapter(model, rank=4, alpha=4.0)  # the teacher reads base weights only, LoRA or not
    with torch.no_grad():
        for layer in model.layers:
            layer.retention.q_proj.lora_b.normal_()
    ids = torch.randint(0, model.config.vocab_size, (1, 19), generator=torch.Generator().manual_seed(0))
    want = naive_llama_logits(hf, ids[0], model.config.norm_eps)
    torch.testing.assert_close(teacher_forward(model, ids)[0], want, rtol=1e-10, atol=1e-10)


def test_cached_generation_equals_recomputing_each_row_alone(tiny):
    """teacher_generate (left-padded batch, KV cache) gives, at every step, the logits teacher_forward
    gives for that row's own sequence so far; a stop token ends a row without being kept."""
    path, _ = tiny
    model = from_llama_gguf(path).double()
    gen = torch.Generator().manual_seed(3)
    prompts = [torch.randint(0, model.config.vocab_size, (n,), generator=gen).tolist() for n in (7, 1, 13, 4)]
    seen: list[torch.Tensor] = []

    def pick(logits):
        seen.append(logits.clone())
        return torch.multinomial(logits.softmax(-1), 1, generator=gen)[:, 0].tolist()

    max_new = 6
    out = teacher_generate(model, prompts, max_new, pick, stops=set(), pad=0)
    assert [len(new) for new, _ in out] == [max_new] * 4 and not any(stopped for _, stopped in out)
    for r, (p, (new, _)) in enumerate(zip(prompts, out, strict=True)):
        for t in range(max_new):
            seq = torch.tensor([p + new[:t]])
            torch.testing.assert_close(seen[t][r], teacher_forward(model, seq)[0, -1], rtol=1e-9, atol=1e-9)
    def greedy(logits):
        return logits.argmax(-1).tolist()

    stop = teacher_generate(model, prompts, max_new, greedy, set())[2][0][2]  # row 2's third greedy token
    again = teacher_generate(model, prompts, max_new, greedy, {stop}, pad=0)
    assert again[2][1] and len(again[2][0]) <= 2
    for p, (new, stopped) in zip(prompts, again, strict=True):
        want, seq = [], list(p)
        for _ in range(max_new):
            nxt = int(teacher_forward(model, torch.tensor([seq]))[0, -1].argmax())
            if nxt == stop:
                break
            want.append(nxt)
            seq.append(nxt)
        assert new == want and stopped == (len(want) < max_new)


def _stream(vocab: int, seq_len: int) -> TokenStream:
    rng = np.random.default_rng(0)
    # Repetitive text (a few short phrases) so a few steps can make progress.
    phrases = [rng.integers(3, vocab, size=rng.integers(3, 9)) for _ in range(12)]
    tokens = np.concatenate([phrases[i] for i in rng.integers(0, 12, size=3000)]).astype(np.uint16)
    return TokenStream(tokens, seq_len, seed=0)


@pytest.mark.parametrize("stage", ["stage1", "stage2"])
def test_a_few_steps_reduce_each_stage_loss(tiny, stage):
    torch.manual_seed(0)
    path, _ = tiny
    model = from_llama_gguf(path)
    attach_adapter(model, rank=4, alpha=4.0)
    stream = _stream(model.config.vocab_size, 48)
    fixed = stream.batch(8, "cpu")

    def loss():
        with torch.no_grad():
            if stage == "stage1":
                return transfer_loss(model, fixed[:, :-1], OFF)[0].item()
            return distill_loss(model, fixed, OFF, ce_weight=0.2)[0].item()

    before = loss()
    cfg = {"batch_size": 8}
    spec = {"steps": 25, "seconds": 600, "lr": 1e-2, "lr_norm_decay": 1e-2, "warmup": 1, "ce_weight": 0.2}
    report = run_stage(stage, model, stream, cfg, spec, OFF, torch.device("cpu"), log=lambda _: None)
    assert report["steps"] == 25 and report["tokens"] == 25 * 8 * 48
    assert loss() < (0.9 if stage == "stage1" else 0.95) * before  # distilling a random teacher is slower


def _randomise(model):
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for layer in model.layers:
            ret = layer.retention
            for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
                ret.get_submodule(name).lora_b.copy_(torch.randn(ret.get_submodule(name).lora_b.shape, generator=g))
            ret.out_norm.weight.uniform_(0.5, 2.0, generator=g)
            ret._log_decay.theta.add_(torch.randn(H, generator=g, dtype=torch.float64))


def test_adapter_saves_loads_and_merges_exactly(tiny, tmp_path):
    path, _ = tiny
    model = from_llama_gguf(path).double()
    spec = attach_adapter(model, rank=4, alpha=8.0)
    _randomise(model)
    ids = torch.randint(0, model.config.vocab_size, (2, 17), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = model(ids, mode="chunkwise", chunk_lengths=[5, 12]).logits
    save_adapter(model, spec, tmp_path / "ad", dtype=torch.float64, info={"stage": "test"})
    assert json.loads((tmp_path / "ad" / "adapter_config.json").read_text())["rank"] == 4

    fresh = from_llama_gguf(path).double()
    load_adapter(fresh, tmp_path / "ad")
    with torch.no_grad():
        got = fresh(ids, mode="chunkwise", chunk_lengths=[5, 12]).logits
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)

    merge_adapter(fresh)
    assert not any(isinstance(m, LoRALinear) for m in fresh.modules())
    assert not any(p.requires_grad and "lora" in n for n, p in fresh.named_parameters())
    with torch.no_grad():
        merged = fresh(ids, mode="recurrent").logits
    torch.testing.assert_close(merged, want, rtol=1e-10, atol=1e-10)


def test_adapter_refuses_another_base(tiny, tmp_path):
    path, _ = tiny
    model = from_llama_gguf(path)
    spec = attach_adapter(model, rank=2, alpha=2.0)
    save_adapter(model, spec, tmp_path / "ad")
    other_path = tmp_path / "other.gguf"
    write_tiny_llama_gguf(other_path, layers=L, heads=H, kv_heads=KV, hidden=D, seed=5)
    with pytest.raises(ValueError, match="trained on base"):
        load_adapter(from_llama_gguf(other_path), tmp_path / "ad")
    deeper = tmp_path / "deep.gguf"
    write_tiny_llama_gguf(deeper, layers=L + 1, heads=H, kv_heads=KV, hidden=D)
    base = from_llama_gguf(deeper)
    base.config.extra.pop("sha256")
    with pytest.raises(ValueError, match="does not fit"):
        load_adapter(base, tmp_path / "ad")


@pytest.mark.slow
def test_real_smollm2_teacher_equals_transformers():
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from retnet.convert.llama_gguf import gguf_tokenizer
    from tests.retnet.test_convert_llama_gguf import REAL_TEXTS, installed_smollm2

    path = installed_smollm2()
    model = from_llama_gguf(path).eval()
    hf = transformers.LlamaForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                       torch_dtype=torch.float32).eval()
    ids = torch.tensor([gguf_tokenizer(path).encode(" ".join(REAL_TEXTS)).ids])
    with torch.no_grad():
        want = hf(ids).logits
        got = teacher_forward(model, ids)
    assert ((got - want).abs().max() / want.abs().max()).item() < 1e-5


def test_a_delta_directory_loads_back_as_the_adapter(tiny, tmp_path):
    """A shipped reader (delta directory) can be trained further: load_adapter reads it exactly."""
    import dataclasses

    from retnet.convert.delta import write_delta_directory
    from training.adapter import adapter_state
    from training.export_reader import delta_from_adapter

    path, _ = tiny
    model = from_llama_gguf(path).double()
    spec = attach_adapter(model, rank=4, alpha=8.0)
    _randomise(model)
    ids = torch.randint(0, model.config.vocab_size, (2, 13), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = model(ids, mode="parallel").logits
    delta, decays = delta_from_adapter(adapter_state(model), spec, L, torch.float64)
    cfg = dataclasses.replace(model.config, decay_log=None, layer_decay_log=decays)
    (tmp_path / "reader").mkdir()
    write_delta_directory(tmp_path / "reader", cfg, {"format": "llama-gguf", "sha256": cfg.extra["sha256"]}, delta,
                          spec["alpha"] / spec["rank"])

    fresh = from_llama_gguf(path).double()
    got_spec = load_adapter(fresh, tmp_path / "reader")
    assert (got_spec["rank"], got_spec["alpha"]) == (4, 8.0)
    with torch.no_grad():
        got = fresh(ids, mode="parallel").logits
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_horizon_floor_lengthens_only_the_longest_heads(tiny):
    from training.adapter import apply_horizon_floor

    path, _ = tiny
    model = from_llama_gguf(path).double()
    attach_adapter(model, rank=2, alpha=2.0)
    _randomise(model)

    def horizons():
        return [1.0 / -torch.expm1(layer.retention._log_decay.log_decay().detach()) for layer in model.layers]

    before = horizons()
    floors = [0.0, 0.0, 50.0, 1e4]  # H = 4 heads: the longest gets >= 10k tokens, the next >= 50
    reported = apply_horizon_floor(model, floors)
    for old, new, rep in zip(before, horizons(), reported, strict=True):
        order = torch.argsort(old)
        for rank, head in enumerate(order.tolist()):
            want = max(float(old[head]), floors[rank])
            assert float(new[head]) == pytest.approx(want, rel=1e-9)
            assert rep[head] == pytest.approx(want, abs=0.06)
    with pytest.raises(ValueError, match="4 heads"):
        apply_horizon_floor(model, [0.0, 1.0])
