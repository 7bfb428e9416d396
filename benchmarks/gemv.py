"""Batch-1 matrix-vector products of the 1.3B decode step: the Triton GEMV against F.linear (cuBLAS).

    PYTHONPATH=. python benchmarks/gemv.py                      # on the GPU, under a minute
    PYTHONPATH=. python benchmarks/gemv.py --sweep              # also try launch configs; best per shape
    PYTHONPATH=. python benchmarks/gemv.py --batches 1 2 4 8    # small batches too
    PYTHONPATH=. python benchmarks/gemv.py --dry-run            # CPU smoke test of this script (interpreter)

Shapes: the weights [N, K] (bf16, y = x @ W.T, x [B, K]) of RetNetConfig.from_preset("1.3b") (hidden
2048, 8 heads of K=256 / V=512, FFN 4096, vocab 32000), as the decode step's fused projections
(retnet.fused_projections) run them: [2048 x 4096] o_proj and down_proj, [12288 x 2048] q, k, v and the
gate as one matrix, [8192 x 2048] the FFN's two input projections as one, [32000 x 2048] the LM head.

Every time comes from CUDA-graph replays, as the decode step runs, so launch cost is amortised:
- "cold" (the headline): one graph holding one launch on each of C different weights (C = --copies,
  24: 24 x 16.8 MB = 403 MB against the H200's 50 MB of L2), replayed; time per launch = replay / C.
  Each launch reads a weight that has left the L2 since its last use, as in the decode step, where
  each weight is read once a token.
- "hot": one graph holding C launches on the same weight, replayed. Weights that fit in the L2 (all
  but the LM head) are then read from it: an upper bound, not what the decode step sees.
Medians of --repeats timings (CUDA events) of --replays graph replays each, after warm-up replays.
TB/s = (weight + x + y bytes) / time; "% copy" = that over the device-to-device copy bandwidth
(a 1 GiB copy, read + write, measured in the same run). "max err" = max |y - ref| / max |ref| against
F.linear in float32 on the same bf16 inputs.

--sweep times every launch config of a grid (BLOCK_N x BLOCK_K x num_warps x num_stages, pruned to
16..128 bytes of weight a thread per tile and at least one program an SM; ~230 configs a shape at B=1)
in the cold setting with a quarter of the replays, prints the five best per shape and the best as lines
for retnet/ops/triton_gemv.py's TUNED table, and adds them to the report. The main table then uses the
best config found per shape (its "config" column says which). Configs that fail to compile or launch
(shared memory, registers) are reported and skipped; a wrong result is reported and skipped.

Writes OUT/NAME.md and OUT/NAME.json (OUT = --out, default benchmarks/results; NAME = --name, "gemv").
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]

# (role, N, K) of the 1.3B decode step's products at B = 1.
SHAPES = [
    ("o_proj, down_proj", 2048, 4096),
    ("q, k, v, g fused", 12288, 2048),
    ("FFN act, lin fused", 8192, 2048),
    ("LM head", 32000, 2048),
]
READER_SHAPES = [  # the converted SmolLM2 reader (hidden 576, FFN 1536): named when given with --shapes
    ("reader q, k, v, g fused", 2304, 576),
    ("reader o_proj", 576, 576),
    ("reader FFN act, lin fused", 3072, 576),
    ("reader down_proj", 576, 1536),
    ("reader LM head", 49152, 576),
]
DRY_SHAPES = [("toy a", 40, 96), ("toy b", 24, 64)]  # --dry-run: the interpreter is slow

DRY = False


def say(*args) -> None:
    print(" ".join(str(a) for a in args), flush=True)


# -- timing ------------------------------------------------------------------------------------------------

def capture(fns) -> torch.cuda.CUDAGraph | list:
    """A CUDA graph calling each of fns once, in order (warmed up first, on a side stream, as captures
    want; Triton compiles there, never during capture). Dry run: the list itself."""
    if DRY:
        return list(fns)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for fn in fns:
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for fn in fns:
            fn()
    return graph


def replay_ms(graph, replays: int, repeats: int) -> float:
    """Median ms of one replay of `graph`, from `repeats` timings of `replays` back-to-back replays."""
    if DRY:
        start = time.perf_counter()
        for fn in graph:
            fn()
        return (time.perf_counter() - start) * 1e3
    for _ in range(3):
        graph.replay()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(replays):
            graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / replays)
    return statistics.median(times)


def per_launch_us(make_fn, weights, hot: bool, args) -> float:
    """Microseconds per launch: one graph of one launch per weight (cold), or as many on weights[0] (hot)."""
    fns = [make_fn(weights[0])] * len(weights) if hot else [make_fn(w) for w in weights]
    graph = capture(fns)
    ms = replay_ms(graph, args.replays, args.repeats)
    del graph
    return ms * 1e3 / len(fns)


def copy_bandwidth(args) -> float:
    """Bytes a second of a device-to-device copy (read + write) of 1 GiB of float32, captured in a graph.
    On the H200 this reads 2.7 TB/s, where benchmarks/decode.py's eager copy reads 4.2 TB/s and the kernel
    below streams the LM head at 4.3 TB/s: read the TB/s columns, the "% copy" one is only relative."""
    n = (1 << 18) if DRY else (1 << 28)
    device = "cpu" if DRY else "cuda"
    a = torch.randn(n, device=device)
    b = torch.empty_like(a)
    graph = capture([lambda: b.copy_(a)])
    ms = replay_ms(graph, 5, args.repeats)
    del graph
    return 2 * 4 * n / (ms * 1e-3)


# -- one shape ---------------------------------------------------------------------------------------------

def make_inputs(N: int, K: int, B: int, copies: int, dtype: torch.dtype):
    device = "cpu" if DRY else "cuda"
    gen = torch.Generator(device=device).manual_seed(N * 7 + K)
    x = torch.randn(B, K, device=device, generator=gen).to(dtype)
    # Scaled as a trained projection is (unit-variance outputs); values do not change the timing.
    weights = [(torch.randn(N, K, device=device, generator=gen) * K ** -0.5).to(dtype) for _ in range(copies)]
    return x, weights


def max_err(y: torch.Tensor, ref: torch.Tensor) -> float:
    return ((y.float() - ref).abs().max() / ref.abs().max()).item()


def bench_shape(role: str, N: int, K: int, B: int, x, weights, config: dict | None, copy_bw: float, args) -> list:
    from retnet.ops import triton_gemv

    nbytes = (N * K + B * K + B * N) * x.element_size()
    ref = F.linear(x.float(), weights[0].float())
    cfg = config or triton_gemv.config_for(N, K, B, x.dtype, x.device)
    impls = {
        "cuBLAS (F.linear)": (lambda w: (lambda: F.linear(x, w)), "-"),
        "Triton gemv": (lambda w: (lambda: triton_gemv.gemv(x, w, config=cfg)),
                        " ".join(f"{k}={v}" for k, v in cfg.items())),
    }
    rows = []
    for impl, (make_fn, cfg_text) in impls.items():
        err = max_err(make_fn(weights[0])(), ref)
        cold = per_launch_us(make_fn, weights, False, args)
        hot = per_launch_us(make_fn, weights, True, args)
        row = dict(role=role, N=N, K=K, B=B, impl=impl, config=cfg_text, MB=nbytes / 1e6,
                   cold_us=cold, cold_TBps=nbytes / cold / 1e6, hot_us=hot, hot_TBps=nbytes / hot / 1e6,
                   copy_pct=100 * nbytes / (cold * 1e-6) / copy_bw, max_err=err)
        rows.append(row)
        say(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}))
    return rows


# -- sweep -------------------------------------------------------------------------------------------------

def sweep_grid(N: int, K: int, B: int, elem: int, sms: int, stages: list[int]) -> list[dict]:
    """Launch configs worth timing: 16..128 bytes of weight a thread per tile (one to eight 16-byte loads),
    at most 64 float32 accumulator elements a thread, a tile no wider than K, at least one program an SM."""
    import triton

    if DRY:
        return [dict(BLOCK_N=n, BLOCK_K=k, num_warps=1, num_stages=s) for n, k, s in
                itertools.product((2, 8), (16, 64), (1, 3))]
    BLOCK_B = min(8, triton.next_power_of_2(B))
    grid = []
    for n, k, w, s in itertools.product((1, 2, 4, 8, 16), (128, 256, 512, 1024, 2048, 4096), (1, 2, 4, 8),
                                        stages):
        per_thread = n * k // (32 * w)
        if not 16 <= per_thread * elem <= 128 or per_thread * BLOCK_B > 64:
            continue
        if k > triton.next_power_of_2(K) or triton.cdiv(N, n) < sms:
            continue
        grid.append(dict(BLOCK_N=n, BLOCK_K=k, num_warps=w, num_stages=s))
    return grid


def sweep_shape(role: str, N: int, K: int, B: int, x, weights, args) -> tuple[dict, list[dict]]:
    from retnet.ops import triton_gemv

    sms = 1 if DRY else torch.cuda.get_device_properties(0).multi_processor_count
    nbytes = (N * K + B * K + B * N) * x.element_size()
    ref = F.linear(x.float(), weights[0].float())
    tol = 4 * 2.0 ** -8  # a few bf16 ulps of the largest output
    results = []
    light = argparse.Namespace(replays=max(1, args.replays // 4), repeats=max(3, args.repeats // 2))
    grid = sweep_grid(N, K, B, x.element_size(), sms, args.stages)
    say(f"sweep {role} [{N} x {K}] B={B}: {len(grid)} configs")
    for cfg in grid:
        cfg = {**cfg, "BLOCK_B": min(triton_gemv.MAX_BATCH, 1 << (B - 1).bit_length())}
        try:
            err = max_err(triton_gemv.gemv(x, weights[0], config=cfg), ref)
            if err > tol:
                say(f"  {cfg}: WRONG (max err {err:.2e})")
                continue
            us = per_launch_us(lambda w, cfg=cfg: (lambda: triton_gemv.gemv(x, w, config=cfg)), weights, False, light)
        except Exception as e:  # a config this GPU or Triton cannot run (shared memory, registers): skip it
            say(f"  {cfg}: {type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}")
            continue
        results.append(dict(cfg=cfg, us=us, TBps=nbytes / us / 1e6))
    results.sort(key=lambda r: r["us"])
    for r in results[:5]:
        say(f"  {r['us']:7.2f} us {r['TBps']:5.2f} TB/s  {r['cfg']}")
    if not results:
        raise RuntimeError(f"no config ran for [{N} x {K}]")
    return results[0]["cfg"], results


def tuned_line(N: int, K: int, role: str, best: dict, us: float, tbps: float) -> str:
    cfg = ", ".join(f"{k}={best[k]}" for k in ("BLOCK_N", "BLOCK_K", "num_warps", "num_stages"))
    return f"    ({N}, {K}): dict({cfg}),  # {role}: {us:.2f} us, {tbps:.2f} TB/s"


# -- report ------------------------------------------------------------------------------------------------

def markdown(rows: list[dict], sweeps: list[dict], meta: dict) -> str:
    lines = [f"# Batch-{'/'.join(str(b) for b in meta['batches'])} GEMV: Triton vs cuBLAS ({meta['device']})", "",
             f"torch {meta['torch']}, triton {meta['triton']}, {meta['dtype']}. "
             f"Command: `{meta['command']}`", "",
             f"Device-to-device copy bandwidth (read + write): {meta['copy_TBps']:.2f} TB/s. "
             f"Cold: one CUDA graph of one launch on each of {meta['copies']} different weights; "
             f"hot: {meta['copies']} launches on one weight (L2-resident where it fits).", "",
             "| weight [N x K] | role | B | impl | cold us | cold TB/s | % copy | hot us | hot TB/s | max err "
             "| config |",
             "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['N']} x {r['K']} | {r['role']} | {r['B']} | {r['impl']} | {r['cold_us']:.2f} | "
                     f"{r['cold_TBps']:.2f} | {r['copy_pct']:.0f}% | {r['hot_us']:.2f} | {r['hot_TBps']:.2f} | "
                     f"{r['max_err']:.1e} | {r['config']} |")
    by_key = {(r["N"], r["K"], r["B"], r["impl"]): r for r in rows}
    lines += ["", "Cold time, cuBLAS / Triton (above 1: Triton faster):", ""]
    for (N, K, B, impl), r in by_key.items():
        cublas = by_key.get((N, K, B, "cuBLAS (F.linear)"))
        if impl == "Triton gemv" and cublas is not None:
            lines.append(f"- [{N} x {K}] B={B}: {cublas['cold_us'] / r['cold_us']:.2f}x")
    if sweeps:
        lines += ["", "## Sweep (cold, best five per shape)", ""]
        for s in sweeps:
            lines += [f"{s['role']} [{s['N']} x {s['K']}], B={s['B']}, {s['count']} configs:", "",
                      "| us | TB/s | config |", "|---:|---:|---|"]
            lines += [f"| {r['us']:.2f} | {r['TBps']:.2f} | {r['cfg']} |" for r in s["top"]]
            lines.append("")
        lines += ["For TUNED in retnet/ops/triton_gemv.py (B = 1 rows):", "", "```python"]
        lines += [s["line"] for s in sweeps if s["B"] == 1] + ["```"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=int, nargs="+", default=[1], help="batch sizes (1..8; default 1)")
    ap.add_argument("--shapes", nargs="+", metavar="NxK",
                    help="only these weight shapes, e.g. 2048x4096 (default: the four of the 1.3B model)")
    ap.add_argument("--copies", type=int, default=24, help="different weights in the cold graph (default 24)")
    ap.add_argument("--replays", type=int, default=20, help="graph replays per timing (default 20)")
    ap.add_argument("--repeats", type=int, default=10, help="timings per median (default 10)")
    ap.add_argument("--sweep", action="store_true", help="time a grid of launch configs per shape, use the best")
    ap.add_argument("--stages", type=int, nargs="+", default=[1, 2, 3, 4], help="num_stages values the sweep tries")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--name", default="gemv", help="report file name, without extension (default gemv)")
    ap.add_argument("--dry-run", action="store_true",
                    help="CPU smoke test of this script: toy shapes in the Triton interpreter, times meaningless")
    args = ap.parse_args(argv)

    global DRY
    if args.dry_run:
        os.environ["TRITON_INTERPRET"] = "1"  # before the kernel module is imported
        DRY = True
        args.copies, args.replays, args.repeats = 2, 1, 1
    elif not torch.cuda.is_available():
        print("benchmarks/gemv.py needs a CUDA device (torch.cuda.is_available() is False). "
              "The kernel's tests run on the CPU: pytest tests/retnet/test_triton_gemv.py; "
              "--dry-run smoke-tests this script on the CPU.", file=sys.stderr)
        return 2
    if any(not 1 <= b <= 8 for b in args.batches):
        ap.error("--batches: 1..8")
    import triton

    dtype = getattr(torch, args.dtype)
    shapes = DRY_SHAPES if DRY else SHAPES
    if args.shapes:
        wanted = [tuple(int(v) for v in s.lower().split("x")) for s in args.shapes]
        known = {(N, K): role for role, N, K in shapes + READER_SHAPES}
        shapes = [(known.get((N, K), "custom"), N, K) for N, K in wanted]
    meta = dict(device="CPU (dry run)" if DRY else torch.cuda.get_device_name(0), torch=torch.__version__,
                triton=triton.__version__, dtype=args.dtype, batches=args.batches, copies=args.copies,
                host=platform.node(), command="python benchmarks/gemv.py " + " ".join(sys.argv[1:] if argv is None
                                                                                     else argv))
    copy_bw = copy_bandwidth(args)
    meta["copy_TBps"] = copy_bw / 1e12
    say(f"{meta['device']}: copy bandwidth {copy_bw / 1e12:.2f} TB/s")

    rows, sweeps = [], []
    t0 = time.time()
    for role, N, K in shapes:
        for B in args.batches:
            x, weights = make_inputs(N, K, B, args.copies, dtype)
            best = None
            if args.sweep:
                best, results = sweep_shape(role, N, K, B, x, weights, args)
                top = results[0]
                sweeps.append(dict(role=role, N=N, K=K, B=B, count=len(results), top=results[:5],
                                   line=tuned_line(N, K, role, best, top["us"], top["TBps"])))
            rows += bench_shape(role, N, K, B, x, weights, best, copy_bw, args)
            del x, weights
            if not DRY:
                torch.cuda.synchronize()
                torch.cuda.empty_cache()
            say(f"[{time.time() - t0:.0f}s] {role} B={B} done")

    args.out.mkdir(parents=True, exist_ok=True)
    report = markdown(rows, sweeps, meta)
    (args.out / f"{args.name}.md").write_text(report)
    (args.out / f"{args.name}.json").write_text(json.dumps(dict(meta=meta, rows=rows, sweeps=sweeps), indent=1))
    print(report)
    if sweeps:
        print("\n".join(["TUNED lines (B = 1):"] + [s["line"] for s in sweeps if s["B"] == 1]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
