"""A few-step CPU smoke test of the trainer: the loss falls, checkpoints resume exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from retnet import RetNetForCausalLM
from training.trainer import TrainConfig, Trainer, lr_at


def write_rows(path, rows=64, length=33, seed=0):
    rng = np.random.default_rng(seed)
    # A learnable pattern: each row counts upward from a random start (mod 50).
    start = rng.integers(0, 50, size=(rows, 1))
    tokens = ((start + np.arange(length)) % 50).astype(np.uint16)
    mask = np.ones_like(tokens, dtype=bool)
    mask[:, :4] = False
    np.savez_compressed(path, tokens=tokens, loss_mask=mask)


def config(tmp_path, **kw) -> TrainConfig:
    write_rows(tmp_path / "train.npz")
    write_rows(tmp_path / "eval.npz", rows=8, seed=1)
    base = dict(out_dir=str(tmp_path / "run"), model={"preset": "tiny", "vocab_size": 64},
                train_sources=[(str(tmp_path / "train.npz"), 1.0)], eval_sources=[str(tmp_path / "eval.npz")],
                batch_size=8, grad_accum=2, max_steps=30, lr=3e-3, min_lr=3e-4, warmup_steps=5,
                chunk_size=8, precision="fp32", log_every=5, eval_every=15, eval_batches=1, save_every=10)
    return TrainConfig(**{**base, **kw})


def test_loss_falls_and_checkpoint_loads(tmp_path):
    trainer = Trainer(config(tmp_path), device="cpu")
    first = trainer.evaluate()
    trainer.train()
    assert trainer.evaluate() < 0.7 * first
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert any("eval_loss" in r for r in log) and all(r.get("tokens_per_s", 1) > 0 for r in log)
    evals = [r for r in log if "eval_loss" in r]
    assert all(set(r["eval_sources"]) == {"eval"} and r["eval_sources"]["eval"] == r["eval_loss"] for r in evals)
    model = RetNetForCausalLM.from_pretrained(tmp_path / "run" / "last")
    assert torch.equal(model.embed.weight, trainer.model.embed.weight)


def test_resume_continues_exactly(tmp_path):
    straight = Trainer(config(tmp_path, out_dir=str(tmp_path / "a")), device="cpu")
    straight.train()
    half = Trainer(config(tmp_path, out_dir=str(tmp_path / "b")), device="cpu")
    half.train(until=17)  # between two periodic saves: the early stop itself must save
    resumed = Trainer(config(tmp_path, out_dir=str(tmp_path / "b")), device="cpu")
    assert resumed.step == 17
    resumed.train()
    for p, q in zip(straight.model.parameters(), resumed.model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_curriculum_stages_share_one_schedule(tmp_path):
    """Stage 1 on one source until step 12, stage 2 resumes on another source to max_steps."""
    write_rows(tmp_path / "other.npz", seed=5)
    first = Trainer(config(tmp_path), device="cpu")
    first.train(until=12)
    stage2 = config(tmp_path, train_sources=[(str(tmp_path / "other.npz"), 1.0)])
    second = Trainer(stage2, device="cpu")
    assert second.step == 12
    assert torch.equal(second.model.embed.weight, first.model.embed.weight)
    second.train()
    assert second.step == 30
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in log if "loss" in r]
    assert steps == sorted(steps) and steps[-1] == 30
    # the schedule continues where stage 1 stopped (no second warm-up)
    assert next(r["lr"] for r in log if r.get("step") == 15 and "lr" in r) == pytest.approx(lr_at(14, stage2))


def test_schedule_and_config_errors(tmp_path):
    cfg = config(tmp_path, max_steps=100, warmup_steps=10)
    assert lr_at(0, cfg) == pytest.approx(cfg.lr / 10)
    assert lr_at(9, cfg) == pytest.approx(cfg.lr)
    assert lr_at(100, cfg) == pytest.approx(cfg.min_lr)
    assert cfg.min_lr < lr_at(55, cfg) < cfg.lr
    (tmp_path / "bad.json").write_text(json.dumps({"out_dir": "x", "model": {}, "train_sources": [], "lrr": 1}))
    with pytest.raises(ValueError, match="lrr"):
        TrainConfig.from_json(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        Trainer(config(tmp_path, train_sources=[(str(tmp_path / "missing.npz"), 1.0)]), device="cpu")


def test_loss_weighs_rows_equally():
    from retnet import RetNetConfig
    from training.trainer import LMLoss

    torch.manual_seed(0)
    model = RetNetForCausalLM(RetNetConfig.from_preset("tiny", vocab_size=64))
    tokens = torch.randint(0, 64, (3, 12))
    mask = torch.zeros(3, 12, dtype=torch.bool)
    mask[0, 1:] = True  # 11 targets
    mask[1, 5:7] = True  # 2 targets
    loss = LMLoss(model, chunk_size=4)(tokens, mask)  # row 2 has none: left out of the mean
    per_row = []
    for i in range(2):
        logits = model(tokens[i:i + 1, :-1], mode="parallel").logits[0]
        ce = torch.nn.functional.cross_entropy(logits, tokens[i, 1:], reduction="none")
        per_row.append(ce[mask[i, 1:]].mean())
    torch.testing.assert_close(loss, torch.stack(per_row).mean())
