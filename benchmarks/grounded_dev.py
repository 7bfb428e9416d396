"""Grounded answers vs free generation on the natural-question dev set (data/eval/), and the refusal
threshold calibrated on it.

    PYTHONPATH=. python benchmarks/grounded_dev.py            # (evaluation/ is not installed) bundled model, MiniLM
    PYTHONPATH=. python benchmarks/grounded_dev.py --limit 40 --model DIR   # a quick look
    PYTHONPATH=. python benchmarks/grounded_dev.py --report-only            # the report again, from the saved answers

Every single-turn question (conversations are left to evaluation.dev, which runs sessions) is
retrieved once (app.retrieve.retrieve, k=4) and its turn read once; each setting then decodes from a
copy of that state through the app's AnswerStream, greedy. Settings: free generation, and grounded
(app.grounding) with a minimum quote length and optional free connective tokens.

Scores, as the dev set defines them (data/eval/README.md): key-phrase hit (the answer holds every
key phrase, case and whitespace aside), token F1 against the best reference answer. Refusal scores
(app.grounding): "support" (share of the question's terms found in the passages read), "score"
(the grounded answer's mean log-probability of its quoted tokens under the model) and, for
comparison, the top passage's retrieval score. Every threshold is tried on answerable vs
unanswerable questions; the report gives each score's AUC and the precision/recall of refusals at
the chosen threshold (highest refusal recall with at most 10% false refusals), plus a 2-fold
estimate (threshold picked on one half, measured on the other).

Writes benchmarks/results/grounded_dev.md and grounded_dev.json (every answer).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

from app.decoder import AnswerStream
from app.defaults import default_model_dir, make_embedder
from app.encoder import Reader, load_model
from app.grounding import support
from app.retrieve import retrieve
from app.types import Source, Usage
from evaluation.devset import load_devset, normalise
from evaluation.score import token_f1

RESULTS = Path(__file__).resolve().parent / "results"
# name -> AnswerOptions overrides
SETTINGS = {
    "free": {"grounded": False},
    "grounded": {"grounded": True, "grounded_min_tokens": 1},
    "grounded-min4": {"grounded": True, "grounded_min_tokens": 4},
    "grounded-min8": {"grounded": True, "grounded_min_tokens": 8},
    "grounded-min16": {"grounded": True, "grounded_min_tokens": 16},
    "grounded-min4-free8": {"grounded": True, "grounded_min_tokens": 4, "grounded_free_tokens": 8},
}
MAX_FALSE_REFUSALS = 0.10


def open_collection(data_dir: Path, ds, embedder: str):
    from retrieval import Collection

    col = Collection.open_or_create("dev", data_dir, embedder=make_embedder(embedder))
    if len(col.documents()) != len(ds.documents):
        col.add([str(d.path) for d in ds.documents.values()], progress=False)
    return col


def hit(answer: str, phrases) -> bool:
    a = normalise(answer)
    return bool(phrases) and all(normalise(p) in a for p in phrases)


def answer_all(args) -> list[dict]:
    ds = load_devset()
    torch.set_num_threads(args.threads)
    model, tok = load_model(args.model)
    # Refusal is measured afterwards, on the stored scores, for every threshold.
    readers = {name: Reader(model, tok, cache=None, max_new_tokens=args.max_new_tokens, refuse=False, **o)
               for name, o in SETTINGS.items() if name in args.settings}
    base = readers[args.settings[0]]
    col = open_collection(args.data_dir, ds, args.embedder)
    questions = ds.single_turn()
    random.Random(0).shuffle(questions)  # any prefix of the run is a fair sample
    if args.limit:
        questions = questions[: args.limit]
    records = []
    for i, q in enumerate(questions):
        hits = retrieve(col, q.question, args.k)
        sources = [Source.from_hit(j + 1, h) for j, h in enumerate(hits)]
        turn = base.layout_turn(q.question, hits, first_turn=True)
        ing = base.ingest(turn, base.new_state(), base.root_key())
        for name, reader in readers.items():
            t0 = time.perf_counter()
            stream = AnswerStream(reader, ing.state.clone(), ing.logits, ing.key, question=q.question,
                                  sources=sources, usage=Usage(ing.prompt_tokens))
            a = stream.result()
            g = stream.grounding
            records.append({
                "id": q.id, "type": q.type, "answerable": q.answerable, "setting": name, "text": a.text,
                "hit": hit(a.text, q.key_phrases) if q.answerable else None,
                "f1": max(token_f1(a.text, r) for r in q.answers) if q.answerable else None,
                "score": g.score() if g is not None else None,
                "retrieval_score": sources[0].score if sources else None,
                "support": support(q.question, sources),
                "quotes": [qq.to_dict() for qq in a.quotes], "tokens": a.usage.answer_tokens,
                "verbatim": verbatim(a.text, [qq.to_dict() for qq in a.quotes], sources, name),
                "stop": a.stop_reason, "seconds": time.perf_counter() - t0})
        print(f"{i + 1}/{len(questions)} {q.id}", file=sys.stderr, flush=True)
        if args.partial and (i + 1) % 10 == 0:  # a long run can be reported before it ends (--report-only)
            args.partial.write_text(json.dumps({"answers": records}, indent=0))
    return records


def refusal_table(recs: list[dict], key: str) -> list[tuple[float, float, float, float]]:
    """(threshold, precision, recall, false refusal rate) for every distinct score as the threshold."""
    scored = [(r[key] if r[key] is not None else float("-inf"), not r["answerable"]) for r in recs]
    n_un = sum(u for _, u in scored)
    n_ans = len(scored) - n_un
    out = []
    for t in sorted({s for s, _ in scored if s != float("-inf")} | {float("inf")}):
        refused = [(s < t, u) for s, u in scored]
        tp = sum(r and u for r, u in refused)
        fp = sum(r and not u for r, u in refused)
        prec = tp / (tp + fp) if tp + fp else 1.0
        out.append((t, prec, tp / n_un if n_un else 0.0, fp / n_ans if n_ans else 0.0))
    return out


def pick(table) -> tuple[float, float, float, float]:
    ok = [row for row in table if row[3] <= MAX_FALSE_REFUSALS]
    if ok:
        return max(ok, key=lambda r: (r[2], -r[3]))
    return max(table, key=lambda r: 2 * r[1] * r[2] / (r[1] + r[2]) if r[1] + r[2] else 0)


def at(recs, key, t):
    un = [r for r in recs if not r["answerable"]]
    an = [r for r in recs if r["answerable"]]
    low = lambda r: r[key] is None or r[key] < t  # noqa: E731
    tp, fp = sum(map(low, un)), sum(map(low, an))
    return (tp / (tp + fp) if tp + fp else 1.0, tp / len(un) if un else 0.0, fp / len(an) if an else 0.0)


def two_fold(recs, key):
    ids = sorted({r["id"] for r in recs})
    random.Random(1).shuffle(ids)
    halves = [set(ids[::2]), set(ids[1::2])]
    res = []
    for a, b in ((0, 1), (1, 0)):
        t = pick(refusal_table([r for r in recs if r["id"] in halves[a]], key))[0]
        res.append(at([r for r in recs if r["id"] in halves[b]], key, t))
    return tuple(sum(x[i] for x in res) / 2 for i in range(3))


def auc(recs, key) -> float:
    un = [r[key] for r in recs if not r["answerable"] and r[key] is not None]
    an = [r[key] for r in recs if r["answerable"] and r[key] is not None]
    if not un or not an:
        return float("nan")
    return sum((u < a) + 0.5 * (u == a) for u in un for a in an) / (len(un) * len(an))


def verbatim(text: str, quotes: list[dict], sources: list, setting: str) -> bool | None:
    """Every quote is its cited passage's text at its offsets, and (no free tokens) the answer is the quote."""
    if setting == "free":
        return None
    by_n = {s.n: s for s in sources}
    ok = all(by_n[q["source"]].text[q["start"] : q["end"]] == q["text"] for q in quotes)
    if not SETTINGS[setting].get("grounded_free_tokens"):
        ok = ok and (text == quotes[0]["text"] if quotes else text == "")
    return ok


def backfill(records, data_dir, embedder, k):
    """Add "support" and "verbatim" to records of a run that did not store them. Retrieval may have
    changed since, so "verbatim" is checked against the documents: every quote is some dev document's
    text at the quote's document offsets (and, without free tokens, the answer is the quote)."""
    ds = load_devset()
    if any("support" not in r for r in records):
        col = open_collection(data_dir, ds, embedder)
        cache = {}
        for r in records:
            if r["id"] not in cache:
                q = ds.question(r["id"])
                cache[r["id"]] = support(q.question, retrieve(col, q.question, k))
            r["support"] = cache[r["id"]]
    texts = [ds.document_text(d) for d in ds.documents]
    for r in records:
        if "verbatim" in r or r["setting"] == "free":
            continue
        ok = all(any(t[q["doc_start"] : q["doc_end"]] == q["text"] for t in texts) for q in r["quotes"])
        if not SETTINGS[r["setting"]].get("grounded_free_tokens"):
            ok = ok and (r["text"] == r["quotes"][0]["text"] if r["quotes"] else r["text"] == "")
        r["verbatim"] = ok


def paired(records, a: str, b: str, key: str, rounds: int = 2000) -> tuple[float, float, float]:
    """Mean of a - b over the answerable questions, with a 90% bootstrap interval."""
    va = {r["id"]: r[key] for r in records if r["setting"] == a and r["answerable"]}
    vb = {r["id"]: r[key] for r in records if r["setting"] == b and r["answerable"]}
    d = [va[i] - vb[i] for i in va if i in vb]
    rng = random.Random(0)
    means = sorted(sum(rng.choice(d) for _ in d) / len(d) for _ in range(rounds))
    return sum(d) / len(d), means[int(0.05 * rounds)], means[int(0.95 * rounds) - 1]


def mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else float("nan")


def report(records: list[dict], args) -> str:
    settings = list(dict.fromkeys(r["setting"] for r in records))
    n_q = len({r["id"] for r in records})
    n_un = len({r["id"] for r in records if not r["answerable"]})
    lines = ["# Grounded answers on the dev set", "",
             f"`python benchmarks/grounded_dev.py` ({time.strftime('%Y-%m-%d')}): model `{args.model}`, "
             f"{n_q} single-turn questions ({n_q - n_un} answerable, {n_un} unanswerable), k={args.k} "
             f"(app.retrieve, {args.embedder}), greedy, max {args.max_new_tokens} new tokens, layout qpq. "
             f"{args.note}", "",
             "| setting | key-phrase hit | token F1 | mean answer tokens | verbatim (each quote is the text at its "
             "offsets; no free tokens: answer = quote) | s / answer |",
             "|---|---:|---:|---:|---:|---:|"]
    for s in settings:
        rs = [r for r in records if r["setting"] == s and r["answerable"]]
        allr = [r for r in records if r["setting"] == s]
        checked = [r.get("verbatim") for r in allr if r.get("verbatim") is not None]
        ver = f"{sum(checked)}/{len(checked)}" if checked else "-"
        lines.append(f"| {s} | {mean([r['hit'] for r in rs]):.3f} | {mean([r['f1'] for r in rs]):.3f} | "
                     f"{mean([r['tokens'] for r in allr]):.1f} | {ver} | {mean([r['seconds'] for r in allr]):.2f} |")
    if "free" in settings:
        lines += ["", "Token F1 minus free generation's, same questions (mean, 90% paired bootstrap interval): "
                  + "; ".join(f"{s} {d:+.3f} [{lo:+.3f}, {hi:+.3f}]" for s in settings if s != "free"
                              for d, lo, hi in [paired(records, s, "free", "f1")])]
    lines += ["", "Per question type (answerable), key-phrase hit / F1:", "",
              "| setting | " + " | ".join(sorted({r["type"] for r in records if r["answerable"]})) + " |",
              "|---|" + "---:|" * len({r["type"] for r in records if r["answerable"]})]
    for s in settings:
        cells = []
        for t in sorted({r["type"] for r in records if r["answerable"]}):
            rs = [r for r in records if r["setting"] == s and r["type"] == t]
            cells.append(f"{mean([r['hit'] for r in rs]):.2f} / {mean([r['f1'] for r in rs]):.2f}")
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    lines += ["", "## Refusal", "",
              "AUC: the chance that an unanswerable question scores below an answerable one (0.5: no signal). "
              f"Threshold: the highest refusal recall with at most {MAX_FALSE_REFUSALS:.0%} false refusals; "
              "precision = refused and unanswerable / refused, recall = refused unanswerable / unanswerable. "
              "2-fold: picked on one half of the questions, measured on the other.", "",
              "| setting | score | AUC | threshold | precision | recall | false refusals | "
              "2-fold precision / recall / false |", "|---|---|---:|---:|---:|---:|---:|---|"]
    for s in settings:
        rs = [r for r in records if r["setting"] == s]
        keys = ("support", "retrieval_score") if s == settings[0] else ("score",)
        for key in keys:
            if s == "free" and key == "score" or all(r.get(key) is None for r in rs):
                continue
            t, p, rc, fr = pick(refusal_table(rs, key))
            cv = two_fold(rs, key)
            label = "(any)" if key != "score" else s
            lines.append(f"| {label} | {key} | {auc(rs, key):.3f} | {t:.3f} | {p:.3f} | {rc:.3f} | {fr:.3f} | "
                         f"{cv[0]:.2f} / {cv[1]:.2f} / {cv[2]:.2f} |")
    t = pick(refusal_table([r for r in records if r["setting"] == settings[0]], "support"))[0]
    lines += ["", f"With the refusal on (support < {t:.3f}; a refused answerable question scores 0):", "",
              "| setting | key-phrase hit | token F1 | unanswerable refused | answerable refused |",
              "|---|---:|---:|---:|---:|"]
    for s in settings:
        rs = [r for r in records if r["setting"] == s]
        refused = lambda r: r["support"] < t  # noqa: E731
        an = [r for r in rs if r["answerable"]]
        un = [r for r in rs if not r["answerable"]]
        lines.append(f"| {s} + refusal | {mean([0.0 if refused(r) else r['hit'] for r in an]):.3f} | "
                     f"{mean([0.0 if refused(r) else r['f1'] for r in an]):.3f} | "
                     f"{mean([refused(r) for r in un]):.3f} | {mean([refused(r) for r in an]):.3f} |")
    lines += ["", "Examples (first 8 answerable questions):", ""]
    for qid in [r["id"] for r in records if r["answerable"] and r["setting"] == settings[0]][:8]:
        for s in settings:
            r = next(r for r in records if r["id"] == qid and r["setting"] == s)
            lines.append(f"- {qid} {s}: {r['text'][:120]!r}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None, help="model directory (default: the bundled model)")
    ap.add_argument("--data-dir", type=Path, default=None, help="where the dev collection is built (default: temp)")
    ap.add_argument("--embedder", default="minilm")
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--note", default="", help="a sentence for the report (e.g. where the model came from)")
    args = ap.parse_args(argv)
    args.model = args.model or default_model_dir()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "grounded_dev.json"
    if args.report_only:
        records = json.loads(path.read_text())["answers"]
        if args.data_dir is not None:
            backfill(records, args.data_dir, args.embedder, args.k)
            path.write_text(json.dumps({"answers": records}, indent=0))
    else:
        args.data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="grounded-dev-"))
        args.partial = path
        records = answer_all(args)
        path.write_text(json.dumps({"answers": records}, indent=0))
    (args.out / "grounded_dev.md").write_text(report(records, args))
    print((args.out / "grounded_dev.md").read_text())


if __name__ == "__main__":
    main()
