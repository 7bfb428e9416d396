"""Language-model training for RetNet: chunkwise form, bf16 autocast, accumulation, cosine schedule,
checkpoint and resume, one GPU or several through torchrun (DDP). ``arch="transformer"`` trains the
same-size Transformer baseline (training.transformer) with everything else unchanged.

    python -m training --config train.json            # one process
    torchrun --nproc-per-node 2 -m training --config train.json

Checkpoints are a model directory (config.json + model.safetensors) plus
optimizer.safetensors and trainer_state.json, written to a temp folder and
renamed, so an interrupted save never leaves a half checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from retnet.config import RetNetConfig
from retnet.io import atomic_directory, atomic_write_text
from retnet.model import RetNetForCausalLM

from .rows import MixedBatches, TokenRows
from .transformer import TransformerConfig, TransformerForCausalLM, transformer_config_like

log = logging.getLogger(__name__)

MODEL_CLASSES = {"retnet": RetNetForCausalLM, "transformer": TransformerForCausalLM}


@dataclass
class TrainConfig:
    out_dir: str
    # arch "retnet": RetNetConfig fields, or {"preset": name, ...overrides}.
    # arch "transformer": TransformerConfig fields, or {"like_retnet": <a RetNet model spec as above>,
    # ...TransformerConfig overrides}: the Transformer of that RetNet's size (transformer_config_like).
    model: dict
    train_sources: list[tuple[str, float]]  # (npz path, weight)
    arch: str = "retnet"  # one of MODEL_CLASSES
    eval_sources: list[str] = field(default_factory=list)
    batch_size: int = 16  # per device, per micro-step
    grad_accum: int = 1
    max_steps: int = 1000
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 100
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    chunk_size: int = 128
    precision: str = "bf16"  # "bf16" (autocast on CUDA) or "fp32"
    log_every: int = 10
    eval_every: int = 200
    eval_batches: int = 20
    save_every: int = 500
    seed: int = 0
    tokenizer_file: str | None = None  # copied into each checkpoint

    def __post_init__(self) -> None:
        if self.arch not in MODEL_CLASSES:
            raise ValueError(f"TrainConfig.arch must be one of {tuple(MODEL_CLASSES)}, got {self.arch!r}")

    @classmethod
    def from_json(cls, path: str | Path) -> TrainConfig:
        data = json.loads(Path(path).read_text())
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{path}: unknown training options {unknown}")
        data["train_sources"] = [tuple(s) for s in data["train_sources"]]
        return cls(**data)

    def model_config(self) -> RetNetConfig | TransformerConfig:
        if self.arch == "retnet":
            return _retnet_config(self.model)
        spec = dict(self.model)
        like = spec.pop("like_retnet", None)
        if like is not None:
            return transformer_config_like(_retnet_config(like), **spec)
        return TransformerConfig.from_dict(spec)

    def build_model(self) -> nn.Module:
        return MODEL_CLASSES[self.arch](self.model_config())


def _retnet_config(spec: dict) -> RetNetConfig:
    spec = dict(spec)
    preset = spec.pop("preset", None)
    return RetNetConfig.from_preset(preset, **spec) if preset else RetNetConfig.from_dict(spec)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay from lr to min_lr at max_steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * progress))


class LMLoss(nn.Module):
    """Next-token cross-entropy over the positions whose target is marked in loss_mask.

    Averaged per row first, then over rows: a QA row with 30 answer tokens weighs as much as a
    text row with 2000 targets, so the mixing weights of the data sources mean what they say.
    """

    def __init__(self, model: RetNetForCausalLM, chunk_size: int):
        super().__init__()
        self.model, self.chunk_size = model, chunk_size

    def forward(self, tokens: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
        logits = self.model(tokens[:, :-1], mode="chunkwise", chunk_size=self.chunk_size).logits
        mask = loss_mask[:, 1:]
        per_token = F.cross_entropy(logits.float().transpose(1, 2), tokens[:, 1:], reduction="none")
        per_row = (per_token * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1)
        rows_with_targets = (mask.sum(dim=1) > 0).sum().clamp_min(1)
        return per_row.sum() / rows_with_targets  # a batch with no targets gives 0, not NaN


def mean_loss(per_source: dict[str, float]) -> float:
    """The headline held-out loss: every eval source weighs the same."""
    return sum(per_source.values()) / max(1, len(per_source))


class Trainer:
    def __init__(self, cfg: TrainConfig, device: str | None = None):
        self.cfg = cfg
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if device is None:
            device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        torch.manual_seed(cfg.seed)
        self.model = cfg.build_model().to(self.device)
        self.loss_fn = LMLoss(self.model, cfg.chunk_size)
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.loss_fn = nn.parallel.DistributedDataParallel(self.loss_fn, device_ids=ids)
        decay = [p for p in self.model.parameters() if p.dim() >= 2]
        no_decay = [p for p in self.model.parameters() if p.dim() < 2]
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                      {"params": no_decay, "weight_decay": 0.0}],
                                     lr=cfg.lr, betas=cfg.betas, fused=self.device.type == "cuda")
        sources = [(TokenRows.load(p), w) for p, w in cfg.train_sources]
        self.batches = MixedBatches(sources, cfg.batch_size, cfg.seed, self.rank)
        self.eval_rows = [TokenRows.load(p) for p in cfg.eval_sources]
        self.step = 0
        self.out = Path(cfg.out_dir)
        if (self.out / "last").is_dir():
            self.resume(self.out / "last")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def autocast(self):
        enabled = self.cfg.precision == "bf16" and self.device.type == "cuda"
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)

    def train(self, until: int | None = None) -> dict:
        """Train to max_steps (or stop early at step `until`, saving a checkpoint there)."""
        cfg = self.cfg
        stop = min(cfg.max_steps, until) if until is not None else cfg.max_steps
        row_length = self.batches.sources[0][0].tokens.shape[1]
        tokens_per_step = cfg.batch_size * cfg.grad_accum * self.world * (row_length - 1)
        last = {}
        start, start_step = time.perf_counter(), self.step
        while self.step < stop:
            lr = lr_at(self.step, cfg)
            for group in self.opt.param_groups:
                group["lr"] = lr
            total = 0.0
            for _ in range(cfg.grad_accum):
                tokens, mask = (t.to(self.device, non_blocking=True) for t in self.batches.next())
                with self.autocast():
                    loss = self.loss_fn(tokens, mask) / cfg.grad_accum
                loss.backward()
                total += loss.item()
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
            self.step += 1
            if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                elapsed = time.perf_counter() - start
                last = {"step": self.step, "loss": round(total, 4), "lr": lr, "grad_norm": round(float(norm), 3),
                        "tokens_per_s": round(tokens_per_step * (self.step - start_step) / max(elapsed, 1e-9))}
                start, start_step = time.perf_counter(), self.step
                self.log(last)
            if self.eval_rows and (self.step % cfg.eval_every == 0 or self.step == cfg.max_steps):
                per_source = self.evaluate_sources()
                self.log({"step": self.step, "eval_loss": round(mean_loss(per_source), 4),
                          "eval_sources": {name: round(v, 4) for name, v in per_source.items()}})
            if self.step % cfg.save_every == 0 or self.step == stop:
                self.save(self.out / "last")
        return last

    def evaluate(self) -> float:
        """Mean held-out loss over the eval sources (each source weighs the same)."""
        return mean_loss(self.evaluate_sources())

    @torch.no_grad()
    def evaluate_sources(self) -> dict[str, float]:
        """Held-out loss per eval source, keyed by file stem: a copy or recall skill shows up in its
        own source (e.g. ``text_repeat_eval``) long before it moves the mean."""
        self.model.eval()
        loss_fn = LMLoss(self.model, self.cfg.chunk_size)  # not the DDP wrapper: evaluation has no backward
        out = {}
        for path, rows in zip(self.cfg.eval_sources, self.eval_rows, strict=True):
            losses = []
            for i in range(0, min(len(rows), self.cfg.eval_batches * self.cfg.batch_size), self.cfg.batch_size):
                tokens = torch.from_numpy(rows.tokens[i:i + self.cfg.batch_size].astype("int64")).to(self.device)
                mask = torch.from_numpy(rows.loss_mask[i:i + self.cfg.batch_size]).to(self.device)
                with self.autocast():
                    losses.append(loss_fn(tokens, mask).item())
            out[Path(path).stem] = sum(losses) / max(1, len(losses))
        self.model.train()
        return out

    def log(self, record: dict) -> None:
        if not self.is_main:
            return
        log.info(json.dumps(record))
        print(json.dumps(record), flush=True)
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.out / "log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    # -- checkpoints ----------------------------------------------------------------
    def save(self, target: Path) -> None:
        if not self.is_main:
            return
        tokenizer = None
        if self.cfg.tokenizer_file:
            from tokenizers import Tokenizer

            tokenizer = Tokenizer.from_file(self.cfg.tokenizer_file)
        with atomic_directory(target) as tmp:
            self.model.save_pretrained(tmp, tokenizer=tokenizer)
            save_file(_optimizer_tensors(self.opt), str(tmp / "optimizer.safetensors"))
            state = {"step": self.step, "train_config": dataclasses.asdict(self.cfg),
                     "data_rng": self.batches.rng.bit_generator.state}
            atomic_write_text(tmp / "trainer_state.json", json.dumps(state, indent=1))

    def resume(self, source: Path) -> None:
        state = json.loads((source / "trainer_state.json").read_text())
        weights = load_file(str(source / "model.safetensors"))
        missing, unexpected = self.model.load_state_dict(weights, strict=False)
        if unexpected or [k for k in missing if not (k == "lm_head.weight" and self.model.config.tie_embeddings)]:
            raise ValueError(f"{source}: checkpoint does not match the model (missing {missing}, extra {unexpected})")
        _load_optimizer_tensors(self.opt, load_file(str(source / "optimizer.safetensors"), device=str(self.device)))
        self.step = int(state["step"])
        self.batches.rng.bit_generator.state = state["data_rng"]
        if self.is_main:
            print(f"resumed from {source} at step {self.step}", flush=True)


def _optimizer_tensors(opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """AdamW state as flat named tensors (safetensors, not pickle)."""
    out = {}
    for i, p in enumerate(p for g in opt.param_groups for p in g["params"]):
        for key, value in opt.state.get(p, {}).items():
            t = value if torch.is_tensor(value) else torch.tensor(value)
            out[f"{i}.{key}"] = t.detach().contiguous().cpu()
    return out


def _load_optimizer_tensors(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    params = [(p, g.get("fused") or g.get("capturable")) for g in opt.param_groups for p in g["params"]]
    for name, value in tensors.items():
        i, key = name.split(".", 1)
        p, step_on_device = params[int(i)]
        # Fused/capturable AdamW keeps its step counter on the parameter's device, the plain one on the CPU.
        opt.state[p][key] = value.to(p.device) if key != "step" or step_on_device else value.cpu()
