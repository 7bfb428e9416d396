"""RetentionState: constant size, save/load with a model fingerprint, clone, clear errors."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from retnet import RetentionState, RetNetConfig, RetNetForCausalLM, StateMismatchError
from tests.helpers import make_model


def test_size_does_not_depend_on_tokens_read(tiny_model):
    short = tiny_model(torch.randint(0, 256, (1, 3))).state
    long = tiny_model(torch.randint(0, 256, (1, 500)), chunk_size=64).state
    assert short.nbytes == long.nbytes == tiny_model.config.state_bytes(1) // 4 * 8 + 8  # float64 model
    assert long.offsets.tolist() == [500]


@pytest.mark.slow  # allocates a 1.3B-shape model
def test_paper_1_3b_shape_state_is_100_7_mb():
    torch.manual_seed(0)
    model = RetNetForCausalLM(RetNetConfig.from_preset("1.3b", vocab_size=1000))  # random fp32 weights, CPU
    with torch.no_grad():
        after_4 = model(torch.randint(0, 1000, (1, 4))).state
        after_40 = model(torch.randint(0, 1000, (1, 40)), state=after_4.clone(), chunk_size=16).state
    expected = 24 * 8 * 256 * 512 * 4
    assert expected == 100_663_296  # ~100.7 MB
    assert after_4.nbytes == after_40.nbytes == expected + 8  # + one int64 position counter
    assert all(t.dtype == torch.float32 for t in after_40.layers)


def test_save_load_roundtrip_continues_identically(tiny_model, tmp_path):
    ids = torch.randint(0, 256, (1, 20))
    state = tiny_model(ids[:, :12]).state
    state.save(tmp_path / "s.safetensors")
    loaded = RetentionState.load(tmp_path / "s.safetensors", model=tiny_model)
    a = tiny_model(ids[:, 12:], state=state, mode="recurrent")
    b = tiny_model(ids[:, 12:], state=loaded, mode="recurrent")
    assert torch.equal(a.logits, b.logits)
    assert loaded.offsets.tolist() == [12]


def test_file_is_safetensors_with_json_header(tiny_model, tmp_path):
    from safetensors import safe_open

    tiny_model(torch.randint(0, 256, (1, 5))).state.save(tmp_path / "s.st")
    with safe_open(str(tmp_path / "s.st"), "pt") as f:
        header = json.loads(f.metadata()["header"])
    assert header["format"] == "retnet-rag-state" and header["format_version"] == 1
    assert header["fingerprint"] == tiny_model.fingerprint()


def test_state_from_another_model_is_refused(tiny_model, tmp_path):
    tiny_model(torch.randint(0, 256, (1, 5))).state.save(tmp_path / "s.st")
    other = make_model(seed=99)
    with pytest.raises(StateMismatchError, match="different model"):
        RetentionState.load(tmp_path / "s.st", model=other)
    bigger = make_model(seed=0, num_layers=3)
    with pytest.raises(StateMismatchError, match="wrong shape"):
        RetentionState.load(tmp_path / "s.st", model=bigger)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "not_a_state", "future_version"])
def test_damaged_files_give_clear_errors(tiny_model, tmp_path, damage):
    path = tmp_path / "s.st"
    tiny_model(torch.randint(0, 256, (1, 5))).state.save(path)
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:100])
    elif damage == "garbage":
        path.write_bytes(b"\x00not a safetensors file at all")
    elif damage == "not_a_state":
        save_file({"x": torch.zeros(2)}, str(path))
    else:
        save_file({"offsets": torch.zeros(1, dtype=torch.long)}, str(path),
                  metadata={"header": json.dumps({"format": "retnet-rag-state", "format_version": 99})})
    with pytest.raises(StateMismatchError, match=str(path.name)):
        RetentionState.load(path, model=tiny_model)
    with pytest.raises(FileNotFoundError):
        RetentionState.load(tmp_path / "missing.st")


def test_failed_save_keeps_previous_file(tiny_model, tmp_path, monkeypatch):
    path = tmp_path / "s.st"
    state = tiny_model(torch.randint(0, 256, (1, 5))).state
    state.save(path)
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("retnet.state.save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        tiny_model(torch.randint(0, 256, (1, 9))).state.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["s.st"]  # no temp file left behind


def test_clone_is_independent(tiny_model):
    state = tiny_model(torch.randint(0, 256, (1, 5))).state
    fork = state.clone()
    advanced = tiny_model(torch.randint(0, 256, (1, 3)), state=fork).state
    assert not torch.equal(advanced.layers[0], state.layers[0])
    fork.layers[0].add_(1.0)
    assert not torch.equal(fork.layers[0], state.layers[0])
    assert state.offsets.tolist() == [5]
