"""The converted SmolLM2 reader on CPU (issue 12, part 4): load time, time to first token, decode speed,
float32 against int8 weights (retnet.quantize), and what int8 costs in quality.

    python benchmarks/reader_cpu.py                          # data/readers/smollm2-135m-retnet
    python benchmarks/reader_cpu.py --threads 1 2 --tokens 64 --repeats 5 --quantize none int8

For each quantization ("none" = float32, "int8"):

- load: ``app.encoder.load_model`` in a fresh process, first with an empty conversion cache ("cold": the
  GGUF is hashed, parsed, dequantized and written to the cache) and then again ("warm": one safetensors
  file read, the hash remembered). The OS page cache is not dropped, so "warm" reads the cache file from
  memory when it was read recently.
- time to first token (TTFT), in that same fresh process right after the load (no warm-up): a ChatML turn
  with 4 passages of ~200 tokens and a question, laid out, read with the chunkwise form (``Reader.ingest``)
  and the first token picked; then a new question over the same passages, whose states now come from the
  prefix cache (only the question is read).
- decode: greedy tokens/s through ``retnet.generation.DecodeLoop`` (the app's decode loop) after the first
  token, at each thread count; wall time, with the process's CPU time beside it.
- quality of int8 against float32 on the same passages: KL(float || int8) per token, cross-entropy of the
  text, top-1 agreement, and greedy answers to a few questions.

Writes <out>/reader_cpu.md and reader_cpu.json. A benchmark, not a test. The development machine has 2 cores
shared with other jobs: every number is the median of --repeats runs with its min and max beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO / "data" / "readers" / "smollm2-135m-retnet"
DOCS = REPO / "data" / "eval" / "docs"
PASSAGE_FILES = ("htop.1.txt", "jq.1.txt", "xz-faq.txt", "zstd-README.md")
QUESTIONS = ("How do I show only the processes of one user?", "Which option makes the output compact?",
             "What does the tool do when the file is already compressed?")
PASSAGE_TOKENS = 200


def passages(tokenizer, n: int = 4, tokens: int = PASSAGE_TOKENS) -> list[str]:
    """n passages of ~`tokens` tokens: the start of n documents of the dev set, cut at a line end."""
    out = []
    for name in PASSAGE_FILES[:n]:
        text = (DOCS / name).read_text(errors="replace")
        enc = tokenizer.encode(text, add_special_tokens=False)
        end = enc.offsets[min(tokens, len(enc.ids)) - 1][1]
        cut = text.rfind("\n", 0, end)
        out.append(text[: cut if cut > end // 2 else end].strip())
    return out


def _stats(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": values}


def _fmt(s: dict, digits: int = 2) -> str:
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}-{s['max']:.{digits}f})"


# -- one fresh process: load, then the first question and a cached one -----------------------------------

def child(model: str, quantize: str, threads: int) -> dict:
    """Run in a fresh process (--child): load, TTFT of a first question, TTFT with the passages cached."""
    torch.set_num_threads(threads)
    from retnet.generation import SamplingConfig, next_token

    t0 = time.perf_counter()
    from app.encoder import Reader, load_model

    imported = time.perf_counter()
    m, tok = load_model(model, quantize=quantize)
    loaded = time.perf_counter()
    reader = Reader(m, tok)
    texts = passages(tok)
    greedy = SamplingConfig(max_new_tokens=1)

    def first_token(question: str) -> tuple[float, int, int]:
        start = time.perf_counter()
        turn = reader.layout_turn(question, texts, first_turn=True)
        ing = reader.ingest(turn, reader.new_state(), reader.root_key())
        next_token(ing.logits, greedy)
        return time.perf_counter() - start, ing.prompt_tokens, ing.cached_tokens

    ttft, prompt_tokens, _ = first_token(QUESTIONS[0])
    ttft_cached, _, cached_tokens = first_token(QUESTIONS[1])
    return {"import_s": imported - t0, "load_s": loaded - imported, "ttft_s": ttft, "ttft_cached_s": ttft_cached,
            "prompt_tokens": prompt_tokens, "cached_tokens": cached_tokens, "threads": threads,
            "passage_tokens": [len(tok.encode(t, add_special_tokens=False).ids) for t in texts]}


def run_child(model: Path, quantize: str, threads: int, cache_dir: Path) -> dict:
    env = {**os.environ, "RETNET_CACHE_DIR": str(cache_dir), "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, __file__, "--child", str(model), quantize, str(threads)], env=env,
                         capture_output=True, text=True, check=False, cwd=REPO)
    if out.returncode != 0:
        raise RuntimeError(f"child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- decode speed, in this process -----------------------------------------------------------------------

@torch.no_grad()
def decode_rates(reader, tokens: int, repeats: int) -> dict:
    """Greedy decode after a 4-passage prompt: per-token wall and CPU ms (the first token excluded)."""
    from retnet.generation import DecodeLoop, SamplingConfig

    turn = reader.layout_turn(QUESTIONS[0], passages(reader.tokenizer), first_turn=True)
    ing = reader.ingest(turn, reader.new_state(), reader.root_key())
    cfg = SamplingConfig(max_new_tokens=tokens + 1)
    wall, cpu = [], []
    for r in range(repeats + 1):
        loop = DecodeLoop(reader.model, ing.logits, ing.state, cfg)
        it = iter(loop)
        loop.read(next(it))  # the first token: not timed
        t, c = time.perf_counter(), time.process_time()
        for tok in it:
            loop.read(tok)
        if r:  # the first run warms up
            wall.append((time.perf_counter() - t) / tokens * 1e3)
            cpu.append((time.process_time() - c) / tokens * 1e3)
    return {"ms_per_token": _stats(wall), "cpu_ms_per_token": _stats(cpu),
            "tokens_per_s": _stats([1e3 / w for w in wall])}


# -- quality of int8 against float32 -------------------------------------------------------------------

@torch.no_grad()
def quality(float_reader, int8_reader, answer_tokens: int = 48) -> dict:
    import torch.nn.functional as F

    from retnet.generation import DecodeLoop, SamplingConfig

    tok = float_reader.tokenizer
    rows = []
    for name in PASSAGE_FILES:
        text = (DOCS / name).read_text(errors="replace")
        ids = torch.tensor([tok.encode(text, add_special_tokens=False).ids[:600]])
        chunks = [200] * (ids.shape[1] // 200) + ([ids.shape[1] % 200] if ids.shape[1] % 200 else [])
        lf = float_reader.model(ids, mode="chunkwise", chunk_lengths=chunks).logits[0].float()
        lq = int8_reader.model(ids, mode="chunkwise", chunk_lengths=chunks).logits[0].float()
        target = ids[0, 1:]
        rows.append({"document": name, "tokens": int(ids.shape[1]),
                     "ce_float": F.cross_entropy(lf[:-1], target).item(),
                     "ce_int8": F.cross_entropy(lq[:-1], target).item(),
                     "kl": F.kl_div(lq.log_softmax(-1), lf.log_softmax(-1), log_target=True,
                                    reduction="batchmean").item(),
                     "top1_agree": (lf.argmax(-1) == lq.argmax(-1)).float().mean().item(),
                     "max_abs_logit_diff": (lf - lq).abs().max().item()})
    from retnet.generation import generate

    continuations = []
    for name in PASSAGE_FILES:  # greedy continuation of plain document text (no chat turn)
        ids = torch.tensor([tok.encode((DOCS / name).read_text(errors="replace"), add_special_tokens=False).ids[:300]])
        outs = [generate(r.model, ids, max_new_tokens=32)[0][0].tolist() for r in (float_reader, int8_reader)]
        same = next((i for i in range(32) if outs[0][i] != outs[1][i]), 32)
        continuations.append({"document": name, "same_prefix_tokens": same, "float": tok.decode(outs[0]),
                              "int8": tok.decode(outs[1])})
    answers = []
    texts = passages(tok)
    for question in QUESTIONS:
        out = {}
        for label, reader in (("float", float_reader), ("int8", int8_reader)):
            turn = reader.layout_turn(question, texts, first_turn=True)
            ing = reader.ingest(turn, reader.new_state(), reader.root_key())
            loop = DecodeLoop(reader.model, ing.logits, ing.state, SamplingConfig(max_new_tokens=answer_tokens))
            for t in loop:
                loop.read(t)
                if int(t[0]) == reader.stops.end_token_id:  # the end of the answer
                    break
            out[label] = loop.generated[0].tolist()
        n = min(len(out["float"]), len(out["int8"]))
        same = next((i for i in range(n) if out["float"][i] != out["int8"][i]), n)
        answers.append({"question": question, "same_prefix_tokens": same, "float": tok.decode(out["float"]),
                        "int8": tok.decode(out["int8"])})
    return {"documents": rows, "continuations": continuations, "answers": answers}


def weight_bytes(model) -> int:
    seen, total = set(), 0
    for t in (*model.parameters(), *model.buffers()):
        if t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total


# -- report ------------------------------------------------------------------------------------------------

def report(res: dict) -> str:
    a = res["args"]
    lines = [
        "# The converted SmolLM2 reader on CPU (issue 12, part 4)", "",
        f"Command: `python benchmarks/reader_cpu.py --threads {' '.join(map(str, a['threads']))} --tokens "
        f"{a['tokens']} --repeats {a['repeats']} --cold-repeats {a['cold_repeats']}`; model `{a['model']}`; "
        f"{res['machine']}; torch {torch.__version__}; "
        f"{res['date']}. The machine's 2 cores are shared with other jobs (load average {res['load_before']} "
        f"before, {res['load_after']} after): each cell is the median of the runs, (min-max) beside it.", "",
        "## Load (`app.encoder.load_model`, fresh process)", "",
        "| quantization | cold cache s | warm cache s | weights in memory MB |", "|---|---:|---:|---:|"]
    for q in a["quantize"]:
        r = res["load"][q]
        lines.append(f"| {q} | {_fmt(r['cold_s'])} | {_fmt(r['warm_s'])} | {res['weight_mb'][q]:.0f} |")
    lines += ["", "Cold: empty conversion cache (hash + GGUF parse + dequantize + write 591 MB of float32 "
              "safetensors). Warm: the cached conversion and the remembered hash; int8 adds quantizing 211 "
              "weight matrices.", "",
              "## Time to first token (fresh process, right after the load)", "",
              f"4 passages of {res['passage_tokens']} tokens + a question ({res['prompt_tokens']} prompt tokens, "
              "ChatML), first question after load; then a new question over the same passages "
              f"({res['cached_tokens']} tokens from the prefix cache).", "",
              "| quantization | threads | first question s | passages cached s |", "|---|---:|---:|---:|"]
    for q in a["quantize"]:
        for th in a["threads"]:
            r = res["ttft"][q][str(th)]
            lines.append(f"| {q} | {th} | {_fmt(r['ttft_s'])} | {_fmt(r['ttft_cached_s'], 3)} |")
    lines += ["", "## Decode (greedy, DecodeLoop, after the 4-passage prompt)", "",
              "| quantization | threads | tokens/s | ms/token | CPU ms/token |", "|---|---:|---:|---:|---:|"]
    for q in a["quantize"]:
        for th in a["threads"]:
            r = res["decode"][q][str(th)]
            lines.append(f"| {q} | {th} | {_fmt(r['tokens_per_s'], 1)} | {_fmt(r['ms_per_token'], 1)} | "
                         f"{_fmt(r['cpu_ms_per_token'], 1)} |")
    if "quality" in res:
        qd = res["quality"]
        lines += ["", "## What int8 costs (against float32, same passages)", "",
                  "Teacher-forced over the first 600 tokens of each document, read in 200-token chunks.", "",
                  "| document | CE float | CE int8 | KL(float‖int8) per token | top-1 agree | max abs logit diff |",
                  "|---|---:|---:|---:|---:|---:|"]
        for r in qd["documents"]:
            lines.append(f"| {r['document']} | {r['ce_float']:.3f} | {r['ce_int8']:.3f} | {r['kl']:.4f} | "
                         f"{r['top1_agree']:.3f} | {r['max_abs_logit_diff']:.2f} |")
        lines += ["", "Greedy continuations (32 tokens) of each document's first 300 tokens: identical for the first "
                  + ", ".join(f"{r['same_prefix_tokens']}" for r in qd["continuations"]) + " tokens.", ""]
        for r in qd["continuations"]:
            lines.append(f"- {r['document']}: float {r['float'][:120]!r}; int8 {r['int8'][:120]!r}")
        lines += ["", "Greedy answers (up to 48 tokens) to questions over the 4 passages:", ""]
        for r in qd["answers"]:
            lines.append(f"- {r['question']!r}: identical for the first {r['same_prefix_tokens']} tokens. "
                         f"float: {r['float'][:200]!r}; int8: {r['int8'][:200]!r}")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--quantize", nargs="+", default=["none", "int8"], choices=["none", "int8"])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--tokens", type=int, default=64, help="decoded tokens per timed run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cold-repeats", type=int, default=1, help="cold loads per quantization (each converts again)")
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a.child[0], a.child[1], int(a.child[2]))))
        return

    from app.encoder import Reader, load_model

    res = {"args": {**vars(a), "model": str(a.model.relative_to(REPO) if a.model.is_relative_to(REPO) else a.model),
                    "out": str(a.out)},
           "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "date": time.strftime("%Y-%m-%d"),
           "load_before": f"{os.getloadavg()[0]:.1f}", "load": {}, "ttft": {}, "decode": {}, "weight_mb": {}}
    with tempfile.TemporaryDirectory(prefix="reader_cpu_cache_") as tmp:
        warm_cache = Path(tmp) / "warm"
        for q in a.quantize:
            cold = []
            for i in range(a.cold_repeats):
                r = run_child(a.model, q, max(a.threads), Path(tmp) / f"cold-{q}-{i}")
                cold.append(r["load_s"])
                print(f"{q}: cold load {r['load_s']:.2f} s", flush=True)
                if i == 0 and not warm_cache.exists():
                    (Path(tmp) / f"cold-{q}-{i}").rename(warm_cache)  # its cache warms the later runs
            warm, ttft = [], {}
            for _ in range(a.repeats):
                for th in a.threads:
                    r = run_child(a.model, q, th, warm_cache)
                    warm.append(r["load_s"])
                    ttft.setdefault(str(th), []).append(r)
                    print(f"{q}: warm load {r['load_s']:.2f} s, TTFT {r['ttft_s']:.2f} s, "
                          f"cached {r['ttft_cached_s']:.3f} s ({th} threads)", flush=True)
            res["load"][q] = {"cold_s": _stats(cold), "warm_s": _stats(warm)}
            res["ttft"][q] = {th: {key: _stats([r[key] for r in rs]) for key in ("ttft_s", "ttft_cached_s")}
                              for th, rs in ttft.items()}
            res.update(prompt_tokens=r["prompt_tokens"], cached_tokens=r["cached_tokens"],
                       passage_tokens=r["passage_tokens"])

        os.environ["RETNET_CACHE_DIR"] = str(warm_cache)
        readers = {}
        for q in a.quantize:
            m, tok = load_model(a.model, quantize=q)
            readers[q] = Reader(m, tok, cache=None)
            res["weight_mb"][q] = weight_bytes(m) / 2**20
            res["decode"][q] = {}
        for th in a.threads:
            torch.set_num_threads(th)
            for q in a.quantize:
                r = res["decode"][q][str(th)] = decode_rates(readers[q], a.tokens, a.repeats)
                print(f"{q}: decode {r['tokens_per_s']['median']:.1f} tokens/s ({th} threads)", flush=True)
        if not a.skip_quality and {"none", "int8"} <= set(readers):
            torch.set_num_threads(max(a.threads))
            res["quality"] = quality(readers["none"], readers["int8"])
    res["load_after"] = f"{os.getloadavg()[0]:.1f}"
    text = report(res)
    print(text)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "reader_cpu.md").write_text(text)
    (a.out / "reader_cpu.json").write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
