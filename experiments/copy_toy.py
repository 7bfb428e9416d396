"""Where does copying start? A tiny model trained on repeated text, long segments against short ones.

    python -m experiments.copy_toy --steps 800 --out benchmarks/results

Session 3's finding behind the copy curriculum (training/configs/warmup.json): rows of text segments read
twice (training.recall_rows.repeat_rows) teach a small model to copy from its context only when the
segments are short. Each variant trains a 2-layer model (hidden 128) from scratch on the real
tokenizer's pretraining stream and reports, every `--every` steps, the loss on the first and the
second copy of held-out 20-token texts (a model that copies predicts the second copy better).
Needs the corpus builder's data/build/pretrain/{train,eval}.npz. CPU, one thread per variant.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from experiments.reading_probe import token_losses
from retnet import RetNetConfig, RetNetForCausalLM
from training.recall_rows import repeat_rows
from training.transformer import TransformerForCausalLM, transformer_config_like

ROOT = Path(__file__).resolve().parents[1]

PRETRAIN = ROOT / "data" / "build" / "pretrain"
# name: (architecture, row length, segment lengths, largest gap)
VARIANTS = {
    "RetNet + shift, long repeats (16-768)": ("retnet", 256, (16, 768), 256),
    "RetNet + shift, short repeats (8-32)": ("retnet", 128, (8, 32), 8),
    "Transformer, short repeats (8-32)": ("transformer", 128, (8, 32), 8),
}


def make_model(arch: str):
    cfg = RetNetConfig(vocab_size=8192, hidden_size=128, num_layers=2, num_heads=2, head_k_dim=64, head_v_dim=128,
                       ffn_dim=256, ffn_activation="swish", tie_embeddings=True, eos_token_id=0, pad_token_id=1,
                       token_shift=True)
    return RetNetForCausalLM(cfg) if arch == "retnet" else TransformerForCausalLM(transformer_config_like(cfg))


def copy_losses(model, text: np.ndarray, length: int = 20, trials: int = 16) -> tuple[float, float]:
    model.eval()
    rng, first, second = np.random.default_rng(1), [], []
    for _ in range(trials):
        start = int(rng.integers(0, len(text) - length))
        seq = torch.from_numpy(text[start : start + length].astype(np.int64))
        loss = token_losses(model, torch.cat([seq, seq]))
        first.append(loss[: length - 1].mean().item())
        second.append(loss[length:].mean().item())
    model.train()
    return float(np.mean(first)), float(np.mean(second))


def run(name: str, steps: int, every: int, batch: int, lr: float) -> tuple[str, list[tuple[int, float, float]]]:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    arch, row, segment, max_gap = VARIANTS[name]
    with np.load(PRETRAIN / "train.npz") as z:
        stream = z["tokens"][:3_000_000]
    with np.load(PRETRAIN / "eval.npz") as z:
        text = z["tokens"]
    model = make_model(arch)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    curve, started = [], time.perf_counter()
    for step in range(1, steps + 1):
        rows = torch.from_numpy(repeat_rows(stream, batch, row, seed=step, segment=segment, max_gap=max_gap)
                                .astype(np.int64))
        loss = F.cross_entropy(model(rows[:, :-1]).logits.flatten(0, 1), rows[:, 1:].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / 50)
        if step % every == 0:
            curve.append((step, *copy_losses(model, text)))
            print(f"{name} step {step}: copy {curve[-1][1]:.2f} / {curve[-1][2]:.2f} "
                  f"({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
    return name, curve


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--every", type=int, default=200)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--workers", type=int, default=2, help="variants trained at once (one thread each)")
    ap.add_argument("--out", type=Path, default=None, help="write copy_toy.md here")
    a = ap.parse_args()
    if not (PRETRAIN / "train.npz").is_file():
        raise SystemExit(f"no pretraining stream in {PRETRAIN}: build it with python -m training.corpus.pretrain")
    with ProcessPoolExecutor(a.workers) as pool:
        results = dict(pool.map(run, VARIANTS, *([x] * len(VARIANTS) for x in (a.steps, a.every, a.batch, a.lr))))
    steps = [s for s, _, _ in results[next(iter(VARIANTS))]]
    report = "\n".join([
        "# Where copying starts: long vs short repeated segments (CPU toy)", "",
        f"Command: `python -m experiments.copy_toy --steps {a.steps} --every {a.every}`; 2 layers, hidden 128, "
        f"{a.batch} rows per step (long-repeat rows are 256 tokens, short ones 128), AdamW lr {a.lr}; the RetNet "
        "has token shift. Cells: loss (nats) on the first / second copy of held-out 20-token texts; copying "
        "shows as a lower second number.", "",
        "| variant | " + " | ".join(f"step {s}" for s in steps) + " |", "|---|" + "---:|" * len(steps),
        *(f"| {name} | " + " | ".join(f"{f:.2f} / {s:.2f}" for _, f, s in curve) + " |"
          for name, curve in results.items())])
    print(report)
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / "copy_toy.md").write_text(report + "\n")


if __name__ == "__main__":
    main()
