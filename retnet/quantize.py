"""Int8 weights for CPU inference: the Linear layers of a loaded model, quantized in place.

Decoding one token at batch 1 reads every weight once: for SmolLM2-135M converted (147M
parameters, k/v repeated per query head) that is 590 MB of float32 per token, and the matrix
products are ~70% of a CPU decode step (the LM head alone, 49152 x 576, is 28M multiply-adds).
In int8 the same products read a quarter of the bytes and run on the CPU's integer dot-product
instructions (VNNI where the CPU has them): on the 2-core development machine decoding is ~1.5x as
fast (1 thread: ~11 -> ~17 tokens/s; 2 threads: ~18 -> ~25), the first token ~25% sooner, and the
weights take 251 MB instead of 564. What remains of a step is mostly per-operation overhead of
the ~150 small tensor operations per layer, not reading weights.

    model = RetNetForCausalLM.from_pretrained(path)
    quantize_model(model, "int8")          # every Linear of the layers and the LM head; CPU only

What is rounded, exactly (everything else runs as in the float model):

- weights, once: ``w ~ scale[row] * q``, q int8 in [-127, 127], scale = max |w[row]| / 127
  (symmetric, one scale per output channel). The embedding table stays float32 (a lookup reads one
  row), so a tied LM head gets its own int8 copy.
- each Linear's input, per call and **per token** (row): ``x ~ s * xq + z`` with xq int8 and
  s = (max - min) / 255, z = min + 128 s (asymmetric 8-bit). The product is computed in int32 by
  ``torch._int_mm`` and brought back exactly: ``y = s * scale * (xq @ q^T) + z * sum(w_row)``.
  One scale per token matters: with one scale for a whole 200-token chunk (torch's dynamic
  quantization) a single outlier token ruins the rest (KL to the float model 0.3-1.2 nats on real
  passages, against ~0.02 per token).
- norms, rotary, retention and its state, the residual stream and the logits stay float32.

Linear layers that always read the same input (q, k and v without token shift; the FFN's two input
projections) are multiplied as one stacked matrix: the input is quantized once and one product
serves all of them (fewer, larger products: ~10% of a decode step). Each member takes its columns
of a product kept by input identity and version (``_FusedProduct``); the results are those of
separate layers.

The model's fingerprint stays the float model's: a state read by the int8 model is a state of the
same model to within the rounding above, so saved sessions and states move between the two.
Quantized layers are for inference on the CPU: they take no gradient and refuse other devices;
save the float model, not a quantized one. The quality cost on real passages is measured by
``benchmarks/reader_cpu.py`` (benchmarks/results/reader_cpu.md).
"""

from __future__ import annotations

import os

import torch
from torch import Tensor, nn

QUANTIZE_CHOICES = ("auto", "none", "int8")
ENV_VAR = "RETNET_QUANTIZE"
# "auto" quantizes CPU models with at least this many parameters in Linear layers: below it a decode
# step is bound by per-operation overhead rather than by reading weights, and int8 saves little.
AUTO_MIN_LINEAR_PARAMS = 50_000_000


def quantize_weight(w: Tensor) -> tuple[Tensor, Tensor]:
    """(q int8 [out, in], scale float32 [out]) with w ~ scale[:, None] * q, symmetric per output row."""
    w = w.detach().to(torch.float32)
    scale = (w.abs().amax(dim=1) / 127.0).clamp(min=1e-12)
    q = torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return q, scale


def quantize_rows(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per-row asymmetric int8: (xq int8 [M, K], s [M, 1], z [M, 1]) with x ~ s * xq + z.

    xq = round((x - lo) / s) - 128 with lo = min(x_row), s = (max - min) / 255, so z = lo + 128 s.
    """
    # amax and amin, not aminmax: the same values, but aminmax is ~20x slower on the CPU (torch 2.13,
    # a [1432, 1536] prefill input: 2.6 ms against 0.12 ms), which made quantizing cost more than the product.
    lo, hi = x.amin(dim=-1, keepdim=True), x.amax(dim=-1, keepdim=True)
    s = (hi - lo).clamp_(min=1e-30).div_(255.0)
    xq = (x - lo).div_(s).round_().sub_(128.0).to(torch.int8)  # one temporary, rounded in place
    return xq, s, lo.add_(s, alpha=128.0)


def _int8_product(x2: Tensor, q_t: Tensor, scale: Tensor, weight_sum: Tensor) -> Tensor:
    """x2 [M, in] float32 times the int8 weight whose transpose is q_t [in, out]: [M, out] float32."""
    xq, s, z = quantize_rows(x2)
    acc = torch._int_mm(xq, q_t)  # int32 [M, out]: sum_k xq[m, k] q[n, k], exact
    # x w^T ~ (s xq + z) (scale q)^T = s scale (xq q^T) + z sum_k(scale q[n, k]), in place on one buffer:
    # 2-4x faster than addcmul over the [M, out] outer products (s * scale, z * weight_sum) in prefill
    out = acc.to(torch.float32).mul_(s).mul_(scale)
    return out.addr_(z[:, 0], weight_sum)


class _Int8Weight:
    """Int8 weights [out, in] with per-row scales and the rows' sums, and the transposed view _int_mm reads."""

    def __init__(self, weight: Tensor):
        if weight.dim() != 2:
            raise ValueError(f"Int8Linear needs a 2-d weight, got shape {tuple(weight.shape)}")
        if weight.device.type != "cpu":
            raise ValueError(f"int8 weights are for CPU inference; this weight is on {weight.device}")
        self.q, self.scale = quantize_weight(weight)
        self.sum = self.q.sum(dim=1, dtype=torch.int32).float() * self.scale
        self.q_t = self.q.t()

    def product(self, x2: Tensor) -> Tensor:
        return _int8_product(x2, self.q_t, self.scale, self.sum)


class _FusedProduct(_Int8Weight):
    """Sibling Int8Linear layers that read the same input, multiplied as one stacked matrix.

    A member called with input x computes every member's product at once (one quantization of x, one
    matrix product, one rescale) and keeps it, keyed by x's identity and version (the entry holds x,
    so its identity cannot be reused meanwhile); each sibling then takes its columns from it, once.
    A member called with another input computes the whole product again: correct, only slower, and
    not what happens in RetNet's layers (see _fused_groups).
    """

    def __init__(self, weights: list[Tensor]):
        super().__init__(torch.cat([w.detach() for w in weights]))
        self.bounds = []
        start = 0
        for w in weights:
            self.bounds.append((start, start + w.shape[0]))
            start += w.shape[0]
        self.entry: tuple | None = None  # (input, its version, product, members served), replaced whole

    def product_for(self, member: int, x: Tensor, x2: Tensor) -> Tensor:
        entry = self.entry  # read once: another thread may replace it meanwhile
        if entry is not None and entry[0] is x and entry[1] == x._version and member not in entry[3]:
            entry[3].add(member)
            return entry[2]
        y = self.product(x2)
        self.entry = (x, x._version, y, {member})
        return y


class Int8Linear(nn.Module):
    """A bias-free Linear with int8 weights (per output row) and per-token int8 inputs (float32 in and out).

    ``weight_int8`` [out, in], ``weight_scale`` [out] and ``weight_sum`` [out] (sum of the row's
    dequantized weights, for the inputs' zero point) are buffers, so ``state_dict`` shows them; for
    members of a fused group they are views of the group's stacked tensors.
    """

    def __init__(self, weight: Tensor | None = None, *, group: _FusedProduct | None = None, member: int = 0):
        super().__init__()
        if (weight is None) == (group is None):
            raise ValueError("give Int8Linear a weight or a fused group, not both")
        self._weight = _Int8Weight(weight) if group is None else group
        self._group, self._member = group, member
        start, stop = group.bounds[member] if group is not None else (0, self._weight.q.shape[0])
        self._columns = slice(start, stop)
        self.out_features, self.in_features = stop - start, self._weight.q.shape[1]
        self.register_buffer("weight_int8", self._weight.q[start:stop])
        self.register_buffer("weight_scale", self._weight.scale[start:stop])
        self.register_buffer("weight_sum", self._weight.sum[start:stop])

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype != torch.float32:
            raise TypeError(f"Int8Linear takes float32 inputs, got {x.dtype}")
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        if self._group is None:
            y = self._weight.product(x2)
        else:
            y = self._group.product_for(self._member, x, x2)[:, self._columns]
        return y.reshape(*lead, self.out_features)

    def dequantized(self) -> Tensor:
        """The float32 weight this layer computes with."""
        return self.weight_int8.float() * self.weight_scale[:, None]

    def extra_repr(self) -> str:
        fused = ", fused with its siblings" if self._group is not None else ""
        return f"in_features={self.in_features}, out_features={self.out_features}, int8{fused}"


_available: bool | None = None


def int8_available() -> bool:
    """Whether this torch build multiplies int8 matrices on the CPU (``torch._int_mm``)."""
    global _available
    if _available is None:
        try:
            a = torch.tensor([[1, -2, 3, 4] * 2], dtype=torch.int8)
            out = torch._int_mm(a, a.t())
            _available = out.dtype == torch.int32 and int(out[0, 0]) == 60
        except (AttributeError, RuntimeError, NotImplementedError):
            _available = False
    return _available


def linear_parameters(model: nn.Module) -> int:
    """Weights the model's Linear layers read per token (a tied LM head counts: it is read again)."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))


def resolve(choice: str | None, model: nn.Module) -> str:
    """"none" or "int8" for ``choice`` ("auto", "none", "int8"; None reads RETNET_QUANTIZE, default "auto").

    "auto" picks int8 for a float32 model on the CPU with >= AUTO_MIN_LINEAR_PARAMS weights in Linear
    layers (the converted SmolLM2 reader: decoding ~1.5x faster, see benchmarks/results/reader_cpu.md) and
    float otherwise (the 17M reader, GPU models). "int8" off the CPU or without the kernel is an error.
    """
    if choice is None:
        choice = os.environ.get(ENV_VAR, "auto") or "auto"
    if choice not in QUANTIZE_CHOICES:
        raise ValueError(f"unknown quantization {choice!r}; choose one of {QUANTIZE_CHOICES}")
    if choice == "none" or quantization_of(model) == "int8":
        return "none"
    weight = next(model.parameters())
    on_cpu = weight.device.type == "cpu"
    if choice == "auto":
        big = linear_parameters(model) >= AUTO_MIN_LINEAR_PARAMS
        return "int8" if on_cpu and big and weight.dtype == torch.float32 and int8_available() else "none"
    if not on_cpu:
        raise ValueError(f"int8 quantization is for CPU inference; this model is on {weight.device}")
    if not int8_available():
        raise RuntimeError("this torch build cannot multiply int8 matrices on the CPU (torch._int_mm); "
                           "use quantize='none'")
    return "int8"


def _fused_groups(model: nn.Module) -> dict[str, tuple[_FusedProduct, int]]:
    """Linear layers of RetNet's layers that always read one input tensor (retnet.layers.
    same_input_projections), fused: name -> (group, member)."""
    from .layers import same_input_projections

    fused = {}
    for name, module in model.named_modules():
        attrs = same_input_projections(module)
        linears = [(a, getattr(module, a)) for a in attrs if isinstance(getattr(module, a, None), nn.Linear)]
        if len(linears) < 2 or any(m.bias is not None for _, m in linears):
            continue
        group = _FusedProduct([m.weight for _, m in linears])
        for i, (a, _) in enumerate(linears):
            fused[f"{name}.{a}" if name else a] = (group, i)
    return fused


@torch.no_grad()
def quantize_model(model: nn.Module, choice: str | None = "int8") -> nn.Module:
    """Quantize ``model`` in place (see the module docstring) and return it; "none" (or "auto" deciding
    against it) leaves it as it is. Every bias-free ``nn.Linear`` becomes an ``Int8Linear``; the model's
    fingerprint stays that of the float model."""
    if resolve(choice, model) == "none":
        return model
    fingerprint = model.fingerprint() if hasattr(model, "fingerprint") else None
    targets = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    for name, m in targets:
        if m.bias is not None:
            raise ValueError(f"{name} has a bias; Int8Linear only replaces bias-free Linear layers")
    fused = _fused_groups(model)
    for name, m in targets:
        parent, _, attr = name.rpartition(".")
        group, member = fused.get(name, (None, 0))
        layer = Int8Linear(group=group, member=member) if group is not None else Int8Linear(m.weight)
        setattr(model.get_submodule(parent) if parent else model, attr, layer)
    if fingerprint is not None:
        model.fingerprint = lambda: fingerprint  # the float model's (see the module docstring)
    model.quantization = "int8"
    return model


def quantization_of(model: nn.Module) -> str:
    """"int8" for a model quantized by quantize_model, else "none"."""
    return getattr(model, "quantization", "none")


__all__ = ["QUANTIZE_CHOICES", "Int8Linear", "quantize_model", "quantize_weight", "quantize_rows", "resolve",
           "int8_available", "quantization_of", "linear_parameters"]
