"""RetNetForCausalLM: embeddings, retention blocks, final norm and LM head, over a RetentionState.

Every forward mode takes an incoming state and returns the outgoing one:

    logits, state = model(prompt_ids, mode="chunkwise", chunk_lengths=[120, 340, 75])
    logits, state = model(next_ids, state=state, mode="recurrent")

`attention_mask` [B, T] marks real tokens; padding (on either side) neither
moves a sequence's position nor touches its state. With `config.token_shift`
the state also holds each layer's last real input, so a real token's previous
token is the last real one before it, in this call or an earlier one.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor, nn

from . import checkpoint, ops
from .config import RetNetConfig
from .layers import MODES, RetNetBlock, RMSNorm
from .state import RetentionState


class CausalLMOutput(NamedTuple):
    logits: Tensor  # [B, T, vocab]
    state: RetentionState


class RetNetForCausalLM(nn.Module):
    def __init__(self, config: RetNetConfig):
        super().__init__()
        self.config = config
        # Built on the meta device (from_tensors), every weight is assigned afterwards: no initialisation then.
        # (A first normal_ on the meta device imports torch's Python reference ops, ~1.6 s; all of it ~5 s.)
        meta = torch.empty(0).is_meta
        blank = torch.empty(config.vocab_size, config.hidden_size) if meta else None
        self.embed = nn.Embedding(config.vocab_size, config.hidden_size, _weight=blank)
        self.layers = nn.ModuleList(RetNetBlock(config, i) for i in range(config.num_layers))
        self.final_norm = RMSNorm(config.hidden_size, config.norm_eps)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        if not meta:
            self.reset_parameters()

    def reset_parameters(self, std: float = 0.02) -> None:
        """Small normal init; output projections scaled down by depth (GPT-2 style) for stable training."""
        for name, p in self.named_parameters():
            if p.dim() < 2:
                continue
            scale = (2 * self.config.num_layers) ** -0.5 if name.endswith(("o_proj.weight", "down_proj.weight")) else 1
            nn.init.normal_(p, std=std * scale)

    # -- construction helpers -------------------------------------------------
    @classmethod
    def from_pretrained(cls, path, device=None, dtype=None) -> RetNetForCausalLM:
        """A model directory (config.json + model.safetensors), or a format a converter registered."""
        loader = checkpoint.loader_for(path)
        if loader is not None:
            return loader(Path(path), device=device, dtype=dtype)
        weights = Path(path) / checkpoint.WEIGHTS_FILE
        return cls.from_tensors(checkpoint.read_config(path), checkpoint.read_safetensors(weights), str(weights),
                                device, dtype)

    @classmethod
    def from_tensors(cls, cfg: RetNetConfig, tensors: dict[str, Tensor], source: str, device=None,
                     dtype=None) -> RetNetForCausalLM:
        """A model with exactly these weights (all-or-nothing: keys and shapes are checked first)."""
        with torch.device("meta"):
            model = cls(cfg)
        expected = model.state_dict()
        if cfg.tie_embeddings:
            expected.pop("lm_head.weight")
        checkpoint.check_tensors(expected, tensors, source)
        device = torch.device(device) if device is not None else torch.device("cpu")
        cast = {k: v.to(device=device, dtype=dtype if dtype is not None and v.is_floating_point() else v.dtype)
                for k, v in tensors.items()}
        model.load_state_dict(cast, strict=not cfg.tie_embeddings, assign=True)
        if cfg.tie_embeddings:
            model.lm_head.weight = model.embed.weight
        checkpoint.materialize_fixed_buffers(model, device)
        return model.eval()

    def save_pretrained(self, path, tokenizer=None) -> None:
        checkpoint.save_pretrained(self, path, tokenizer=tokenizer)

    def fingerprint(self) -> str:
        """A short hash of the config and a sample of every weight: different models, different prints.

        Cached until any weight changes in place (tensor version counters), so calling it per token is cheap.
        """
        key = tuple((p.data_ptr(), p._version) for p in self.state_dict().values())
        cached = getattr(self, "_fingerprint_cache", None)
        if cached is not None and cached[0] == key:
            return cached[1]
        h = hashlib.sha256(json.dumps(self.config.identity_dict(), sort_keys=True).encode())
        for name, p in sorted(self.state_dict().items()):
            flat = p.detach().reshape(-1)
            sample = torch.cat([flat[:64], flat[-64:]]).to("cpu", torch.float32)
            h.update(name.encode() + str(tuple(p.shape)).encode() + sample.numpy().tobytes())
        self._fingerprint_cache = (key, h.hexdigest()[:16])
        return self._fingerprint_cache[1]

    def new_state(self, batch_size: int = 1, device=None) -> RetentionState:
        device = device if device is not None else self.embed.weight.device
        dtype = ops.reference.compute_dtype(self.embed.weight)
        return RetentionState.zeros(self.config, batch_size, device, dtype, fingerprint=self.fingerprint())

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # -- forward ---------------------------------------------------------------
    def forward(self, input_ids: Tensor, state: RetentionState | None = None, mode: str = "chunkwise",
                chunk_lengths: list[int] | None = None, chunk_size: int | None = None,
                attention_mask: Tensor | None = None) -> CausalLMOutput:
        hidden, state = self.forward_hidden(input_ids, state, mode, chunk_lengths, chunk_size, attention_mask)
        return CausalLMOutput(self.lm_head(hidden), state)

    def forward_hidden(self, input_ids: Tensor, state: RetentionState | None = None, mode: str = "chunkwise",
                       chunk_lengths: list[int] | None = None, chunk_size: int | None = None,
                       attention_mask: Tensor | None = None) -> tuple[Tensor, RetentionState]:
        """The final-norm hidden states [B, T, hidden] (what the LM head reads) and the new state."""
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [batch, time], got shape {tuple(input_ids.shape)}")
        B, T = input_ids.shape
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; choose one of {MODES}")
        lengths = self._chunk_lengths(mode, T, chunk_lengths, chunk_size)
        if state is None:
            state = self.new_state(B, input_ids.device)
        elif state.batch_size != B:
            raise ValueError(f"state holds {state.batch_size} sequences but input_ids has {B}")
        state.check_layout(self.config)

        mask = None
        if attention_mask is not None:
            if attention_mask.shape != (B, T):
                raise ValueError(f"attention_mask must be [{B}, {T}], got {tuple(attention_mask.shape)}")
            mask = attention_mask.to(device=input_ids.device, dtype=torch.bool)
            steps = mask.long().cumsum(dim=1)
        else:
            steps = torch.arange(1, T + 1, device=input_ids.device).expand(B, T)
        positions = state.offsets.to(input_ids.device)[:, None] + steps - 1

        x = self.embed(input_ids)
        if self.config.embed_scale != 1.0:
            x = x * self.config.embed_scale
        new_layers, new_inputs = [], []
        last_inputs = state.last_inputs or [None] * len(state.layers)
        for layer, layer_state, last_input in zip(self.layers, state.layers, last_inputs, strict=True):
            x, s, last_input = layer(x, positions, layer_state, mode, lengths, mask, last_input)
            new_layers.append(s)
            new_inputs.append(last_input)
        read = steps[:, -1] if T > 0 else torch.zeros_like(state.offsets)
        # The incoming state already names this model; hashing weights per decode step would be wasted work.
        fingerprint = state.fingerprint or self.fingerprint()
        new_state = RetentionState(new_layers, state.offsets + read.to(state.offsets.device), fingerprint,
                                   new_inputs if state.last_inputs is not None else None)
        return self.final_norm(x), new_state

    def _chunk_lengths(self, mode: str, T: int, chunk_lengths, chunk_size) -> list[int] | None:
        if mode != "chunkwise":
            if chunk_lengths is not None or chunk_size is not None:
                raise ValueError(f"chunk_lengths / chunk_size only apply to mode='chunkwise', not {mode!r}")
            return None
        if chunk_lengths is not None and chunk_size is not None:
            raise ValueError("give chunk_lengths or chunk_size, not both")
        if chunk_lengths is not None:
            return [int(n) for n in chunk_lengths]  # validated once, by the retention op of either backend
        return ops.chunk_lengths_for(T, chunk_size or self.config.max_chunk_length)

    # -- generation --------------------------------------------------------------
    def generate(self, input_ids: Tensor, state: RetentionState | None = None, **kwargs):
        """Token ids in, (generated ids [B, n], final state) out. See retnet.generation.generate."""
        from .generation import generate

        return generate(self, input_ids, state=state, **kwargs)

    def stream(self, tokenizer, prompt_ids, state: RetentionState | None = None, **kwargs):
        """Text pieces as they are decoded; the returned object keeps .state and .token_ids."""
        from .generation import TextStream

        return TextStream(self, tokenizer, prompt_ids, state=state, **kwargs)
