"""Score the README's main job: every question of data/samples/questions.json asked through the real
RAG loop (a MiniLM collection of the sample documents, MultiDocQA, one fresh state per question).

    python -m evaluation.samples_score                       # the bundled model
    python -m evaluation.samples_score --model DIR --out benchmarks/results

Prints and writes ``samples_score.md``: exact match, token F1 and whether a cited source is the
question's document, overall and per question.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from app import MultiDocQA
from app.defaults import configure_threads
from evaluation.score import score

ROOT = Path(__file__).resolve().parents[1]

SAMPLES = ROOT / "data" / "samples"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None, help="model directory (default: the bundled data/model)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    a = ap.parse_args()
    questions = json.loads((SAMPLES / "questions.json").read_text())
    files = sorted(p for p in SAMPLES.iterdir() if p.name not in ("questions.json", "manifest.json"))
    rows, totals = [], {"em": 0.0, "f1": 0.0, "source": 0.0}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as data_dir:
        qa = MultiDocQA("samples", data_dir=data_dir, model=a.model)
        configure_threads(a.threads, qa.model)
        qa.add(files, progress=False)
        for q in questions:
            answer = qa.ask(q["question"])
            s = score(answer.text, q["answer"])
            cited = any(Path(src.source).name == q["file"] for src in answer.sources)
            totals["em"] += s["em"]
            totals["f1"] += s["f1"]
            totals["source"] += cited
            rows.append(f"| {q['question']} | {q['answer'][:60]} | {answer.text[:60]!r} | {s['f1']:.2f} | "
                        f"{'yes' if cited else 'no'} |")
        qa.close()
    n = len(questions)
    name = a.model or "data/model"
    report = "\n".join([
        f"# Sample questions through the RAG loop ({name})", "",
        f"Command: `python -m evaluation.samples_score{' --model ' + str(a.model) if a.model else ''}`; "
        f"{n} questions over the {len(files)} documents of data/samples, {time.perf_counter() - started:.0f} s", "",
        f"Exact match {totals['em'] / n:.3f}, token F1 {totals['f1'] / n:.3f}, "
        f"a cited source is the question's document {totals['source'] / n:.2f}", "",
        "| question | expected | answer | F1 | source found |", "|---|---|---|---:|---|", *rows])
    print(report)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "samples_score.md").write_text(report + "\n")


if __name__ == "__main__":
    main()
