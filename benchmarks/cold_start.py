"""Cold start of ``retnet-rag ask``: a fresh process, from launch to the first answer token, and to exit.

Issue 17 asks for under 5 s on a 2-core CPU. Each repeat is a new ``python -m app.cli ask`` process over
a collection of data/samples (built once, untimed, in a temporary data directory) with the default reader
(data/model) and embedder (MiniLM); the first token is the first byte of the answer on stdout (the CLI
flushes every piece). A second set of fresh processes runs the same steps one after another in-process
and times each phase (imports, reader load, collection open, embedder load, first query, first token),
once with the embedder's default backend and once forced through sentence-transformers, the path used
before (its import alone was 5-10 s here). The box is shared: medians, with min and max beside them.

    python benchmarks/cold_start.py                 # 7 repeats, writes benchmarks/results/cold_start.{md,json}
    python benchmarks/cold_start.py --repeats 3 --no-write
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

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
QUESTION = "How do I rebuild an index?"
PHASES = ("import", "load_reader", "open_collection", "load_embedder", "first_query", "first_token", "answer")


def _phases_child(data_dir: str, question: str, backend: str) -> None:
    """Run in a fresh process: the ask path step by step, printing one JSON line of phase times."""
    t0 = time.perf_counter()
    marks: dict[str, float] = {}
    last = t0

    def mark(name: str) -> None:
        nonlocal last
        now = time.perf_counter()
        marks[name] = now - last
        last = now

    import app.cli  # noqa: F401  (what the command imports before it parses its arguments)
    from app.qa import MultiDocQA
    from retrieval import Collection, SentenceTransformerEmbedder

    mark("import")
    from app.defaults import configure_threads
    from app.encoder import load_model

    model, tok = load_model(None, None)
    configure_threads(0, model)
    mark("load_reader")
    col = Collection.open("samples", data_dir, embedder=SentenceTransformerEmbedder(backend=backend))
    mark("open_collection")
    col.embedder.model  # noqa: B018  (the load itself)
    mark("load_embedder")
    col.embedder.encode([question])
    mark("first_query")
    with MultiDocQA(col, model=model, tokenizer=tok) as qa:
        stream = qa.stream(question)
        pieces = [next(iter(stream))]
        mark("first_token")
        pieces.extend(stream)
        mark("answer")
    col.close()
    print(json.dumps({"phases": marks, "total": time.perf_counter() - t0, "text": "".join(pieces).strip()}))


def _ask_once(env: dict, question: str) -> dict:
    cmd = [sys.executable, "-m", "app.cli", "ask", question, "--collection", "samples", "--no-sources"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
    first = proc.stdout.read(1)
    t_first = time.perf_counter() - t0
    rest, err = proc.communicate()
    total = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"ask failed ({proc.returncode}): {err.decode()[-2000:]}")
    return {"first_token": t_first, "total": total, "text": (first + rest).decode().strip()}


def _phases_once(env: dict, data_dir: str, question: str, backend: str) -> dict:
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", data_dir, "--question", question,
                          "--backend", backend], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _stats(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--question", default=QUESTION)
    ap.add_argument("--st-repeats", type=int, default=3,
                    help="repeats of the phase split through sentence-transformers")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--child", metavar="DATA_DIR", help=argparse.SUPPRESS)
    ap.add_argument("--backend", default="auto", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _phases_child(args.child, args.question, args.backend)
        return 0

    with tempfile.TemporaryDirectory() as data_dir:
        env = {**os.environ, "RETNET_RAG_DATA_DIR": data_dir, "PYTHONPATH": str(ROOT)}
        subprocess.run([sys.executable, "-m", "app.cli", "ingest", "data/samples", "--collection", "samples"],
                       cwd=ROOT, env=env, check=True, capture_output=True)
        runs = []
        for i in range(args.repeats):
            runs.append(_ask_once(env, args.question))
            print(f"ask {i + 1}/{args.repeats}: first token {runs[-1]['first_token']:.2f} s, "
                  f"total {runs[-1]['total']:.2f} s", file=sys.stderr)
        split = {}
        for backend, n in (("auto", args.repeats), ("sentence-transformers", args.st_repeats)):
            split[backend] = [_phases_once(env, data_dir, args.question, backend) for _ in range(n)]
            print(f"phase split ({backend}): {n} runs", file=sys.stderr)

    texts = {r["text"] for r in runs} | {r["text"] for rs in split.values() for r in rs}
    result = {
        "question": args.question,
        "repeats": args.repeats,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end",
        "python": platform.python_version(),
        "ask": {k: _stats([r[k] for r in runs]) for k in ("first_token", "total")},
        "ask_runs": [{k: r[k] for k in ("first_token", "total")} for r in runs],
        "phases": {b: {p: _stats([r["phases"][p] for r in rs]) for p in PHASES}
                   | {"total": _stats([r["total"] for r in rs])} for b, rs in split.items() if rs},
        "same_answer_everywhere": len(texts) == 1,
        "answer": sorted(texts),
    }
    md = _markdown(result)
    print(md)
    if not args.no_write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "cold_start.json").write_text(json.dumps(result, indent=2) + "\n")
        (RESULTS / "cold_start.md").write_text(md)
    return 0


def _markdown(r: dict) -> str:
    def cell(s: dict) -> str:
        return f"{s['median']:.2f} ({s['min']:.2f}-{s['max']:.2f})"

    a = r["ask"]
    met = "met" if a["first_token"]["median"] < 5.0 else "not met"
    lines = [
        "# Cold start of `retnet-rag ask`",
        "",
        f"`python benchmarks/cold_start.py --repeats {r['repeats']}`: {r['machine']}, Python {r['python']}. "
        f"Question {r['question']!r} over data/samples, default reader and embedder; seconds, median (min-max).",
        "",
        "| fresh `python -m app.cli ask` | seconds |",
        "|---|---|",
        f"| launch -> first answer token | {cell(a['first_token'])} |",
        f"| launch -> exit | {cell(a['total'])} |",
        "",
        f"Target (issue 17): first token under 5 s on 2 cores: **{met}** (median).",
        "",
        "Phase split (fresh processes, the steps run one after another in-process):",
        "",
        "| phase | " + " | ".join(f"embedder backend {b}" for b in r["phases"]) + " |",
        "|---|" + "---|" * len(r["phases"]),
    ]
    for p in (*PHASES, "total"):
        lines.append(f"| {p} | " + " | ".join(cell(ph[p]) for ph in r["phases"].values()) + " |")
    lines += ["", f"Same answer text in every run: {r['same_answer_everywhere']}: {r['answer'][0][:200]!r}", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
