"""Prefill: time to first token and tokens/s, RetNet against a same-shape Transformer (issue 15, part 4).

    PYTHONPATH=. python benchmarks/prefill.py                       # on the GPU, under a minute
    PYTHONPATH=. python benchmarks/prefill.py --cases rag 32k --repeats 5
    PYTHONPATH=. python benchmarks/prefill.py --quick --device cpu  # tiny shapes: a smoke test

Two prompts at batch 1 (--batch to change): "rag", 8 passages of 256 tokens (what the reader ingests
for a question), and "32k", one 32,768-token prompt. Models as in ``benchmarks/decode.py`` (random
weights, bf16): the 1.3B-shape RetNet and the Llama of the same shape.

- RetNet "one call": ``retnet.generation.prefill`` with the passages as chunk lengths (the Triton
  chunkwise kernels on CUDA), logits at the last position only; for "rag" also "per passage", one
  forward call per passage as ``app.encoder.Reader`` does when it snapshots the state at passage ends.
- Transformer: ``Llama.prefill`` into a static KV cache (SDPA causal attention: flash on the GPU),
  logits at the last position only; the cache is allocated before the clock starts, as a server does.

Time to first token = prompt ids on the device -> the first generated token's id on the host (prefill,
greedy pick, copy); tokens/s = prompt tokens / that time. Median of --repeats after one warm-up;
peak = allocated memory during the timed runs (weights included). Writes OUT/NAME.md and .json.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from llama_baseline import KVCache, Llama, llama_like

from retnet import RetNetConfig, RetNetForCausalLM
from retnet.generation import prefill

ROOT = Path(__file__).resolve().parents[1]
GB = 1e9
QUICK_RETNET = dict(vocab_size=512, hidden_size=64, num_layers=2, num_heads=2, head_k_dim=32, head_v_dim=64,
                    ffn_dim=128)


def cases(quick: bool) -> dict[str, list[int]]:
    """name -> passage lengths."""
    if quick:
        return {"rag": [32] * 8, "32k": [512]}
    return {"rag": [256] * 8, "32k": [32768]}


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, repeats: int) -> tuple[float, float | None]:
    """Median seconds of fn() (after a warm-up) and peak allocated GB over the timed calls."""
    fn()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()  # ends with .item(): the token is on the host
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated(device) / GB if device.type == "cuda" else None
    return statistics.median(times), peak


@torch.no_grad()
def bench_retnet(args, rows: list[dict]) -> None:
    device = args.device
    torch.manual_seed(0)
    with torch.device(device):
        model = RetNetForCausalLM(args.retnet_config).to(args.dtype).eval()
    for name, lengths in args.cases.items():
        T = sum(lengths)
        ids = torch.randint(0, model.config.vocab_size, (args.batch, T), device=device)

        def one_call(ids=ids, lengths=lengths, model=model):
            logits, _ = prefill(model, ids, None, chunk_lengths=lengths)
            return int(logits.argmax(-1)[0])

        def per_passage(ids=ids, lengths=lengths, model=model):
            state, start = None, 0
            for n in lengths:
                logits, state = prefill(model, ids[:, start:start + n], state)
                start += n
            return int(logits.argmax(-1)[0])

        variants = {"one call": one_call}
        if len(lengths) > 1:
            variants["per passage"] = per_passage
        for variant, fn in variants.items():
            sec, peak = timed(fn, device, args.repeats)
            add(rows, dict(model="retnet", variant=variant, case=name, tokens=T, batch=args.batch, ttft_s=sec,
                           tokens_per_s=args.batch * T / sec, peak_gb=peak))
    del model
    cleanup(device)


@torch.no_grad()
def bench_llama(args, rows: list[dict]) -> None:
    device = args.device
    torch.manual_seed(0)
    with torch.device(device):
        model = Llama(llama_like(args.retnet_config)).to(args.dtype).eval()
    for name, lengths in args.cases.items():
        T = sum(lengths)
        ids = torch.randint(0, model.config.vocab_size, (args.batch, T), device=device)
        cache = KVCache(model, args.batch, T + 256)

        def run(ids=ids, cache=cache, model=model):
            return int(model.prefill(ids, cache).argmax(-1)[0])

        sec, peak = timed(run, device, args.repeats)
        add(rows, dict(model="transformer", variant="sdpa, static cache", case=name, tokens=T, batch=args.batch,
                       ttft_s=sec, tokens_per_s=args.batch * T / sec, peak_gb=peak,
                       cache_gb=cache.nbytes / GB))
        del cache
        cleanup(device)
    del model
    cleanup(device)


def add(rows: list[dict], row: dict) -> None:
    rows.append(row)
    print(json.dumps({k: round(v, 5) if isinstance(v, float) else v for k, v in row.items()}), flush=True)


def cleanup(device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def report(meta: dict, rows: list[dict]) -> str:
    lines = [f"# Prefill: time to first token, RetNet vs Transformer ({meta['device_name']})", "",
             f"Command: `{meta['command']}`", "",
             f"torch {meta['torch']}, {meta['dtype']} weights (random), batch {meta['batch']}, median of "
             f"{meta['repeats']} after a warm-up. See the script's docstring.", "",
             "| case | tokens | model | variant | TTFT ms | k tokens / s | peak GB |",
             "|---|---:|---|---|---:|---:|---:|"]
    for r in rows:
        peak = "—" if r["peak_gb"] is None else f"{r['peak_gb']:.2f}"
        lines.append(f"| {r['case']} | {r['tokens']} | {r['model']} | {r['variant']} | {1e3 * r['ttft_s']:.1f} | "
                     f"{r['tokens_per_s'] / 1e3:.1f} | {peak} |")
    for case in dict.fromkeys(r["case"] for r in rows):
        ret = [r for r in rows if r["case"] == case and r["model"] == "retnet" and r["variant"] == "one call"]
        tra = [r for r in rows if r["case"] == case and r["model"] == "transformer"]
        if ret and tra:
            lines.append(f"\n{case}: RetNet TTFT / Transformer TTFT = {ret[0]['ttft_s'] / tra[0]['ttft_s']:.2f}")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--cases", nargs="+", default=["rag", "32k"], choices=["rag", "32k"])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--models", nargs="+", default=["retnet", "transformer"], choices=["retnet", "transformer"])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--name", default=None)
    args = ap.parse_args()
    args.device = torch.device(args.device)
    cuda = args.device.type == "cuda"
    args.dtype = torch.bfloat16 if cuda else torch.float32
    args.repeats = args.repeats or (2 if args.quick else 5)
    args.cases = {k: v for k, v in cases(args.quick).items() if k in args.cases}
    args.retnet_config = RetNetConfig(**QUICK_RETNET) if args.quick else RetNetConfig.from_preset("1.3b")
    device_name = torch.cuda.get_device_name(args.device) if cuda else "cpu"
    gpu = next((w.lower() for w in device_name.split() if w[:1] in "HABL" and any(c.isdigit() for c in w)), "gpu")
    args.name = args.name or (f"prefill_{gpu}" if cuda else "prefill_cpu") + ("_quick" if args.quick else "")
    meta = dict(device_name=device_name, torch=torch.__version__, batch=args.batch, repeats=args.repeats,
                dtype=str(args.dtype).replace("torch.", ""),
                command=" ".join(["PYTHONPATH=. python benchmarks/prefill.py", *sys.argv[1:]]))
    rows: list[dict] = []
    for name in args.models:
        try:
            (bench_retnet if name == "retnet" else bench_llama)(args, rows)
        except torch.OutOfMemoryError as e:
            print(f"{name}: out of memory: {str(e).splitlines()[0]}", flush=True)
            cleanup(args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    text = report(meta, rows)
    (args.out / f"{args.name}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
