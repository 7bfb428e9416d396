"""Full-logit parity with flash-linear-attention's own RetNet forward (fla 0.6.0), once, on a GPU.

    python benchmarks/fla_parity_gpu.py                         # hidden 512, 4 layers, 4 heads, float32, CUDA
    python benchmarks/fla_parity_gpu.py --dtypes float32 bfloat16 --seq-len 1024

Builds a random `fla.models.RetNetForCausalLM` (fla's default fuse flags: fused gated norm, fused
SwiGLU), saves it with save_pretrained(safe_serialization=True), loads that directory with our
`RetNetForCausalLM.from_pretrained`, and compares logits:

- full sequence: fla with each retention kernel (chunk, fused_chunk, parallel) against ours in
  parallel and chunkwise form (fixed and passage-like variable chunks), on each of our backends;
- decoding: fla prefill with use_cache, then token by token with its cache, against our chunkwise
  prefill then recurrent steps;
- every result also against ours in float64 (reference backend), the closest thing to the exact
  answer, so a disagreement can be attributed (fla's Triton kernels use TF32 dots in float32).

Errors are max |a - b| and that over max |b| ("rel"). Writes a markdown report (default
benchmarks/results/fla_parity.md) and prints it.

`--device cpu` runs the same under TRITON_INTERPRET=1 at tiny sizes (set automatically): only fla's
parallel and fused_recurrent kernels run in the interpreter, so the chunk modes are skipped and the
decode prefill stays at <= 64 tokens. The CPU test suite does the same in tests/test_convert_fla.py.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"

FLA_MODES = ("chunk", "fused_chunk", "parallel")
TOLERANCE = {"float32": 2e-3, "bfloat16": 6e-2}  # ours vs fla, relative to max |logit|


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu (Triton interpreter, tiny sizes only)")
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seq-len", type=int, default=512, help="full-sequence length (> 64 so fla uses its mode)")
    p.add_argument("--prefill", type=int, default=100, help="decode test: prompt length")
    p.add_argument("--decode", type=int, default=8, help="decode test: tokens fed one at a time")
    p.add_argument("--dtypes", nargs="+", default=["float32"], choices=sorted(TOLERANCE))
    p.add_argument("--fla-modes", nargs="+", default=None, choices=FLA_MODES,
                   help="fla retention kernels for the full sequence (default: all on cuda, parallel on cpu)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="markdown report (default: benchmarks/results/"
                                                          "fla_parity.md, or fla_parity_cpu_interpret.md on cpu)")
    args = p.parse_args(argv)
    if args.device == "cpu":
        args.fla_modes = args.fla_modes or ["parallel"]
        args.prefill = min(args.prefill, 64)
    args.fla_modes = args.fla_modes or list(FLA_MODES)
    if args.out is None:
        args.out = RESULTS / ("fla_parity.md" if args.device != "cpu" else "fla_parity_cpu_interpret.md")
    return args


def _setup_interpreter() -> None:
    """Before triton/fla are imported: run kernels in the interpreter, which cannot autotune (take config 0)."""
    os.environ["TRITON_INTERPRET"] = "1"
    from triton.runtime import autotuner

    autotuner.Autotuner.prune_configs = lambda self, *a, **k: self.configs[:1]


def errors(a, b) -> tuple[float, float]:
    diff = (a.double() - b.double()).abs().max().item()
    return diff, diff / b.double().abs().max().item()


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.device == "cpu":
        _setup_interpreter()
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("CUDA is not available: run on the GPU machine, or pass --device cpu for an interpreter dry run")
        return 2
    import fla
    import triton
    from fla.models import RetNetConfig as FlaConfig
    from fla.models import RetNetForCausalLM as FlaModel

    import retnet.convert  # noqa: F401  (registers the fla format with from_pretrained)
    from retnet import RetNetForCausalLM, ops

    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    fcfg = FlaConfig(hidden_size=args.hidden, num_hidden_layers=args.layers, num_heads=args.heads,
                     vocab_size=args.vocab, fuse_cross_entropy=False)
    fla_model = FlaModel(fcfg)
    with torch.no_grad():  # weights with unit-scale activations; norm weights away from 1
        for p in fla_model.parameters():
            if p.dim() == 1:
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0.0, p.shape[1] ** -0.5)
    g = torch.Generator().manual_seed(args.seed + 1)
    ids = torch.randint(0, args.vocab, (args.batch, args.seq_len), generator=g).to(device)
    dec_ids = torch.randint(0, args.vocab, (args.batch, args.prefill + args.decode), generator=g).to(device)
    cuts = torch.randint(1, 200, (64,), generator=g).tolist()
    lengths, total = [], 0
    for c in cuts:  # passage-like variable chunk lengths summing to seq_len
        c = min(c, args.seq_len - total)
        if c <= 0:
            break
        lengths.append(c)
        total += c
    if total < args.seq_len:
        lengths.append(args.seq_len - total)

    rows: list[tuple] = []
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        fla_model.save_pretrained(tmp, safe_serialization=True)

        # The float64 truth: ours, reference backend.
        ops.set_backend("reference")
        ref64 = RetNetForCausalLM.from_pretrained(tmp, device=device, dtype=torch.float64)
        truth_full = ref64(ids, mode="parallel").logits
        truth_dec = ref64(dec_ids, mode="parallel").logits
        del ref64

        for dtype_name in args.dtypes:
            dtype = getattr(torch, dtype_name)
            fm = FlaModel.from_pretrained(tmp).to(device=device, dtype=dtype).eval()
            backends = ["reference"] + (["auto"] if device.type == "cuda" else [])

            # full sequence
            fla_full = {}
            for mode in args.fla_modes:
                for layer in fm.model.layers:
                    layer.attn.mode = mode
                fla_full[mode] = fm(ids).logits
                rows.append((dtype_name, f"fla {mode}", "—", "—", *errors(fla_full[mode], truth_full)))
            for backend in backends:
                ops.set_backend(backend)
                ours = RetNetForCausalLM.from_pretrained(tmp, device=device, dtype=dtype)
                forms = {"parallel": ours(ids, mode="parallel").logits,
                         "chunkwise 64": ours(ids, mode="chunkwise", chunk_size=64).logits,
                         f"chunkwise var ({len(lengths)} chunks)": ours(ids, mode="chunkwise",
                                                                        chunk_lengths=lengths).logits}
                for form, logits in forms.items():
                    for mode, theirs in fla_full.items():
                        rows.append((dtype_name, f"ours {form} [{backend}]", f"fla {mode}", "full",
                                     *errors(logits, theirs)))
                    rows.append((dtype_name, f"ours {form} [{backend}]", "—", "—", *errors(logits, truth_full)))

                # decoding
                for layer in fm.model.layers:
                    layer.attn.mode = "chunk" if device.type == "cuda" else "parallel"
                step = fm(dec_ids[:, : args.prefill], use_cache=True)
                theirs, cache = [step.logits], step.past_key_values
                for t in range(args.prefill, args.prefill + args.decode):
                    step = fm(dec_ids[:, t : t + 1], past_key_values=cache, use_cache=True)
                    theirs.append(step.logits)
                    cache = step.past_key_values
                theirs = torch.cat(theirs, 1)
                head = ours(dec_ids[:, : args.prefill], mode="chunkwise")
                mine, state = [head.logits], head.state
                for t in range(args.prefill, args.prefill + args.decode):
                    step = ours(dec_ids[:, t : t + 1], state=state, mode="recurrent")
                    mine.append(step.logits)
                    state = step.state
                mine = torch.cat(mine, 1)
                n = args.decode
                rows.append((dtype_name, f"ours decode [{backend}]", "fla decode", f"last {n} steps",
                             *errors(mine[:, -n:], theirs[:, -n:])))
                rows.append((dtype_name, f"ours prefill [{backend}]", "fla prefill", f"{args.prefill} tokens",
                             *errors(mine[:, :-n], theirs[:, :-n])))
                if backend == backends[0]:
                    rows.append((dtype_name, "fla decode", "—", "—", *errors(theirs, truth_dec)))
                rows.append((dtype_name, f"ours decode [{backend}]", "—", "—", *errors(mine, truth_dec)))
                del ours
            ops.set_backend("auto")
            del fm
    elapsed = time.time() - started

    worst = {}
    for dtype_name, a, b, _, _, rel in rows:
        if a.startswith("ours") and b != "—":
            worst[dtype_name] = max(worst.get(dtype_name, 0.0), rel)
    verdicts = {d: ("PASS" if w <= TOLERANCE[d] else "FAIL") for d, w in worst.items()}
    if device.type == "cuda":
        dev_name = torch.cuda.get_device_name(device)
    else:
        dev_name = f"CPU ({platform.machine()}), Triton interpreter"
    command = " ".join(["python benchmarks/fla_parity_gpu.py", *(sys.argv[1:] if argv is None else argv)])
    worst_text = ", ".join(f"{d}: {w:.2e} ({verdicts[d]}, tolerance {TOLERANCE[d]:g})" for d, w in worst.items())
    lines = [
        "# Full-logit parity with flash-linear-attention's RetNet forward",
        "",
        f"Command: `{command}`",
        "",
        f"- device: {dev_name}; torch {torch.__version__}, triton {triton.__version__}, fla {fla.__version__}",
        f"- model: random fla RetNetForCausalLM, hidden {args.hidden}, {args.layers} layers, {args.heads} heads, "
        f"expand_k 1, expand_v 2, vocab {args.vocab}, fla default fuse flags (fused gated norm, fused SwiGLU); "
        "weights N(0, 1/fan_in), norm weights U(0.5, 1.5)",
        f"- inputs: batch {args.batch}, full sequence {args.seq_len} tokens; decode: prefill {args.prefill} "
        f"then {args.decode} single-token steps with each side's cache/state",
        "- error = max |a - b| over all logits; rel = error / max |b|. \"—\" in the second column: against ours "
        "in float64 (reference backend), the closest to the exact answer",
        f"- worst ours-vs-fla rel error: {worst_text}",
        f"- wall time {elapsed:.1f} s",
        "",
        "| dtype | a | b | scope | max abs error | max rel error |",
        "|---|---|---|---|---|---|",
    ]
    for dtype_name, a, b, scope, abs_err, rel in rows:
        lines.append(f"| {dtype_name} | {a} | {b if b != '—' else 'ours float64'} | "
                     f"{scope if scope != '—' else 'full' if 'decode' not in a else 'prefill+decode'} | "
                     f"{abs_err:.3e} | {rel:.3e} |")
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    print(f"wrote {args.out}")
    return 0 if all(v == "PASS" for v in verdicts.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
