"""Ingest throughput and search latency of retrieval collections, on CPU.

Two parts:

1. Ingest: a synthetic corpus of .txt/.md/.html files is written to a temporary
   directory and added to a fresh collection; files/s and passages/s are reported for
   the real embedder (all-MiniLM-L6-v2) and for the hashing embedder, whose numbers
   show the cost of everything except the neural network (load, split, SQLite, FAISS).
2. Search: a collection of ``--search-passages`` passages (100k by default) per index
   kind. Embedding 100k passages with MiniLM takes over an hour on two cores, so these
   passages get synthetic unit vectors (clustered by topic, like real embeddings),
   written through the store; the collection is then reopened, which rebuilds the
   index (timed). Latency is reported for FAISS alone (queries near stored vectors) and
   end to end (``Collection.search``: MiniLM query embedding, FAISS, SQLite lookup),
   with the recall@k of HNSW and IVF against exact (flat) search.

Writes a markdown table (and the raw numbers as JSON) to benchmarks/results/.

    python benchmarks/ingest.py                      # defaults used for the committed table
    python benchmarks/ingest.py --passages 300 --search-passages 20000   # quick run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

# Spinning OpenMP threads (torch, faiss) collapse when other processes share the two
# cores: one MiniLM query took ~550 ms instead of ~10 ms here. Passive waiting avoids it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import faiss
import numpy as np
import torch

from retrieval import Collection, Document, HashEmbedder, Page, Passage, SentenceTransformerEmbedder

RESULTS = Path(__file__).resolve().parent / "results"
WORDS = (
    "system data model user file network memory process value result method analysis design "
    "energy water power signal control market price policy health patient study cell protein "
    "river mountain city road bridge garden kitchen engine battery sensor camera screen window "
    "report update reset filter button light sound speed weight height level state change error"
).split()
QUERIES = [
    "how do I reset the device to factory settings",
    "what does the warranty cover",
    "battery drains too fast",
    "replace the water filter",
    "network connection keeps dropping",
    "price of the annual subscription",
    "the engine makes a strange sound",
    "which sensor measures the water level",
]


def sentence(rng: random.Random) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(8, 20))]
    return " ".join(words).capitalize() + "."


def paragraph(rng: random.Random, tokens: int) -> str:
    out, n = [], 0
    while n < tokens:
        s = sentence(rng)
        out.append(s)
        n += len(s.split())
    return " ".join(out)


def write_corpus(root: Path, files: int, passages_per_file: int, seed: int = 0) -> None:
    """Files of about ``passages_per_file`` passages (~180-word paragraphs), mixed formats."""
    rng = random.Random(seed)
    for i in range(files):
        paras = [paragraph(rng, 180) for _ in range(passages_per_file)]
        kind = i % 3
        if kind == 0:
            (root / f"doc{i:05d}.txt").write_text("\n\n".join(paras))
        elif kind == 1:
            (root / f"doc{i:05d}.md").write_text(f"# Document {i}\n\n" + "\n\n".join(paras))
        else:
            body = "".join(f"<p>{p}</p>\n" for p in paras)
            html = f"<html><head><title>Doc {i}</title></head><body>{body}</body></html>"
            (root / f"doc{i:05d}.html").write_text(html)


def bench_ingest(embedder, label: str, files: int, passages: int, workdir: Path) -> dict:
    per_file = max(1, passages // files)
    corpus = workdir / f"corpus-{label}"
    corpus.mkdir()
    write_corpus(corpus, files, per_file)
    col = Collection.create(f"ingest-{label}", workdir / "data", embedder=embedder, progress=False)
    start = time.perf_counter()
    report = col.add(corpus)
    seconds = time.perf_counter() - start
    assert report.ok and len(report.added) == files, report.summary()
    col.close()
    return {
        "embedder": label,
        "files": files,
        "passages": report.passages,
        "seconds": seconds,
        "files_per_s": files / seconds,
        "passages_per_s": report.passages / seconds,
    }


def clustered_unit_vectors(rng: np.random.Generator, n: int, dim: int, centers: np.ndarray) -> np.ndarray:
    """Points scattered around random topic centres (cosine to their centre ~0.6), unit length.

    Real sentence embeddings of a corpus cluster by topic; uniform random vectors do not,
    and would make approximate indexes look much worse than they are.
    """
    noise = rng.standard_normal((n, dim)).astype(np.float32) * (1.33 / np.sqrt(dim))
    vecs = centers[rng.integers(0, len(centers), n)] + noise
    return vecs / np.linalg.norm(vecs, axis=1, keepdims=True)


def fill_synthetic(col: Collection, n: int, dim: int, seed: int = 0) -> np.ndarray:
    """n passages with synthetic vectors, written straight to the store in 1000-passage documents."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((max(16, n // 50), dim)).astype(np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    text_rng = random.Random(seed)
    texts = [paragraph(text_rng, 60) for _ in range(200)]
    per_doc = 1000
    sample = []
    for d in range(0, n, per_doc):
        count = min(per_doc, n - d)
        doc_id = f"synth{d // per_doc:07d}"
        passages, pos = [], 0
        for j in range(count):
            t = texts[(d + j) % len(texts)]
            passages.append(Passage(doc_id, j, t, pos, pos + len(t), None, len(t.split())))
            pos += len(t) + 2
        doc = Document(doc_id, f"synthetic/{doc_id}.txt", doc_id, "text", "", [Page(None, 0, pos)])
        vecs = clustered_unit_vectors(rng, count, dim, centers)
        sample.append(vecs[:5])
        col.store.add_documents([(doc, passages, vecs)])
    return np.concatenate(sample)


def percentiles(samples: list[float]) -> tuple[float, float]:
    ms = np.array(samples) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 95))


def bench_search(kind: str, n: int, queries: int, k: int, embedder, workdir: Path, exact_ids=None) -> dict:
    name = f"search-{kind}"
    col = Collection.create(name, workdir / "data", embedder=embedder, index=kind, progress=False)
    dim = col.dim
    start = time.perf_counter()
    stored = fill_synthetic(col, n, dim)
    fill_seconds = time.perf_counter() - start
    col.close()
    start = time.perf_counter()
    col = Collection.open(name, workdir / "data", embedder=embedder, progress=False)  # rebuilds the index
    build_seconds = time.perf_counter() - start
    assert col.index.ntotal == n and col.index.layout == kind

    # Queries near stored passages (cosine ~0.8), as a question near its answer.
    rng = np.random.default_rng(1)
    qvecs = stored[rng.integers(0, len(stored), queries)]
    qvecs = qvecs + rng.standard_normal(qvecs.shape).astype(np.float32) * (0.75 / np.sqrt(dim))
    qvecs /= np.linalg.norm(qvecs, axis=1, keepdims=True)
    faiss_times, found = [], []
    for q in qvecs:
        t = time.perf_counter()
        _, ids = col.index.search(q[None, :], k)
        faiss_times.append(time.perf_counter() - t)
        found.append(ids[0])
    col.search(QUERIES[0], k=k)  # warm up the model
    e2e_times = []
    for i in range(queries):
        t = time.perf_counter()
        hits = col.search(QUERIES[i % len(QUERIES)], k=k)
        e2e_times.append(time.perf_counter() - t)
        assert len(hits) == k
    col.close()
    faiss_p50, faiss_p95 = percentiles(faiss_times)
    e2e_p50, e2e_p95 = percentiles(e2e_times)
    recall = None
    if exact_ids is not None:
        recall = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(found, exact_ids, strict=True)]))
    return {
        "index": kind,
        "passages": n,
        "fill_seconds": fill_seconds,
        "build_seconds": build_seconds,
        "faiss_p50_ms": faiss_p50,
        "faiss_p95_ms": faiss_p95,
        "search_p50_ms": e2e_p50,
        "search_p95_ms": e2e_p95,
        "recall_at_k": recall,
        "found": found,
    }


def markdown(args, ingest: list[dict], search: list[dict]) -> str:
    lines = [
        "# Ingest and search benchmark (CPU)",
        "",
        f"Command: `{' '.join(['python benchmarks/ingest.py', *sys.argv[1:]])}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}, "
        f"torch threads {torch.get_num_threads()}, faiss threads {faiss.omp_get_max_threads()}, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}; {time.strftime('%Y-%m-%d')}.  ",
        f"Load average at start / end: {args.load_start} / {' '.join(f'{x:.1f}' for x in os.getloadavg())} "
        "(other work shared the cores, so treat the numbers as rough).",
        "",
        "## Ingest (synthetic .txt/.md/.html files, ~180-word passages, default splitter)",
        "",
        "| embedder | files | passages | seconds | files/s | passages/s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in ingest:
        lines.append(
            f"| {r['embedder']} | {r['files']} | {r['passages']} | {r['seconds']:.1f} | "
            f"{r['files_per_s']:.1f} | {r['passages_per_s']:.1f} |"
        )
    lines += [
        "",
        "`hash` is the hashing embedder: its row is the cost of loading, splitting, SQLite and FAISS alone.",
        "",
        f"## Search, {args.search_passages:,} passages, k={args.k}, {args.queries} queries, one at a time",
        "",
        "| index | rebuild on open (s) | FAISS p50 / p95 (ms) | `Collection.search` p50 / p95 (ms) "
        f"| recall@{args.k} vs flat |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in search:
        if r["index"] == "flat":
            recall = "1 (exact)"
        else:
            recall = "n/a" if r["recall_at_k"] is None else f"{r['recall_at_k']:.3f}"
        lines.append(
            f"| {r['index']} | {r['build_seconds']:.1f} | {r['faiss_p50_ms']:.2f} / {r['faiss_p95_ms']:.2f} | "
            f"{r['search_p50_ms']:.1f} / {r['search_p95_ms']:.1f} | {recall} |"
        )
    lines += [
        "",
        "The search collections hold synthetic 384-d unit vectors (as MiniLM's), clustered around random",
        "topic centres, written through the store: embedding that many passages with MiniLM here would take",
        f"about {args.search_passages / max(ingest[0]['passages_per_s'], 1e-9) / 60:.0f} minutes at the ingest "
        "rate above. FAISS latency and recall use queries near stored",
        "vectors; `Collection.search` latency includes embedding a text query with MiniLM and fetching the",
        "passages from SQLite. The rebuild column is the time `Collection.open` takes to rebuild the index",
        "from the stored vectors (what happens after a crash).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=int, default=100, help="files in the ingest corpus (default 100)")
    parser.add_argument("--passages", type=int, default=1000, help="passages to ingest with MiniLM (default 1000)")
    parser.add_argument("--hash-scale", type=int, default=10,
                        help="the hash-embedder run ingests this many times more files and passages (default 10)")
    parser.add_argument("--search-passages", type=int, default=100_000,
                        help="collection size for search (default 100000)")
    parser.add_argument("--queries", type=int, default=200, help="queries per index kind (default 200)")
    parser.add_argument("-k", type=int, default=8, help="results per query (default 8)")
    parser.add_argument("--indexes", default="flat,hnsw,ivf", help="index kinds to time (default flat,hnsw,ivf)")
    parser.add_argument("--embedder", choices=["minilm", "hash"], default="minilm",
                        help="embedder for the first ingest row and for search queries (default minilm)")
    parser.add_argument("--out", type=Path, default=RESULTS / "ingest.md", help="markdown output path")
    args = parser.parse_args(argv)
    args.load_start = " ".join(f"{x:.1f}" for x in os.getloadavg())

    embedder = SentenceTransformerEmbedder() if args.embedder == "minilm" else HashEmbedder(dim=384)
    embedder.encode(["warm up"])
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        work = Path(tmp)
        ingest = [bench_ingest(embedder, args.embedder, args.files, args.passages, work)]
        print(f"ingest {args.embedder}: {ingest[-1]}", flush=True)
        if args.embedder != "hash":
            ingest.append(
                bench_ingest(HashEmbedder(dim=384), "hash", args.files * args.hash_scale,
                             args.passages * args.hash_scale, work)
            )
            print(f"ingest hash: {ingest[-1]}", flush=True)
        search = []
        exact = None
        for kind in [k for k in args.indexes.split(",") if k]:
            result = bench_search(kind, args.search_passages, args.queries, args.k, embedder, work, exact)
            if kind == "flat":
                exact = result["found"]
            search.append(result)
            print(f"search {kind}: { {k: v for k, v in result.items() if k != 'found'} }", flush=True)
    for r in search:
        r.pop("found")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(markdown(args, ingest, search))
    args.out.with_suffix(".json").write_text(json.dumps({"ingest": ingest, "search": search}, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
