"""What the prefix-state cache saves: tokens not re-encoded and time to first token.

The cache (app/cache.py) keeps RetentionState snapshots at passage boundaries,
keyed by the exact token prefix. Three situations where prefixes repeat:

A. Same passages, new questions ("pq" layout: passages first, then the question):
   a document set pinned by the user, several questions over it. Only the
   question is encoded once the passages are cached.
B. Same instructions, different passages ("qpq" layout with a system prompt): the
   instructions chunk is shared by every session's first turn.
C. The same one-shot question asked again (MultiDocQA.ask; e.g. a UI re-ask or
   many users asking a FAQ): nothing is encoded, the answer starts at once.

Each situation runs with the cache off and on over the same turns; encode time
is the median of --repeats runs per turn.

    python benchmarks/prefix_cache.py                 # default model, else a random "small" model
    python benchmarks/prefix_cache.py --out /tmp

Writes <out>/prefix_cache.md and prefix_cache.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from app import MultiDocQA
from app.cache import PrefixCache
from app.defaults import configure_threads, default_model_dir, make_embedder
from app.encoder import Reader, load_model

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "data" / "samples"

INSTRUCTIONS = (
    "You answer questions about technical documentation. Read the passages carefully. Answer with the exact words "
    "of the passage that holds the answer when you can, in one sentence. If the passages do not contain the answer, "
    "say that you do not know instead of guessing. Do not repeat the question. Do not mention the passages or their "
    "titles. Prefer the most specific passage when several passages seem to answer. Keep option names, function "
    "names and numbers exactly as they are written. When a question asks what a command or option does, answer "
    "with what it does, not how it is spelled. When a question asks for the first sentence of a section, give that "
    "sentence verbatim."
)


def encode_runs(reader, turns, repeats: int) -> list[dict]:
    """Ingest each turn from an empty state ``repeats`` times; per turn: tokens, cached tokens, median seconds."""
    out = []
    for turn in turns:
        times, cached = [], None
        for _ in range(repeats):
            ing = reader.ingest(turn, reader.new_state(), reader.root_key())
            times.append(ing.seconds)
            cached = ing.cached_tokens if cached is None else cached  # the first run is the one that counts
        out.append({"prompt_tokens": len(turn.prompt_ids), "cached_tokens": cached,
                    "encode_s": statistics.median(times)})
    return out


def scenario(name, description, reader_off, reader_on, turns, repeats) -> dict:
    reader_on.cache.clear()
    off = encode_runs(reader_off, turns, repeats)
    on = encode_runs(reader_on, turns, 1)  # one run each: a repeat would hit the cache by construction
    later = on[1:]  # the first turn fills the cache
    return {"name": name, "description": description, "turns": len(turns),
            "prompt_tokens": statistics.mean(r["prompt_tokens"] for r in off),
            "encoded_off": statistics.mean(r["prompt_tokens"] for r in off),
            "encoded_on": statistics.mean(r["prompt_tokens"] - r["cached_tokens"] for r in later),
            "encode_ms_off": 1000 * statistics.median(r["encode_s"] for r in off),
            "encode_ms_on": 1000 * statistics.median(r["encode_s"] for r in later),
            "encode_ms_on_first": 1000 * on[0]["encode_s"], "cache": reader_on.cache.stats()}


def run(args) -> dict:
    model, tok = load_model(args.model or default_model_dir())
    reader = Reader(model, tok, cache=None, max_new_tokens=args.max_new_tokens)
    note = f"model {args.model or default_model_dir()} ({model.num_parameters / 1e6:.1f}M parameters)"
    threads = configure_threads(args.threads, reader.model)
    print(note, file=sys.stderr)

    def variant(layout, cache, instructions=None):
        return Reader(reader.model, reader.tokenizer, layout=layout, cache=cache, instructions=instructions,
                      max_new_tokens=args.max_new_tokens)

    questions = [q["question"] for q in json.loads((args.samples / "questions.json").read_text())]
    tmp = Path(tempfile.mkdtemp(prefix="retnet-rag-bench-"))
    results = []
    try:
        col_qa = MultiDocQA("samples", data_dir=tmp, model=reader, embedder=make_embedder(args.embedder), k=args.k)
        col_qa.add(args.samples, progress=False)
        col = col_qa.collection
        budget = 512 * 2**20

        # A: one pinned passage set, many questions, passages first.
        pinned = col.search(questions[0], args.k)
        off, on = variant("pq", None), variant("pq", PrefixCache(budget))
        turns = [on.layout_turn(q, pinned, first_turn=True) for q in questions]
        results.append(scenario("A", f"same {args.k} passages, {len(questions)} different questions (layout pq)",
                                off, on, turns, args.repeats))

        # B: shared instructions, each question with its own passages, question first.
        off, on = variant("qpq", None, INSTRUCTIONS), variant("qpq", PrefixCache(budget), INSTRUCTIONS)
        turns = [on.layout_turn(q, col.search(q, args.k), first_turn=True) for q in questions]
        results.append(scenario("B", f"same instructions ({len(on.encode(INSTRUCTIONS))} tokens), own passages per "
                                     "question (layout qpq)", off, on, turns, args.repeats))

        # C: the same one-shot asks twice, end to end (retrieval + encode + first token).
        ttft = {}
        for label, cache in (("off", None), ("on", PrefixCache(budget))):
            qa = MultiDocQA(col, model=variant("qpq", cache), k=args.k)
            first, again = [], []
            for q in questions:
                first.append(qa.ask(q).timings.first_token_s)
                again.append(qa.ask(q).timings.first_token_s)
            ttft[label] = {"first_ms": 1000 * statistics.median(first), "again_ms": 1000 * statistics.median(again)}
        ttft["cached_tokens_again"] = qa.ask(questions[0]).usage.cached_tokens
        ttft["prompt_tokens"] = qa.ask(questions[0]).usage.prompt_tokens
        col_qa.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    import os

    return {"note": note, "threads": threads, "loadavg": os.getloadavg()[0], "k": args.k, "embedder": args.embedder,
            "repeats": args.repeats,
            "state_bytes": reader.state_bytes, "scenarios": results, "repeat_ask": ttft}


def summarize(res: dict) -> str:
    lines = [
        "# Prefix-state cache benchmark (CPU)",
        "",
        f"Command: `python benchmarks/prefix_cache.py --k {res['k']} --embedder {res['embedder']} "
        f"--repeats {res['repeats']}`",
        "",
        f"- {res['note']}",
        f"- {res['threads']} torch thread(s), load average {res['loadavg']:.1f} at the end (the machine is shared); "
        f"one snapshot = the state ({res['state_bytes']:,} bytes) + the "
        "boundary's logits; LRU within a byte budget.",
        "- Encode = reading the turn's prompt (instructions, passages, question) into an empty state with the "
        "chunkwise form, one chunk per passage. Cache on: the first turn fills the cache (its time is in "
        "parentheses); the other turns restore the deepest cached passage boundary and encode the rest (their "
        "mean tokens and median time are shown). Cache off: median over all turns.",
        "",
        "| scenario | turns | prompt tokens | tokens encoded, cache off | tokens encoded, cache on | encode ms, off "
        "| encode ms, on (first turn) | speed-up |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in res["scenarios"]:
        lines.append(
            f"| {s['name']}: {s['description']} | {s['turns']} | {s['prompt_tokens']:.0f} | {s['encoded_off']:.0f} | "
            f"{s['encoded_on']:.0f} | {s['encode_ms_off']:.1f} | {s['encode_ms_on']:.1f} "
            f"({s['encode_ms_on_first']:.1f}) | {s['encode_ms_off'] / max(s['encode_ms_on'], 1e-9):.1f}x |")
    t = res["repeat_ask"]
    lines += [
        "",
        "C: the same one-shot question asked twice (`MultiDocQA.ask`, layout qpq; time to first token, "
        "retrieval included; median over the sample questions):",
        "",
        "| cache | first ask (ms) | same ask again (ms) |",
        "|---|---:|---:|",
        f"| off | {t['off']['first_ms']:.0f} | {t['off']['again_ms']:.0f} |",
        f"| on | {t['on']['first_ms']:.0f} | {t['on']['again_ms']:.0f} |",
        "",
        f"With the cache on, the repeated ask restored {t['cached_tokens_again']} of its {t['prompt_tokens']} "
        "prompt tokens (all of them) and encoded nothing.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None, help="model directory (default: data/model)")
    ap.add_argument("--samples", type=Path, default=SAMPLES)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--embedder", choices=("minilm", "hash"), default="minilm")
    ap.add_argument("--threads", type=int, default=0, help="0 = auto (1 for small models)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = ap.parse_args(argv)
    started = time.perf_counter()
    res = run(args)
    res["seconds"] = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "prefix_cache.json").write_text(json.dumps(res, indent=1))
    summary = summarize(res)
    (args.out / "prefix_cache.md").write_text(summary)
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
