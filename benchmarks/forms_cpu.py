"""Tokens per second of the three retention forms on CPU for a small model.

    python benchmarks/forms_cpu.py --lengths 128 512 2048 --preset small

Parallel is quadratic in length, chunkwise linear with a parallel inner part,
recurrent linear but one token at a time (the decode path). Writes a markdown
table to benchmarks/results/forms_cpu.md. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch

from retnet import RetNetConfig, RetNetForCausalLM

RESULTS = Path(__file__).parent / "results"


def tokens_per_second(model, ids, mode, chunk_size, repeats) -> float:
    kwargs = {"chunk_size": chunk_size} if mode == "chunkwise" else {}
    with torch.no_grad():
        model(ids[:, :8], mode=mode, **({"chunk_size": 8} if mode == "chunkwise" else {}))  # warm-up
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            model(ids, mode=mode, **kwargs)
            best = min(best, time.perf_counter() - start)
    return ids.numel() / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small", help="model preset (see retnet.config.PRESETS)")
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 512, 2048])
    parser.add_argument("--chunk-size", type=int, default=128)
    parser.add_argument("--recurrent-max", type=int, default=512, help="longest length timed in recurrent mode")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS / "forms_cpu.md")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    cfg = RetNetConfig.from_preset(args.preset)
    model = RetNetForCausalLM(cfg).eval()
    rows = []
    for T in args.lengths:
        ids = torch.randint(0, cfg.vocab_size, (1, T))
        row = {"T": T}
        for mode in ("parallel", "chunkwise", "recurrent"):
            if mode == "recurrent" and T > args.recurrent_max:
                row[mode] = None
                continue
            row[mode] = tokens_per_second(model, ids, mode, args.chunk_size, args.repeats)
        rows.append(row)
        print(row, flush=True)

    fmt = lambda x: "—" if x is None else f"{x:,.0f}"  # noqa: E731
    lines = [
        f"# Retention forms on CPU: tokens/s (preset `{args.preset}`, {model.num_parameters / 1e6:.1f}M params, "
        f"chunk {args.chunk_size}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()})",
        "",
        f"Command: `python benchmarks/forms_cpu.py --preset {args.preset} "
        f"--lengths {' '.join(map(str, args.lengths))}`",
        "",
        "| T | parallel | chunkwise | recurrent |",
        "|---|---|---|---|",
        *[f"| {r['T']} | {fmt(r['parallel'])} | {fmt(r['chunkwise'])} | {fmt(r['recurrent'])} |" for r in rows],
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
