"""The GPU benchmarks (issue 15) on the CPU: the Transformer baseline is a real Llama, its static-cache
decode step equals its full forward, and every script runs end to end at tiny sizes (--quick)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from retnet import RetNetConfig, RetNetForCausalLM

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"


def _load(name: str):
    """A script's module by path (an unrelated installed package is also called ``benchmarks``)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


lb = _load("llama_baseline")


def tiny_llama(kv_heads: int = 4, seed: int = 0):
    torch.manual_seed(seed)
    cfg = lb.LlamaConfig(vocab_size=300, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=kv_heads,
                         intermediate_size=96)
    model = lb.Llama(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.uniform_(0.5, 1.5)
    return model


@pytest.mark.slow  # importing transformers takes seconds
@pytest.mark.parametrize("kv_heads", [4, 2])
def test_the_baseline_is_transformers_llama(kv_heads):
    transformers = pytest.importorskip("transformers")
    model = tiny_llama(kv_heads)
    hf = transformers.LlamaForCausalLM(model.config.hf_config()).eval()
    hf.load_state_dict(model.state_dict(), strict=True)  # same names, same shapes
    ids = torch.randint(0, 300, (2, 19))
    with torch.no_grad():
        ours, theirs = model(ids), hf(ids).logits
    assert (ours - theirs).abs().max().item() <= 1e-5 * theirs.abs().max().item()


@pytest.mark.parametrize("impl,splits", [("split", 1), ("split", 4), ("sdpa", 1)])
@pytest.mark.parametrize("kv_heads", [4, 2])
@torch.no_grad()
def test_static_cache_decode_equals_the_full_forward(impl, splits, kv_heads):
    model = tiny_llama(kv_heads, seed=1)
    ids = torch.randint(0, 300, (3, 21))
    full = model(ids)
    cache = lb.KVCache(model, 3, 64)
    first = model.prefill(ids[:, :9], cache)
    assert torch.allclose(first, full[:, 8], atol=1e-5)
    dec = lb.LlamaDecoder(model, cache, impl)
    dec.splits = splits
    for t in range(9, 21):
        assert torch.allclose(dec.step(ids[:, t]), full[:, t], atol=1e-5), t
    assert cache.pos.tolist() == [21, 21, 21]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@torch.no_grad()
def test_llama_graph_replay_equals_the_eager_step():
    model = tiny_llama(seed=2).cuda()
    ids = torch.randint(0, 300, (2, 30), device="cuda")
    for impl in ("split", "sdpa"):
        logits = []
        for graph in (False, True):
            cache = lb.KVCache(model, 2, 256)
            model.prefill(ids[:, :10], cache)
            dec = lb.LlamaDecoder(model, cache, impl, use_graph=graph)
            logits.append(torch.stack([dec.step(ids[:, t]).clone() for t in range(10, 30)]))
            assert dec.use_graph == graph
        assert torch.allclose(logits[0], logits[1], atol=1e-5)


def test_split_count_fills_the_gpu_and_divides_the_cache():
    assert lb.split_count(1, 16, 131072) == 32
    assert lb.split_count(64, 16, 8448) == 1
    assert lb.split_count(1, 16, 2304) == 8  # 288 keys a slice; 16 slices would be under 256 keys
    assert lb.split_count(1, 1, 100) == 1


def test_the_transformer_matches_the_retnet_in_size():
    for preset in ("1.3b", "2.7b"):
        cfg = RetNetConfig.from_preset(preset)
        llama = lb.llama_like(cfg)
        assert llama.hidden_size == cfg.hidden_size and llama.num_layers == cfg.num_layers
        assert abs(lb.llama_parameters(llama) / lb.retnet_parameters(cfg) - 1) < 0.01
    for overrides in ({}, dict(token_shift=True, output_gate=False, group_norm_per_head=True, tie_embeddings=True)):
        cfg = RetNetConfig.from_preset("tiny", **overrides)
        assert lb.retnet_parameters(cfg) == RetNetForCausalLM(cfg).num_parameters
    small = lb.llama_like(RetNetConfig.from_preset("small"))
    assert lb.llama_parameters(small) == lb.Llama(small).num_parameters


def _run(script: str, tmp_path: Path, *extra: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, str(BENCH / script), "--quick", "--device", "cpu", "--out", str(tmp_path),
                          *extra], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return out


def test_inductor_kernels_count_as_elementwise_work_in_the_training_profile():
    kinds = _load("kernel_profile")
    assert kinds.kernel_kind("_chunk_retention_kernel") == "retention (Triton)"
    assert kinds.kernel_kind("triton_poi_fused__to_copy_add_chunk_retention_mul_1") == "other (elementwise, norms)"
    assert kinds.kernel_kind("nvjet_sm90_tst_320x128_64x3_1x2_h_bz_coopB_TNT") == "matrix products"


@pytest.mark.slow
def test_decode_benchmark_runs(tmp_path):
    _run("decode.py", tmp_path, "--batches", "1", "2", "max", "--max-batch", "3", "--profile")
    assert (tmp_path / "decode_cpu_quick_profile.txt").read_text().startswith("## retnet, batch 1, 20 steps")
    data = json.loads((tmp_path / "decode_cpu_quick.json").read_text())
    rows = data["rows"]
    assert {r["model"] for r in rows} == {"retnet", "retnet eager", "transformer"}
    assert all(r["ms_per_token"] is not None for r in rows), [r for r in rows if r["ms_per_token"] is None]
    assert {r["batch"] for r in rows if r["model"] == "transformer"} == {1, 2, 3}
    assert {r["variant"] for r in rows if r["model"] == "retnet"} == {"state float32", "state bfloat16"}
    text = (tmp_path / "decode_cpu_quick.md").read_text()
    assert "Against the issue's targets" in text
    pytest.importorskip("matplotlib")
    assert (tmp_path / "decode_cpu_quick.png").stat().st_size > 10_000


@pytest.mark.slow
def test_train_and_prefill_benchmarks_run(tmp_path):
    _run("train.py", tmp_path)
    train = json.loads((tmp_path / "train_cpu_quick.json").read_text())
    assert [r["model"] for r in train["rows"]] == ["retnet", "transformer"]
    assert all(err < 1e-4 for err in train["meta"]["checks"].values())
    _run("train.py", tmp_path, "--compile", "--profile")  # the same steps through compiled layers
    compiled = json.loads((tmp_path / "train_cpu_quick_compiled.json").read_text())
    for eager, comp in zip(train["rows"], compiled["rows"], strict=True):
        assert abs(eager["loss"] - comp["loss"]) < 1e-4 * abs(eager["loss"]), (eager, comp)
        assert comp["graph_breaks"] == 0, comp  # a break would run the checkpointed layer eagerly
    assert (tmp_path / "train_cpu_quick_compiled_profile.txt").read_text().count("## ") == 2
    _run("prefill.py", tmp_path)
    prefill = json.loads((tmp_path / "prefill_cpu_quick.json").read_text())
    seen = {(r["case"], r["model"], r["variant"]) for r in prefill["rows"]}
    assert ("rag", "retnet", "per passage") in seen and ("32k", "transformer", "sdpa, static cache") in seen


def tiny_model_dir(path: Path) -> Path:
    """A saved tiny RetNet with the layout's markers (as the app tests save one): no GGUF, no bundled model."""
    from tests.app.app_testutil import special_tokenizer, tiny_model

    tok = special_tokenizer()
    tiny_model(vocab_size=tok.get_vocab_size(), seed=1).save_pretrained(path, tokenizer=tok)
    return path


@pytest.mark.slow  # a subprocess that imports the app: ~5 s
def test_rag_loop_benchmark_reports_every_number(tmp_path):
    model = tiny_model_dir(tmp_path / "tiny")
    _run("rag_loop.py", tmp_path, "--model", str(model), "--embedder", "hash")
    data = json.loads((tmp_path / "rag_loop_cpu_quick.json").read_text())
    assert data["collection"]["passages"] > 0 and data["meta"]["questions"] == 3
    [row] = data["models"]
    for key in ("load_s", "first_ask_s", "threads", "state_bytes", "parameters", "quantization", "dtype"):
        assert row[key] is not None, key
    assert set(row["summary"]) == {"grounded", "free"}
    for mode, s in row["summary"].items():
        assert s["answers"] == 3, mode
        for part in ("ttft_s", "retrieve_s", "prefill_s"):
            assert all(isinstance(v, float) and v >= 0 for v in s[part].values()), (mode, part)
        assert s["ttft_s"]["median"] > 0 and isinstance(s["decode_tokens_per_s"], float)
    assert row["summary"]["free"]["decode_tokens_per_s"] > 0
    [session] = row["sessions"]
    assert len(session) >= 2 and all(t["ttft_s"] > 0 for t in session)
    assert session[0]["context_tokens"] == 0 < session[1]["context_tokens"]  # the state keeps the first turn
    text = (tmp_path / "rag_loop_cpu_quick.md").read_text()
    assert "| model | weights | threads | load s |" in text and "## Multi-turn sessions" in text
    assert text.count("| grounded |") == 1 and text.count("| free |") == 1


@pytest.mark.slow  # a subprocess that imports the app: ~5 s
def test_rag_loop_benchmark_runs_a_random_preset_at_its_shape(tmp_path):
    from retnet import RetNetConfig, RetNetForCausalLM
    from retnet.checkpoint import load_tokenizer

    _run("rag_loop.py", tmp_path, "--preset", "tiny", "--embedder", "hash", "--modes", "free")
    [row] = json.loads((tmp_path / "rag_loop_cpu_quick.json").read_text())["models"]
    assert row["model"] == "random-tiny (random weights)"
    vocab = load_tokenizer(ROOT / "data" / "model").get_vocab_size()  # the bundled tokenizer
    cfg = RetNetConfig.from_preset("tiny", vocab_size=vocab)
    assert row["parameters"] == sum(p.numel() for p in RetNetForCausalLM(cfg).parameters())
    assert row["state_bytes"] == cfg.state_bytes() and row["summary"]["free"]["answers"] == 3


@pytest.mark.slow
def test_gpu_suite_script_runs_every_step_and_copies_results(tmp_path):
    quick = "--quick --device cpu"
    model = tiny_model_dir(tmp_path / "tiny")
    env = {**os.environ, "RESULTS_DIR": str(tmp_path / "res"), "OUT": str(tmp_path / "out"),
           "DECODE_ARGS": f"{quick} --models retnet --batches 1 --state-dtypes float32", "TRAIN_ARGS": quick,
           "PREFILL_ARGS": f"{quick} --cases rag", "RAG_LOOP_ARGS": f"{quick} --model {model} --embedder hash",
           "GEMV_ARGS": "--dry-run"}
    out = subprocess.run(["bash", str(BENCH / "gpu_suite.sh")], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    copied = {p.name for p in (tmp_path / "out" / "results").iterdir()}
    assert {"decode_cpu_quick.md", "train_cpu_quick.json", "prefill_cpu_quick.md", "rag_loop_cpu_quick.md",
            "gemv.md", "gpu_suite.log"} <= copied
    assert "failed: none" in out.stdout
