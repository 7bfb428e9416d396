"""The static-buffer decode step (retnet.cuda_decode) and the restructured prefill / decode loop.

On the CPU the GraphDecoder runs its eager fallback: the same ``decode_step`` a CUDA graph captures, on
the same buffers. These tests pin that function to the model's recurrent form (float64, to rounding),
the loop's behaviour with it to the plain loop's (same tokens, same states), and prefill's
last-position logits to the full-sequence logits it no longer computes. The graph replay itself is
checked by the CUDA-only test at the end (skipped without a GPU).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from retnet import cuda_decode
from retnet.cuda_decode import GraphDecoder
from retnet.generation import DecodeLoop, SamplingConfig, generate, prefill
from tests.helpers import byte_tokenizer, make_model, rel_err, states_err

from .test_generation import scripted

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = {
    "default": {},
    "token_shift": dict(token_shift=True),
    "fla_style": dict(rotary_style="half", rotary_grid="power", qk_scale_on="q", group_norm_per_head=True),
    "no_gate_scaled": dict(output_gate=False, embed_scale=1.7, ffn_activation="gelu"),
}


def _steps(model, dec, state, n: int, masks):
    """Run n tokens through the decoder and through model(..., mode='recurrent'); return worst errors."""
    worst = 0.0
    g = torch.Generator().manual_seed(3)
    for i in range(n):
        B = state.batch_size
        tok = torch.randint(0, model.config.vocab_size, (B,), generator=g)
        mask = masks[i % len(masks)]
        ref = model(tok[:, None], state=state, mode="recurrent",
                    attention_mask=None if mask is None else mask[:, None])
        logits = dec.step(tok, mask)
        view = cuda_decode.RetentionState(dec.layers, dec.offsets, None, dec.last_inputs)
        worst = max(worst, rel_err(logits, ref.logits[:, -1]), states_err(view, ref.state))
        state = ref.state
    return worst


@pytest.mark.parametrize("name", sorted(CONFIGS))
@torch.no_grad()
def test_decode_step_equals_the_recurrent_form(name):
    model = make_model(seed=11, dtype=torch.float64, **CONFIGS[name])
    B = 3
    state = model(torch.randint(0, 256, (B, 13)), mode="chunkwise").state
    dec = GraphDecoder(model, B)
    assert not dec.use_graph  # CPU: the eager fallback
    dec.load(state)
    masks = [None, torch.tensor([True, False, True]), None, torch.tensor([False, False, True])]
    assert _steps(model, dec, state, 6, masks) < 1e-12


@torch.no_grad()
def test_decode_step_in_bf16_weights_equals_the_recurrent_form():
    model = make_model(seed=12, dtype=torch.float32, token_shift=True).to(torch.bfloat16)
    state = model(torch.randint(0, 256, (2, 7)), mode="chunkwise").state
    dec = GraphDecoder(model, 2)
    assert dec.state_dtype == torch.float32
    dec.load(state)
    assert _steps(model, dec, state, 4, [None, torch.tensor([False, True])]) < 1e-6


@torch.no_grad()
def test_bf16_state_stays_close_to_float32_state():
    model = make_model(seed=13, dtype=torch.float32, std=0.1)
    state = model(torch.randint(0, 256, (2, 20)), mode="chunkwise").state
    full, half = GraphDecoder(model, 2), GraphDecoder(model, 2, torch.bfloat16)
    full.load(state)
    half.load(state)
    assert half.layers[0].dtype == torch.bfloat16
    for t in range(8):
        tok = torch.full((2,), 5 + t)
        a, b = full.step(tok), half.step(tok)
        assert rel_err(b, a) < 2e-2
    assert torch.equal(full.offsets, half.offsets)


def test_generate_returns_a_float32_state_after_a_bf16_decode_state():
    model = make_model(seed=22, dtype=torch.float32, std=0.1)
    ids = torch.randint(0, 256, (1, 6))
    out, state = generate(model, ids, max_new_tokens=5, cuda_graph=True, state_dtype="bfloat16")
    ref, ref_state = generate(model, ids, max_new_tokens=5, cuda_graph=False)
    assert all(t.dtype == torch.float32 for t in state.layers)
    assert torch.equal(state.offsets, ref_state.offsets)
    assert states_err(state, ref_state) < 2e-2
    tok = byte_tokenizer()
    stream = model.stream(tok, tok.encode("Hi").ids, max_new_tokens=4, cuda_graph=True, state_dtype="bfloat16")
    list(stream)
    assert all(t.dtype == torch.float32 for t in stream.state.layers)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("sampling", [
    dict(),
    dict(temperature=0.8, top_k=20, top_p=0.9, seed=5),
    dict(temperature=1.0, repetition_penalty=1.3, seed=9),
])
def test_generate_gives_the_same_tokens_and_state_with_the_static_decoder(dtype, sampling):
    model = make_model(seed=14, dtype=dtype)
    ids = torch.randint(0, 256, (2, 6))
    plain, s_plain = generate(model, ids, max_new_tokens=10, cuda_graph=False, **sampling)
    static, s_static = generate(model, ids, max_new_tokens=10, cuda_graph=True, **sampling)
    assert torch.equal(plain, static)
    assert states_err(s_static, s_plain) < (1e-12 if dtype == torch.float64 else 1e-6)


def test_generate_with_eos_pads_finished_rows_identically():
    model = make_model(seed=15, dtype=torch.float64)
    ids = torch.randint(0, 256, (3, 5))
    free, _ = generate(model, ids, max_new_tokens=12, cuda_graph=False)
    eos = int(free[1, 2])  # row 1 ends early; the others go on with padded steps for it
    plain, s_plain = generate(model, ids, max_new_tokens=12, eos_token_id=eos, cuda_graph=False)
    static, s_static = generate(model, ids, max_new_tokens=12, eos_token_id=eos, cuda_graph=True)
    assert torch.equal(plain, static)
    assert (plain[1, 3:] == eos).all()
    assert states_err(s_static, s_plain) < 1e-12


def test_states_stay_valid_when_another_loop_takes_the_buffers():
    model = make_model(seed=16, dtype=torch.float64)
    a_ids, b_ids = torch.randint(0, 256, (1, 8)), torch.randint(0, 256, (1, 5))
    a_plain, sa_plain = generate(model, a_ids, max_new_tokens=6, cuda_graph=False)
    a_static, sa_static = generate(model, a_ids, max_new_tokens=6, cuda_graph=True)
    incoming = sa_static.clone()
    generate(model, b_ids, max_new_tokens=6, cuda_graph=True)  # same decoder, other sequence
    assert torch.equal(a_plain, a_static)
    assert states_err(sa_static, sa_plain) < 1e-12  # a's state was copied out, not overwritten
    # continuing from a handed-out state, and the incoming state is left alone
    more_plain, _ = generate(model, a_ids[:, :1], state=sa_plain, max_new_tokens=4, cuda_graph=False)
    more_static, _ = generate(model, a_ids[:, :1], state=sa_static, max_new_tokens=4, cuda_graph=True)
    assert torch.equal(more_plain, more_static)
    assert sa_static.equal(incoming)


@torch.no_grad()
def test_interleaved_loops_on_one_decoder_match_separate_runs():
    model = make_model(seed=17, dtype=torch.float64)
    cfg = SamplingConfig(max_new_tokens=7)
    prompts = [torch.randint(0, 256, (1, n)) for n in (4, 9)]

    def start(ids, graph):
        logits, state = prefill(model, ids, None)
        return DecodeLoop(model, logits, state, cfg, cuda_graph=graph)

    expected = []
    for ids in prompts:
        loop = start(ids, False)
        for tok in loop:
            loop.read(tok)
        expected.append((loop.generated, loop.state))
    loops = [start(ids, True) for ids in prompts]
    iters = [iter(loop) for loop in loops]
    for _ in range(cfg.max_new_tokens):
        for loop, it in zip(loops, iters, strict=True):
            loop.read(next(it))
    assert loops[0]._decoder is loops[1]._decoder is not None
    for loop, (gen, state) in zip(loops, expected, strict=True):
        assert torch.equal(loop.generated, gen)
        assert states_err(loop.state, state) < 1e-12


def test_text_stream_with_the_static_decoder():
    model = make_model(seed=18, dtype=torch.float32)
    tok = byte_tokenizer()
    prompt = tok.encode("Hello").ids
    a = model.stream(tok, prompt, max_new_tokens=12, cuda_graph=False)
    b = model.stream(tok, prompt, max_new_tokens=12, cuda_graph=True)
    assert "".join(a) == "".join(b)
    assert a.token_ids == b.token_ids
    assert states_err(b.state, a.state) < 1e-6


def test_the_static_decoder_is_chosen_only_where_it_applies():
    model = make_model(dtype=torch.float32)
    assert not cuda_decode.wants_decoder(model, None)  # on the CPU the plain path runs
    assert cuda_decode.wants_decoder(model, True)
    assert not cuda_decode.wants_decoder(model, False)
    script, _ = scripted("abc")
    assert not cuda_decode.wants_decoder(script, None)  # a model with its own forward keeps it
    with pytest.raises(ValueError, match="override"):
        cuda_decode.wants_decoder(script, True)
    with pytest.raises(ValueError, match="float32 or bfloat16"):
        cuda_decode.resolve_state_dtype("float16")
    assert cuda_decode.decoder_for(model, 2, "bf16").state_dtype == torch.bfloat16
    assert cuda_decode.decoder_for(model, 2).state_dtype == torch.float32
    cuda_decode.release(model)


@torch.no_grad()
def test_the_compile_setting_reaches_automatic_decoders(monkeypatch):
    model = make_model(dtype=torch.float32)
    monkeypatch.setattr(cuda_decode, "_compile", False)
    plain = cuda_decode.decoder_for(model, 1)
    cuda_decode.configure(compile=True)
    compiled = cuda_decode.decoder_for(model, 1)
    assert plain._fn is cuda_decode.decode_step and compiled._fn is cuda_decode._compiled_step()
    assert cuda_decode.decoder_for(model, 1, compile=False) is plain  # both cached, each its own graph
    cuda_decode.release(model)


@pytest.mark.slow
@torch.no_grad()
def test_compiled_step_equals_the_recurrent_form():
    """The step under torch.compile (what RETNET_DECODE_COMPILE=1 captures on a GPU), here compiled for
    the CPU, against the model's recurrent form; padding rows go through the uncompiled update."""
    model = make_model(seed=5, dtype=torch.float64, token_shift=True)
    B = 2
    state = model(torch.randint(0, 256, (B, 9)), mode="chunkwise").state
    dec = GraphDecoder(model, B, compile=True)
    dec.load(state)
    assert _steps(model, dec, state, 4, [None, torch.tensor([True, False])]) < 1e-10


@torch.no_grad()
def test_prefill_computes_logits_only_where_used():
    model = make_model(seed=19, dtype=torch.float64)
    ids = torch.randint(0, 256, (3, 11))
    mask = torch.ones(3, 11, dtype=torch.bool)
    mask[1, 7:] = False  # right padding
    mask[2, :4] = False  # left padding
    seen = []
    hook = model.lm_head.register_forward_hook(lambda m, inp, out: seen.append(tuple(inp[0].shape)))
    try:
        logits, state = prefill(model, ids, None, attention_mask=mask)
        picked, _ = prefill(model, ids, None, positions=torch.tensor([[0, 5], [2, 3], [10, 9]]))
        last, _ = prefill(model, ids, None, chunk_lengths=[4, 7])
    finally:
        hook.remove()
    assert seen == [(3, model.config.hidden_size), (3, 2, model.config.hidden_size), (3, model.config.hidden_size)]
    full = model(ids, mode="chunkwise", attention_mask=mask)
    assert rel_err(logits, full.logits[torch.arange(3), torch.tensor([10, 6, 10])]) < 1e-12
    assert states_err(state, full.state) == 0.0
    unmasked = model(ids, mode="chunkwise").logits
    assert rel_err(picked, unmasked[torch.arange(3)[:, None], torch.tensor([[0, 5], [2, 3], [10, 9]])]) < 1e-12
    assert rel_err(last, unmasked[:, -1]) < 1e-12


# The in-place Triton decode kernel against the recurrent form on the same backend (bitwise equal is
# expected, 1e-6 is asked); a bf16 decoder within 2e-2. Runs compiled on a GPU, interpreted on a CPU.
_TRITON_DECODE_CHECK = """
import torch
from retnet import ops
from retnet.cuda_decode import GraphDecoder, RetentionState
from tests.helpers import make_model, rel_err, states_err
ops.set_backend('triton')
torch.set_grad_enabled(False)
dev = 'cuda' if torch.cuda.is_available() else 'cpu'
wide = dict(head_k_dim=16) if dev == 'cuda' else {}  # compiled kernels need K >= 16 (ops.MIN_TRITON_K)
model = make_model(seed=20, dtype=torch.float32, token_shift=True, **wide).to(dev)
state = model(torch.randint(0, 256, (2, 9), device=dev), mode='chunkwise').state
dec = GraphDecoder(model, 2); dec.load(state)
assert dec.plan.in_place_kernel
for t in range(3):
    tok = torch.tensor([3 + t, 40 + t], device=dev)
    ref = model(tok[:, None], state=state, mode='recurrent')
    err = max(rel_err(dec.step(tok), ref.logits[:, -1]),
              states_err(RetentionState(dec.layers, dec.offsets, None, dec.last_inputs), ref.state))
    assert err < 1e-6, err
    state = ref.state
bf = GraphDecoder(model, 2, torch.bfloat16); bf.load(state)
ref = model(tok[:, None], state=state, mode='recurrent')
assert rel_err(bf.step(tok), ref.logits[:, -1]) < 2e-2
print('ok')
"""


@pytest.mark.slow
def test_decode_step_on_the_triton_kernel():
    """The path a GPU takes. Without a GPU the kernel runs in Triton's interpreter (TRITON_INTERPRET is read
    at import, hence the subprocess); with one it runs compiled (the interpreter of some Triton versions
    cannot run this kernel, and a GPU machine should test what it will run)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if not torch.cuda.is_available():
        env["TRITON_INTERPRET"] = "1"
    out = subprocess.run([sys.executable, "-c", _TRITON_DECODE_CHECK], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-3000:]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graph_replay_matches_the_eager_step():
    model = make_model(seed=21, dtype=torch.float32, std=0.1, head_k_dim=16).cuda()
    ids = torch.randint(0, 256, (3, 40), device="cuda")
    for sampling in (dict(), dict(temperature=0.7, top_p=0.9, seed=1)):
        eager, s_eager = generate(model, ids, max_new_tokens=16, cuda_graph=False, **sampling)
        graph, s_graph = generate(model, ids, max_new_tokens=16, **sampling)  # automatic on CUDA
        assert torch.equal(eager, graph)
        assert states_err(s_graph, s_eager) < 1e-5
    loop_dec = cuda_decode.decoder_for(model, 3)
    assert loop_dec.use_graph and loop_dec._graphs
    eos = int(eager[0, 3])
    a, _ = generate(model, ids, max_new_tokens=16, eos_token_id=eos, cuda_graph=False)
    b, _ = generate(model, ids, max_new_tokens=16, eos_token_id=eos)
    assert torch.equal(a, b)
    half, _ = generate(model, ids, max_new_tokens=4, state_dtype=torch.bfloat16)
    assert half.shape == (3, 4)
    cuda_decode.release(model)
