"""Training step time and memory at 8192 tokens: RetNet against a same-shape Transformer (issue 15, part 3).

    PYTHONPATH=. python benchmarks/train.py                       # on the GPU, ~1 minute
    PYTHONPATH=. python benchmarks/train.py --batch 4 --length 8192 --steps 5
    PYTHONPATH=. python benchmarks/train.py --quick --device cpu  # tiny shapes: a smoke test

Models (random weights): the 1.3B-shape RetNet (``RetNetConfig.from_preset("1.3b")``) with the Triton
chunkwise retention kernels (forward and backward), and the Llama of the same vocabulary, width and
depth (``benchmarks/llama_baseline.py``, parameters within 1%) with SDPA forced to flash attention.

Identical training setup for both: float32 master weights, bf16 autocast, AdamW (fused on CUDA),
activation checkpointing of every layer (only the layer's input is kept; the inside is recomputed in
the backward pass), and the LM loss over slices of 1024 positions, each checkpointed too, so neither
model ever holds the full-sequence logits. A step is forward + backward + optimizer step. Reported:
the median step time over --steps after --warmup steps, tokens/s (batch x length / step), and the
peak allocated memory over the timed steps. On the CPU (--quick) the two checkpointed losses are
first checked against the models' plain forward.

--compile wraps every layer of both models in torch.compile (the retention kernels are custom ops, one
opaque node each way, so each layer is one graph), to measure how much of a step is unfused elementwise
work.
--profile records one more step of each model with torch.profiler and writes OUT/NAME_profile.txt:
GPU time by kind of kernel (matrix products, retention or flash attention, the rest) and the top kernels.

Writes OUT/NAME.md and OUT/NAME.json (NAME: train_<gpu>, or train_cpu_quick; _compiled with --compile).
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from kernel_profile import profile_kernels
from llama_baseline import Llama, llama_like
from torch.utils.checkpoint import checkpoint

from retnet import RetNetConfig, RetNetForCausalLM, ops

ROOT = Path(__file__).resolve().parents[1]
GB = 1e9
QUICK_RETNET = dict(vocab_size=512, hidden_size=64, num_layers=2, num_heads=2, head_k_dim=32, head_v_dim=64,
                    ffn_dim=128)
LOSS_SLICE = 1024  # positions per slice of the loss (--loss-slice)


def retnet_hidden(model: RetNetForCausalLM, ids: torch.Tensor, ckpt: bool) -> torch.Tensor:
    """The final-norm hidden states of a training forward (chunkwise form, no incoming state), each
    layer checkpointed: RetNetForCausalLM.forward_hidden's layer loop with checkpoints around layers."""
    B, T = ids.shape
    x = model.embed(ids)
    if model.config.embed_scale != 1.0:
        x = x * model.config.embed_scale
    positions = torch.arange(T, device=ids.device).expand(B, T)
    lengths = ops.chunk_lengths_for(T, model.config.max_chunk_length)
    for layer in model.layers:
        def run(x, layer=layer):
            return layer(x, positions, None, "chunkwise", lengths, None, None)[0]

        x = checkpoint(run, x, use_reentrant=False) if ckpt else run(x)
    return model.final_norm(x)


def lm_loss(head, hidden: torch.Tensor, targets: torch.Tensor, ckpt: bool) -> torch.Tensor:
    """Mean next-token cross-entropy, computed (and, with ckpt, recomputed) one slice of positions at a time."""
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, targets.shape[1], LOSS_SLICE):
        end = min(start + LOSS_SLICE, targets.shape[1])

        def part(h, t):
            return F.cross_entropy(head(h).float().flatten(0, 1), t.flatten(), reduction="sum")

        h, t = hidden[:, start:end], targets[:, start:end]
        total = total + (checkpoint(part, h, t, use_reentrant=False) if ckpt else part(h, t))
    return total / targets.numel()


def loss_fn(name: str, model, tokens: torch.Tensor, ckpt: bool = True) -> torch.Tensor:
    ids, targets = tokens[:, :-1], tokens[:, 1:]
    layer_ckpt = ckpt and not getattr(model, "layers_checkpointed", False)  # compiled layers checkpoint themselves
    if name == "retnet":
        return lm_loss(model.lm_head, retnet_hidden(model, ids, layer_ckpt), targets, ckpt)
    return lm_loss(model.lm_head, model.forward_hidden(ids, checkpoint=layer_ckpt), targets, ckpt)


def attention_context(name: str, device: torch.device):
    """SDPA forced to flash attention for the Transformer on CUDA (an error, not a silent fallback)."""
    if name == "transformer" and device.type == "cuda":
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel([SDPBackend.FLASH_ATTENTION])
    return nullcontext()


def check_losses(name: str, model, tokens: torch.Tensor) -> float:
    """|checkpointed sliced loss - plain full-logits loss| (the quick CPU run checks it is ~0)."""
    with torch.no_grad():
        ours = loss_fn(name, model, tokens, ckpt=False)
        logits = model(tokens[:, :-1]) if name == "transformer" else model(tokens[:, :-1]).logits
        plain = F.cross_entropy(logits.float().flatten(0, 1), tokens[:, 1:].flatten())
    return abs(ours.item() - plain.item())


class CheckpointedLayer(torch.nn.Module):
    """A layer whose activations are recomputed in the backward pass (non-reentrant checkpoint)."""

    def __init__(self, layer: torch.nn.Module):
        super().__init__()
        self.layer = layer

    def forward(self, *args):
        return checkpoint(self.layer, *args, use_reentrant=False)


def compile_layers(model) -> None:
    """Each layer checkpointed, then compiled: torch.compile outside the checkpoint, so the recomputation
    runs the same compiled graph (compiling inside a non-reentrant checkpoint under autocast fails its
    recompute check: pytorch/pytorch#141896). One graph serves every layer: same code, same shapes."""
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    layers = model.layers if isinstance(model, RetNetForCausalLM) else model.model.layers
    for i, layer in enumerate(layers):
        layers[i] = torch.compile(CheckpointedLayer(layer), dynamic=False)
    model.layers_checkpointed = True


def graph_breaks() -> int:
    """Graph breaks torch.compile has met in this process so far."""
    from torch._dynamo.utils import counters

    return sum(counters["graph_break"].values())


def measure(name: str, model, args) -> dict:
    device = args.device
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    g = torch.Generator(device=device).manual_seed(0)
    tokens = torch.randint(0, model.config.vocab_size, (args.batch, args.length + 1), device=device, generator=g)
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        with attention_context(name, device), amp:
            loss = loss_fn(name, model, tokens)
        with attention_context(name, device):
            loss.backward()
        opt.step()
        return loss.detach()

    for _ in range(args.warmup):
        step()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        loss = step()
        sync(device)
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated(device) / GB if device.type == "cuda" else None
    if args.profile:
        args.profiles.append(profile_kernels(f"{name}: one step", step, device))
    sec = statistics.median(times)
    return dict(model=name, parameters=sum(p.numel() for p in model.parameters()), batch=args.batch,
                length=args.length, step_s=sec, tokens_per_s=args.batch * args.length / sec, peak_gb=peak,
                loss=float(loss), step_times=times)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build(name: str, args):
    torch.manual_seed(0)
    with torch.device(args.device):
        if name == "retnet":
            return RetNetForCausalLM(args.retnet_config).train()
        return Llama(llama_like(args.retnet_config)).train()


def report(meta: dict, rows: list[dict]) -> str:
    lines = [f"# Training step at {meta['length']} tokens: RetNet vs Transformer ({meta['device_name']})", "",
             f"Command: `{meta['command']}`", "",
             f"torch {meta['torch']}; fp32 weights, bf16 autocast (CUDA), AdamW, every layer checkpointed"
             f"{' and compiled (torch.compile)' if meta.get('compiled') else ''}, "
             f"loss in slices of {meta['loss_slice']}; RetNet on the '{meta['retnet_backend']}' retention backend, "
             f"Transformer with SDPA {'flash attention' if meta['device_name'] != 'cpu' else '(CPU)'}. "
             f"Median of {meta['steps']} steps after {meta['warmup']}.", "",
             "| model | parameters (M) | batch x length | step s | k tokens / s | peak GB |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | — | — | {r['error']} | — | — |")
            continue
        peak = "—" if r["peak_gb"] is None else f"{r['peak_gb']:.1f}"
        lines.append(f"| {r['model']} | {r['parameters'] / 1e6:.0f} | {r['batch']} x {r['length']} | "
                     f"{r['step_s']:.3f} | {r['tokens_per_s'] / 1e3:.1f} | {peak} |")
    by = {r["model"]: r for r in rows if "error" not in r}
    if "retnet" in by and "transformer" in by:
        r, t = by["retnet"], by["transformer"]
        lines += ["", f"RetNet / Transformer tokens/s: {r['tokens_per_s'] / t['tokens_per_s']:.2f}x (target >= 1.15x)"]
        if r["peak_gb"] and t["peak_gb"]:
            lines.append(f"RetNet / Transformer peak memory: {r['peak_gb'] / t['peak_gb']:.2f}x (target <= 0.9x)")
    for name, err in meta.get("checks", {}).items():
        lines.append(f"Check ({name}): checkpointed sliced loss - plain loss = {err:.2e}")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--length", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--models", nargs="+", default=["retnet", "transformer"], choices=["retnet", "transformer"])
    ap.add_argument("--loss-slice", type=int, default=None, help="positions per loss slice (default 1024)")
    ap.add_argument("--compile", action="store_true", help="torch.compile every layer of both models")
    ap.add_argument("--profile", action="store_true", help="profile one step of each model (NAME_profile.txt)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--name", default=None)
    args = ap.parse_args()
    args.profiles = []
    args.device = torch.device(args.device)
    quick = args.quick
    args.batch = args.batch or 2
    args.length = args.length or (128 if quick else 8192)
    global LOSS_SLICE
    LOSS_SLICE = args.loss_slice or (48 if quick else LOSS_SLICE)
    args.steps = args.steps or (2 if quick else 5)
    args.warmup = 1 if quick else args.warmup
    args.retnet_config = RetNetConfig(**QUICK_RETNET) if quick else RetNetConfig.from_preset("1.3b")
    cuda = args.device.type == "cuda"
    device_name = torch.cuda.get_device_name(args.device) if cuda else "cpu"
    gpu = next((w.lower() for w in device_name.split() if w[:1] in "HABL" and any(c.isdigit() for c in w)), "gpu")
    args.name = args.name or ((f"train_{gpu}" if cuda else "train_cpu") + ("_quick" if quick else "")
                              + ("_compiled" if args.compile else ""))
    probe = torch.empty(1, 1, 1, ops.MIN_TRITON_K, device=args.device)  # the backend of wide heads
    meta = dict(device_name=device_name, torch=torch.__version__, length=args.length, batch=args.batch,
                steps=args.steps, warmup=args.warmup, command=" ".join(["PYTHONPATH=. python benchmarks/train.py",
                                                                         *sys.argv[1:]]),
                retnet_backend=ops._resolve(None, probe), platform=platform.platform(), checks={},
                loss_slice=LOSS_SLICE, compiled=args.compile)
    rows = []
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.models:
        model = build(name, args)
        print(f"{name}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters", flush=True)
        if not cuda:
            small = torch.randint(0, model.config.vocab_size, (2, 2 * LOSS_SLICE + 11), device=args.device)
            meta["checks"][name] = check_losses(name, model, small)
            if meta["checks"][name] > 1e-4:
                raise SystemExit(f"{name}: the checkpointed loss differs from the plain loss by {meta['checks'][name]}")
        if args.compile:
            compile_layers(model)
        breaks_before = graph_breaks()
        try:
            row = measure(name, model, args)
        except torch.OutOfMemoryError as e:
            row = dict(model=name, error="OOM: " + str(e).splitlines()[0][:80])
        if args.compile:  # a break inside a checkpointed layer runs that whole layer eagerly: say so
            row["graph_breaks"] = graph_breaks() - breaks_before
            if row["graph_breaks"]:
                print(f"{name}: {row['graph_breaks']} graph breaks (TORCH_LOGS=graph_breaks shows where)", flush=True)
        print(json.dumps({k: v for k, v in row.items() if k != "step_times"}), flush=True)
        rows.append(row)
        del model
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
        (args.out / f"{args.name}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    text = report(meta, rows)
    (args.out / f"{args.name}.md").write_text(text)
    if args.profiles:
        (args.out / f"{args.name}_profile.txt").write_text("\n".join(args.profiles))
    print(text)


if __name__ == "__main__":
    main()
