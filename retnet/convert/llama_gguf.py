"""A Llama-family Transformer in a GGUF file (llama.cpp's format) -> a retention model to be uptrained.

    cfg, state_dict = convert_llama_gguf("SmolLM2-135M-Instruct.Q4_1.gguf")
    model = from_llama_gguf(path)                     # RetNetForCausalLM, float32
    tokenizer = gguf_tokenizer(path)                  # tokenizers.Tokenizer (byte-level BPE from the file)
    chat = gguf_chat_info(path)                       # ChatML template and special tokens

What carries over exactly: embeddings (tied head), every RMSNorm, the SwiGLU MLP
(`down(silu(gate x) * up x)` -> GatedFFN act/lin/down), and q/k/v/o. What changes: softmax
attention becomes retention (DESIGN.md §2), so the result is a *starting point* for uptraining
(training/uptrain.py), not the same function:

- rotary: llama.cpp's converter permutes the rows of q and k so that rotary pairs sit next to each
  other (pairs (2i, 2i+1)); we undo that permutation, so q/k rows are laid out as in the original
  Hugging Face checkpoint (pairs (i, i + K/2)) and our half-split rotary with `base**(-2i/K)`
  gives the same q.k scores as the Transformer; q is scaled by K**-0.5 as softmax attention does.
- grouped-query attention: each key/value head is repeated for the query heads that share it, so
  the retention has one K x V state per query head (simple and kernel-friendly; the state costs
  layers x query heads x K x V x 4 bytes, 4.4 MB for SmolLM2-135M).
- no output gate (`output_gate=False`): Llama has none, and silu(x W_G) cannot start out neutral
  (silu has no constant setting near 1 that a zero init gives), so the gate would scramble the
  attention output before any training.
- the per-head RMSNorm stands in for the softmax denominator; its weight is one scale per head
  (`group_norm_per_head=True`), started at 1 here and calibrated to the Transformer's per-head
  attention-output scale by the uptraining recipe (that needs data, the converter has none).
- decays: `DEFAULT_HORIZONS` spread the heads from short to long memory (1/(1-gamma) from 16 to
  4096 tokens); the recipe may learn them per layer.

Anything else (biases, other architectures, a separate output head of another shape, missing
tensors, rotary scaling) is refused with a CheckpointError naming it. Reading needs the `gguf`
package (imported lazily); quantized tensors (Q4_1, Q8_0, ...) are dequantized by gguf.quants.

Converting is slow (parsing the GGUF's 100k-string vocabulary and dequantizing: 5-15 s on 2 CPU
cores), so ``cached_convert_llama_gguf`` keeps the result in a user cache directory
(``cache_dir()``: $RETNET_CACHE_DIR, else $XDG_CACHE_HOME/retnet-rag, else ~/.cache/retnet-rag;
RETNET_CACHE_DIR=off disables it): one safetensors file per GGUF content and converter version
(``llama-gguf/<sha256>-v<CONVERTER_VERSION>.safetensors``, the config in its metadata, written
atomically, never pickle), and the files' SHA-256 remembered by (path, size, mtime) in
``sha256.json`` so a second load does not hash 98 MB again. A damaged or foreign cache file is
converted again and replaced; an unwritable cache directory only costs the speed.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import CheckpointError
from ..config import RetNetConfig

SUPPORTED_ARCHITECTURES = ("llama",)
# Bump when convert_llama_gguf's output changes for the same file: cached conversions are keyed by it.
CONVERTER_VERSION = 1
CACHE_ENV = "RETNET_CACHE_DIR"
_CACHE_FORMAT = "retnet-rag/converted-llama-gguf"
_SHA_INDEX = "sha256.json"
_SHA_INDEX_MAX = 64  # files remembered
DEFAULT_HORIZONS = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096)  # tokens; spread over the heads
_LAYER_MAP = {  # GGUF name (after blk.N.) -> ours (after layers.N.)
    "attn_norm.weight": "retention_norm.weight",
    "ffn_norm.weight": "ffn_norm.weight",
    "ffn_gate.weight": "ffn.act_proj.weight",
    "ffn_up.weight": "ffn.lin_proj.weight",
    "ffn_down.weight": "ffn.down_proj.weight",
    "attn_q.weight": "retention.q_proj.weight",
    "attn_k.weight": "retention.k_proj.weight",
    "attn_v.weight": "retention.v_proj.weight",
    "attn_output.weight": "retention.o_proj.weight",
}


def _gguf():
    try:
        import gguf
    except ImportError:
        raise ImportError("reading GGUF files needs the 'gguf' package: pip install gguf") from None
    return gguf


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _open(path: str | Path):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no GGUF file at {path}")
    try:
        return _gguf().GGUFReader(str(path))
    except ValueError as e:  # gguf raises ValueError for a wrong magic number or a truncated file
        raise CheckpointError(f"{path} is not a readable GGUF file: {e}") from None


def _field(reader, key: str, default=None):
    f = reader.fields.get(key)
    if f is None:
        return default
    value = f.contents()
    return value


def _metadata(reader, path) -> dict:
    arch = _field(reader, "general.architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise CheckpointError(f"{path}: architecture {arch!r} is not supported (only {SUPPORTED_ARCHITECTURES})")

    def need(key):
        value = _field(reader, f"{arch}.{key}")
        if value is None:
            raise CheckpointError(f"{path}: missing metadata {arch}.{key}")
        return value

    meta = {
        "layers": int(need("block_count")), "hidden": int(need("embedding_length")),
        "ffn": int(need("feed_forward_length")), "heads": int(need("attention.head_count")),
        "eps": float(need("attention.layer_norm_rms_epsilon")),
        "rope_base": float(_field(reader, f"{arch}.rope.freq_base", 10000.0)),
    }
    meta["kv_heads"] = int(_field(reader, f"{arch}.attention.head_count_kv", meta["heads"]))
    meta["head_dim"] = int(_field(reader, f"{arch}.attention.key_length", meta["hidden"] // meta["heads"]))
    value_dim = int(_field(reader, f"{arch}.attention.value_length", meta["head_dim"]))
    rope_dims = int(_field(reader, f"{arch}.rope.dimension_count", meta["head_dim"]))
    if value_dim != meta["head_dim"] or rope_dims != meta["head_dim"]:
        raise CheckpointError(f"{path}: key/value/rotary dims {meta['head_dim']}/{value_dim}/{rope_dims} differ "
                              "(only full-width rotary with equal key and value dims is supported)")
    scaling = _field(reader, f"{arch}.rope.scaling.type")
    if scaling not in (None, "none"):
        raise CheckpointError(f"{path}: rotary scaling {scaling!r} is not supported")
    if meta["heads"] % meta["kv_heads"]:
        raise CheckpointError(f"{path}: {meta['heads']} query heads are not a multiple of {meta['kv_heads']} kv heads")
    return meta


def _tensor(t) -> np.ndarray:
    """A GGUF tensor as float32 [rows, cols] (torch layout: [out, in])."""
    gguf = _gguf()
    data = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type)  # a plain array: memmap slicing is slow
    shape = tuple(int(n) for n in reversed([int(d) for d in t.shape]))  # GGUF lists dims fastest-first
    return np.array(data, dtype=np.float32).reshape(shape)


def unpermute_rotary_rows(w: torch.Tensor, heads: int) -> torch.Tensor:
    """Undo llama.cpp's q/k row permutation: per head, rows (0, K/2, 1, K/2+1, ...) -> (0, 1, ..., K-1).

    llama.cpp stores pair (i, i + K/2) of the original checkpoint as adjacent rows (2i, 2i+1)."""
    rows, cols = w.shape
    half = rows // heads // 2
    return w.reshape(heads, half, 2, cols).transpose(1, 2).reshape(rows, cols)


def repeat_kv_rows(w: torch.Tensor, kv_heads: int, heads: int) -> torch.Tensor:
    """[kv_heads * K, in] -> [heads * K, in]: query head h reads kv head h // (heads // kv_heads)."""
    rows, cols = w.shape
    per = rows // kv_heads
    return w.reshape(kv_heads, 1, per, cols).expand(kv_heads, heads // kv_heads, per, cols).reshape(-1, cols)


def horizons_to_log_decays(horizons) -> list[float]:
    """log(gamma) with 1 / (1 - gamma) = horizon tokens."""
    return [math.log(1.0 - 1.0 / h) for h in horizons]


def _default_decays(heads: int) -> list[float]:
    lo, hi = math.log2(DEFAULT_HORIZONS[0]), math.log2(DEFAULT_HORIZONS[-1])
    steps = [lo + (hi - lo) * h / max(heads - 1, 1) for h in range(heads)]
    return horizons_to_log_decays([2.0**s for s in steps])


def convert_llama_gguf(path: str | Path, *, with_sha256: bool = True) -> tuple[RetNetConfig, dict[str, torch.Tensor]]:
    """Our config and state dict (float32) for a Llama-family GGUF; refuses what it cannot map."""
    reader = _open(path)
    meta = _metadata(reader, path)
    H, KV, K, L = meta["heads"], meta["kv_heads"], meta["head_dim"], meta["layers"]
    tensors = {t.name: t for t in reader.tensors}
    if "output.weight" in tensors:
        raise CheckpointError(f"{path}: an untied output.weight is not supported (the converter ties the head)")
    expected = {"token_embd.weight", "output_norm.weight"} | {f"blk.{i}.{n}" for i in range(L) for n in _LAYER_MAP}
    missing = sorted(expected - set(tensors))
    extra = sorted(set(tensors) - expected)  # rope_freqs (Llama 3.1 rotary scaling) included: not modelled
    if missing:
        raise CheckpointError(f"{path}: missing tensors {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    if extra:
        more = " ..." if len(extra) > 5 else ""
        raise CheckpointError(f"{path}: tensors the converter cannot map: {extra[:5]}{more}")

    def get(name):
        return torch.from_numpy(_tensor(tensors[name]))

    embed = get("token_embd.weight")
    sd = {"embed.weight": embed, "final_norm.weight": get("output_norm.weight")}
    shapes = {"attn_q.weight": (H * K, meta["hidden"]), "attn_k.weight": (KV * K, meta["hidden"]),
              "attn_v.weight": (KV * K, meta["hidden"]), "attn_output.weight": (meta["hidden"], H * K),
              "ffn_gate.weight": (meta["ffn"], meta["hidden"]), "ffn_up.weight": (meta["ffn"], meta["hidden"]),
              "ffn_down.weight": (meta["hidden"], meta["ffn"]), "attn_norm.weight": (meta["hidden"],),
              "ffn_norm.weight": (meta["hidden"],)}
    for i in range(L):
        for src, dst in _LAYER_MAP.items():
            w = get(f"blk.{i}.{src}")
            if tuple(w.shape) != shapes[src]:
                raise CheckpointError(f"{path}: blk.{i}.{src} has shape {tuple(w.shape)}, expected {shapes[src]}")
            if src == "attn_q.weight":
                w = unpermute_rotary_rows(w, H)
            elif src == "attn_k.weight":
                w = repeat_kv_rows(unpermute_rotary_rows(w, KV), KV, H)
            elif src == "attn_v.weight":
                w = repeat_kv_rows(w, KV, H)
            sd[f"layers.{i}.{dst}"] = w.contiguous()
        sd[f"layers.{i}.retention.out_norm.weight"] = torch.ones(H, K)

    token_id = lambda key: (None if (v := _field(reader, f"tokenizer.ggml.{key}")) is None else int(v))  # noqa: E731
    extra_info = {"source": "llama-gguf", "file": Path(path).name,
                  "architecture": _field(reader, "general.architecture"), "name": _field(reader, "general.name"),
                  "license": _field(reader, "general.license"), "kv_heads": KV}
    if with_sha256:
        extra_info["sha256"] = file_sha256(path)
    cfg = RetNetConfig(
        vocab_size=int(embed.shape[0]), hidden_size=meta["hidden"], num_layers=L, num_heads=H, head_k_dim=K,
        head_v_dim=K, ffn_dim=meta["ffn"], ffn_activation="swish", rotary_style="half", rotary_grid="power",
        rotary_base=meta["rope_base"], qk_scale_on="q", embed_scale=1.0, norm_eps=meta["eps"],
        group_norm_affine=True, group_norm_per_head=True, output_gate=False, tie_embeddings=True,
        decay_log=_default_decays(H), bos_token_id=token_id("bos_token_id"), eos_token_id=token_id("eos_token_id"),
        pad_token_id=token_id("padding_token_id"), extra=extra_info)
    return cfg, sd


def from_llama_gguf(path: str | Path, dtype: torch.dtype | None = None, *, with_sha256: bool = True):
    """A RetNetForCausalLM with the GGUF's weights (see the module docstring for what changes)."""
    from ..model import RetNetForCausalLM

    cfg, sd = convert_llama_gguf(path, with_sha256=with_sha256)
    return RetNetForCausalLM.from_tensors(cfg, sd, str(path), dtype=dtype)  # checked, tied, all-or-nothing


# -- the conversion cache ------------------------------------------------------------------------------


def cache_dir() -> Path | None:
    """The user cache directory for converted weights, or None when RETNET_CACHE_DIR turns it off."""
    value = os.environ.get(CACHE_ENV)
    if value is not None:
        return None if value.strip().lower() in ("", "0", "off", "none") else Path(value).expanduser()
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "retnet-rag"


def _read_sha_index(folder: Path) -> dict:
    try:
        entries = json.loads((folder / _SHA_INDEX).read_text()).get("files", {})
        return entries if isinstance(entries, dict) else {}
    except (OSError, ValueError, AttributeError):  # missing, unreadable or not the JSON we write
        return {}


def cached_file_sha256(path: str | Path, folder: Path | None = None) -> str:
    """file_sha256, remembered in the cache directory by (resolved path, size, mtime): a file that has not
    changed is hashed once. Without a cache directory it simply hashes."""
    from ..io import atomic_write_text

    folder = cache_dir() if folder is None else folder
    path = Path(path).resolve()
    st = path.stat()
    stamp = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    if folder is not None:
        known = _read_sha_index(folder).get(str(path))
        if isinstance(known, dict) and all(known.get(k) == v for k, v in stamp.items()):
            if isinstance(known.get("sha256"), str):
                return known["sha256"]
    digest = file_sha256(path)
    if folder is not None:
        entries = _read_sha_index(folder)
        entries.pop(str(path), None)
        entries[str(path)] = {**stamp, "sha256": digest}  # newest last; the oldest are dropped
        entries = dict(list(entries.items())[-_SHA_INDEX_MAX:])
        try:
            atomic_write_text(folder / _SHA_INDEX, json.dumps({"files": entries}, indent=1) + "\n")
        except OSError as e:
            warnings.warn(f"cannot write the hash cache in {folder}: {e}", stacklevel=2)
    return digest


def converted_cache_file(sha256: str, folder: Path) -> Path:
    return folder / "llama-gguf" / f"{sha256}-v{CONVERTER_VERSION}.safetensors"


def _read_converted(file: Path, sha256: str) -> tuple[RetNetConfig, dict[str, torch.Tensor]] | None:
    """The cached conversion in ``file``, or None if it is missing, damaged or not this file's."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    if not file.is_file():
        return None
    try:
        with safe_open(str(file), "pt") as f:
            meta = f.metadata() or {}
        if (meta.get("format") != _CACHE_FORMAT or meta.get("sha256") != sha256
                or meta.get("converter_version") != str(CONVERTER_VERSION)):
            return None
        cfg = RetNetConfig.from_dict(json.loads(meta["config"]))
        return cfg, load_file(str(file))
    except Exception:  # safetensors raises its own error types for damaged files; any failure means "convert"
        return None


def cached_convert_llama_gguf(path: str | Path, sha256: str | None = None
                              ) -> tuple[RetNetConfig, dict[str, torch.Tensor]]:
    """convert_llama_gguf(path) through the user cache (see the module docstring): the same config and
    float32 tensors, bit for bit. ``sha256`` is the file's, if the caller already has it."""
    from safetensors.torch import save_file

    from ..io import atomic_write

    folder = cache_dir()
    sha256 = sha256 or cached_file_sha256(path, folder)
    file = converted_cache_file(sha256, folder) if folder is not None else None
    hit = _read_converted(file, sha256) if file is not None else None
    if hit is not None:
        return hit
    cfg, sd = convert_llama_gguf(path, with_sha256=False)
    cfg.extra["sha256"] = sha256
    if file is None:
        return cfg, sd
    meta = {"format": _CACHE_FORMAT, "sha256": sha256, "converter_version": str(CONVERTER_VERSION),
            "source": Path(path).name, "config": json.dumps(cfg.to_dict())}
    try:
        atomic_write(file, lambda tmp: save_file(sd, str(tmp), metadata=meta))
    except OSError as e:
        warnings.warn(f"cannot cache the converted weights in {file.parent}: {e}", stacklevel=2)
    return cfg, sd


# -- tokenizer ----------------------------------------------------------------------------------------

_CONTROL = 3  # llama.cpp token type of special (control) tokens


def gguf_tokenizer(path: str | Path):
    """The GGUF's byte-level BPE vocabulary as a `tokenizers.Tokenizer` (special tokens added as such)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    reader = _open(path)
    kind = _field(reader, "tokenizer.ggml.model")
    if kind != "gpt2":
        raise CheckpointError(f"{path}: tokenizer model {kind!r} is not supported (only byte-level BPE, 'gpt2')")
    tokens = _field(reader, "tokenizer.ggml.tokens")
    merges = _field(reader, "tokenizer.ggml.merges")
    types = _field(reader, "tokenizer.ggml.token_type") or [1] * len(tokens)
    if tokens is None or merges is None:
        raise CheckpointError(f"{path}: missing tokenizer.ggml.tokens or tokenizer.ggml.merges")
    vocab = {t: i for i, t in enumerate(tokens)}
    bpe = models.BPE(vocab=vocab, merges=[tuple(m.split(" ", 1)) for m in merges], fuse_unk=False)
    tok = Tokenizer(bpe)
    # The GPT-2 split regex, bytes mapped to printable characters (what transformers builds for 'smollm').
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, kind in zip(tokens, types, strict=True) if int(kind) == _CONTROL])
    return tok


def gguf_chat_info(path: str | Path) -> dict:
    """The chat template (Jinja, ChatML for SmolLM2) and the special token strings, for the prompt layer."""
    reader = _open(path)
    tokens = _field(reader, "tokenizer.ggml.tokens")

    def name(key):
        i = _field(reader, f"tokenizer.ggml.{key}")
        return None if i is None else tokens[int(i)]

    return {"chat_template": _field(reader, "tokenizer.chat_template"), "bos_token": name("bos_token_id"),
            "eos_token": name("eos_token_id"), "pad_token": name("padding_token_id"),
            "unk_token": name("unknown_token_id"),
            "add_bos_token": bool(_field(reader, "tokenizer.ggml.add_bos_token", False))}


def write_tokenizer_files(path: str | Path, folder: str | Path) -> list[str]:
    """tokenizer.json + tokenizer_config.json (chat template, special tokens) into folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    gguf_tokenizer(path).save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(gguf_chat_info(path), indent=2))
    return ["tokenizer.json", "tokenizer_config.json"]


__all__ = ["convert_llama_gguf", "cached_convert_llama_gguf", "from_llama_gguf", "gguf_tokenizer", "gguf_chat_info",
           "write_tokenizer_files", "unpermute_rotary_rows", "repeat_kv_rows", "file_sha256", "cached_file_sha256",
           "cache_dir", "CONVERTER_VERSION", "DEFAULT_HORIZONS"]
