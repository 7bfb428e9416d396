"""Time of the splitter and the HTML extractor against input size, on hostile and ordinary shapes (issue 16).

Each shape is measured at doubling sizes; the table gives CPU seconds (process time, so
other processes on a shared machine matter less) and microseconds per KiB, and the fitted
exponent b of time ~ size^b (1 = linear, 2 = quadratic). Before session 4, an unspaced line
split in ~n^2 and deeply nested HTML extracted in ~depth^2. A third part measures what the
per-file time budget costs: the loader worker's start and its round trip per file.

    python benchmarks/hostile_scaling.py              # the committed table (a few minutes)
    python benchmarks/hostile_scaling.py --quick      # smaller sizes

Writes benchmarks/results/hostile_scaling.{md,json,png}.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from retrieval import Document, LoadLimits, Page, Splitter
from retrieval.html import html_to_text
from retrieval.loaders import load_document
from retrieval.sandbox import LoaderProcess, load_limited

RESULTS = Path(__file__).resolve().parent / "results"
KIB = 1024


def _repeat(unit: str, size: int) -> str:
    return unit * max(1, size // len(unit))


SPLITTER_SHAPES: dict[str, Callable[[int], str]] = {
    "unspaced line `xxx...`": lambda n: "x" * n,
    "unspaced CJK": lambda n: "\u6f22" * n,
    "one unpunctuated line of words": lambda n: _repeat("word ", n),
    "prose (sentences, paragraphs)": lambda n: _repeat("A short sentence here. Another one follows it.\n\n", n),
    "one paragraph of sentences": lambda n: _repeat("Short sentence. ", n),
}
HTML_SHAPES: dict[str, Callable[[int], str]] = {
    "nested `<div>`, closed": lambda n: "<div>" * (n // 11) + "deep text" + "</div>" * (n // 11),
    "nested `<div><b>`, unclosed": lambda n: _repeat("<div><b>", n) + "deep text",
    "nested `<table><tr><td>`": lambda n: _repeat("<table><tr><td>", n) + "deep text",
    "nested `<div hidden>`": lambda n: "<div>shown</div>" + "<div hidden>" * (n // 24) + "x" + "</div>" * (n // 24),
    "flat `<p>` paragraphs": lambda n: _repeat("<p>Some words in a paragraph.</p>\n", n),
}


def cpu_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median process time of ``fn`` over ``repeats`` runs."""
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return statistics.median(times)


def exponent(sizes: list[int], seconds: list[float]) -> float:
    """Least-squares slope of log(time) against log(size)."""
    xs, ys = [math.log(s) for s in sizes], [math.log(max(t, 1e-6)) for t in seconds]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)


def measure(kind: str, shapes: dict[str, Callable[[int], str]], run: Callable[[str], object],
            sizes: list[int], repeats: int) -> list[dict]:
    rows = []
    for name, make in shapes.items():
        seconds = []
        for size in sizes:
            text = make(size)
            seconds.append(cpu_seconds(lambda text=text: run(text), repeats))
            print(f"{kind:8} {name:34} {size // KIB:6} KiB {seconds[-1]:8.3f} s", flush=True)
        rows.append({"part": kind, "shape": name, "sizes": sizes, "seconds": seconds,
                     "exponent": exponent(sizes, seconds)})
    return rows


def split(text: str) -> None:
    Splitter().split(Document("d", "mem", "t", "text", text, [Page(None, 0, len(text))]))


def sandbox_costs(files: int) -> dict:
    """Worker start, and per-file time of a small .txt loaded in-process vs through the worker."""
    start = time.perf_counter()
    LoaderProcess(LoadLimits().max_memory_bytes).close()
    startup = time.perf_counter() - start
    limits = LoadLimits()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "small.txt"
        data = b"A small text file of a few words. " * 30  # ~1 KiB
        load_limited(path, data, limits)  # start the shared worker outside the timing
        timings = {}
        for label, load in (("in process", lambda: load_document(path, data, None)),
                            ("worker", lambda: load_limited(path, data, limits))):
            start = time.perf_counter()
            for _ in range(files):
                load()
            timings[label] = (time.perf_counter() - start) / files
    return {"startup_s": startup, "small_file_in_process_ms": 1000 * timings["in process"],
            "small_file_worker_ms": 1000 * timings["worker"]}


def write_markdown(rows: list[dict], sandbox: dict, args, path: Path) -> None:
    lines = [
        "# Hostile input: time against size (issue 16)",
        "",
        f"`python benchmarks/hostile_scaling.py{' --quick' if args.quick else ''}` on {platform.machine()}, "
        f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}; CPU seconds (process time), median of "
        f"{args.repeats}. Exponent b: time ~ size^b fitted over all sizes (1 = linear; small sizes carry fixed "
        "costs, so b < 1 happens). The splitter uses its default budget (200 words, the word-count fallback).",
        "",
    ]
    for part, title in (("splitter", "Splitter.split"), ("html", "html_to_text (main content)")):
        part_rows = [r for r in rows if r["part"] == part]
        sizes = part_rows[0]["sizes"]
        lines += [f"## {title}", "",
                  "| shape | " + " | ".join(f"{s // KIB} KiB" for s in sizes) + " | us per KiB (largest) | b |",
                  "|---|" + "---:|" * (len(sizes) + 2)]
        for r in part_rows:
            per_kib = 1e6 * r["seconds"][-1] / (sizes[-1] / KIB)
            cells = " | ".join(f"{t:.3f} s" for t in r["seconds"])
            lines.append(f"| {r['shape']} | {cells} | {per_kib:,.0f} | {r['exponent']:.2f} |")
        lines.append("")
    lines += [
        "## What the per-file time budget costs",
        "",
        "Files are extracted in a worker process that is killed when a file's budget ends "
        "(retrieval/sandbox.py); the worker serves every file in turn, so a process start is paid once "
        "(and after each kill), and each file pays a round trip.",
        "",
        "| worker start (imports bs4, pypdf, charset-normalizer) | 1 KiB .txt in process | 1 KiB .txt through "
        "the worker |",
        "|---:|---:|---:|",
        f"| {sandbox['startup_s']:.2f} s | {sandbox['small_file_in_process_ms']:.3f} ms | "
        f"{sandbox['small_file_worker_ms']:.3f} ms |",
        "",
    ]
    path.write_text("\n".join(lines))


def plot(rows: list[dict], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, part in zip(axes, ("splitter", "html"), strict=True):
        for r in (r for r in rows if r["part"] == part):
            ax.loglog([s / KIB for s in r["sizes"]], r["seconds"], marker="o",
                      label=f"{r['shape']} (b={r['exponent']:.2f})")
        ax.set_title("Splitter.split" if part == "splitter" else "html_to_text")
        ax.set_xlabel("input KiB")
        ax.set_ylabel("CPU seconds")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, one repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS / "hostile_scaling")
    args = parser.parse_args()
    if args.quick:
        args.repeats = 1
    split_sizes = [2**k * KIB for k in ((5, 6, 7, 8) if args.quick else (7, 8, 9, 10, 11, 12))]
    html_sizes = [2**k * KIB for k in ((4, 5, 6, 7) if args.quick else (6, 7, 8, 9, 10))]
    rows = measure("splitter", SPLITTER_SHAPES, split, split_sizes, args.repeats)
    rows += measure("html", HTML_SHAPES, html_to_text, html_sizes, args.repeats)
    sandbox = sandbox_costs(200 if args.quick else 1000)
    print(sandbox)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_markdown(rows, sandbox, args, args.out.with_suffix(".md"))
    args.out.with_suffix(".json").write_text(json.dumps({"rows": rows, "sandbox": sandbox,
                                                         "repeats": args.repeats}, indent=1))
    plot(rows, args.out.with_suffix(".png"))
    print(f"wrote {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
