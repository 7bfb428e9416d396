"""The source Transformer, computed from a converted model's own weights: the teacher for uptraining.

A model converted by `retnet.convert.llama_gguf` holds the Llama weights unchanged (q/k rows in
the rotary layout our `apply_rotary` uses, k/v repeated per query head). Running each layer with
causal softmax attention (PyTorch SDPA) instead of retention, with no output norm and no gate,
is therefore the original Transformer; tests check it against transformers' LlamaForCausalLM.

`teacher_forward(model, ids, capture=True)` also returns each layer's attention input (after the
pre-norm) and attention output, which stage 1 of training/uptrain.py matches layer by layer.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from retnet.rotary import rotary_cos_sin, rotate


def _base_linear(module, x: Tensor) -> Tensor:
    """The linear layer's frozen base weight only (a LoRA wrapper exposes .base)."""
    base = getattr(module, "base", module)
    return F.linear(x, base.weight)


def _rotated_qkv(retention, x: Tensor, positions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """q, k [B, T, H, K] (rotated at `positions` [B, T]) and v [B, T, H, V] from the base weights."""
    cfg = retention.cfg
    B, T, _ = x.shape
    H, K, V = cfg.num_heads, cfg.head_k_dim, cfg.head_v_dim
    q = _base_linear(retention.q_proj, x).view(B, T, H, K)
    k = _base_linear(retention.k_proj, x).view(B, T, H, K)
    v = _base_linear(retention.v_proj, x).view(B, T, H, V)
    cos, sin = rotary_cos_sin(positions, retention._inv_freq.on(x.device), q.dtype)
    return rotate(q, cos, sin, cfg.rotary_style), rotate(k, cos, sin, cfg.rotary_style), v


def softmax_attention(retention, x: Tensor, positions: Tensor, heads_only: bool = False) -> Tensor:
    """Causal softmax attention with a retention module's base q/k/v/o weights: x [B, T, D] -> [B, T, D]
    (with heads_only, the per-head outputs [B, T, H, V] before o_proj)."""
    B, T, _ = x.shape
    q, k, v = _rotated_qkv(retention, x, positions)
    o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True,
                                       scale=retention.cfg.head_k_dim**-0.5)
    o = o.transpose(1, 2)
    if heads_only:
        return o
    return _base_linear(retention.o_proj, o.reshape(B, T, -1))


@torch.no_grad()
def teacher_forward(model, input_ids: Tensor, capture: bool = False):
    """Logits [B, T, vocab] of the Transformer behind `model`; with capture, also a list of
    (attention input, attention output) per layer, both [B, T, hidden]."""
    B, T = input_ids.shape
    positions = torch.arange(T, device=input_ids.device).expand(B, T)
    x = _embed(model, input_ids)
    pairs = []
    for layer in model.layers:
        h = layer.retention_norm(x)
        a = softmax_attention(layer.retention, h, positions)
        if capture:
            pairs.append((h, a))
        x = x + a
        x = x + layer.ffn(layer.ffn_norm(x))
    logits = model.lm_head(model.final_norm(x))
    return (logits, pairs) if capture else logits


@torch.no_grad()
def teacher_generate(model, prompts: list[list[int]], max_new: int, pick: Callable[[Tensor], list[int]],
                     stops: set[int], pad: int = 0) -> list[tuple[list[int], bool]]:
    """Batched decoding of the Transformer behind `model` with a KV cache: per prompt (token ids), the new
    tokens and whether a stop token ended them (the stop itself is not included). `pick` maps the
    next-token logits [B, vocab] to one token per row (greedy or sampled).

    Prompts are left-padded to a common length; padding is masked out of every attention and positions
    count only real tokens, so a row decodes as it would alone (``teacher_forward`` token by token is the
    reference, and the tests compare the two). Each step then costs one token per row instead of
    recomputing the whole prefix."""
    dev = model.embed.weight.device
    B, L = len(prompts), max(len(p) for p in prompts)
    S = L + max_new
    ids = torch.full((B, L), pad, dtype=torch.long, device=dev)
    valid = torch.ones(B, S, dtype=torch.bool, device=dev)  # keys a query may see (padding: never)
    for r, p in enumerate(prompts):
        ids[r, L - len(p):] = torch.tensor(p, dtype=torch.long)
        valid[r, :L - len(p)] = False
    lens = torch.tensor([len(p) for p in prompts], device=dev)
    positions = (valid[:, :L].long().cumsum(1) - 1).clamp(min=0)
    # prefill: causal and not padding; a padding query also sees itself, so no softmax row is empty
    eye = torch.eye(L, dtype=torch.bool, device=dev)
    mask = (torch.ones(L, L, dtype=torch.bool, device=dev).tril() & (valid[:, None, :L] | eye))[:, None]
    caches = [None] * len(model.layers)
    logits = _cached_forward(model, ids, positions, caches, 0, mask, S)
    new: list[list[int]] = [[] for _ in prompts]
    done = [False] * B
    for t in range(max_new):
        toks = pick(logits)
        for r, tok in enumerate(toks):
            if not done[r]:
                if tok in stops:
                    done[r] = True
                else:
                    new[r].append(tok)
        if all(done) or t == max_new - 1:
            break
        step = torch.tensor(toks, dtype=torch.long, device=dev)[:, None]
        logits = _cached_forward(model, step, (lens + t)[:, None], caches, L + t, valid[:, None, None, :L + t + 1])
    return [(n, d) for n, d in zip(new, done, strict=True)]


def _cached_forward(model, ids: Tensor, positions: Tensor, caches: list, start: int, mask: Tensor,
                    size: int = 0) -> Tensor:
    """Read ids [B, T] at cache slots start..start+T (positions [B, T] for rotary), each layer attending over
    its cache up to there where `mask` allows; the last position's logits [B, vocab]. Empty cache entries
    are made here, `size` slots long (the prefill)."""
    end = start + ids.shape[1]
    x = _embed(model, ids)
    for i, layer in enumerate(model.layers):
        att = layer.retention
        q, k, v = _rotated_qkv(att, layer.retention_norm(x), positions)
        if caches[i] is None:
            caches[i] = (k.new_zeros(k.shape[0], size, *k.shape[2:]), v.new_zeros(v.shape[0], size, *v.shape[2:]))
        kc, vc = caches[i]
        kc[:, start:end], vc[:, start:end] = k, v
        x = x + _attend(att, q, kc[:, :end], vc[:, :end], mask)
        x = x + layer.ffn(layer.ffn_norm(x))
    return model.lm_head(model.final_norm(x[:, -1]))


def _embed(model, ids: Tensor) -> Tensor:
    x = model.embed(ids)
    return x * model.config.embed_scale if model.config.embed_scale != 1.0 else x


def _attend(retention, q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
    """Softmax attention of q [B, Tq, H, K] over k, v [B, Tk, H, *] where the boolean mask allows, then o_proj."""
    B, T = q.shape[:2]
    o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask,
                                       scale=retention.cfg.head_k_dim**-0.5)
    return _base_linear(retention.o_proj, o.transpose(1, 2).reshape(B, T, -1))


class Teacher:
    """The softmax Transformer behind a converted GGUF, as batched prompt -> text functions
    (`Generate`: a text per prompt, None where no stop came within the token budget).

    Decodes in batches of similar-length prompts with a KV cache (`teacher_generate`)."""

    def __init__(self, model, tok, device, autocast):
        self.model, self.tok, self.device, self.autocast = model, tok, device, autocast
        self.stops = {tok.token_to_id("<|im_end|>"), tok.token_to_id("<|endoftext|>")} - {None}
        self.pad = tok.token_to_id("<|endoftext|>") or 0

    @classmethod
    def from_gguf(cls, path: Path, device: str = "cpu") -> Teacher:
        from retnet.convert.llama_gguf import from_llama_gguf, gguf_tokenizer

        dev = torch.device(device)
        model = from_llama_gguf(path).to(dev).eval()
        autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")
        return cls(model, gguf_tokenizer(path), dev, autocast)

    def fn(self, max_new: int, temperature: float = 0.0, seed: int = 0, batch: int = 16,
           keep_unfinished: bool = False) -> Callable[[list[str]], list[str | None]]:
        """A Generate: greedy at temperature 0, else sampled (seeded once; calls continue its stream)."""
        gen = torch.Generator(self.device).manual_seed(seed)  # sampled where the logits are
        return lambda prompts: self.generate(prompts, max_new, temperature, gen, batch, keep_unfinished)

    def generate(self, prompts: list[str], max_new: int, temperature: float, gen, batch: int,
                 keep_unfinished: bool) -> list[str | None]:
        def pick(logits):
            logits = logits.float()
            if temperature > 0:
                probs = torch.softmax(logits / temperature, -1)
                return torch.multinomial(probs, 1, generator=gen)[:, 0].tolist()
            return logits.argmax(-1).tolist()

        enc = [self.tok.encode(p).ids for p in prompts]
        order = sorted(range(len(prompts)), key=lambda i: len(enc[i]))  # similar lengths: little padding
        out: list[str | None] = [None] * len(prompts)
        for s in range(0, len(order), batch):
            rows = order[s:s + batch]
            with self.autocast:
                results = teacher_generate(self.model, [enc[i] for i in rows], max_new, pick, self.stops, self.pad)
            for i, (new, stopped) in zip(rows, results, strict=True):
                if stopped or keep_unfinished:
                    out[i] = self.tok.decode(new)
        return out
