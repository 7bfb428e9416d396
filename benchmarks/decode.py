"""Decode speed and memory: the 1.3B-shape RetNet against a same-shape Transformer (issue 15, part 2).

    PYTHONPATH=. python benchmarks/decode.py                            # on the GPU, ~4 minutes
    PYTHONPATH=. python benchmarks/decode.py --contexts 2k 8k --batches 1 16 max --steps 16
    PYTHONPATH=. python benchmarks/decode.py --quick --device cpu       # tiny shapes: a smoke test
    python benchmarks/decode.py --plot benchmarks/results/decode_h200.json   # redraw the figure only

Models (random weights, bf16): RetNet ``RetNetConfig.from_preset("1.3b")`` (hidden 2048, 24 layers,
8 heads, K=256, V=512, FFN 4096; the paper's 1.3B) and a Llama of the same vocabulary, width and depth
(16 heads of 128, multi-head attention, SwiGLU width matched so that the parameter counts agree to 1%;
``benchmarks/llama_baseline.py``).

What runs:
- RetNet: ``retnet.generation.DecodeLoop``, the loop ``generate`` and the app run, with its CUDA-graph
  step (``retnet/cuda_decode.py``, fused projections), decode state in float32 and in bfloat16. At
  batch 1 and the first context: an "eager" row (the plain per-layer path, ``cuda_graph=False``) shows
  what the graph removes, an "unfused" row (q, k, v, gate and the FFN inputs as separate products)
  what fusing them gains, a "cuBLAS" row (batch-1 products through cuBLAS instead of the Triton
  matrix-vector kernel, ``retnet/ops/triton_gemv.py``) what that kernel gains; ``--compile`` adds the
  step under torch.compile: as by default, with cuBLAS products, and unfused.
- Transformer: our own gpt-fast-style loop (no torch.compile): a static KV cache of context + steps
  slots per layer, the single-token step of all layers captured in one CUDA graph, attention over the
  cache as split-K matmuls ("flash-decoding" in tensor ops) or SDPA with a mask; both are timed at
  every point and the faster one is reported (its name is in the table). Not HF ``generate``.
- Both sample greedily with ``retnet.generation.next_token`` outside the graph, one token per step for
  every row, as a user's loop does.

The context is set up, not prefilled: the RetNet starts from a random state whose position counter
says `context` tokens were read, the Transformer from a KV cache holding `context` random keys and
values. Decode cost depends on sizes, not on values (prefill speed is ``benchmarks/prefill.py``).

Per point: ms per token (wall clock over `--steps` tokens after `--warmup`, sampling included),
"graph ms" (graph replays alone), tokens/s (batch / ms per token), and the peak of allocated
memory during those steps (weights + state or cache + the step's buffers). The memory floor per
token is (weight bytes + state bytes read and written, or + cache bytes read) / copy bandwidth,
with the copy bandwidth measured in the same run. `max` in --batches is the largest batch the
memory fits by estimate; a batch that runs out of memory is recorded as OOM.

Writes OUT/NAME.md, OUT/NAME.json (after every point, so a killed run keeps what it measured) and
OUT/NAME.png (Figure 6 style: latency vs context, throughput vs batch, memory vs context; needs
matplotlib, else redraw elsewhere with --plot). ``--profile`` adds OUT/NAME_profile.txt: GPU kernel time
of 20 steps of the default batch-1 RetNet decoder (and the compiled one with --compile), by kind of
kernel and per kernel (``kernel_profile.py``), where to look before changing the step.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import time
import traceback
from pathlib import Path

import torch
from kernel_profile import profile_kernels
from llama_baseline import KVCache, Llama, LlamaDecoder, llama_like

from retnet import RetNetConfig, RetNetForCausalLM, cuda_decode
from retnet.generation import DecodeLoop, SamplingConfig, generate, next_token, prefill

ROOT = Path(__file__).resolve().parents[1]
GB = 1e9
QUICK_RETNET = dict(vocab_size=512, hidden_size=64, num_layers=2, num_heads=2, head_k_dim=32, head_v_dim=64,
                    ffn_dim=128)


def parse_size(text: str) -> int:
    text = text.lower()
    return int(float(text[:-1]) * 1024) if text.endswith("k") else int(text)


class Clock:
    def __init__(self, device: torch.device):
        self.device = device

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def now(self) -> float:
        self.sync()
        return time.perf_counter()


def copy_bandwidth(device: torch.device) -> float:
    """Bytes per second of a device-to-device copy (read + write), the memory roofline's bandwidth."""
    n = (1 << 28) if device.type == "cuda" else (1 << 22)
    a = torch.empty(n, dtype=torch.float32, device=device)
    b = torch.empty_like(a)
    clock = Clock(device)
    b.copy_(a)
    t0 = clock.now()
    for _ in range(10):
        b.copy_(a)
    return 2 * a.numel() * 4 * 10 / (clock.now() - t0)


def reset_peak(device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_bytes(device) -> int | None:
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None  # not tracked on the CPU


def free_bytes(device) -> int:
    if device.type != "cuda":
        return 1 << 34
    free, _ = torch.cuda.mem_get_info(device)
    return free


def cleanup(device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def weight_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def time_loop(sample, read, steps: int, warmup: int, clock: Clock) -> float:
    for _ in range(warmup):
        read(sample())
    t0 = clock.now()
    for _ in range(steps):
        read(sample())
    return (clock.now() - t0) / steps


# -- correctness first: the graph paths against the eager ones, on the benchmark's own models ----------


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-30)).item()


@torch.no_grad()
def check_retnet(model, device) -> dict:
    """generate() with the CUDA-graph step (fp32 and bf16 state) against the plain per-layer path:
    tokens equal, logits and states close. Reported, not asserted (bf16 weights, random model)."""
    ids = torch.randint(0, model.config.vocab_size, (2, 40), device=device)
    out = {}
    plain, s_plain = generate(model, ids, max_new_tokens=8, cuda_graph=False)
    for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        fast, s_fast = generate(model, ids, max_new_tokens=8, cuda_graph=True, state_dtype=dtype)
        same = bool(torch.equal(plain, fast))
        out[f"state {name}: tokens equal"] = same
        # After different tokens the states differ by construction: compare them only for the same tokens
        # (benchmarks/bf16_gpu_check.py compares a bf16 state step by step on the same tokens).
        out[f"state {name}: state rel err"] = max(rel(a, b) for a, b in zip(s_fast.layers, s_plain.layers,
                                                                             strict=True)) if same else None
    logits, state = prefill(model, ids, None)
    step = model(plain[:, :1], state=state, mode="recurrent")
    loop = DecodeLoop(model, logits, state, SamplingConfig(), cuda_graph=True)
    loop.read(plain[:, 0])
    out["first step logits rel err (graph vs eager)"] = rel(loop.logits, step.logits[:, -1])
    del loop
    cuda_decode.release(model)
    return out


@torch.no_grad()
def check_llama(model, device) -> dict:
    """The static-cache decode step (graph, both attentions) against the full forward's logits."""
    ids = torch.randint(0, model.config.vocab_size, (2, 24), device=device)
    full = model(ids)
    out = {}
    for impl in ("split", "sdpa"):
        cache = KVCache(model, 2, 512)
        model.prefill(ids[:, :16], cache)
        dec = LlamaDecoder(model, cache, impl)
        errs = [rel(dec.step(ids[:, t]), full[:, t]) for t in range(16, 24)]
        out[f"{impl}: decode vs forward logits rel err"] = max(errs)
    return out


# -- RetNet ---------------------------------------------------------------------------------------------


def retnet_point(model, context: int, batch: int, state_dtype, args, clock: Clock, graph: bool = True,
                 compile: bool = False, fuse: bool = True, gemv: bool = True) -> dict:
    device = clock.device
    cfg = model.config
    g = torch.Generator(device=device).manual_seed(batch)
    state = model.new_state(batch, device)
    for t in state.layers:
        t.normal_(0, 0.02, generator=g)  # a state that has read `context` tokens: random, of the right size
    state.offsets.fill_(context)
    logits = torch.randn(batch, cfg.vocab_size, device=device, generator=g)
    sampling = SamplingConfig(max_new_tokens=1 << 30)
    loop = DecodeLoop(model, logits, state, sampling, cuda_graph=graph, state_dtype=state_dtype)
    if graph and (compile or not fuse or not gemv):  # not the default decoder: build it by hand
        loop._decoder = cuda_decode.GraphDecoder(model, batch, state_dtype, compile=compile, fuse=fuse, gemv=gemv)
    t0 = clock.now()
    loop.read(loop.sample())  # the first read captures the graph (and copies the state in)
    first_s = clock.now() - t0
    del state, logits
    cleanup(device)
    reset_peak(device)
    per_token = time_loop(loop.sample, loop.read, args.steps, args.warmup, clock)
    peak = peak_bytes(device)
    graph_ms = None
    dec = loop._decoder
    if dec is not None:
        tok = loop.sample()
        graph_ms = 1e3 * time_loop(lambda: tok, dec.step, args.steps, 1, clock)
    state_bytes = sum(t.numel() * t.element_size() for t in (dec.layers if dec is not None else loop.state.layers))
    floor = (weight_bytes(model) + 2 * state_bytes) / args.bandwidth
    del loop, dec
    cuda_decode.release(model)
    cleanup(device)
    name = ("retnet" + ("" if graph else " eager") + (" compiled" if compile else "") + ("" if fuse else " unfused")
            + ("" if gemv else " cuBLAS"))
    return dict(model=name, variant=f"state {str(state_dtype).replace('torch.', '')}", context=context,
                batch=batch, ms_per_token=1e3 * per_token, graph_ms=graph_ms, tokens_per_s=batch / per_token,
                peak_gb=None if peak is None else peak / GB, first_step_s=first_s, floor_ms=1e3 * floor,
                state_gb=state_bytes / GB)


def retnet_max_batch(model, state_dtype, device, args) -> int:
    cfg = model.config
    per_seq = cfg.state_bytes(1) + cfg.state_bytes(1) * torch.tensor([], dtype=state_dtype).element_size() // 4
    per_seq += cfg.vocab_size * 12  # logits, sampling buffers
    return max(1, min(args.max_batch, int((free_bytes(device) - 4 * GB) * 0.9 // per_seq)))


# -- Transformer ----------------------------------------------------------------------------------------


def llama_point(model, context: int, batch: int, impls: list[str], args, clock: Clock) -> dict:
    """Time the Transformer's graph-captured step at this point; with several attention implementations,
    a few steps of each pick the fastest, which is then timed in full."""
    device = clock.device
    cleanup(device)  # the previous point's cache and graphs
    capacity = context + args.warmup + 2 * args.steps + 8 * (len(impls) + 1)
    capacity = -(-capacity // 256) * 256
    cache = KVCache(model, batch, capacity)
    cache.fill_random(context, seed=batch)
    sampling = SamplingConfig()
    logits = {"now": torch.randn(batch, model.config.vocab_size, device=device)}
    decs, trial = {}, {}
    errors = {}
    for impl in impls:
        try:
            decs[impl] = LlamaDecoder(model, cache, impl)
            t0 = clock.now()
            decs[impl].step(next_token(logits["now"], sampling))  # captures the graph
            first_s = clock.now() - t0
            if len(impls) > 1:
                tok = next_token(logits["now"], sampling)
                trial[impl] = 1e3 * time_loop(lambda tok=tok: tok, decs[impl].step, 3, 1, clock)
        except torch.OutOfMemoryError:
            raise
        except Exception as e:  # e.g. an attention kernel that cannot be captured: try the other one
            if len(impls) == 1:
                raise
            print(f"transformer attention {impl} failed at {context} x {batch}: {type(e).__name__}: {e}", flush=True)
            errors[impl] = f"{type(e).__name__}: {str(e)[:200]}"
            decs.pop(impl, None)
            trial.pop(impl, None)
        cache.pos.fill_(context)
    if not decs:
        raise RuntimeError(f"no decode attention worked: {errors}")
    impl = min(trial, key=trial.get) if trial else next(iter(decs))
    dec = decs.pop(impl)
    decs.clear()
    logits["now"] = dec.step(next_token(logits["now"], sampling))

    def sample():
        return next_token(logits["now"], sampling)

    def read(tok):
        logits["now"] = dec.step(tok)

    cleanup(device)
    reset_peak(device)
    per_token = time_loop(sample, read, args.steps, args.warmup, clock)
    peak = peak_bytes(device)
    tok = sample()
    graph_ms = 1e3 * time_loop(lambda: tok, dec.step, args.steps, 1, clock)
    c = model.config
    read_bytes = 2 * c.num_layers * batch * c.num_kv_heads * c.head_dim * 2 * (context + args.warmup + args.steps)
    floor = (weight_bytes(model) + read_bytes) / args.bandwidth
    cache_gb = cache.nbytes / GB
    return dict(model="transformer", variant=f"attention {impl}", context=context, batch=batch,
                ms_per_token=1e3 * per_token, graph_ms=graph_ms, tokens_per_s=batch / per_token,
                peak_gb=None if peak is None else peak / GB,
                first_step_s=first_s, floor_ms=1e3 * floor, state_gb=cache_gb,
                trial_ms={k: round(v, 3) for k, v in trial.items()}, errors=errors or None)


def llama_max_batch(model, context: int, device, args) -> int:
    c = model.config
    capacity = context + args.warmup + 2 * args.steps + 8
    per_seq = 2 * c.num_layers * c.num_kv_heads * c.head_dim * 2 * capacity + c.vocab_size * 12
    per_seq += c.num_heads * capacity * 4 * 3  # scores, probabilities
    return max(1, min(args.max_batch, int((free_bytes(device) - 4 * GB) * 0.92 // per_seq)))


# -- the run --------------------------------------------------------------------------------------------


class Run:
    def __init__(self, args, meta: dict):
        self.args, self.meta, self.rows = args, meta, []
        self.start = time.perf_counter()

    def over_budget(self, share: float = 1.0) -> bool:
        """Past `share` of the time budget (the RetNet points get the first part, the Transformer the rest)."""
        budget = self.args.time_budget
        return budget is not None and time.perf_counter() - self.start > share * budget

    def add(self, row: dict) -> None:
        self.rows.append(row)
        shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}
        print(json.dumps(shown), flush=True)
        self.save()

    def save(self) -> None:
        out = self.args.out
        out.mkdir(parents=True, exist_ok=True)
        self.meta["elapsed_s"] = time.perf_counter() - self.start
        (out / f"{self.args.name}.json").write_text(json.dumps({"meta": self.meta, "rows": self.rows}, indent=1))


def attempt(run: Run, fn, *a, **kw) -> dict:
    """One measurement. Out of memory, or another error, is reported and returned as a row whose
    variant says so (ms_per_token None), not raised: one failing point should not cost the rest."""
    device = run.args.device
    try:
        return fn(*a, **kw)
    except torch.OutOfMemoryError as e:
        print(f"OOM: {fn.__name__}{a[1:3]}: {str(e).splitlines()[0]}", flush=True)
        failed = "OOM"
    except Exception:
        print(f"FAILED: {fn.__name__}{a[1:3]}:\n{traceback.format_exc()}", flush=True)
        failed = "failed: " + traceback.format_exc(limit=1).strip().splitlines()[-1][:160]
    cleanup(device)
    return dict(model="retnet" if fn is retnet_point else "transformer", variant=failed, context=a[1], batch=a[2],
                ms_per_token=None, tokens_per_s=None, peak_gb=None)


def batches_for(args, max_batch: int) -> list[int]:
    listed = sorted({b for b in args.batches if b != "max"})
    out = [b for b in listed if b <= max_batch] if "max" in args.batches else listed
    if "max" in args.batches and (not out or max_batch > out[-1]):
        out.append(max_batch)
    return out


def bench_retnet(run: Run, args, clock: Clock) -> None:
    device = clock.device
    torch.manual_seed(0)
    with torch.device(device):
        model = RetNetForCausalLM(args.retnet_config).to(args.dtype).eval()
    run.meta["retnet_parameters"] = model.num_parameters
    print(f"RetNet {model.num_parameters / 1e6:.1f}M parameters, {weight_bytes(model) / GB:.2f} GB", flush=True)
    run.meta["checks"] = checks = run.meta.get("checks", {})
    try:
        checks.update({f"retnet {k}": v for k, v in check_retnet(model, device).items()})
    except Exception:
        checks["retnet check failed"] = traceback.format_exc(limit=2)
    print("checks:", json.dumps(checks), flush=True)
    eager_row = attempt(run, retnet_point, model, args.contexts[0], 1, torch.float32,
                        argparse.Namespace(**{**vars(args), "steps": max(2, min(args.steps, 8))}), clock,
                        graph=False)
    eager_row["model"] = "retnet eager"
    run.add(eager_row)
    plans = {dt: batches_for(args, retnet_max_batch(model, dt, device, args)) for dt in args.state_dtypes}
    failed: set = set()  # state dtypes that ran out of memory (larger batches would too)
    points = [(b, dt, c) for b in sorted(set().union(*plans.values())) for dt in args.state_dtypes
              for c in args.contexts if b in plans[dt]]  # batch 1 of every dtype and context first
    for batch, state_dtype, context in points:
        if run.over_budget(args.retnet_share):
            print("time budget reached: skipping the remaining RetNet points", flush=True)
            break
        if state_dtype in failed:
            continue
        row = attempt(run, retnet_point, model, context, batch, state_dtype, args, clock)
        run.add(row)
        if row["ms_per_token"] is None:
            failed.add(state_dtype)
    for variant in (dict(fuse=False), dict(gemv=False)):  # batch 1: separate projections; cuBLAS products
        if device.type == "cuda" and not run.over_budget(args.retnet_share):
            run.add(attempt(run, retnet_point, model, args.contexts[0], 1, torch.float32, args, clock, **variant))
    if args.compile and device.type == "cuda" and not run.over_budget(args.retnet_share):
        for variant in (dict(), dict(gemv=False), dict(fuse=False)):
            try:
                row = retnet_point(model, args.contexts[0], 1, torch.float32, args, clock, compile=True, **variant)
                run.add(row)
            except Exception as e:  # compiling is optional: report, go on
                print(f"compiled RetNet step failed: {type(e).__name__}: {e}", flush=True)
    if args.profile:
        for compile in (False, True) if args.compile else (False,):
            args.profiles.append(profile_retnet_step(model, clock, compile))
    del model
    cleanup(device)


PROFILE_STEPS = 20


def profile_retnet_step(model, clock: Clock, compile: bool) -> str:
    """PROFILE_STEPS steps of the batch-1 decoder (the default one: fused projections, matrix-vector kernel,
    float32 state; compiled or not) under torch.profiler, by kind of kernel (kernel_profile.py)."""
    dec = cuda_decode.GraphDecoder(model, 1, torch.float32, compile=compile)
    token = torch.zeros(1, dtype=torch.long, device=clock.device)
    dec.step(token)  # capture (and compile) outside the profile

    def steps(dec=dec):
        for _ in range(PROFILE_STEPS):
            dec.step(token)

    title = f"retnet{' compiled' if compile else ''}, batch 1, {PROFILE_STEPS} steps"
    text = profile_kernels(title, steps, clock.device)
    del dec
    cuda_decode.release(model)
    cleanup(clock.device)
    return text


def bench_llama(run: Run, args, clock: Clock) -> None:
    device = clock.device
    torch.manual_seed(0)
    cfg = llama_like(args.retnet_config, kv_heads=args.kv_heads)
    with torch.device(device):
        model = Llama(cfg).to(args.dtype).eval()
    run.meta["transformer"] = vars(cfg) | {"parameters": model.num_parameters}
    print(f"Transformer {model.num_parameters / 1e6:.1f}M parameters: {cfg}", flush=True)
    checks = run.meta.setdefault("checks", {})
    try:
        checks.update({f"transformer {k}": v for k, v in check_llama(model, device).items()})
    except Exception:
        checks["transformer check failed"] = traceback.format_exc(limit=2)
    print("checks:", json.dumps(checks), flush=True)
    cleanup(device)
    impls = ["split", "sdpa"] if args.attn == "auto" else [args.attn]
    plans = {c: batches_for(args, llama_max_batch(model, c, device, args)) for c in args.contexts}
    # the i-th batch of every context before the (i+1)-th: batch 1 at all contexts first
    points = [(c, plans[c][i]) for i in range(max(map(len, plans.values()))) for c in args.contexts
              if i < len(plans[c])]
    failed: set = set()  # contexts where a batch ran out of memory (larger ones would too)
    for context, batch in points:
        if run.over_budget():
            print("time budget reached: skipping the remaining Transformer points", flush=True)
            break
        if context in failed:
            continue
        row = attempt(run, llama_point, model, context, batch, impls, args, clock)
        run.add(row)
        if row["ms_per_token"] is None:
            failed.add(context)
    del model
    cleanup(device)


# -- report ---------------------------------------------------------------------------------------------


def fmt(v, spec=".2f") -> str:
    return "—" if v is None else format(v, spec)


def report(data: dict) -> str:
    meta, rows = data["meta"], data["rows"]
    lines = [f"# Decode: 1.3B-shape RetNet vs same-shape Transformer ({meta.get('device_name', '?')})", "",
             f"Command: `{meta.get('command', '')}`", "",
             f"torch {meta.get('torch')}, bf16 weights (random), greedy sampling outside the graph; "
             f"copy bandwidth {meta.get('bandwidth_gbs', 0):.0f} GB/s; RetNet "
             f"{meta.get('retnet_parameters', 0) / 1e6:.0f}M parameters, Transformer "
             f"{meta.get('transformer', {}).get('parameters', 0) / 1e6:.0f}M. "
             "See the script's docstring for what each column means.", "",
             "| model | variant | context | batch | ms / token | graph ms | floor ms | tokens / s | peak GB | "
             "state or cache GB | first step s |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['variant']} | {r['context']} | {r['batch']} | {fmt(r['ms_per_token'])} | "
                     f"{fmt(r.get('graph_ms'))} | {fmt(r.get('floor_ms'))} | {fmt(r['tokens_per_s'], '.0f')} | "
                     f"{fmt(r['peak_gb'])} | {fmt(r.get('state_gb'))} | {fmt(r.get('first_step_s'))} |")
    lines += ["", *summary(rows)]
    checks = meta.get("checks", {})
    if checks:
        lines += ["", "## Checks (graph paths against eager ones, same run)", ""]
        lines += [f"- {k}: {v:.2e}" if isinstance(v, float) and not isinstance(v, bool) else f"- {k}: {v}"
                  for k, v in checks.items()]
    return "\n".join(lines) + "\n"


def _ok(rows, **want):
    return [r for r in rows if r.get("ms_per_token") is not None and all(r.get(k) == v for k, v in want.items())]


def summary(rows) -> list[str]:
    out = ["## Against the issue's targets", ""]
    ret = [r for r in _ok(rows, model="retnet")]
    tra = _ok(rows, model="transformer")
    b1 = [r for r in ret if r["batch"] == 1 and r["variant"] == "state float32"]
    if b1:
        best = min(b1, key=lambda r: r["ms_per_token"])
        share = 100 * best["floor_ms"] / best["ms_per_token"]
        out.append(f"- RetNet batch 1 (fp32 state): {best['ms_per_token']:.2f} ms/token at {best['context']} "
                   f"(target <= 1.0 ms; floor {best['floor_ms']:.2f} ms, so {share:.0f}% of the memory roofline)")
        by_ctx = {r["context"]: r["ms_per_token"] for r in b1}
        if len(by_ctx) > 1:
            lo, hi = min(by_ctx), max(by_ctx)
            out.append(f"- RetNet latency at {hi} vs {lo} context, batch 1: {by_ctx[hi] / by_ctx[lo]:.3f}x "
                       "(target within 1.05x)")
    for ctx in sorted({r["context"] for r in rows}):
        r_ctx, t_ctx = [r for r in ret if r["context"] == ctx], [r for r in tra if r["context"] == ctx]
        if r_ctx and t_ctx:
            rb, tb = max(r_ctx, key=lambda r: r["tokens_per_s"]), max(t_ctx, key=lambda r: r["tokens_per_s"])
            line = (f"- context {ctx}: best throughput RetNet {rb['tokens_per_s']:.0f} tok/s (batch {rb['batch']}, "
                    f"{rb['variant']}) vs Transformer {tb['tokens_per_s']:.0f} tok/s (batch {tb['batch']}): "
                    f"{rb['tokens_per_s'] / tb['tokens_per_s']:.1f}x")
            same = [(r, t) for r in r_ctx for t in t_ctx
                    if r["batch"] == t["batch"] and r["variant"] == "state float32" and r["peak_gb"] and t["peak_gb"]]
            if same:
                r, t = max(same, key=lambda p: p[0]["batch"])
                line += (f"; memory at batch {r['batch']}: {r['peak_gb']:.1f} vs {t['peak_gb']:.1f} GB "
                         f"({100 * (1 - r['peak_gb'] / t['peak_gb']):.0f}% less)")
            out.append(line)
    eager = _ok(rows, model="retnet eager")
    if eager and b1:
        out.append(f"- eager per-layer path (before the graph): {eager[0]['ms_per_token']:.1f} ms/token at batch 1")
    for name, what in (("retnet unfused", "graph step with separate projections (8 products a layer)"),
                       ("retnet compiled", "compiled + graph step"),
                       ("retnet compiled unfused", "compiled + graph step, separate projections")):
        row = _ok(rows, model=name)
        if row:
            out.append(f"- {what}: {row[0]['ms_per_token']:.2f} ms/token at batch 1 "
                       f"(graph alone {fmt(row[0].get('graph_ms'))} ms)")
    return out


def plot(data: dict, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"matplotlib is not installed: no {path.name}; redraw with --plot {path.with_suffix('.json')}")
        return False
    rows = [r for r in data["rows"] if r.get("ms_per_token") is not None]
    series = sorted({(r["model"], r["variant"] if r["model"].startswith("retnet") else "") for r in rows})
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    contexts = sorted({r["context"] for r in rows})
    mid = 8192 if 8192 in contexts else (contexts[len(contexts) // 2] if contexts else None)
    for model, variant in series:
        if "eager" in model:
            continue
        sel = [r for r in rows if r["model"] == model and (not variant or r["variant"] == variant)]
        label = f"{model} ({variant})" if variant else model
        b1 = sorted((r["context"], r["ms_per_token"], r["peak_gb"] or 0.0) for r in sel if r["batch"] == 1)
        if b1:
            axes[0].plot([c for c, _, _ in b1], [m for _, m, _ in b1], "o-", label=label)
            axes[2].plot([c for c, _, _ in b1], [g for _, _, g in b1], "o-", label=label)
        tb = sorted((r["batch"], r["tokens_per_s"]) for r in sel if r["context"] == mid)
        if tb:
            axes[1].plot([b for b, _ in tb], [t for _, t in tb], "o-", label=label)
    axes[0].set(xscale="log", xlabel="context (tokens)", ylabel="ms per token", title="latency, batch 1")
    axes[1].set(xscale="log", yscale="log", xlabel="batch", ylabel="tokens / s", title=f"throughput, context {mid}")
    axes[2].set(xscale="log", xlabel="context (tokens)", ylabel="peak GB", title="memory, batch 1")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Decoding: RetNet vs Transformer, {data['meta'].get('device_name', '')}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="tiny shapes and few steps (a smoke test, e.g. on the CPU)")
    ap.add_argument("--contexts", nargs="+", default=None, help="context lengths, e.g. 2k 8k 32k 128k")
    ap.add_argument("--batches", nargs="+", default=None, help="batch sizes; 'max' adds the largest that fits")
    ap.add_argument("--max-batch", type=int, default=1024, help="cap for 'max'")
    ap.add_argument("--steps", type=int, default=None, help="timed tokens per point")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--state-dtypes", nargs="+", default=["float32", "bfloat16"])
    ap.add_argument("--models", nargs="+", default=["retnet", "transformer"], choices=["retnet", "transformer"])
    ap.add_argument("--attn", default="auto", choices=["auto", "split", "sdpa"], help="Transformer decode attention")
    ap.add_argument("--kv-heads", type=int, default=None, help="Transformer key/value heads (default: all, MHA)")
    ap.add_argument("--compile", action="store_true", help="also time the RetNet step under torch.compile (batch 1)")
    ap.add_argument("--profile", action="store_true",
                    help="GPU kernel time of the batch-1 RetNet step by kind (NAME_profile.txt; "
                         "compiled too with --compile)")
    ap.add_argument("--time-budget", type=float, default=None, help="seconds; later points are skipped after it")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--name", default=None, help="output file stem (default decode_<gpu> or decode_quick)")
    ap.add_argument("--plot", type=Path, default=None, help="only redraw NAME.png and NAME.md from this json")
    args = ap.parse_args()
    if args.plot is not None:
        data = json.loads(args.plot.read_text())
        args.plot.with_suffix(".md").write_text(report(data))
        plot(data, args.plot.with_suffix(".png"))
        return
    args.device = torch.device(args.device)
    quick = args.quick
    contexts = args.contexts or (["64", "256"] if quick else ["2k", "8k", "32k", "128k"])
    batches = args.batches or (["1", "2"] if quick else ["1", "4", "16", "64", "256", "max"])
    args.contexts = [parse_size(c) for c in contexts]
    args.batches = [b if b == "max" else int(b) for b in batches]
    args.steps = args.steps or (2 if quick else 32)
    args.warmup = 1 if quick else args.warmup
    args.state_dtypes = [cuda_decode.resolve_state_dtype(d) for d in args.state_dtypes]
    args.dtype = torch.bfloat16 if args.device.type == "cuda" else torch.float32
    args.retnet_config = RetNetConfig(**QUICK_RETNET) if quick else RetNetConfig.from_preset("1.3b")
    if args.device.type == "cuda":
        device_name = torch.cuda.get_device_name(args.device)
        default_name = "decode_" + next((w.lower() for w in device_name.split() if w[:1] in "HABL" and
                                         any(ch.isdigit() for ch in w)), "gpu")
    else:
        device_name = platform.processor() or platform.machine()
        default_name = "decode_cpu"
    args.name = args.name or (default_name + ("_quick" if quick else ""))
    args.bandwidth = copy_bandwidth(args.device)
    args.retnet_share = 0.4 if "transformer" in args.models else 1.0
    meta = dict(device_name=device_name, torch=torch.__version__, bandwidth_gbs=args.bandwidth / GB,
                command=" ".join(["PYTHONPATH=. python benchmarks/decode.py", *sys.argv[1:]]),
                contexts=args.contexts, steps=args.steps,
                retnet_config=args.retnet_config.to_dict())
    run = Run(args, meta)
    args.profiles = []
    clock = Clock(args.device)
    print(f"{device_name}: copy bandwidth {args.bandwidth / GB:.0f} GB/s; contexts {args.contexts}, "
          f"batches {args.batches}", flush=True)
    if "retnet" in args.models:
        bench_retnet(run, args, clock)
    if "transformer" in args.models:
        bench_llama(run, args, clock)
    run.save()
    data = {"meta": run.meta, "rows": run.rows}
    text = report(data)
    (args.out / f"{args.name}.md").write_text(text)
    plot(data, args.out / f"{args.name}.png")
    if args.profiles:
        (args.out / f"{args.name}_profile.txt").write_text("\n".join(args.profiles))
    print(text)
    print(f"done in {time.perf_counter() - run.start:.0f} s: {args.out / args.name}.{{md,json,png}}")


if __name__ == "__main__":
    main()
