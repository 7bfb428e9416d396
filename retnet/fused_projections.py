"""One matrix for the projections that read the same input: q, k, v and the gate; the FFN's two inputs.

At batch 1 a decode step is a chain of matrix-vector products, and on a GPU each one pays a fixed
latency before it reaches the memory bandwidth: the 1.3B shape's 8-16 MB weights run at a third to a
half of the H200's copy bandwidth (benchmarks/results/decode_profile_h200.txt). Reading the four
attention projections as one 48 MB matrix, and the FFN's two input projections as one, halves the
number of products per layer and makes each large enough to stream.

``fuse_projections(model)`` lays each group's weights out back to back in one buffer and re-points the
modules' parameters at their rows of it (``param.data = view``, as FSDP does with its flat
parameters): the parameters keep their identity, values, names and state-dict entries, no weight is
stored twice, and ``load_state_dict`` writes through into the fused buffer. The fused matrix itself
is a view over the same memory. Calling it again on a fused model finds the existing layout and moves
nothing, so graphs captured over the first layout stay valid.

Only plain bias-free ``nn.Linear`` projections of one dtype and device are fused (a quantized or
adapter-wrapped layer keeps its own modules); q, k and v only without token shift, where they read the
same input.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .layers import same_input_projections


@dataclass
class FusedLayer:
    """A layer's fused matrices (views over its parameters' memory) and how to split their outputs."""

    attention: Tensor | None  # [q + k + v (+ g) rows, hidden]: q_proj, k_proj, v_proj, g_proj stacked
    attention_split: list[int]
    ffn: Tensor | None  # [2 * ffn_dim, hidden]: act_proj then lin_proj
    ffn_split: list[int]


def is_plain_linear(module) -> bool:
    """A bias-free nn.Linear itself (not a subclass: quantized or adapter-wrapped layers have their own
    products): its output is F.linear(x, module.weight), whatever computes that product."""
    return type(module) is nn.Linear and module.bias is None


def _plain(modules: list) -> bool:
    """Whether these are plain linear layers (is_plain_linear) of one dtype and device, one input width."""
    if not modules or not all(is_plain_linear(m) for m in modules):
        return False
    w0 = modules[0].weight
    return all(m.weight.dtype == w0.dtype and m.weight.device == w0.device and m.weight.shape[1] == w0.shape[1]
               for m in modules)


def _adjacent_view(weights: list[Tensor]) -> Tensor | None:
    """The stacked matrix as a view, if these weights already lie back to back in one storage."""
    first = weights[0]
    storage = first.untyped_storage().data_ptr()
    end = first.data_ptr()
    for w in weights:
        if not w.is_contiguous() or w.untyped_storage().data_ptr() != storage or w.data_ptr() != end:
            return None
        end += w.numel() * w.element_size()
    rows = sum(w.shape[0] for w in weights)
    return first.as_strided((rows, first.shape[1]), (first.shape[1], 1))


@torch.no_grad()
def _fuse(modules: list[nn.Linear]) -> tuple[Tensor, list[int]]:
    weights = [m.weight for m in modules]
    split = [w.shape[0] for w in weights]
    fused = _adjacent_view(weights)
    if fused is None:
        fused = torch.cat([w.detach() for w in weights])
        start = 0
        for m, rows in zip(modules, split, strict=True):
            m.weight.data = fused[start:start + rows]
            start += rows
    return fused, split


def _fuse_group(module: nn.Module) -> tuple[Tensor | None, list[int]]:
    """The module's same-input projections (retnet.layers.same_input_projections) fused, if all are plain."""
    group = [getattr(module, a) for a in same_input_projections(module)]
    return _fuse(group) if _plain(group) else (None, [])


def fuse_projections(model) -> list[FusedLayer]:
    """Fuse every layer's same-input projections in place (see the module docstring); per layer, the
    fused matrices or None where a group cannot be fused."""
    return [FusedLayer(*_fuse_group(block.retention), *_fuse_group(block.ffn)) for block in model.layers]
