"""training.uptrain_stage3: masked reading loss, teacher-forced turn scores, their summary (CPU, tiny GGUF)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("gguf")

from retnet.convert.llama_gguf import from_llama_gguf  # noqa: E402
from tests.retnet.tiny_llama_gguf import write_tiny_llama_gguf  # noqa: E402
from training.adapter import attach_adapter  # noqa: E402
from training.uptrain_stage3 import ReadingRows, headline, masked_ce, reading_loss, summarize, turn_scores  # noqa: E402

OFF = torch.autocast("cpu", enabled=False)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    write_tiny_llama_gguf(path, layers=2, heads=4, kv_heads=2, hidden=64)
    m = from_llama_gguf(path, with_sha256=False)
    attach_adapter(m, rank=4, alpha=4.0)
    return m


def test_masked_ce_uses_only_masked_positions():
    torch.manual_seed(0)
    logits, targets = torch.randn(2, 5, 11), torch.randint(0, 11, (2, 5))
    mask = torch.zeros(2, 5, dtype=torch.bool)
    mask[0, 1], mask[1, 3], mask[1, 4] = True, True, True
    want = F.cross_entropy(logits[mask], targets[mask])
    assert torch.allclose(masked_ce(logits, targets, mask), want)
    assert masked_ce(logits, targets, torch.zeros_like(mask)).item() == 0.0


def test_reading_loss_trains_lora_only_from_masked_tokens(model):
    vocab = model.config.vocab_size
    rows = torch.randint(0, vocab, (2, 17))
    mask = torch.zeros(2, 17, dtype=torch.bool)
    mask[:, 12:] = True
    model.train()
    loss = reading_loss(model, rows, mask, OFF)
    loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if "lora_b" in n]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    assert model.embed.weight.grad is None
    model.zero_grad(set_to_none=True)


def test_turn_scores_and_summary(model):
    model.eval()
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(0)
    seqs = []
    for n in (20, 13, 27):
        ids = torch.randint(3, vocab, (n,), generator=g)
        lab = torch.zeros(n, dtype=torch.long)
        lab[n - 5:n - 2] = 1
        seqs.append((ids, lab))
    lab2 = seqs[2][1].clone()
    lab2[5:8] = 1
    lab2[n - 5:n - 2] = 2
    seqs[2] = (seqs[2][0], lab2)
    scores = turn_scores(model, seqs, OFF, torch.device("cpu"), teacher=False, batch=2, pad=0)
    assert [len(s) for s in scores] == [1, 1, 2]
    # the same numbers from one unpadded forward per sequence
    for (ids, lab), sc in zip(seqs, scores, strict=True):
        with torch.no_grad():
            logp = F.log_softmax(model(ids[None, :-1], mode="chunkwise").logits.float(), -1)[0]
        tgt, lb = ids[1:], lab[1:]
        for k, s in enumerate(sc, 1):
            sel = lb == k
            assert s["tokens"] == int(sel.sum())
            assert s["correct"] == int((logp.argmax(-1)[sel] == tgt[sel]).sum())
            assert s["nll"] == pytest.approx(float(-logp[sel].gather(-1, tgt[sel][:, None]).sum()), rel=1e-4)
    items = [{"alt": False, "turns": [{"kind": "api", "answerable": True, "reverse": False}]},
             {"alt": False, "turns": [{"kind": "api", "answerable": False, "reverse": False}]},
             {"alt": False, "turns": [{"kind": "man_option", "answerable": True, "reverse": True},
                                      {"kind": "man_option", "answerable": True, "reverse": False}]}]
    summary = summarize(scores, items)
    assert summary["answerable"]["turns"] == 3 and summary["refusal"]["turns"] == 1
    assert summary["answerable_turn2"]["turns"] == 1 and "kind_man_option_reverse" in summary
    assert set(headline(summary)) >= {"answer_exact", "refusal_acc", "false_refusal"}


def test_reading_rows_cycle_through_epochs():
    rows = np.arange(5 * 9, dtype=np.uint16).reshape(5, 9)
    mask = np.ones_like(rows, dtype=np.uint8)
    rr = ReadingRows(rows, mask, seed=0, crop=4)
    seen = [rr.batch(2, "cpu")[0] for _ in range(3)]
    assert all(b.shape == (2, 4) for b in seen)
    assert rr.epochs == 1
