"""Training step on the GPU: the Triton retention kernels against the PyTorch reference.

    python benchmarks/train_backends.py --config training/configs/default.json --out benchmarks/results

Checks that the loss and every weight gradient agree between the two backends (float32, one
random batch), then times a bf16 training step (forward + backward) with each. Needs CUDA.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from retnet import ops
from retnet.model import RetNetForCausalLM
from training.trainer import LMLoss, TrainConfig


def loss_and_grads(model, tokens, mask, backend: str, autocast: bool):
    ops.set_backend(backend)
    model.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
        loss = LMLoss(model, 512)(tokens, mask)
    loss.backward()
    return loss.detach(), {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def step_seconds(model, tokens, mask, backend: str, repeats: int = 10) -> float:
    for _ in range(3):
        loss_and_grads(model, tokens, mask, backend, True)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        loss_and_grads(model, tokens, mask, backend, True)
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="training/configs/default.json")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--length", type=int, default=4096)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    a = ap.parse_args()
    torch.manual_seed(0)
    cfg = TrainConfig.from_json(a.config).model_config()
    model = RetNetForCausalLM(cfg).cuda()
    # awkward sizes for the exactness check: a length that is not a multiple of the kernels' tile
    check_tokens = torch.randint(0, cfg.vocab_size, (3, 1001), device="cuda")
    check_mask = torch.rand(check_tokens.shape, device="cuda") < 0.5
    ref_loss, ref_grads = loss_and_grads(model, check_tokens, check_mask, "reference", False)
    tri_loss, tri_grads = loss_and_grads(model, check_tokens, check_mask, "triton", False)
    worst = max(((tri_grads[n] - g).norm() / g.norm().clamp_min(1e-30)).item() for n, g in ref_grads.items())
    tokens = torch.randint(0, cfg.vocab_size, (a.batch, a.length + 1), device="cuda")
    mask = torch.ones_like(tokens, dtype=torch.bool)
    seconds = {b: step_seconds(model, tokens, mask, b) for b in ("reference", "triton")}
    n_tok = a.batch * a.length
    rows = [f"| {b} | {s * 1e3:.1f} | {n_tok / s / 1e3:.0f} |" for b, s in seconds.items()]
    report = "\n".join([
        f"# Training step, {torch.cuda.get_device_name()}, {model.num_parameters / 1e6:.1f}M RetNet, "
        f"batch {a.batch} x {a.length}, bf16 autocast",
        "", f"Command: `python benchmarks/train_backends.py --config {a.config}`", "",
        f"fp32 check on a [3, 1001] batch: loss reference {ref_loss.item():.6f}, triton {tri_loss.item():.6f}; "
        f"worst relative gradient difference over {len(ref_grads)} weights: {worst:.2e}", "",
        "| backend | ms / step | k tokens / s |", "|---|---:|---:|", *rows,
        "", f"Triton speed-up: {seconds['reference'] / seconds['triton']:.2f}x"])
    print(report)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "train_backends.md").write_text(report + "\n")
    (a.out / "train_backends.json").write_text(json.dumps({"seconds": seconds, "loss": [ref_loss.item(),
                                                           tri_loss.item()], "worst_grad_rel": worst}))
    if worst > 5e-2:  # tf32 dots inside the kernels bound the agreement in float32
        raise SystemExit(f"gradients disagree: {worst:.2e}")


if __name__ == "__main__":
    main()
