"""Greedy decoding speed of a model directory on CPU (the issue's bar: >= 50 tokens/s on 2 cores).

    python benchmarks/decode_cpu.py                      # the bundled data/model, 1 and 2 threads
    python benchmarks/decode_cpu.py --model DIR --threads 1 2 --tokens 256

Times `retnet.generation.generate` from a one-token prompt (the recurrent form, one token at a time,
after one warm-up run) and subtracts the first step, so the number is the per-token decode rate.
Writes ``benchmarks/results/decode_cpu.md``. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch

from retnet import RetNetForCausalLM
from retnet.generation import generate

ROOT = Path(__file__).resolve().parents[1]


@torch.no_grad()
def decode_rate(model, tokens: int) -> float:
    prompt = torch.tensor([[model.config.eos_token_id or 0]])
    generate(model, prompt, max_new_tokens=8)  # warm-up
    start = time.perf_counter()
    generate(model, prompt, max_new_tokens=1)
    first = time.perf_counter() - start
    start = time.perf_counter()
    generate(model, prompt, max_new_tokens=tokens + 1)
    return tokens / (time.perf_counter() - start - first)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=ROOT / "data" / "model")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    a = ap.parse_args()
    model = RetNetForCausalLM.from_pretrained(a.model, dtype=torch.float32).eval()
    params = sum(p.numel() for p in model.parameters())
    rows = []
    for threads in a.threads:
        torch.set_num_threads(threads)
        rows.append(f"| {threads} | {decode_rate(model, a.tokens):.1f} |")
    report = "\n".join([
        "# Greedy decoding on CPU", "",
        f"Command: `python benchmarks/decode_cpu.py --tokens {a.tokens}`; model `{a.model.name}` "
        f"({params / 1e6:.1f}M parameters, float32), {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}. The machine is shared, so the numbers are noisy.", "",
        "| threads | tokens/s |", "|---:|---:|", *rows])
    print(report)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "decode_cpu.md").write_text(report + "\n")


if __name__ == "__main__":
    main()
