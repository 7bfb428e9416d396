"""Test helpers: tiny models with weights large enough that every form's errors would show, a byte tokenizer."""

from __future__ import annotations

import torch
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from retnet import RetNetConfig, RetNetForCausalLM


def make_model(seed: int = 0, dtype=torch.float64, std: float = 0.3, **overrides) -> RetNetForCausalLM:
    torch.manual_seed(seed)
    cfg = RetNetConfig.from_preset("tiny", **overrides)
    model = RetNetForCausalLM(cfg)
    model.reset_parameters(std=std)
    with torch.no_grad():  # norm weights away from 1 so that a missing weight would be caught
        for p in model.parameters():
            if p.dim() == 1:
                p.uniform_(0.5, 1.5)
    return model.to(dtype).eval()


def byte_tokenizer() -> Tokenizer:
    """Byte-level tokenizer with no merges: one token per byte, so characters can split across tokens."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def states_err(s1, s2) -> float:
    """Largest relative error over the per-layer tensors (and the token-shift inputs); positions must be equal."""
    assert torch.equal(s1.offsets, s2.offsets)
    assert (s1.last_inputs is None) == (s2.last_inputs is None)
    pairs = [*zip(s1.layers, s2.layers, strict=True), *zip(s1.last_inputs or [], s2.last_inputs or [], strict=True)]
    return max(rel_err(a, b) for a, b in pairs)


@st.composite
def model_case(draw):
    """(batch, length, chunk lengths summing to the length, prior tokens to read first, seed)."""
    B = draw(st.integers(1, 3))
    T = draw(st.integers(1, 30))
    cuts = sorted(draw(st.sets(st.integers(1, max(1, T - 1)), max_size=5)))
    edges = [0, *[c for c in cuts if c < T], T]
    lengths = [b - a for a, b in zip(edges, edges[1:], strict=False)]
    prior = draw(st.integers(0, 12))
    seed = draw(st.integers(0, 10**6))
    return B, T, lengths, prior, seed


def assert_modes_agree(model, case, tol: float = 1e-10) -> None:
    """Parallel, chunkwise (the case's chunk lengths, and fixed chunks of 4) and recurrent give the same
    logits and the same final state, from a fresh state or after reading `prior` tokens."""
    B, T, lengths, prior, seed = case
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, model.config.vocab_size, (B, T), generator=g)
    state = None
    if prior:
        state = model(torch.randint(0, model.config.vocab_size, (B, prior), generator=g), mode="chunkwise").state
    ref = model(ids, state=state.clone() if state else None, mode="recurrent")
    for kwargs in (dict(mode="parallel"), dict(mode="chunkwise", chunk_lengths=lengths),
                   dict(mode="chunkwise", chunk_size=4)):
        out = model(ids, state=state.clone() if state else None, **kwargs)
        assert rel_err(out.logits, ref.logits) < tol, kwargs
        assert states_err(out.state, ref.state) < tol, kwargs


PAD_SIDES = ("left", "right", "both", "holes")


def assert_padding_matches_rows(model, side: str, seed: int = 0, tol: float = 1e-10) -> None:
    """A padded batch read from a prior state, in every mode, equals each row read alone without padding:
    padding (junk tokens, on `side`, or scattered "holes") never leaks into the logits or the state."""
    g = torch.Generator().manual_seed(seed)
    lengths, T, vocab = [7, 3, 11], 14, model.config.vocab_size
    rows = [torch.randint(0, vocab, (n,), generator=g) for n in lengths]
    prior = model(torch.randint(0, vocab, (3, 5), generator=g), mode="chunkwise").state
    ids = torch.randint(0, vocab, (3, T), generator=g)
    mask = torch.zeros(3, T, dtype=torch.bool)
    for i, row in enumerate(rows):
        if side == "holes":
            where = torch.randperm(T, generator=g)[: len(row)].sort().values
        else:
            start = {"left": T - len(row), "right": 0, "both": (T - len(row)) // 2}[side]
            where = torch.arange(start, start + len(row))
        ids[i, where] = row
        mask[i, where] = True
    for kwargs in (dict(mode="parallel"), dict(mode="recurrent"), dict(mode="chunkwise", chunk_lengths=[5, 9])):
        out = model(ids, state=prior.clone(), attention_mask=mask, **kwargs)
        for i, row in enumerate(rows):
            single = model(row[None], state=prior.select(i).clone(), mode="recurrent")
            assert states_err(out.state.select(i), single.state) < tol, (kwargs, i)
            assert rel_err(out.logits[i][mask[i]], single.logits[0]) < tol, (kwargs, i)
