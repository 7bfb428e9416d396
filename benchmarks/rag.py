"""A long RAG conversation on CPU: time to first token, decode tokens/s and memory, turn by turn.

One session of many turns (default 200) over the sample documents (data/samples),
each turn retrieving passages with the real embedder, reading them into the
session's recurrent state with the chunkwise form and streaming the answer with
the recurrent form. Because the state never grows, turn 200 should be as fast as
turn 1 and memory should stay flat (a Transformer's KV cache would have grown by
every token of every turn).

    python benchmarks/rag.py                          # default model (data/model), 200 turns
    python benchmarks/rag.py --turns 20 --out /tmp    # quick look

If the default model is missing, a randomly initialised model of the "small"
preset (same shape as the bundled model's preset) is used instead, with the
project tokenizer, and the output says so: speed and memory depend on the
shape, not on the weights (a random model never stops early, so every turn
generates exactly --max-new-tokens tokens).

Writes <out>/rag.md (summary), rag.json (per-turn numbers) and rag.png (plot).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from app import MultiDocQA
from app.defaults import configure_threads, default_model_dir, make_embedder
from app.encoder import Reader, load_model
from app.prompt import DEFAULT_LAYOUT, LAYOUTS

REPO = Path(__file__).resolve().parents[1]

SAMPLES = REPO / "data" / "samples"


def load_reader(model_dir: Path | None, **options) -> tuple[Reader, str]:
    """The model in ``model_dir`` (default: the bundled one) as a Reader, and a one-line note."""
    path = model_dir or default_model_dir()
    model, tok = load_model(path)
    return Reader(model, tok, **options), f"model {path} ({model.num_parameters / 1e6:.1f}M parameters)"


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def sample_questions() -> list[str]:
    qs = SAMPLES / "questions.json"
    if qs.is_file():
        return [q["question"] for q in json.loads(qs.read_text())]
    return ["What does this document describe?", "Which option prints the version?", "How is data compressed?"]


def run(args) -> dict:
    reader, note = load_reader(args.model, max_new_tokens=args.max_new_tokens, layout=args.layout)
    threads = configure_threads(args.threads, reader.model)
    print(note, file=sys.stderr)
    tmp = Path(tempfile.mkdtemp(prefix="retnet-rag-bench-"))
    try:
        qa = MultiDocQA("samples", data_dir=tmp, model=reader, embedder=make_embedder(args.embedder), k=args.k)
        report = qa.add(args.samples, progress=False)
        print(report.summary().splitlines()[0], file=sys.stderr)
        questions = sample_questions()
        session = qa.session()
        rows = []
        started = time.perf_counter()
        for i in range(args.turns):
            stream = session.stream(questions[i % len(questions)])
            for _ in stream:
                pass
            a = stream.answer
            rows.append({"turn": i + 1, "question": i % len(questions), "ttft_s": a.timings.first_token_s,
                         "tokens_per_s": a.timings.tokens_per_s,
                         "answer_tokens": a.usage.answer_tokens, "prompt_tokens": a.usage.prompt_tokens,
                         "cached_tokens": a.usage.cached_tokens, "retrieve_s": a.timings.retrieve_s,
                         "encode_s": a.timings.encode_s, "decode_s": a.timings.decode_s,
                         "state_bytes": session.state_bytes, "tokens_read": session.tokens_read,
                         "rss_bytes": rss_bytes()})
            if (i + 1) % max(1, args.turns // 10) == 0:
                r = rows[-1]
                print(f"turn {i + 1}: ttft {r['ttft_s'] * 1000:.0f} ms, {r['tokens_per_s']:.1f} tok/s, "
                      f"read {r['tokens_read']} tokens, rss {r['rss_bytes'] / 2**20:.0f} MiB", file=sys.stderr)
        qa.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"note": note, "threads": threads, "cycle": len(questions), "embedder": args.embedder,
            "layout": args.layout, "k": args.k,
            "max_new_tokens": args.max_new_tokens, "turns": args.turns, "seconds": time.perf_counter() - started,
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                       f"{torch.get_num_threads()} torch thread(s), torch {torch.__version__}, load average "
                       f"{os.getloadavg()[0]:.1f} at the end (other processes share the machine)", "rows": rows}


def summarize(res: dict) -> str:
    rows = res["rows"]
    n = len(rows)
    w = min(res.get("cycle", 10), n)  # one pass over the sample questions
    first, last = rows[:w], rows[(n // w - 1) * w : (n // w) * w] if n >= 2 * w else rows[-w:]
    same = next(r for r in reversed(rows) if r["question"] == rows[0]["question"])
    med = lambda rs, k: statistics.median(r[k] for r in rs)  # noqa: E731
    states = {r["state_bytes"] for r in rows}
    warm = rows[min(9, n - 1)]["rss_bytes"]
    lines = [
        "# RAG session benchmark (CPU)",
        "",
        f"Command: `python benchmarks/rag.py --turns {res['turns']} --k {res['k']} --max-new-tokens "
        f"{res['max_new_tokens']} --layout {res['layout']} --embedder {res['embedder']}`",
        "",
        f"- {res['note']}",
        f"- Machine: {res['machine']}; total {res['seconds']:.0f} s for {n} turns.",
        f"- Each turn: retrieve {res['k']} passages (embedder {res['embedder']}), read them chunkwise into the "
        f"session state (one chunk per passage), stream up to {res['max_new_tokens']} tokens recurrently.",
        f"- By turn {n} the state has read {rows[-1]['tokens_read']:,} tokens; its size never changed: "
        f"{', '.join(f'{s:,}' for s in sorted(states))} bytes.",
        "",
        f"The {w} sample questions are asked in turn, so turn 1 and turn {same['turn']} ask the same question "
        "(same passages, same prompt length); the medians compare the first and the last full pass.",
        "",
        f"| | turn 1 | turn {same['turn']} | turn {n} | median turns 1-{w} | median turns "
        f"{last[0]['turn']}-{last[-1]['turn']} |",
        "|---|---:|---:|---:|---:|---:|",
        f"| time to first token (ms) | {rows[0]['ttft_s'] * 1000:.0f} | {same['ttft_s'] * 1000:.0f} | "
        f"{rows[-1]['ttft_s'] * 1000:.0f} | {med(first, 'ttft_s') * 1000:.0f} | {med(last, 'ttft_s') * 1000:.0f} |",
        f"| decode tokens/s | {rows[0]['tokens_per_s']:.1f} | {same['tokens_per_s']:.1f} | "
        f"{rows[-1]['tokens_per_s']:.1f} | {med(first, 'tokens_per_s'):.1f} | {med(last, 'tokens_per_s'):.1f} |",
        f"| prompt tokens read | {rows[0]['prompt_tokens']} | {same['prompt_tokens']} | {rows[-1]['prompt_tokens']} | "
        f"{med(first, 'prompt_tokens'):.0f} | {med(last, 'prompt_tokens'):.0f} |",
        f"| tokens read so far | {rows[0]['tokens_read']:,} | {same['tokens_read']:,} | {rows[-1]['tokens_read']:,} "
        "| | |",
        f"| state bytes | {rows[0]['state_bytes']:,} | {same['state_bytes']:,} | {rows[-1]['state_bytes']:,} | | |",
        f"| process RSS (MiB) | {rows[0]['rss_bytes'] / 2**20:.0f} | {same['rss_bytes'] / 2**20:.0f} | "
        f"{rows[-1]['rss_bytes'] / 2**20:.0f} | | |",
        "",
        f"RSS after warm-up (turn {min(10, n)}): {warm / 2**20:.1f} MiB; at turn {n}: "
        f"{rows[-1]['rss_bytes'] / 2**20:.1f} MiB (change {(rows[-1]['rss_bytes'] - warm) / 2**20:+.1f} MiB). "
        f"Time to first token includes retrieval and encoding; ratio last/first median: "
        f"{med(last, 'ttft_s') / med(first, 'ttft_s'):.2f}; decode tokens/s ratio: "
        f"{med(last, 'tokens_per_s') / max(med(first, 'tokens_per_s'), 1e-9):.2f}.",
        "",
        "Per-turn numbers: rag.json; plot: rag.png.",
        "",
    ]
    return "\n".join(lines)


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = res["rows"]
    t = [r["turn"] for r in rows]
    fig, axes = plt.subplots(3, 1, figsize=(8, 9), sharex=True)
    axes[0].plot(t, [r["ttft_s"] * 1000 for r in rows], ".", ms=3)
    axes[0].set_ylabel("time to first token (ms)")
    axes[0].set_ylim(bottom=0)
    axes[1].plot(t, [r["tokens_per_s"] for r in rows], ".", ms=3, color="tab:green")
    axes[1].set_ylabel("decode tokens/s")
    axes[1].set_ylim(bottom=0)
    ax = axes[2]
    ax.plot(t, [r["rss_bytes"] / 2**20 for r in rows], color="tab:red", label="process RSS (MiB)")
    ax.plot(t, [r["state_bytes"] / 2**20 for r in rows], color="tab:purple",
            label=f"recurrent state ({rows[0]['state_bytes'] / 2**20:.2f} MiB, constant)")
    ax.set_ylabel("MiB")
    ax.set_ylim(bottom=0)
    ax2 = ax.twinx()
    ax2.plot(t, [r["tokens_read"] / 1000 for r in rows], "--", color="gray", label="tokens read (thousands)")
    ax2.set_ylabel("tokens read (k)")
    ax2.set_ylim(bottom=0)
    ax.legend(loc="upper left", fontsize=8)
    ax2.legend(loc="lower right", fontsize=8)
    ax.set_xlabel("turn")
    fig.suptitle(f"RetNet RAG session on CPU: {len(rows)} turns, constant state", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None, help="model directory (default: data/model)")
    ap.add_argument("--samples", type=Path, default=SAMPLES)
    ap.add_argument("--turns", type=int, default=200)
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--layout", choices=LAYOUTS, default=DEFAULT_LAYOUT)
    ap.add_argument("--embedder", choices=("minilm", "hash"), default="minilm")
    ap.add_argument("--threads", type=int, default=0, help="0 = auto (1 for small models)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = ap.parse_args(argv)
    res = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "rag.json").write_text(json.dumps(res, indent=1))
    summary = summarize(res)
    (args.out / "rag.md").write_text(summary)
    plot(res, args.out / "rag.png")
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
