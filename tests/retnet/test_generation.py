"""Generation over a state: greedy/sampling controls, EOS, stop strings across tokens, UTF-8 streaming."""

from __future__ import annotations

import pytest
import torch

from retnet import RetNetConfig, RetNetForCausalLM, SamplingConfig
from retnet.generation import next_token
from tests.helpers import byte_tokenizer, make_model


class ScriptedModel(RetNetForCausalLM):
    """A real RetNet whose logits are overridden to emit a fixed script, indexed by the state's position."""

    def __init__(self, script: list[int], prompt_len: int):
        super().__init__(RetNetConfig.from_preset("tiny"))
        self.script, self.prompt_len = script, prompt_len

    def forward(self, input_ids, state=None, **kw):
        out = super().forward(input_ids, state=state, **kw)
        logits = torch.full_like(out.logits, -1e4)
        end = out.state.offsets - 1  # position of the last token read, per row
        for b in range(logits.shape[0]):
            for t in range(logits.shape[1]):
                i = int(end[b]) - (logits.shape[1] - 1 - t) - self.prompt_len + 1
                logits[b, t, self.script[min(max(i, 0), len(self.script) - 1)]] = 0
        return type(out)(logits, out.state)


TOK = byte_tokenizer()


def scripted(text: str, prompt: str = "Q:"):
    ids = TOK.encode(text).ids
    prompt_ids = TOK.encode(prompt).ids
    return ScriptedModel(ids, len(prompt_ids)), prompt_ids


def test_stream_reproduces_script_and_state_reads_everything():
    model, prompt = scripted("Hello, world")
    stream = model.stream(TOK, prompt, max_new_tokens=12)
    pieces = list(stream)
    assert "".join(pieces) == stream.text == "Hello, world"
    assert len(pieces) > 1  # incremental
    assert stream.state.offsets.tolist() == [len(prompt) + 12]
    assert stream.stop_reason == "length"


def test_multibyte_characters_never_come_out_broken():
    text = "naïve café — 東京 🙂!"
    model, prompt = scripted(text)
    n = len(TOK.encode(text).ids)
    assert n > len(text)  # several characters span tokens
    pieces = list(model.stream(TOK, prompt, max_new_tokens=n))
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)


def test_stop_string_spanning_tokens_is_not_emitted():
    model, prompt = scripted("The answer is 42.##END## trailing")
    stream = model.stream(TOK, prompt, max_new_tokens=60, stop=["##END##", "never"])
    pieces = list(stream)
    assert "".join(pieces) == "The answer is 42."
    assert not any("#" in p for p in pieces)
    assert stream.stop_reason == "stop"


def test_stop_prefix_that_is_not_a_stop_is_released():
    model, prompt = scripted("a ## b")
    assert "".join(model.stream(TOK, prompt, max_new_tokens=6, stop=["###"])) == "a ## b"


def test_eos_ends_generation_and_enters_the_state():
    eos = TOK.encode("|").ids[0]
    model, prompt = scripted("done|more")
    stream = model.stream(TOK, prompt, max_new_tokens=20, eos_token_id=eos)
    assert "".join(stream) == "done"
    assert stream.stop_reason == "eos"
    assert stream.state.offsets.tolist() == [len(prompt) + 5]


def test_generate_greedy_matches_manual_argmax_loop():
    model = make_model(seed=4, dtype=torch.float32)
    ids = torch.randint(0, 256, (1, 10))
    out, state = model.generate(ids, max_new_tokens=6)
    seq = ids
    for _ in range(6):
        nxt = model(seq, mode="parallel").logits[:, -1].argmax(-1, keepdim=True)
        seq = torch.cat([seq, nxt], dim=1)
    assert torch.equal(out, seq[:, 10:])
    assert state.offsets.tolist() == [16]


def test_batched_generation_with_padding_matches_single_rows():
    model = make_model(seed=5, dtype=torch.float64)
    a, b = torch.randint(0, 256, (7,)), torch.randint(0, 256, (4,))
    ids = torch.zeros(2, 7, dtype=torch.long)
    ids[0], ids[1, 3:] = a, b
    mask = ids.new_zeros(2, 7, dtype=torch.bool)
    mask[0] = True
    mask[1, 3:] = True
    out, _ = model.generate(ids, attention_mask=mask, max_new_tokens=5)
    assert torch.equal(out[0], model.generate(a[None], max_new_tokens=5)[0][0])
    assert torch.equal(out[1], model.generate(b[None], max_new_tokens=5)[0][0])


def test_sampling_filters():
    logits = torch.tensor([[4.0, 3.0, 2.0, -1.0, -2.0]])
    g = torch.Generator().manual_seed(0)
    topk = {int(next_token(logits, SamplingConfig(temperature=1.0, top_k=2), generator=g)) for _ in range(200)}
    assert topk == {0, 1}
    # softmax([4,3,2,-1,-2]) ~ [.66,.24,.09,...]: top_p=0.8 keeps the first two tokens only
    topp = {int(next_token(logits, SamplingConfig(temperature=1.0, top_p=0.8), generator=g)) for _ in range(300)}
    assert topp == {0, 1}
    everything = {int(next_token(logits, SamplingConfig(temperature=5.0), generator=g)) for _ in range(500)}
    assert everything == {0, 1, 2, 3, 4}
    assert int(next_token(logits, SamplingConfig())) == 0  # greedy


def test_repetition_penalty_moves_away_from_generated_tokens():
    logits = torch.tensor([[4.0, 3.9, -1.0]])
    generated = torch.tensor([[0]])
    assert int(next_token(logits, SamplingConfig(repetition_penalty=1.0), generated)) == 0
    assert int(next_token(logits, SamplingConfig(repetition_penalty=1.2), generated)) == 1


def test_seeded_sampling_is_reproducible():
    model = make_model(seed=6, dtype=torch.float32)
    ids = torch.randint(0, 256, (1, 5))
    a, _ = model.generate(ids, max_new_tokens=8, temperature=1.0, top_p=0.9, seed=7)
    b, _ = model.generate(ids, max_new_tokens=8, temperature=1.0, top_p=0.9, seed=7)
    assert torch.equal(a, b)


@pytest.mark.parametrize("bad", [dict(temperature=-1), dict(top_p=0), dict(top_k=-2), dict(max_new_tokens=-1),
                                 dict(repetition_penalty=0)])
def test_bad_sampling_settings_are_rejected(bad):
    with pytest.raises(ValueError):
        SamplingConfig(**bad)


def test_empty_prompt_is_rejected():
    model = make_model()
    with pytest.raises(ValueError, match="at least one token"):
        model.generate(torch.zeros(1, 0, dtype=torch.long))
    with pytest.raises(ValueError, match="at least one token"):
        list(model.stream(TOK, []))
