"""RetentionState: everything a RetNet remembers about what it has read.

Per layer one float32 tensor [batch, heads, K, V], plus, per sequence, the
number of tokens read (which is also the rotary position of the next token).
A model with token shift (`RetNetConfig.token_shift`) also keeps, per layer,
its last real input [batch, hidden] (float32), the previous token of the next
call's first token. Its size depends only on the model, never on how much was read.

On disk it is one safetensors file; its metadata header carries a format
version and the fingerprint of the model that wrote it, so a state cannot be
loaded into a different model by accident. Tensors: `layer.{i}`, `offsets`, and
with token shift `last_input.{i}` (the header then says `"last_inputs": true`).
Files without them (all files written before token shift existed) read as
states of models without token shift; the format version stays 1. No pickle anywhere.
Loading reads and checks the whole file (tensor names, dtypes, batch, finite values,
offsets >= 0) before it returns a state; anything malformed is a StateMismatchError.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from .io import atomic_write, read_safetensors

STATE_FORMAT = "retnet-rag-state"
STATE_FORMAT_VERSION = 1


STATE_DTYPES = (torch.float32, torch.float64)
_TENSOR_NAME = re.compile(r"(layer|last_input)\.(0|[1-9][0-9]*)")


class StateMismatchError(ValueError):
    """The state on disk belongs to a different model, or is not a well-formed state at all."""


def check_header(header, source: str = "state file") -> None:
    """Refuse a state file header of the wrong format, version or field types."""
    if not isinstance(header, dict) or header.get("format") != STATE_FORMAT:
        raise StateMismatchError(f"{source} is not a retnet-rag state file")
    if header.get("format_version") != STATE_FORMAT_VERSION:
        raise StateMismatchError(f"{source} has state format version {header.get('format_version')!r}, "
                                 f"this code reads version {STATE_FORMAT_VERSION}")
    n = header.get("num_layers")
    if type(n) is not int or n < 1:
        raise StateMismatchError(f"{source}: num_layers must be a positive integer, got {n!r}")
    if not isinstance(header.get("last_inputs", False), bool):
        raise StateMismatchError(f"{source}: last_inputs must be true or false, got {header['last_inputs']!r}")
    if not isinstance(header.get("fingerprint"), (str, type(None))):
        raise StateMismatchError(f"{source}: fingerprint must be a string, got {header['fingerprint']!r}")


def _state_tensor_name(name: str, num_layers: int, last_inputs: bool) -> bool:
    """Whether `name` is one of the tensors of a state file with this header."""
    m = _TENSOR_NAME.fullmatch(name)
    return name == "offsets" or (m is not None and (m[1] == "layer" or last_inputs) and int(m[2]) < num_layers)


def _few(names: list[str]) -> str:
    return (", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")) or "none"


@dataclass
class RetentionState:
    layers: list[Tensor]  # per layer [B, H, K, V], float32 (float64 in exactness tests)
    offsets: Tensor  # [B] int64: tokens read so far = rotary position of the next token
    fingerprint: str | None = None  # of the model that produced it
    last_inputs: list[Tensor] | None = None  # token shift only: per layer [B, hidden], the last real input

    @classmethod
    def zeros(cls, cfg, batch_size: int = 1, device=None, dtype=torch.float32, fingerprint=None):
        shape = (batch_size, cfg.num_heads, cfg.head_k_dim, cfg.head_v_dim)
        last_inputs = None
        if cfg.token_shift:
            last_inputs = [torch.zeros(batch_size, cfg.hidden_size, device=device, dtype=dtype)
                           for _ in range(cfg.num_layers)]
        return cls(
            layers=[torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.num_layers)],
            offsets=torch.zeros(batch_size, dtype=torch.long, device=device),
            fingerprint=fingerprint,
            last_inputs=last_inputs,
        )

    @property
    def batch_size(self) -> int:
        return int(self.offsets.shape[0])

    @property
    def tokens_seen(self) -> Tensor:
        return self.offsets

    def named_tensors(self) -> Iterator[tuple[str, Tensor]]:
        """Every tensor of the state under its name in the state file."""
        for i, t in enumerate(self.layers):
            yield f"layer.{i}", t
        yield "offsets", self.offsets
        for i, t in enumerate(self.last_inputs or ()):
            yield f"last_input.{i}", t

    @property
    def nbytes(self) -> int:
        """Bytes held: the per-layer tensors (and last inputs, with token shift) plus the position counters."""
        return sum(t.numel() * t.element_size() for _, t in self.named_tensors())

    def _map(self, fn: Callable[[Tensor], Tensor]) -> RetentionState:
        """The same state with `fn` applied to every tensor."""
        last = None if self.last_inputs is None else [fn(t) for t in self.last_inputs]
        return RetentionState([fn(t) for t in self.layers], fn(self.offsets), self.fingerprint, last)

    def clone(self) -> RetentionState:
        """An independent copy: fork a conversation without touching the original."""
        return self._map(torch.clone)

    def to(self, device) -> RetentionState:
        return self._map(lambda t: t.to(device))

    def select(self, rows) -> RetentionState:
        """The state of some sequences: `rows` is an int, a slice, an index tensor or a bool mask over
        the batch. The result shares memory with this state where indexing allows; clone() it to fork."""
        if isinstance(rows, int):
            rows = slice(rows, rows + 1 if rows != -1 else None)
        return self._map(lambda t: t[rows])

    def equal(self, other: RetentionState) -> bool:
        """True when both hold exactly the same tensors (what was read); the fingerprint is not compared."""
        mine, theirs = dict(self.named_tensors()), dict(other.named_tensors())
        return mine.keys() == theirs.keys() and all(
            t.shape == theirs[name].shape and torch.equal(t, theirs[name].to(t.device)) for name, t in mine.items())

    # -- persistence ----------------------------------------------------------
    def file_tensors(self) -> dict[str, Tensor]:
        """The tensors as written to a state file: detached, contiguous, on the CPU."""
        return {name: t.detach().contiguous().cpu() for name, t in self.named_tensors()}

    def file_header(self) -> dict:
        """The JSON header of a state file (also written into session files)."""
        header = {"format": STATE_FORMAT, "format_version": STATE_FORMAT_VERSION,
                  "fingerprint": self.fingerprint, "num_layers": len(self.layers)}
        if self.last_inputs is not None:
            header["last_inputs"] = True
        return header

    def save(self, path: str | Path) -> None:
        """Write atomically: the previous file at `path` survives any failure."""
        tensors, header = self.file_tensors(), self.file_header()
        atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata={"header": json.dumps(header)}))

    @classmethod
    def load(cls, path: str | Path, model=None, device=None) -> RetentionState:
        """Read a saved state; with `model`, refuse a state written by a different model.

        Everything is read and checked (``from_file``) before a state is returned; a damaged or
        malformed file raises StateMismatchError, a missing one FileNotFoundError."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no state file at {path}")
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:  # the header alone, mapped
                header = json.loads((f.metadata() or {}).get("header", "null"))
            check_header(header, str(path))  # before reading tensors: a model file is no state
            _, tensors = read_safetensors(path)  # copied: a later change to the file cannot reach them
        except StateMismatchError:
            raise
        except (SafetensorError, OSError, ValueError, TypeError, RecursionError) as e:
            raise StateMismatchError(f"{path} is not a readable state file ({e})") from None
        state = cls.from_file(header, tensors, source=str(path))
        if model is not None:
            state.check_compatible(model, source=str(path))
        return state.to(device) if device is not None else state

    @classmethod
    def from_file(cls, header, tensors: dict[str, Tensor], source: str = "state file") -> RetentionState:
        """A state from a state file's JSON header and tensors, refused unless well formed: exactly the
        tensor names the header implies, float32/float64 state tensors of one dtype, one batch size
        throughout, finite values and int64 offsets >= 0. Shapes against a model: ``check_layout``."""
        check_header(header, source)
        n, shift = header["num_layers"], header.get("last_inputs", False)
        unexpected = sorted(name for name in tensors if not _state_tensor_name(name, n, shift))
        missing_count = 1 + n * (2 if shift else 1) - (len(tensors) - len(unexpected))
        if unexpected or missing_count:
            missing = [f"{missing_count} tensors"] if n > 4096 else sorted(  # n is the file's word: bound the work
                {"offsets", *(f"layer.{i}" for i in range(n)), *(f"last_input.{i}" for i in range(n) if shift)}
                - set(tensors))
            raise StateMismatchError(f"{source} has the wrong tensors for a {n}-layer state "
                                     f"(missing {_few(missing)}, unexpected {_few(unexpected)})")
        offsets = tensors["offsets"]
        if offsets.dtype != torch.int64 or offsets.dim() != 1 or offsets.numel() == 0:
            raise StateMismatchError(f"{source}: offsets must be a non-empty 1-D int64 tensor, "
                                     f"got {offsets.dtype} of shape {tuple(offsets.shape)}")
        if bool((offsets < 0).any()):
            raise StateMismatchError(f"{source}: negative token offsets {offsets.tolist()[:8]}")
        batch, dtype = offsets.shape[0], tensors["layer.0"].dtype
        for name, t in tensors.items():
            if name == "offsets":
                continue
            dims = 4 if name.startswith("layer.") else 2
            if t.dtype not in STATE_DTYPES or t.dtype != dtype:
                raise StateMismatchError(f"{source}: {name} is {t.dtype}; state tensors are all float32 "
                                         f"or all float64 (layer.0 is {dtype})")
            if t.dim() != dims or t.shape[0] != batch:
                raise StateMismatchError(f"{source}: {name} has shape {tuple(t.shape)}, expected {dims} "
                                         f"dimensions with batch {batch} first")
            if not bool(torch.isfinite(t).all()):
                raise StateMismatchError(f"{source}: {name} holds non-finite values (NaN or infinity)")
        layers = [tensors[f"layer.{i}"] for i in range(n)]
        last_inputs = [tensors[f"last_input.{i}"] for i in range(n)] if shift else None
        return cls(layers, offsets, header.get("fingerprint"), last_inputs)

    def check_layout(self, cfg, source: str = "state") -> None:
        """Refuse a state whose tensors do not fit a model with config `cfg` (shapes, token shift)."""
        expected = (cfg.num_heads, cfg.head_k_dim, cfg.head_v_dim)
        shapes = sorted({tuple(t.shape[1:]) for t in self.layers})
        if len(self.layers) != cfg.num_layers or shapes != [expected]:
            raise StateMismatchError(f"{source} has the wrong shape for this model ({len(self.layers)} layers of "
                                     f"{' or '.join(map(str, shapes)) or 'nothing'}, expected {cfg.num_layers} "
                                     f"of {expected})")
        if (self.last_inputs is not None) != cfg.token_shift:
            raise StateMismatchError(
                f"{source} has no token-shift inputs (last_inputs) but this model uses token_shift"
                if cfg.token_shift else
                f"{source} carries token-shift inputs (last_inputs) but this model has token_shift off")
        if self.last_inputs is not None:
            want = (self.batch_size, cfg.hidden_size)
            if len(self.last_inputs) != cfg.num_layers or any(tuple(t.shape) != want for t in self.last_inputs):
                raise StateMismatchError(f"{source} has token-shift inputs of the wrong shape "
                                         f"({[tuple(t.shape) for t in self.last_inputs]}, expected "
                                         f"{cfg.num_layers} of {want})")

    def check_compatible(self, model, source: str = "state") -> None:
        self.check_layout(model.config, source)
        if self.fingerprint != model.fingerprint():
            raise StateMismatchError(f"{source} was written by a different model "
                                     f"(fingerprint {self.fingerprint}, this model {model.fingerprint()})")
