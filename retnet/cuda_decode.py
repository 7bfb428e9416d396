"""Decoding one token through every layer with static buffers, captured once in a CUDA graph.

Eager decoding of a RetNet is bound by per-token Python and kernel-launch overhead (issue 15: 48 ms a
token for the 1.3B shape on an H200, against a memory floor of ~0.7 ms). The fix, as in gpt-fast, is to
run the whole single-token step, all layers and the LM head, as one CUDA graph: the state and the
inputs live in buffers allocated once, and each token is a copy into them and one graph replay.

Two parts, kept apart so that what runs in the graph is exactly what runs eagerly:

- ``decode_step``: the math. One token [B] through embedding, every layer and the LM head, updating
  the state buffers **in place** (the Triton decode kernel on CUDA, the reference on the CPU) and
  returning the logits [B, vocab]. It is the model's recurrent form for T = 1, written over the
  model's own modules (norms, projections, FFN); tests compare it with ``model(..., mode="recurrent")``.
  Differences from the model's code path, none of which changes a value: rotary angles are computed
  once per step instead of once per layer, and the state is updated in place.
- ``GraphDecoder``: the buffers and the capture. ``step(tokens, mask)`` copies the tokens in and
  replays the graph (CUDA), or calls ``decode_step`` on the same buffers (``use_graph=False``, and
  always on the CPU): the eager fallback.

``retnet.generation.DecodeLoop`` uses a ``GraphDecoder`` automatically when the model is on a CUDA
device (``decoder_for``); ``RETNET_CUDA_GRAPH=0`` in the environment, ``configure(enabled=False)`` or
``cuda_graph=False`` switch it off. The state may be kept in float32 (default) or bfloat16
(``state_dtype``, ``RETNET_DECODE_STATE=bfloat16``): the update always computes in float32.

Sharing. A decoder is cached per (model, batch size, state dtype), so the graph is captured once and
reused by every later generation. Its buffers hold one sequence batch at a time: the loop reading next
"owns" them. The state a loop hands out (``DecodeLoop.state``) is a ``RetentionState`` whose tensors
are the buffers themselves while its loop owns them (so it is live: clone() it to keep a snapshot);
when another loop takes the buffers over, that state's tensors are first copied out (``_evict``), so
a state object never shows another sequence's data. Padding rows (a ``mask``) use a second graph.

Capture constraints honoured by ``decode_step``: no host synchronisation, no allocation that depends
on data, no device copies of constants (they are made before capture, in ``StepPlan``).

Fused projections. Each decoder first lays out every layer's q, k, v and gate weights as one matrix,
and the FFN's two input projections as another (``retnet.fused_projections``, in place: the model's
parameters become views of the fused buffers, values and names unchanged), so a layer reads its
weights in four matrix-vector products instead of eight: at batch 1 each product pays a fixed latency
before it streams at full bandwidth. ``fuse=False``, ``configure(fuse=False)`` or
``RETNET_DECODE_FUSE=0`` keep the separate products.

Batch-1 products on a GPU go through a Triton matrix-vector kernel (``retnet.ops.triton_gemv``) that
streams each weight once: cuBLAS runs the 1.3B shape's 16 MB output and down projections as split-K
GEMMs at ~1.8 TB/s, the kernel at ~2.7 TB/s (cold, in a graph; benchmarks/results/gemv_h200_sweep.md).
Larger batches keep cuBLAS, which wins from B = 2 on the fused matrices. ``gemv=False``,
``configure(gemv=False)`` or ``RETNET_DECODE_GEMV=0`` keep cuBLAS at batch 1 too.

``GraphDecoder(..., compile=True)`` (``decoder_for(..., compile=True)``; for every automatic decoder
``RETNET_DECODE_COMPILE=1`` or ``configure(compile=True)``) runs the step through torch.compile before
capturing it, which fuses the many small elementwise kernels of each layer (norms, rotary, gate). On an
H200 at the 1.3B shape that takes batch-1 decoding from 2.98 to 1.36 ms a token, but the first step
compiles for ~20 s (4 s with a warm compile cache), once per batch size and process, so it is off by
default: worth it for a server, not for one question (benchmarks/results/decode_gemv_h200.md).
"""

from __future__ import annotations

import os
import threading
import weakref
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from . import ops
from .fused_projections import FusedLayer, fuse_projections, is_plain_linear
from .state import RetentionState

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def _env_flag(name: str, default: str) -> bool:
    return os.environ.get(name, default) not in ("0", "", "false", "off")


_enabled = _env_flag("RETNET_CUDA_GRAPH", "1")
_state_dtype_name = os.environ.get("RETNET_DECODE_STATE", "float32")
if _state_dtype_name not in _DTYPES:
    raise ValueError(f"RETNET_DECODE_STATE={_state_dtype_name!r}; choose float32 or bfloat16")
_default_state_dtype: torch.dtype = _DTYPES[_state_dtype_name]
_compile = _env_flag("RETNET_DECODE_COMPILE", "0")
_fuse = _env_flag("RETNET_DECODE_FUSE", "1")
_gemv = _env_flag("RETNET_DECODE_GEMV", "1")
MAX_CACHED = 2  # decoders kept per model (each holds a batch's state and a graph)


def configure(enabled: bool | None = None, state_dtype: torch.dtype | str | None = None,
              compile: bool | None = None, fuse: bool | None = None, gemv: bool | None = None) -> None:
    """Switch the automatic CUDA-graph decode on or off, pick the default decode state dtype, whether
    automatic decoders compile their step (torch.compile) before capturing it, whether they fuse
    same-input projections (retnet.fused_projections) and whether batch-1 products use the Triton
    matrix-vector kernel (retnet.ops.triton_gemv); both on by default."""
    global _enabled, _default_state_dtype, _compile, _fuse, _gemv
    if enabled is not None:
        _enabled = bool(enabled)
    if compile is not None:
        _compile = bool(compile)
    if fuse is not None:
        _fuse = bool(fuse)
    if gemv is not None:
        _gemv = bool(gemv)
    if state_dtype is not None:
        _default_state_dtype = resolve_state_dtype(state_dtype)


def resolve_state_dtype(state_dtype: torch.dtype | str | None) -> torch.dtype | None:
    if state_dtype is None or isinstance(state_dtype, torch.dtype):
        if state_dtype not in (None, torch.float32, torch.bfloat16, torch.float64):
            raise ValueError(f"decode state dtype must be float32 or bfloat16, got {state_dtype}")
        return state_dtype
    if state_dtype not in _DTYPES:
        raise ValueError(f"decode state dtype must be float32 or bfloat16, got {state_dtype!r}")
    return _DTYPES[state_dtype]


# -- the math -------------------------------------------------------------------------------------------


@dataclass
class StepPlan:
    """Per-model constants of the step, on the model's device, made once (never during a capture)."""

    log_decays: list[Tensor]  # per layer [H], in the compute dtype
    inv_freq: Tensor  # [K/2] float64
    in_place_kernel: bool  # ops.retention_step updates the state itself (Triton) for any state dtype
    fused: list[FusedLayer] | None = None  # per layer, one matrix per group of same-input projections
    gemv: bool = False  # batch-1 products through the Triton matrix-vector kernel (CUDA)


def step_plan(model, fuse: bool = False, gemv: bool = False) -> StepPlan:
    """The step's constants; with `fuse`, the model's same-input projections are first laid out as one
    matrix each (retnet.fused_projections: in place, values unchanged); with `gemv` on a CUDA model,
    batch-1 products use the Triton matrix-vector kernel."""
    weight = model.embed.weight
    dt = ops.reference.compute_dtype(weight)
    device = weight.device
    layers = [block.retention for block in model.layers]
    probe = torch.empty(0, 0, 0, model.config.head_k_dim, device=device, dtype=weight.dtype)  # device and K
    return StepPlan([attn._log_decay.on(device).to(dt) for attn in layers], layers[0]._inv_freq.on(device),
                    ops._resolve(None, probe) == "triton", fuse_projections(model) if fuse else None,
                    gemv and device.type == "cuda")


def _linear(x: Tensor, weight: Tensor, gemv: bool) -> Tensor:
    """F.linear(x, weight), through the Triton matrix-vector kernel when `gemv` (batch 1 on a GPU)."""
    if gemv:
        from .ops.triton_gemv import linear_small_batch

        return linear_small_batch(x, weight)
    return F.linear(x, weight)


def _apply(module, x: Tensor, gemv: bool) -> Tensor:
    """module(x); a plain bias-free nn.Linear through `_linear` (quantized or adapted layers run as they are)."""
    if gemv and is_plain_linear(module):
        return _linear(x, module.weight, gemv)
    return module(x)


def _projections(attn, fused: FusedLayer | None, xq: Tensor, xk: Tensor, xv: Tensor, h: Tensor, gemv: bool):
    """q, k, v and the gate's pre-activation (None without a gate): one product when fused."""
    if fused is not None and fused.attention is not None:
        parts = _linear(h, fused.attention, gemv).split(fused.attention_split, dim=-1)
        return (*parts, None) if len(parts) == 3 else parts
    g = _apply(attn.g_proj, h, gemv) if attn.g_proj is not None else None
    return _apply(attn.q_proj, xq, gemv), _apply(attn.k_proj, xk, gemv), _apply(attn.v_proj, xv, gemv), g


def _ffn(ffn, fused: FusedLayer | None, x: Tensor, gemv: bool) -> Tensor:
    """GatedFFN.forward, with its two input projections as one product when fused."""
    if fused is None or fused.ffn is None:
        a, b = _apply(ffn.act_proj, x, gemv), _apply(ffn.lin_proj, x, gemv)
    else:
        a, b = _linear(x, fused.ffn, gemv).split(fused.ffn_split, dim=-1)
    return _apply(ffn.down_proj, ffn.activation(a) * b, gemv)


def _rotate(x: Tensor, cos: Tensor, sin: Tensor, style: str) -> Tensor:
    """retnet.rotary.apply_rotary with the angles' cos and sin given (computed once per step)."""
    if style == "interleaved":
        a, b = x[..., 0::2], x[..., 1::2]
        return torch.stack((a * cos - b * sin, b * cos + a * sin), dim=-1).flatten(-2)
    a, b = x.chunk(2, dim=-1)
    return torch.cat((a * cos - b * sin, b * cos + a * sin), dim=-1)


def _retention_update(q: Tensor, k: Tensor, v: Tensor, log_decay: Tensor, state: Tensor, mask: Tensor | None,
                      in_place_kernel: bool) -> Tensor:
    """S <- gamma S + k^T v on `state` in place; returns o = q S [B, 1, H, V] in q's dtype.

    Without padding this is ops.retention_step (the Triton decode kernel on CUDA, the same kernel the
    recurrent form runs). Padded rows (mask False) keep their state exactly, as in the reference: their
    decay is 1 and their k, v are zero; that, and a bfloat16 state on the reference backend, compute in
    float32 and copy the result back.
    """
    dt, out_dtype = ops.reference.compute_dtype(q), q.dtype
    if mask is None and (in_place_kernel or state.dtype == dt):
        return ops.retention_step(q, k, v, log_decay, state)
    q, k, v = q[:, 0].to(dt), k[:, 0].to(dt), v[:, 0].to(dt)
    g = log_decay[None, :].expand(q.shape[0], -1)
    if mask is not None:
        k = k * mask[:, None, None]
        v = v * mask[:, None, None]
        g = g * mask[:, None]
    new = state.to(dt) * g.exp()[:, :, None, None] + k[..., :, None] * v[..., None, :]
    state.copy_(new)
    return torch.einsum("bhk,bhkv->bhv", q, new)[:, None].to(out_dtype)


def decode_step(model, plan: StepPlan, tokens: Tensor, layers: list[Tensor], offsets: Tensor,
                last_inputs: list[Tensor] | None = None, mask: Tensor | None = None, update=None) -> Tensor:
    """Read tokens [B] into the state buffers in place; return the next-token logits [B, vocab].

    `layers` [B, H, K, V] per layer, `offsets` [B] (tokens read so far), `last_inputs` [B, hidden] per
    layer (token shift only) are updated in place. Rows where `mask` [B] is False are padding: their
    state, offset and last input stay as they were (their logits are computed but mean nothing).
    Equal to ``model(tokens[:, None], state, mode="recurrent", attention_mask=mask[:, None])``.
    `update` replaces ``_retention_update`` (the compiled step routes it through a custom op).
    """
    update = update or _retention_update
    cfg = model.config
    B = tokens.shape[0]
    H, K, V = cfg.num_heads, cfg.head_k_dim, cfg.head_v_dim
    gemv = plan.gemv and B == 1  # from B = 2 cuBLAS is as fast or faster (benchmarks/results/gemv_h200.md)
    x = model.embed(tokens[:, None])
    if cfg.embed_scale != 1.0:
        x = x * cfg.embed_scale
    dt = ops.reference.compute_dtype(x)
    positions = offsets[:, None] if mask is None else offsets[:, None] + mask.long()[:, None] - 1
    angles = positions.to(torch.float64)[..., None] * plan.inv_freq  # [B, 1, K/2]
    cos, sin = angles.cos().to(dt)[:, :, None, :], angles.sin().to(dt)[:, :, None, :]
    for i, block in enumerate(model.layers):
        attn = block.retention
        h = block.retention_norm(x)
        xq = xk = xv = h
        if cfg.token_shift:
            last = last_inputs[i]
            x_prev = last.to(h.dtype)[:, None]
            delta = x_prev - h
            xq, xk, xv = (h + mu.to(h.dtype) * delta for mu in (attn.shift_q, attn.shift_k, attn.shift_v))
            now = h[:, 0] if mask is None else torch.where(mask[:, None], h[:, 0], x_prev[:, 0])
            last.copy_(now.to(last.dtype))
        fused = plan.fused[i] if plan.fused is not None else None
        q, k, v, g = _projections(attn, fused, xq, xk, xv, h, gemv)
        q, k, v = q.reshape(B, 1, H, K).to(dt), k.reshape(B, 1, H, K).to(dt), v.reshape(B, 1, H, V)
        if cfg.qk_scale_on == "k":
            k = k * K**-0.5
        else:
            q = q * K**-0.5
        q = _rotate(q, cos, sin, cfg.rotary_style).to(v.dtype)
        k = _rotate(k, cos, sin, cfg.rotary_style).to(v.dtype)
        o = update(q, k, v, plan.log_decays[i], layers[i], mask, plan.in_place_kernel)
        o = attn.out_norm(o.to(dt)).reshape(B, 1, H * V)
        if g is not None:
            o = o * F.silu(g.to(o.dtype))
        x = x + _apply(attn.o_proj, o.to(h.dtype), gemv)
        x = x + _ffn(block.ffn, fused, block.ffn_norm(x), gemv)
    offsets.add_(1 if mask is None else mask.long())
    return _apply(model.lm_head, model.final_norm(x), gemv)[:, 0]


# -- buffers, capture, replay ---------------------------------------------------------------------------


def _weights_key(model) -> tuple:
    """Where every weight lives: a captured graph reads these addresses, so a change means re-capture."""
    return tuple(t.data_ptr() for t in (*model.parameters(), *model.buffers()))


class GraphDecoder:
    """Static state/input buffers of one batch size and the captured ``decode_step`` over them.

    ``step(tokens, mask=None)`` -> logits [B, vocab] (a buffer the next step overwrites). The graph
    is captured at the first step of each kind (with and without padding) on CUDA; with
    ``use_graph=False`` or on the CPU, ``decode_step`` runs eagerly on the same buffers.
    """

    def __init__(self, model, batch_size: int, state_dtype: torch.dtype | None = None, use_graph: bool = True,
                 compile: bool = False, fuse: bool = True, gemv: bool = True):
        cfg = model.config
        self.plan = step_plan(model, fuse=fuse, gemv=gemv)  # before the weights' key: fusing may move them (once)
        weight = model.embed.weight
        self.device = weight.device
        dt = ops.reference.compute_dtype(weight)
        self.state_dtype = state_dtype or dt
        self.batch_size = batch_size
        self.use_graph = use_graph and self.device.type == "cuda"
        self._model = weakref.ref(model)
        self.weights_key = _weights_key(model)
        B = batch_size
        with torch.no_grad():
            self.tokens = torch.zeros(B, dtype=torch.long, device=self.device)
            self.mask = torch.ones(B, dtype=torch.bool, device=self.device)
            self.offsets = torch.zeros(B, dtype=torch.long, device=self.device)
            self.layers = [torch.zeros(B, cfg.num_heads, cfg.head_k_dim, cfg.head_v_dim, dtype=self.state_dtype,
                                       device=self.device) for _ in range(cfg.num_layers)]
            self.last_inputs = ([torch.zeros(B, cfg.hidden_size, dtype=dt, device=self.device)
                                 for _ in range(cfg.num_layers)] if cfg.token_shift else None)
        self._fn = _compiled_step() if compile else decode_step
        self._graphs: dict[bool, tuple[torch.cuda.CUDAGraph, Tensor]] = {}
        self.lock = threading.RLock()  # one thread at a time steps, samples from or takes over the buffers
        self._owner: RetentionState | None = None  # the handed-out state backed by these buffers
        self._owner_loop = None  # weakref to the loop that owns them (its logits are our buffer)

    @property
    def model(self):
        model = self._model()
        if model is None:
            raise RuntimeError("the model of this GraphDecoder is gone")
        return model

    def _run(self, masked: bool) -> Tensor:
        return self._fn(self.model, self.plan, self.tokens, self.layers, self.offsets, self.last_inputs,
                        self.mask if masked else None)

    @torch.no_grad()
    def step(self, tokens: Tensor, mask: Tensor | None = None) -> Tensor:
        """Read tokens [B] (rows where `mask` is False as padding); return the logits [B, vocab]."""
        self.tokens.copy_(tokens, non_blocking=True)
        masked = mask is not None
        if masked:
            self.mask.copy_(mask, non_blocking=True)
        if not self.use_graph:
            return self._run(masked)
        if masked not in self._graphs:
            self._capture(masked)
        graph, logits = self._graphs[masked]
        graph.replay()
        return logits

    def _capture(self, masked: bool, preserve: bool = True) -> None:
        """Warm up (Triton compiles, cuBLAS picks kernels) on a side stream, then capture. Warm-up runs
        change the buffers, so (with `preserve`) the state is saved first and put back afterwards."""
        saved = [t.clone() for t in self._buffers()] if preserve else []
        with torch.cuda.device(self.device):
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(2):
                    self._run(masked)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                logits = self._run(masked)
            for t, s in zip(self._buffers() if preserve else [], saved, strict=True):
                t.copy_(s)
        self._graphs[masked] = (graph, logits)

    def _buffers(self) -> list[Tensor]:
        return [self.tokens, self.mask, self.offsets, *self.layers, *(self.last_inputs or [])]

    # -- ownership ---------------------------------------------------------------------------------------
    def load(self, state: RetentionState) -> None:
        """Copy a state into the buffers."""
        cfg = self.model.config
        state.check_layout(cfg)
        if state.batch_size != self.batch_size:
            raise ValueError(f"state holds {state.batch_size} sequences, this decoder {self.batch_size}")
        for buf, t in zip(self.layers, state.layers, strict=True):
            buf.copy_(t, non_blocking=True)
        self.offsets.copy_(state.offsets, non_blocking=True)
        for buf, t in zip(self.last_inputs or [], state.last_inputs or [], strict=True):
            buf.copy_(t, non_blocking=True)

    def acquire(self, loop) -> None:
        """Make the buffers hold `loop`'s state (``loop.state``); afterwards ``loop.state`` is backed by
        them. Whoever owned them before gets its state (and logits) copied out first."""
        current = loop.state
        if current is self._owner and current is not None:
            return
        self._evict()
        if self.use_graph and False not in self._graphs:
            self._capture(False, preserve=False)  # before loading: nothing to save, no second copy of the state
        self.load(current)
        view = RetentionState(list(self.layers), self.offsets, current.fingerprint,
                              list(self.last_inputs) if self.last_inputs is not None else None)
        loop.state = view
        self._owner, self._owner_loop = view, weakref.ref(loop)

    def _evict(self) -> None:
        view, self._owner = self._owner, None
        loop = self._owner_loop() if self._owner_loop is not None else None
        self._owner_loop = None
        if view is not None:
            view.layers = [t.clone() for t in self.layers]
            view.offsets = self.offsets.clone()
            if self.last_inputs is not None:
                view.last_inputs = [t.clone() for t in self.last_inputs]
        if loop is not None and loop._logits_static:
            loop.logits = loop.logits.clone()
            loop._logits_static = False


def _compiled_step():
    """decode_step under torch.compile (elementwise work fused into few kernels), with the unpadded
    in-place retention update as an opaque custom op (dynamo does not trace into the Triton launcher).
    Optional (``compile=True``): compiling the 24-layer step takes a while, once per batch size."""
    global _COMPILED
    if _COMPILED is None:
        op = _register_retention_op()

        def update(q, k, v, log_decay, state, mask, in_place_kernel):
            if mask is None:
                return op(q, k, v, log_decay, state, in_place_kernel)
            return _retention_update(q, k, v, log_decay, state, mask, in_place_kernel)

        def step(model, plan, tokens, layers, offsets, last_inputs=None, mask=None):
            return decode_step(model, plan, tokens, layers, offsets, last_inputs, mask, update=update)

        _COMPILED = torch.compile(step, dynamic=False)
    return _COMPILED


_COMPILED = None
_RETENTION_OP = None


def _register_retention_op():
    global _RETENTION_OP
    if _RETENTION_OP is None:
        @torch.library.custom_op("retnet_rag::retention_update", mutates_args=("state",))
        def retention_update(q: Tensor, k: Tensor, v: Tensor, log_decay: Tensor, state: Tensor,
                             in_place_kernel: bool) -> Tensor:
            return _retention_update(q, k, v, log_decay, state, None, in_place_kernel).contiguous()

        @retention_update.register_fake
        def _(q, k, v, log_decay, state, in_place_kernel):
            return q.new_empty(v.shape)

        _RETENTION_OP = retention_update
    return _RETENTION_OP


# -- which decoder a loop uses --------------------------------------------------------------------------

# model -> {(batch, dtype, compile, fuse, gemv): decoder}
_cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_cache_lock = threading.Lock()


def wants_decoder(model, cuda_graph: bool | None) -> bool:
    """Whether a DecodeLoop over `model` should use a GraphDecoder: `cuda_graph` True/False forces it
    (True on the CPU runs the eager fallback); None means "when the model is on CUDA and it is enabled".
    Only a model that computes its logits with its own layers qualifies (a subclass overriding forward,
    e.g. a test's scripted model, keeps the plain path)."""
    from .model import RetNetForCausalLM

    if cuda_graph is False:
        return False
    plain = isinstance(model, RetNetForCausalLM) and type(model).forward is RetNetForCausalLM.forward
    if cuda_graph is True:
        if not plain:
            raise ValueError("cuda_graph=True needs a RetNetForCausalLM that does not override forward")
        return True
    return plain and _enabled and model.embed.weight.device.type == "cuda"


def decoder_for(model, batch_size: int, state_dtype: torch.dtype | str | None = None,
                compile: bool | None = None) -> GraphDecoder:
    """The cached GraphDecoder of `model` for this batch size and state dtype (made on first use).
    The state dtype defaults to float32 (``configure``); a float64 model (tests) keeps float64.
    ``compile`` None: as configured (``RETNET_DECODE_COMPILE``, ``configure(compile=...)``; off by default)."""
    compile = _compile if compile is None else bool(compile)
    dtype = resolve_state_dtype(state_dtype) or _default_state_dtype
    if ops.reference.compute_dtype(model.embed.weight) == torch.float64 and state_dtype is None:
        dtype = torch.float64
    with _cache_lock:
        per_model = _cache.setdefault(model, {})
        key = (batch_size, dtype, compile, _fuse, _gemv)
        dec = per_model.get(key)
        if dec is not None and dec.weights_key != _weights_key(model):
            dec = None  # weights moved (reloaded, .to()): the graph would read stale addresses
        if dec is None:
            dec = GraphDecoder(model, batch_size, dtype, compile=compile, fuse=_fuse, gemv=_gemv)
        per_model.pop(key, None)
        per_model[key] = dec  # most recently used last
        while len(per_model) > MAX_CACHED:
            per_model.pop(next(iter(per_model)))
        return dec


def release(model) -> None:
    """Forget the cached decoders of `model` (their graphs and buffers are freed once no loop or
    handed-out state uses them)."""
    with _cache_lock:
        _cache.pop(model, None)
