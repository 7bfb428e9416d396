"""Benchmark the Triton retention kernels against flash-linear-attention and causal SDPA.

Run on a CUDA machine (bf16). One run does, in order:

  --check     correctness at real sizes: bf16 kernels against the float32 reference
              (outputs, final states, gradients, decode step)
  --sweep     try kernel tile configurations and keep the fastest (optional)
  --bench     chunkwise forward and forward+backward, ours vs fla's chunk_retention vs
              causal SDPA, at B=4 H=8 K=256 V=512 and B=4 H=16 K=V=128, T = 2k..32k
  --decode    one decode step (batch 1 in a CUDA graph; batch 64 bandwidth) vs fla's
              fused_recurrent_retention
  --varchunks passage-aligned variable chunks (lengths 50-600) vs fixed chunks

plus a device-to-device copy to measure memory bandwidth (the memory floor of the
forward pass is the bytes of q, k, v and o over that bandwidth). Timings are medians of
triton.testing.do_bench (CUDA events). Results go to OUT/kernels.csv, OUT/kernels.md
and OUT/kernels.png (OUT = --out, default benchmarks/results); the summary table is
printed last. `--plot-only CSV` rebuilds the markdown and the plot from a CSV.

Example: python benchmarks/kernels.py --check --bench --decode --varchunks
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import math
import os
import sys
import time

import torch

DEV = "cuda"  # "cpu" only for --dry-run (the Triton interpreter at toy sizes, to test this script)
DRY = False
ROWS: list[dict] = []
LOG: list[str] = []


def say(*args):
    msg = " ".join(str(a) for a in args)
    print(msg, flush=True)
    LOG.append(msg)


def record(**row):
    ROWS.append(row)
    say(json.dumps(row))


def decay(H, device=None):
    return torch.log(1 - 2.0 ** (-5.0 - torch.arange(H, dtype=torch.float32, device=device or DEV)))


def make(B, T, H, K, V, dtype=torch.bfloat16, grad=False, seed=0):
    g = torch.Generator(device=DEV).manual_seed(seed)
    # q, k scaled so that q.k is O(1), as after the model's K**-0.5 scaling.
    q = (torch.randn(B, T, H, K, device=DEV, generator=g) * K ** -0.25).to(dtype)
    k = (torch.randn(B, T, H, K, device=DEV, generator=g) * K ** -0.25).to(dtype)
    v = torch.randn(B, T, H, V, device=DEV, generator=g).to(dtype)
    for t in (q, k, v):
        t.requires_grad_(grad)
    return q, k, v


def bench(fn, grad_to_none=None, rep=200):
    if DRY:
        fn()
        return 1.0
    from triton.testing import do_bench
    return do_bench(fn, warmup=50, rep=rep, grad_to_none=grad_to_none, return_mode="median")


def rel(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm()).item()


def poison(nbytes):
    """Fill soon-to-be-reused allocator blocks with NaN so that unwritten outputs show."""
    x = torch.full((nbytes // 4 + 1,), float("nan"), device=DEV)
    del x


def copy_bandwidth():
    n = (1 << 20) if DRY else (1 << 30)  # 1 GiB each way
    a = torch.empty(n, dtype=torch.uint8, device=DEV).random_()
    b = torch.empty_like(a)
    ms = bench(functools.partial(b.copy_, a))
    bw = 2 * n / (ms * 1e-3)
    record(section="copy", impl="torch.copy_", mode="d2d", T=0, shape="1GiB", ms=ms, GBps=bw / 1e9)
    del a, b
    return bw


# ----------------------------------------------------------------------------------------- check
def check(args):
    import retnet.ops as ops
    from retnet.ops import reference

    ok = True

    def verdict(name, err, tol):
        nonlocal ok
        good = math.isfinite(err) and err < tol
        ok &= good
        record(section="check", impl="ours", mode=name, T=0, shape="", ms=float("nan"), err=err, tol=tol,
               passed=good)

    sizes = [(2, 4096, 8, 256, 512), (2, 4096, 16, 128, 128), (1, 1000, 4, 256, 512)]
    if DRY:
        sizes = [(1, 70, 1, 64, 128), (1, 40, 2, 32, 32)]
    for (B, T, H, K, V) in sizes:
        tag = f"B{B} T{T} H{H} K{K} V{V}"
        q, k, v = make(B, T, H, K, V, grad=True, seed=1)
        s0 = torch.randn(B, H, K, V, device=DEV).mul_(0.1).requires_grad_(True)
        ld = decay(H)
        do = torch.randn(B, T, H, V, device=DEV, dtype=torch.bfloat16)
        dst = torch.randn(B, H, K, V, device=DEV)
        poison(B * T * H * max(K, V) * 8)
        o, st = ops.chunk_retention(q, k, v, ld, [T], state=s0, backend="triton")
        gq, gk, gv, gs = torch.autograd.grad((o.float() * do.float()).sum() + (st * dst).sum(), (q, k, v, s0))
        qf, kf, vf, sf = (t.detach().float().requires_grad_(True) for t in (q, k, v, s0))
        ro, rst = reference.naive_retention_chunkwise(qf, kf, vf, ld, reference.chunk_lengths_for(T, 128), state=sf)
        rq, rk, rv, rs = torch.autograd.grad((ro * do.float()).sum() + (rst * dst).sum(), (qf, kf, vf, sf))
        for name, a, b in [("o", o, ro), ("final state", st, rst), ("dq", gq, rq), ("dk", gk, rk),
                           ("dv", gv, rv), ("d state0", gs, rs)]:
            verdict(f"{tag} {name}", rel(a, b), 1e-2)
        # Variable chunks: the output does not depend on the layout.
        gen = torch.Generator().manual_seed(2)
        lengths = var_lengths(T, gen)
        with torch.no_grad():
            o2, st2 = ops.chunk_retention(q, k, v, ld, lengths, state=s0, backend="triton")
            ro2, rst2 = ops.chunk_retention(qf, kf, vf, ld, lengths, state=sf, backend="reference")
        verdict(f"{tag} var-chunk o ({len(lengths)} chunks)", rel(o2, ro2), 1e-2)
        verdict(f"{tag} var-chunk final state", rel(st2, rst2), 1e-2)
        del q, k, v, s0, o, st, gq, gk, gv, gs, qf, kf, vf, sf, ro, rst, rq, rk, rv, rs, o2, st2, ro2
        if DEV == "cuda":
            torch.cuda.empty_cache()

    # Decode step and a short recurrent run.
    for B in decode_batches():
        H, K, V = decode_shape()
        q, k, v = (x[:, 0] for x in make(B, 1, H, K, V, seed=3))
        s = torch.randn(B, H, K, V, device=DEV)
        s_ref = s.clone()
        ld = decay(H)
        o = ops.retention_step(q, k, v, ld, s, backend="triton")
        o_ref = ops.retention_step(q, k, v, ld, s_ref, backend="reference")
        verdict(f"step B{B} o", rel(o, o_ref), 1e-2)
        verdict(f"step B{B} state", rel(s, s_ref), 1e-5)
    H, K, V = decode_shape()
    q, k, v = make(2, 37, H, K, V, seed=4)
    with torch.no_grad():
        o, st = ops.recurrent_retention(q, k, v, decay(H), backend="triton")
    ro, rst = reference.naive_retention_recurrent(q.float(), k.float(), v.float(), decay(H))
    verdict("recurrent T37 o", rel(o, ro), 1e-2)
    verdict("recurrent T37 state", rel(st, rst), 1e-5)
    say("CHECK", "PASSED" if ok else "FAILED")
    return ok


def var_lengths(T, gen, lo=50, hi=600):
    out = []
    while sum(out) < T:
        out.append(int(torch.randint(lo, hi + 1, (1,), generator=gen)))
    out[-1] -= sum(out) - T
    if out[-1] <= 0:
        out.pop()
        out[-1] += T - sum(out)
    return out


# ----------------------------------------------------------------------------------------- sweep
# Candidate scan configurations (BT, BV, num_warps, num_stages) per (K slice, V) shape: (256, 512) is
# the forward and dv runs at the paper's head shape, (256, 256) the two K slices of its dq and dk runs
# (K = V = 512 there), (128, 128) every run at K = V = 128.
SWEEP = {
    (256, 512): [(64, 64, 8, 2), (64, 32, 4, 2), (64, 32, 4, 3), (64, 64, 8, 3), (64, 128, 8, 2)],
    (256, 256): [(64, 64, 8, 2), (64, 32, 4, 2), (64, 64, 4, 3)],
    (128, 128): [(64, 32, 4, 3), (64, 64, 4, 2), (64, 64, 8, 3)],
}
DECODE_SWEEP = [(16, 4), (32, 4), (64, 4), (64, 8)]


def sweep_one(spec):
    """Check and time one configuration (run in a subprocess: a bad config can kill the context)."""
    from retnet.ops import reference, triton_chunk, triton_decode

    out = dict(spec)
    if spec["kind"] == "decode":
        BV, w = spec["cfg"]
        triton_decode.CONFIG_OVERRIDE[(256, 512)] = dict(BV=BV, num_warps=w)
        H, K, V = 8, 256, 512
        ld = decay(H)
        for B in (1, 64):
            q, k, v = (x[:, 0].contiguous() for x in make(B, 1, H, K, V))
            s = torch.randn(B, H, K, V, device=DEV)
            ref = s.clone()
            o = triton_decode.retention_step_triton(q, k, v, ld, s)
            import retnet.ops as ops
            o_ref = ops.retention_step(q, k, v, ld, ref, backend="reference")
            out[f"err_B{B}"] = max(rel(o, o_ref), rel(s, ref))
            out[f"ms_B{B}"] = graph_time(functools.partial(triton_decode.retention_step_triton, q, k, v, ld, s),
                                         steps=20)
        print("RESULT " + json.dumps(out), flush=True)
        return
    DK, DV = spec["shape"]
    BT, BV, w, st = spec["cfg"]
    key = (DK, DV, torch.bfloat16)
    fwd = triton_chunk.retention_fwd
    modes = {"inline": dict(), "P": dict(scores=True), "inline_rev": dict(reverse=True),
             "PT_rev": dict(reverse=True, scores=True)}

    def run(q, k, v, ld, mode, P):
        kw = dict(modes[mode])
        if kw.pop("scores", False):
            kw.update(scores=P, scores_transposed=kw.get("reverse", False))
        return fwd(q, k, v, ld, **kw)

    for inline in (True, False):
        triton_chunk.CONFIG_OVERRIDE[key] = dict(BT=BT, BV=BV, num_warps=w, num_stages=st, inline=inline)
        # Small correctness check of each mode against the float32 reference.
        q, k, _ = make(1, 300, 2, DK, DK, seed=5)
        v = torch.randn(1, 300, 2, DV, device=q.device, dtype=torch.bfloat16)
        ld = decay(2, q.device)
        for mode in (("inline", "inline_rev") if inline else ("P", "PT_rev")):
            rev = "rev" in mode
            P = triton_chunk.retention_scores(q, k, ld, BT) if mode == "P" else \
                triton_chunk.retention_scores(k, q, ld, BT) if mode == "PT_rev" else None
            # PT_rev: the reversed run for (q, k) reads scores of (k, q) made forwards, transposed.
            o = run(q, k, v, ld, mode, P)[0]
            flip = (lambda x: x.flip(1)) if rev else (lambda x: x)
            ro, _ = reference.naive_retention_chunkwise(flip(q).float(), flip(k).float(), flip(v).float(), ld, [300])
            out[f"err_{mode}"] = rel(o, flip(ro))
    H = spec.get("H", 16 if DK == 128 else 8)
    B, T = spec.get("B", 4), spec.get("T", 8192)
    q, k, _ = make(B, T, H, DK, DK)
    v = torch.randn(B, T, H, DV, device=q.device, dtype=torch.bfloat16)
    ld = decay(H, q.device)
    P = triton_chunk.retention_scores(q, k, ld, BT)
    PT = triton_chunk.retention_scores(k, q, ld, BT)
    out["ms_scores"] = bench(functools.partial(triton_chunk.retention_scores, q, k, ld, BT), rep=100)
    for mode in modes:
        out[f"ms_{mode}"] = bench(functools.partial(run, q, k, v, ld, mode, PT if mode == "PT_rev" else P), rep=100)
        kern = triton_chunk.LAST_LAUNCH.get("kernel")
        if kern is not None:  # (None under the interpreter)
            out[f"regs_{mode}"] = (kern.n_regs, kern.n_spills, kern.metadata.shared)
    print("RESULT " + json.dumps(out), flush=True)


def sweep(args):
    """Run every candidate in its own process; keep the fastest correct one per shape."""
    import subprocess

    from retnet.ops import triton_chunk, triton_decode

    specs = [dict(kind="chunk", shape=list(shape), cfg=list(c)) for shape, cands in SWEEP.items() for c in cands]
    if args.sweep_decode:
        specs += [dict(kind="decode", cfg=list(c)) for c in DECODE_SWEEP]
    best: dict = {}
    for spec in specs:
        r = subprocess.run([sys.executable, os.path.abspath(__file__), "--sweep-one", json.dumps(spec)],
                           capture_output=True, text=True, timeout=240)
        res = [json.loads(line[7:]) for line in r.stdout.splitlines() if line.startswith("RESULT ")]
        if r.returncode or not res:
            tail = (r.stdout + r.stderr).strip().splitlines()[-1:] or [""]
            say(f"sweep {spec} FAILED rc={r.returncode}: {tail[0][:160]}")
            continue
        res = res[0]
        say("sweep " + json.dumps(res))
        errs = [v for key, v in res.items() if key.startswith("err")]
        if not all(math.isfinite(e) and e < 1e-2 for e in errs):
            say("  -> wrong results, rejected")
            continue
        if spec["kind"] == "decode":
            for B in (1, 64):
                record(section="sweep", impl="ours", mode=f"decode B{B}", T=1, shape=f"BV{spec['cfg'][0]} "
                       f"w{spec['cfg'][1]}", ms=res[f"ms_B{B}"])
            continue
        # Training runs the scan forwards and backwards on precomputed scores; inference forwards,
        # with scores inline or precomputed, whichever is faster for this config.
        train = res["ms_P"] + res["ms_PT_rev"]
        infer_inline = res["ms_inline"] < res["ms_P"] + res["ms_scores"]
        cfg_name = "BT{} BV{} w{} s{}".format(*spec["cfg"])
        for mode in ("inline", "P", "inline_rev", "PT_rev", "scores"):
            record(section="sweep", impl="ours", mode=f"{spec['shape'][0]}x{spec['shape'][1]} {mode}", T=8192,
                   shape=cfg_name, ms=res[f"ms_{mode}"], regs=res.get(f"regs_{mode}"))
        key = tuple(spec["shape"])
        if key not in best or train < best[key][0]:
            best[key] = (train, spec["cfg"], infer_inline)
    configs = {}
    for key, (ms, cfg, inline) in best.items():
        say(f"best {key}: {cfg} inline={inline} ({ms:.3f} ms fwd+rev on scores)")
        configs[f"{key[0]}x{key[1]}"] = dict(BT=cfg[0], BV=cfg[1], num_warps=cfg[2], num_stages=cfg[3],
                                             inline=inline)
    with open(os.path.join(args.out, "kernels_configs.json"), "w") as f:
        json.dump(configs, f, indent=1)
    apply_configs(configs, triton_chunk, triton_decode)
    return configs


def apply_configs(configs, triton_chunk, triton_decode):
    for name, cfg in configs.items():
        if name.startswith("decode"):
            continue
        DK, DV = (int(x) for x in name.split("x"))
        triton_chunk.CONFIG_OVERRIDE[(DK, DV, torch.bfloat16)] = cfg


def graph_time(fn, steps=1):
    """Median ms of one call of fn, from replays of a CUDA graph holding `steps` calls."""
    if DRY:
        return bench(fn)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(steps):
            fn()
    return bench(g.replay) / steps


# ----------------------------------------------------------------------------------------- bench
def load_fla():
    try:
        from fla.ops.retention import chunk_retention, fused_recurrent_retention
        return chunk_retention, fused_recurrent_retention
    except Exception as e:  # noqa: BLE001
        say(f"fla not available: {type(e).__name__}: {e}")
        return None, None


def time_fwd_and_fwdbwd(call, q, k, v, do):
    """Median ms of call(q, k, v) without grad, and of call + backward(do)."""
    def fwd():
        with torch.no_grad():
            return call(q, k, v)

    def fwd_bwd():
        call(q, k, v)[0].backward(do)
    return bench(fwd), bench(fwd_bwd, grad_to_none=[q, k, v])


def main_bench(args, floor_bw):
    import retnet.ops as ops

    fla_chunk, _ = load_fla() if not args.no_fla else (None, None)
    Ts = [int(t) for t in args.T.split(",")]
    shapes = [(1, 2, 64, 128), (1, 2, 32, 32)] if DRY else [(4, 8, 256, 512), (4, 16, 128, 128)]
    for (B, H, K, V) in shapes:
        shape = f"B{B} H{H} K{K} V{V}"
        ld = decay(H)
        for T in Ts:
            q, k, v = make(B, T, H, K, V, grad=True)
            do = torch.randn(B, T, H, V, device=DEV, dtype=torch.bfloat16)
            nbytes = (q.numel() + k.numel() + v.numel() + do.numel()) * 2
            floor_ms = nbytes / floor_bw * 1e3
            ours = functools.partial(ops.chunk_retention, log_decay=ld, chunk_lengths=[T], backend="triton",
                                     output_final_state=False)
            f, fb = time_fwd_and_fwdbwd(ours, q, k, v, do)
            record(section="chunk", impl="ours", mode="fwd", T=T, shape=shape, ms=f, floor_ms=floor_ms,
                   floor_frac=floor_ms / f)
            record(section="chunk", impl="ours", mode="fwd+bwd", T=T, shape=shape, ms=fb)
            if fla_chunk is not None:
                try:
                    f, fb = time_fwd_and_fwdbwd(functools.partial(fla_chunk, scale=1.0), q, k, v, do)
                    record(section="chunk", impl="fla", mode="fwd", T=T, shape=shape, ms=f, floor_ms=floor_ms,
                           floor_frac=floor_ms / f)
                    record(section="chunk", impl="fla", mode="fwd+bwd", T=T, shape=shape, ms=fb)
                except Exception as e:  # noqa: BLE001
                    say(f"fla failed at {shape} T{T}: {type(e).__name__}: {str(e)[:200]}")
            del q, k, v, do
            if not args.no_sdpa:
                D = min(K, 256)  # flash SDPA needs equal q/k/v head dims (<= 256)
                qs, ks, vs = (torch.randn(B, H, T, D, device=DEV, dtype=torch.bfloat16, requires_grad=True)
                              for _ in range(3))
                dos = torch.randn(B, H, T, D, device=DEV, dtype=torch.bfloat16)
                sdpa = functools.partial(torch.nn.functional.scaled_dot_product_attention, is_causal=True)
                f, fb = time_fwd_and_fwdbwd(lambda *a, sdpa=sdpa: (sdpa(*a),), qs, ks, vs, dos)
                record(section="chunk", impl=f"sdpa(D={D})", mode="fwd", T=T, shape=shape, ms=f)
                record(section="chunk", impl=f"sdpa(D={D})", mode="fwd+bwd", T=T, shape=shape, ms=fb)
                del qs, ks, vs, dos
            if DEV == "cuda":
                torch.cuda.empty_cache()


def decode_batches():
    return (1, 2) if DRY else (1, 64)


def decode_shape():
    """(H, K, V) of the decode measurements: one layer of the 1.3B model (toy sizes for --dry-run)."""
    return (2, 32, 64) if DRY else (8, 256, 512)


def decode_bench(args, floor_bw):
    import retnet.ops as ops

    _, fla_rec = load_fla() if not args.no_fla else (None, None)
    H, K, V = decode_shape()
    ld = decay(H)
    for B in decode_batches():
        shape = f"B{B} H{H} K{K} V{V}"
        q, k, v = (x[:, 0].contiguous() for x in make(B, 1, H, K, V))
        s = torch.randn(B, H, K, V, device=DEV)
        state_bytes = 2 * s.numel() * 4

        step = functools.partial(ops.retention_step, q, k, v, ld, s, backend="triton")

        eager = bench(step)
        g1 = graph_time(step, steps=1)
        g100 = graph_time(step, steps=100)
        for mode, ms in [("eager", eager), ("graph, 1 step/replay", g1), ("graph, 100 steps/replay", g100)]:
            record(section="decode", impl="ours", mode=mode, T=1, shape=shape, ms=ms,
                   GBps=state_bytes / (ms * 1e-3) / 1e9, bw_frac=state_bytes / (ms * 1e-3) / floor_bw)
        if fla_rec is not None:
            fla_step = functools.partial(fla_rec, q[:, None], k[:, None], v[:, None], scale=1.0,
                                         initial_state=s, output_final_state=True)
            try:
                ms = bench(fla_step)
                record(section="decode", impl="fla fused_recurrent", mode="eager", T=1, shape=shape, ms=ms,
                       GBps=state_bytes / (ms * 1e-3) / 1e9)
                ms = graph_time(fla_step, steps=100)
                record(section="decode", impl="fla fused_recurrent", mode="graph, 100 steps/replay", T=1,
                       shape=shape, ms=ms, GBps=state_bytes / (ms * 1e-3) / 1e9)
            except Exception as e:  # noqa: BLE001
                say(f"fla decode failed: {type(e).__name__}: {str(e)[:200]}")
    # A short multi-token recurrent run (e.g. a question appended during chat).
    q, k, v = make(1, 16, H, K, V)
    with torch.no_grad():
        ms = bench(lambda: ops.recurrent_retention(q, k, v, ld, backend="triton"))
    record(section="decode", impl="ours", mode="recurrent T=16 eager", T=16, shape=f"B1 H{H} K{K} V{V}", ms=ms)
    if fla_rec is not None:
        with torch.no_grad():
            ms = bench(lambda: fla_rec(q, k, v, scale=1.0, output_final_state=True))
        record(section="decode", impl="fla fused_recurrent", mode="recurrent T=16 eager", T=16,
               shape=f"B1 H{H} K{K} V{V}", ms=ms)


def varchunk_bench(args):
    import retnet.ops as ops

    B, H, K, V, T = (1, 1, 32, 64, 700) if DRY else (4, 8, 256, 512, 16384)
    shape = f"B{B} H{H} K{K} V{V}"
    q, k, v = make(B, T, H, K, V)
    ld = decay(H)
    gen = torch.Generator().manual_seed(0)
    var = var_lengths(T, gen)
    n = len(var)
    # Fixed chunks of about the same mean length, a multiple of the 64-token tile (aligned boundaries).
    L = max(64, round(T / n / 64) * 64)
    fixed = [L] * (T // L) + ([T % L] if T % L else [])
    say(f"variable chunks: {n} chunks, mean {T / n:.0f}; fixed: {len(fixed)} x {L}")
    with torch.no_grad():
        for name, lengths in [(f"fixed {L}", fixed), ("variable 50-600", var)]:
            ms = bench(lambda lengths=lengths: ops.chunk_retention(q, k, v, ld, lengths, backend="triton"))
            record(section="varchunks", impl="ours", mode=name, T=T, shape=shape, ms=ms, chunks=len(lengths))
    # Training: fixed chunks vs variable chunks, forward+backward (gradients ignore the layout).
    q, k, v = make(B, T, H, K, V, grad=True)
    do = torch.randn(B, T, H, V, device=DEV, dtype=torch.bfloat16)
    for name, lengths in [("fixed, fwd+bwd", fixed), ("variable, fwd+bwd", var)]:
        def fb(lengths=lengths):
            o, _ = ops.chunk_retention(q, k, v, ld, lengths, backend="triton")
            o.backward(do)
        record(section="varchunks", impl="ours", mode=name, T=T, shape=shape,
               ms=bench(fb, grad_to_none=[q, k, v]), chunks=len(lengths))


# ----------------------------------------------------------------------------------------- report
def load_rows(path):
    rows = []
    with open(path) as f:
        for r in csv.DictReader(f):
            for key in ("ms", "T", "floor_ms", "floor_frac", "GBps", "bw_frac"):
                if r.get(key) not in (None, ""):
                    r[key] = float(r[key])
            rows.append(r)
    return rows


def write_csv(rows, path):
    keys = []
    for r in rows:
        for key in r:
            if key not in keys:
                keys.append(key)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)


def fmt(x, nd=2):
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}"


def markdown(rows, meta):
    out = [f"# Retention kernels: benchmark ({meta})", ""]
    get = {}
    for r in rows:
        get[(r["section"], r.get("shape"), int(float(r["T"])), r["impl"], r["mode"])] = r
    shapes = sorted({r["shape"] for r in rows if r["section"] == "chunk"}, reverse=True)
    for shape in shapes:
        impls = sorted({r["impl"] for r in rows if r["section"] == "chunk" and r["shape"] == shape},
                       key=lambda s: (s != "ours", s != "fla", s))
        Ts = sorted({int(float(r["T"])) for r in rows if r["section"] == "chunk" and r["shape"] == shape})
        out += [f"## Chunkwise, {shape}, bf16, median ms", ""]
        head = ["T"] + [f"{i} fwd" for i in impls] + [f"{i} fwd+bwd" for i in impls] + \
            ["fwd+bwd fla/ours", "ours fwd % of memory floor"]
        out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for T in Ts:
            cells = [str(T)]
            for mode in ("fwd", "fwd+bwd"):
                for i in impls:
                    r = get.get(("chunk", shape, T, i, mode))
                    cells.append(fmt(r["ms"] if r else None))
            ours = get.get(("chunk", shape, T, "ours", "fwd+bwd"))
            fla = get.get(("chunk", shape, T, "fla", "fwd+bwd"))
            cells.append(fmt(fla["ms"] / ours["ms"]) + "x" if ours and fla else "—")
            of = get.get(("chunk", shape, T, "ours", "fwd"))
            cells.append(fmt(100 * float(of["floor_frac"]), 0) + "%" if of and of.get("floor_frac") else "—")
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    dec = [r for r in rows if r["section"] == "decode"]
    if dec:
        out += ["## Decode step (H=8, K=256, V=512; state float32)", "",
                "| impl | mode | shape | µs | state GB/s | % of copy bandwidth |", "|---|---|---|---|---|---|"]
        for r in dec:
            frac = r.get("bw_frac")
            out.append(f"| {r['impl']} | {r['mode']} | {r['shape']} | {fmt(float(r['ms']) * 1e3, 1)} | "
                       f"{fmt(r.get('GBps') or float('nan'), 0)} | "
                       f"{fmt(100 * float(frac), 0) + '%' if frac not in (None, '') else '—'} |")
        out.append("")
    var = [r for r in rows if r["section"] == "varchunks"]
    if var:
        out += ["## Passage-aligned variable chunks (B=4, H=8, K=256, V=512, T=16384)", "",
                "| layout | ms |", "|---|---|"]
        out += [f"| {r['mode']} ({r.get('chunks', '')} chunks) | {fmt(float(r['ms']), 3)} |" for r in var]
        out.append("")
    sw = [r for r in rows if r["section"] == "sweep"]
    if sw:
        out += ["## Tile configurations tried (--sweep; B=4, T=8192, H=8, or H=16 at K=V=128)", "",
                "| scan | configuration | median ms | registers, spills, shared bytes |", "|---|---|---|---|"]
        out += [f"| {r['mode']} | {r['shape']} | {fmt(float(r['ms']), 4)} | {r.get('regs') or ''} |" for r in sw]
        out.append("")
    cp = [r for r in rows if r["section"] == "copy"]
    if cp:
        out.append(f"Device copy bandwidth (read + write): {float(cp[0]['GBps']):.0f} GB/s.")
    chk = [r for r in rows if r["section"] == "check"]
    if chk:
        bad = [r for r in chk if str(r.get("passed")) not in ("True", "true")]
        out.append(f"Correctness checks against the float32 reference: {len(chk) - len(bad)}/{len(chk)} passed"
                   + (f" (failed: {', '.join(r['mode'] for r in bad)})" if bad else "") + ".")
    return "\n".join(out) + "\n"


def plot(rows, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        say("matplotlib missing: no plot")
        return
    shapes = sorted({r["shape"] for r in rows if r["section"] == "chunk"}, reverse=True)
    if not shapes:
        sw = [r for r in rows if r["section"] == "sweep" and not r["mode"].startswith("decode")]
        if not sw:
            return
        fig, ax = plt.subplots(figsize=(8, 0.35 * len(sw) + 1.5))
        ax.barh([f"{r['mode']}  {r['shape']}" for r in sw], [float(r["ms"]) for r in sw])
        ax.invert_yaxis()
        ax.set_xlabel("median ms (B=4, T=8192)")
        ax.set_title("retention scan, tile configurations (bf16)")
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        say(f"wrote {path}")
        return
    fig, axes = plt.subplots(1, len(shapes), figsize=(6.5 * len(shapes), 4.5), squeeze=False)
    for ax, shape in zip(axes[0], shapes, strict=True):
        for impl in sorted({r["impl"] for r in rows if r["section"] == "chunk" and r["shape"] == shape}):
            for mode, style in (("fwd", "--"), ("fwd+bwd", "-")):
                pts = sorted((float(r["T"]), float(r["ms"])) for r in rows if r["section"] == "chunk"
                             and r["shape"] == shape and r["impl"] == impl and r["mode"] == mode)
                if pts:
                    ax.plot(*zip(*pts, strict=True), style, marker="o", label=f"{impl} {mode}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("T (tokens)")
        ax.set_ylabel("median ms")
        ax.set_title(f"retention, {shape}, bf16")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    say(f"wrote {path}")


def summary_table(rows):
    lines = ["", "SUMMARY (median ms)"]
    for r in rows:
        if r["section"] in ("chunk", "decode", "varchunks", "copy"):
            extra = ""
            if r.get("floor_frac"):
                extra = f" floor {100 * float(r['floor_frac']):.0f}%"
            if r.get("bw_frac"):
                extra = f" bw {100 * float(r['bw_frac']):.0f}%"
            lines.append(f"{r['section']:9s} {r['shape']:22s} T={int(float(r['T'])):6d} {r['impl']:22s} "
                         f"{r['mode']:26s} {float(r['ms']):9.4f}{extra}")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="correctness at real sizes against the fp32 reference")
    p.add_argument("--sweep", action="store_true", help="try tile configurations (one process each), keep the fastest")
    p.add_argument("--bench", action="store_true", help="chunkwise fwd and fwd+bwd vs fla and SDPA")
    p.add_argument("--decode", action="store_true", help="decode step and short recurrent runs")
    p.add_argument("--varchunks", action="store_true", help="variable vs fixed chunk lengths")
    p.add_argument("--T", default="2048,4096,8192,16384,32768", help="sequence lengths for --bench")
    p.add_argument("--no-fla", action="store_true")
    p.add_argument("--no-sdpa", action="store_true")
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    p.add_argument("--plot-only", metavar="CSV", help="rebuild kernels.md and kernels.png from a CSV")
    p.add_argument("--sweep-decode", action="store_true", help="with --sweep: also decode tile settings")
    p.add_argument("--title", help="with --plot-only: heading for kernels.md")
    p.add_argument("--configs", metavar="JSON", help="tile configurations to use (as written by --sweep)")
    p.add_argument("--sweep-one", metavar="SPEC", help=argparse.SUPPRESS)
    p.add_argument("--dry-run", action="store_true", help=argparse.SUPPRESS)  # CPU, interpreter, toy sizes
    args = p.parse_args()
    global DEV, DRY
    if args.dry_run:
        os.environ["TRITON_INTERPRET"] = "1"
        DEV, DRY = "cpu", True
    if args.sweep_one:
        sweep_one(json.loads(args.sweep_one))
        return
    os.makedirs(args.out, exist_ok=True)
    if args.plot_only:
        rows = load_rows(args.plot_only)
        with open(os.path.join(args.out, "kernels.md"), "w") as f:
            f.write(markdown(rows, args.title or "from " + os.path.basename(args.plot_only)))
        plot(rows, os.path.join(args.out, "kernels.png"))
        return
    if not torch.cuda.is_available() and not DRY:
        sys.exit("kernels.py needs a CUDA device (the kernel tests run on CPU: pytest tests/test_kernels.py)")
    if not (args.check or args.sweep or args.bench or args.decode or args.varchunks):
        args.check = args.bench = args.decode = args.varchunks = True
    import triton
    device = torch.cuda.get_device_name() if not DRY else "dry run"
    meta = f"{device}, torch {torch.__version__}, triton {triton.__version__}"
    say(meta)
    if args.configs:
        from retnet.ops import triton_chunk, triton_decode
        with open(args.configs) as f:
            apply_configs(json.load(f), triton_chunk, triton_decode)
    t0 = time.time()
    bw = copy_bandwidth()
    say(f"copy bandwidth {bw / 1e9:.0f} GB/s")
    try:
        if args.sweep:
            sweep(args)
            say(f"[{time.time() - t0:.0f}s] sweep done")
        if args.check:
            check(args)
            say(f"[{time.time() - t0:.0f}s] check done")
        if args.decode:
            decode_bench(args, bw)
            say(f"[{time.time() - t0:.0f}s] decode done")
        if args.varchunks:
            varchunk_bench(args)
            say(f"[{time.time() - t0:.0f}s] varchunks done")
        if args.bench:
            main_bench(args, bw)
            say(f"[{time.time() - t0:.0f}s] bench done")
    finally:
        write_csv(ROWS, os.path.join(args.out, "kernels.csv"))
        with open(os.path.join(args.out, "kernels.md"), "w") as f:
            f.write(markdown(ROWS, meta))
        plot(ROWS, os.path.join(args.out, "kernels.png"))
        with open(os.path.join(args.out, "kernels_log.txt"), "w") as f:
            f.write("\n".join(LOG) + "\n")
        print(summary_table(ROWS))


if __name__ == "__main__":
    main()
