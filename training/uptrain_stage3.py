"""Stage 3 of the SmolLM2 uptraining: a reading fine-tune from the stage-2 adapter.

    python -m training.uptrain_stage3 --config training/uptrain_stage3_h200.json --gguf PATH \
        --adapter data/build/uptrain/adapter_stage2 --data data/build/uptrain/reading --out OUT

Each step: a batch of ChatML reading rows (`training.reading_data`; cross-entropy on the assistant
tokens only, the loss mask) plus a batch of plain text windows distilled from the teacher
(KL + `ce_weight` x CE, as in stage 2), weighted by `text_weight`, so the model learns to read
without forgetting. LoRA + output norms train; the decays stay frozen (the Triton kernels run).
Training stops at `steps` or when `--total-seconds` (the whole run) minus `reserve_s` is reached.

Stage 4 is this script again from the shipped stage-3 reader (`--adapter data/readers/...`,
`--tag stage4`, `training/uptrain_stage4_h200.json`): a `horizon_floor` gives the longest-memory heads
of every layer long horizons again, then reading rows and text windows of 2,048 tokens teach the
model to use them.

Evaluation before and after, everything teacher-forced on held-out sessions from the corpus' eval
split (so it is cheap and batched): answer-token accuracy and cross-entropy; exact match (every
answer token and the closing <|im_end|> is the argmax, i.e. what greedy decoding would write);
refusal accuracy on unanswerable turns; false refusals (the refusal sentence is the greedy
continuation of an answerable turn); by turn number and by kind. The teacher (softmax, same base
weights) is scored the same way once. Plus held-out text CE/KL and greedy answers on a few
samples and on stage 2's RAG prompts. Results land in --out (metrics.json, log.txt, adapter_<tag>/).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from retnet.io import atomic_directory
from training.adapter import apply_horizon_floor, load_adapter, save_adapter
from training.softmax_teacher import teacher_forward
from training.uptrain import (
    TokenStream,
    distill_loss,
    greedy,
    held_out,
    lr_factor,
    make_optimizer,
    optimizer_step,
    record_step,
    set_decay_trainable,
)

DEFAULTS = {
    "reading_batch": 8, "text_batch": 6, "text_len": 1024, "text_weight": 1.0, "ce_weight": 0.2,
    "steps": 100000, "lr": 3e-4, "lr_norm": 1e-3, "warmup": 20, "reserve_s": 80, "eval_rows": 32,
    "eval_batch": 16, "max_new_tokens": 48, "sample_new_tokens": 32, "crop": 0, "eval_limit": 0,
    "teacher_greedy": True, "train_decay": False, "dtype": "bfloat16", "seed": 0,
    "horizon_floor": None,  # per layer, the i-th shortest-memory head gets >= horizon_floor[i] tokens
    "save_every_s": 120,  # a lent GPU can go away mid-run: keep the newest adapter on disk
}


# -- data ---------------------------------------------------------------------------------------------

class ReadingRows:
    """Packed reading rows [N, L] with their loss masks; batches without replacement, epoch by epoch."""

    def __init__(self, rows: np.ndarray, mask: np.ndarray, seed: int, crop: int = 0):
        if crop:
            rows, mask = rows[:, :crop], mask[:, :crop]
        self.rows = torch.from_numpy(rows.astype(np.int64))
        self.mask = torch.from_numpy(mask.astype(np.bool_))
        self.gen = torch.Generator().manual_seed(seed)
        self.order, self.at, self.epochs = torch.randperm(len(self.rows), generator=self.gen), 0, 0

    def batch(self, size: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        if self.at + size > len(self.order):
            self.order, self.at = torch.randperm(len(self.rows), generator=self.gen), 0
            self.epochs += 1
        idx = self.order[self.at:self.at + size]
        self.at += size
        return self.rows[idx].to(device), self.mask[idx].to(device)


def masked_ce(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the masked target positions only (logits [B, T, V], targets/mask [B, T])."""
    if not bool(mask.any()):  # a batch with no assistant token (only possible with cropped rows)
        return logits.sum() * 0.0
    sel = logits[mask].float()
    return F.cross_entropy(sel, targets[mask])


def reading_loss(model, rows: torch.Tensor, mask: torch.Tensor, autocast) -> torch.Tensor:
    inputs, targets, m = rows[:, :-1], rows[:, 1:], mask[:, 1:]
    with autocast:
        logits, _ = model(inputs, mode="chunkwise")
    return masked_ce(logits, targets, m)


# -- evaluation ---------------------------------------------------------------------------------------

def eval_sequences(z, limit: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    off = z["eval_offsets"]
    seqs = [(torch.from_numpy(z["eval_tokens"][a:b].astype(np.int64)),
             torch.from_numpy(z["eval_labels"][a:b].astype(np.int64))) for a, b in zip(off[:-1], off[1:], strict=True)]
    return seqs[:limit] if limit else seqs


@torch.no_grad()
def turn_scores(model, seqs, autocast, device, teacher: bool, batch: int, pad: int) -> list[list[dict]]:
    """Per sequence, per assistant turn: tokens, correct argmax count, exact match, summed NLL."""
    out: list[list[dict]] = [[] for _ in seqs]
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i][0]))
    for s in range(0, len(order), batch):
        idx = order[s:s + batch]
        T = max(len(seqs[i][0]) for i in idx)
        ids = torch.full((len(idx), T), pad, dtype=torch.long)
        labs = torch.zeros((len(idx), T), dtype=torch.long)
        for r, i in enumerate(idx):
            ids[r, :len(seqs[i][0])], labs[r, :len(seqs[i][1])] = seqs[i]
        ids, labs = ids.to(device), labs.to(device)
        with autocast:
            logits = teacher_forward(model, ids[:, :-1]) if teacher else model(ids[:, :-1], mode="chunkwise").logits
        logp = F.log_softmax(logits.float(), -1)
        tgt, lab = ids[:, 1:], labs[:, 1:]
        nll = -logp.gather(-1, tgt[..., None])[..., 0]
        hit = logp.argmax(-1) == tgt
        for r, i in enumerate(idx):
            for k in range(1, int(lab[r].max()) + 1):
                sel = lab[r] == k
                n = int(sel.sum())
                c = int(hit[r][sel].sum())
                out[i].append({"tokens": n, "correct": c, "exact": c == n, "nll": float(nll[r][sel].sum())})
    return out


def summarize(scores: list[list[dict]], items: list[dict]) -> dict:
    """Aggregate turn scores into the reported numbers (see the module docstring)."""
    groups: dict[str, list[dict]] = {}

    def add(key, s):
        groups.setdefault(key, []).append(s)

    for sc, item in zip(scores, items, strict=True):
        for k, (s, t) in enumerate(zip(sc, item["turns"], strict=True), 1):
            if item["alt"]:
                add("false_refusal", s)
            elif not t["answerable"]:
                add("refusal", s)
                add(f"refusal_turn{min(k, 2)}", s)
            else:
                add("answerable", s)
                add(f"answerable_turn{min(k, 2)}", s)
                add(f"kind_{t['kind']}{'_reverse' if t['reverse'] else ''}", s)
    out = {}
    for key, ss in sorted(groups.items()):
        n_tok = sum(s["tokens"] for s in ss)
        out[key] = {"turns": len(ss), "exact": sum(s["exact"] for s in ss) / len(ss),
                    "token_acc": sum(s["correct"] for s in ss) / max(n_tok, 1),
                    "ce": sum(s["nll"] for s in ss) / max(n_tok, 1)}
    return out


def headline(summary: dict) -> dict:
    g = lambda k, f: summary.get(k, {}).get(f)  # noqa: E731
    return {"answer_exact": g("answerable", "exact"), "answer_token_acc": g("answerable", "token_acc"),
            "answer_ce": g("answerable", "ce"), "refusal_acc": g("refusal", "exact"),
            "false_refusal": g("false_refusal", "exact"), "followup_exact": g("answerable_turn2", "exact"),
            "first_turn_exact": g("answerable_turn1", "exact")}


def greedy_texts(model, tok, prompts: list[dict], max_new: int, autocast, device, teacher: bool) -> list[str]:
    stop = tok.token_to_id("<|im_end|>")
    return [tok.decode(greedy(model, torch.tensor([tok.encode(p["text"]).ids], device=device), max_new, stop,
                              teacher, autocast)) for p in prompts]


# -- main ---------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=None)
    ap.add_argument("--gguf", type=Path, required=True)
    ap.add_argument("--adapter", type=Path, required=True,
                    help="the adapter folder to start from, or a shipped delta model directory")
    ap.add_argument("--tag", default="stage3", help="names the result: adapter_<tag>/, eval_<tag> in metrics")
    ap.add_argument("--data", type=Path, required=True, help="reading.npz, reading_meta.json, text.npy, eval.npy")
    ap.add_argument("--rag", type=Path, default=None, help="stage 2's rag_prompts.json (greedy side by side)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--total-seconds", type=float, default=540.0, help="wall budget of the whole run")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    t0 = time.time()
    cfg = {**DEFAULTS, **(json.loads(args.config.read_text()) if args.config else {})}
    args.out.mkdir(parents=True, exist_ok=True)
    logf = open(args.out / "log.txt", "a")
    metrics: dict = {"config": cfg, "total_seconds_budget": args.total_seconds}

    def log(msg):
        line = f"{time.strftime('%H:%M:%S')} +{time.time() - t0:.0f}s {msg}"
        print(line, flush=True)
        logf.write(line + "\n")
        logf.flush()

    def save():
        (args.out / "metrics.json").write_text(json.dumps(metrics, indent=1, ensure_ascii=False))

    from retnet.convert.llama_gguf import from_llama_gguf, gguf_tokenizer

    torch.manual_seed(cfg["seed"])
    device = torch.device(args.device)
    dtype = getattr(torch, cfg["dtype"])
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
    model = from_llama_gguf(args.gguf)
    spec = load_adapter(model, args.adapter)
    model = model.to(device)
    # Frozen decays let the Triton kernels run; train_decay=True sends retention through the PyTorch
    # reference (the decays then train too, at lr_norm): the fallback the 2026-12-02 run needed.
    if cfg["horizon_floor"]:
        metrics["horizons"] = apply_horizon_floor(model, cfg["horizon_floor"])
    set_decay_trainable(model, cfg["train_decay"])
    tok = gguf_tokenizer(args.gguf)
    pad = tok.token_to_id("<|endoftext|>")
    metrics["device"] = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
    metrics["load_s"] = time.time() - t0
    z = np.load(args.data / "reading.npz")
    meta = json.loads((args.data / "reading_meta.json").read_text())
    items = meta["eval_items"]
    seqs = eval_sequences(z, cfg["eval_limit"])
    items = items[:len(seqs)]
    rows = ReadingRows(z["train_rows"], z["train_mask"], cfg["seed"], cfg["crop"])
    text = TokenStream(np.load(args.data / "text.npy"), cfg["text_len"], cfg["seed"])
    evals = TokenStream(np.load(args.data / "eval.npy"), cfg["text_len"], cfg["seed"]).rows(cfg["eval_rows"], device)
    samples = meta["samples"]
    rag = json.loads(args.rag.read_text()) if args.rag else []
    log(f"loaded in {metrics['load_s']:.0f} s: {len(rows.rows)} reading rows, {len(seqs)} held-out sequences")

    def evaluate(tag: str, teacher_too: bool, rag_too: bool):
        model.eval()
        t = time.time()
        res = {"text": held_out(model, evals, autocast)}
        sc = turn_scores(model, seqs, autocast, device, False, cfg["eval_batch"], pad)
        res["reading"] = summarize(sc, items)
        res["headline"] = headline(res["reading"])
        log(f"eval {tag}: text {json.dumps(res['text'])} reading {json.dumps(res['headline'])}")
        if teacher_too:
            tsc = turn_scores(model, seqs, autocast, device, True, cfg["eval_batch"], pad)
            metrics["teacher_reading"] = summarize(tsc, items)
            metrics["teacher_headline"] = headline(metrics["teacher_reading"])
            log(f"teacher reading {json.dumps(metrics['teacher_headline'])}")
        metrics[f"eval_{tag}"] = res
        save()
        res["samples"] = greedy_texts(model, tok, samples, cfg["sample_new_tokens"], autocast, device, False)
        save()
        if teacher_too and cfg["teacher_greedy"]:
            metrics["teacher_samples"] = greedy_texts(model, tok, samples, cfg["sample_new_tokens"], autocast, device,
                                                      True)
            save()
        if rag_too and rag:
            res["rag"] = greedy_texts(model, tok, rag, cfg["max_new_tokens"], autocast, device, False)
        res["eval_s"] = time.time() - t
        log(f"eval {tag} done in {res['eval_s']:.0f} s")
        save()
        model.train()

    evaluate("before", teacher_too=True, rag_too=False)

    # -- training
    opt = make_optimizer(model, cfg["lr"], cfg["lr_norm"])
    trainable = [p for p in model.parameters() if p.requires_grad]
    train_s = max(10.0, args.total_seconds - (time.time() - t0) - cfg["reserve_s"])
    metrics["train_seconds_planned"] = train_s
    log(f"training for {train_s:.0f} s")
    start, step, history, n_read, n_text = time.time(), 0, [], 0, 0
    last_save = start

    def checkpoint(final: bool = False):
        with atomic_directory(args.out / f"adapter_{args.tag}") as tmp:
            save_adapter(model, spec, tmp, dtype=torch.bfloat16,
                         info={"stage": args.tag, "steps": step, "tokens": n_read + n_text, "from": str(args.adapter),
                               "final": final})
    while step < cfg["steps"] and time.time() - start < train_s:
        progress = max(step / cfg["steps"], (time.time() - start) / train_s)
        for g in opt.param_groups:
            g["lr"] = g["base_lr"] * lr_factor(progress, step, cfg["warmup"])
        r_ids, r_mask = rows.batch(cfg["reading_batch"], device)
        loss_r = reading_loss(model, r_ids, r_mask, autocast)
        loss = loss_r
        info = {"reading_ce": loss_r.item()}
        if cfg["text_batch"]:
            t_ids = text.batch(cfg["text_batch"], device)
            loss_t, tinfo = distill_loss(model, t_ids, autocast, cfg["ce_weight"])
            loss = loss + cfg["text_weight"] * loss_t
            info.update(text_kl=tinfo["kl"], text_ce=tinfo["ce"])
            n_text += t_ids[:, :-1].numel()
        optimizer_step(opt, loss, trainable)
        step += 1
        n_read += r_ids[:, :-1].numel()
        record_step(history, args.tag, step, loss, info, start, log)
        if time.time() - last_save > cfg["save_every_s"]:
            checkpoint()
            last_save = time.time()
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall = time.time() - start
    metrics["train"] = {"steps": step, "reading_tokens": n_read, "text_tokens": n_text, "wall_s": wall,
                         "tok_per_s": (n_read + n_text) / max(wall, 1e-9), "reading_epochs": rows.epochs +
                         rows.at / len(rows.rows), "history": history}
    log(f"{args.tag}: {json.dumps({k: v for k, v in metrics['train'].items() if k != 'history'})}")
    checkpoint(final=True)
    save()
    evaluate(args.tag, teacher_too=False, rag_too=True)
    metrics["total_s"] = time.time() - t0
    save()
    log(f"done in {metrics['total_s']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
