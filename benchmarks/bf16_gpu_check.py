"""bf16 on the GPU kernels (issue 15): logits against float64, and where a bf16 decode state drifts.

    PYTHONPATH=. python benchmarks/bf16_gpu_check.py [--out DIR]

1. The issue's own model shape (random, hidden 512, 4 layers, 4 heads of K=128 / V=256, unit-scale
   weights as in tests/retnet/test_bf16.py) in bf16 on CUDA, every form, at 64 / 128 / 512 tokens,
   against the float64 model on the CPU reference: max |Δlogit| / max |logit| and the norm ratio.
   The bar is fla's own bf16 error, ~0.04-0.05.
2. The decode state: one random bf16 model, prefill 40 tokens, then 8 steps through the GraphDecoder
   with a float32 and a bf16 state, graph on and off, against the plain eager step: the state's
   relative error after loading and after each step, so a fault shows where it starts.
Writes bf16_gpu_check.md / .json (printed too).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from retnet import RetNetConfig, RetNetForCausalLM, cuda_decode, ops
from retnet.generation import prefill


def rels(got: torch.Tensor, want: torch.Tensor) -> tuple[float, float]:
    got, want = got.double().cpu(), want.double().cpu()
    return ((got - want).abs().max() / want.abs().max()).item(), ((got - want).norm() / want.norm()).item()


def unit_scale_model(seed: int) -> RetNetForCausalLM:
    torch.manual_seed(seed)
    cfg = RetNetConfig(vocab_size=1000, hidden_size=512, num_layers=4, num_heads=4, head_k_dim=128, head_v_dim=256,
                       ffn_dim=768, rotary_style="half", rotary_grid="power", qk_scale_on="q")
    model = RetNetForCausalLM(cfg)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0.0, p.shape[1] ** -0.5)
    return model.double().eval()


@torch.no_grad()
def logits_check(device: str) -> list[dict]:
    ref = unit_scale_model(0)
    low = RetNetForCausalLM(ref.config)
    low.load_state_dict(ref.state_dict())
    low = low.to(device=device, dtype=torch.bfloat16).eval()
    rows = []
    for T in (64, 128, 512):
        ids = torch.randint(0, 1000, (1, T), generator=torch.Generator().manual_seed(T))
        want = ref(ids, mode="parallel").logits
        for mode in ("parallel", "chunkwise", "recurrent"):
            mx, nr = rels(low(ids.to(device), mode=mode).logits, want)
            rows.append({"tokens": T, "mode": mode, "max_rel": mx, "norm_rel": nr})
            print(json.dumps(rows[-1]), flush=True)
    return rows


@torch.no_grad()
def state_check(device: str) -> list[dict]:
    torch.manual_seed(1)
    cfg = RetNetConfig(vocab_size=1000, hidden_size=512, num_layers=4, num_heads=4, head_k_dim=128, head_v_dim=256,
                       ffn_dim=768)
    model = RetNetForCausalLM(cfg).to(device=device, dtype=torch.bfloat16).eval()
    ids = torch.randint(0, 1000, (2, 40), device=device)
    _, state = prefill(model, ids, None)
    steps = torch.randint(0, 1000, (8, 2), device=device)
    plain = state.clone()
    plain_states = []
    for t in steps:  # the eager recurrent form, float32 state
        _, plain = model(t[:, None], state=plain, mode="recurrent")
        plain_states.append(plain.clone())
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        for graph in (False, True):
            dec = cuda_decode.GraphDecoder(model, 2, dtype)
            dec.use_graph = graph and dec.device.type == "cuda"
            dec.load(state)
            row = {"state": str(dtype).split(".")[-1], "graph": dec.use_graph,
                   "after_load": max(rels(b.float(), a.float())[1] for a, b in zip(state.layers, dec.layers,
                                                                                  strict=True))}
            errs = []
            for t, want in zip(steps, plain_states, strict=True):
                dec.step(t)
                errs.append(max(rels(b.float(), a.float())[1] for a, b in zip(want.layers, dec.layers, strict=True)))
            row["per_step"] = errs
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device", file=sys.stderr)
        return 2
    result = {"backend": ops._resolve(None, torch.zeros(1, 1, 1, ops.MIN_TRITON_K, device=args.device)),
              "device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
              "logits": logits_check(args.device), "state": state_check(args.device)}
    lines = [f"# bf16 on {result['device']} (backend {result['backend']})", "",
             "Command: `PYTHONPATH=. python benchmarks/bf16_gpu_check.py`", "",
             "| tokens | form | max rel | norm rel |", "|---:|---|---:|---:|"]
    lines += [f"| {r['tokens']} | {r['mode']} | {r['max_rel']:.3f} | {r['norm_rel']:.3f} |" for r in result["logits"]]
    lines += ["", "Decode state vs the eager float32 recurrent form (norm rel, worst layer):", "",
              "| state | graph | after load | after steps 1..8 |", "|---|---|---:|---|"]
    lines += [f"| {r['state']} | {r['graph']} | {r['after_load']:.1e} | "
              + " ".join(f"{e:.1e}" for e in r["per_step"]) + " |" for r in result["state"]]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bf16_gpu_check.md").write_text("\n".join(lines) + "\n")
    (args.out / "bf16_gpu_check.json").write_text(json.dumps(result, indent=1))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
