"""Model-free answerability signals on the dev set: how well each separates unanswerable questions (issue 13).

    PYTHONPATH=. python benchmarks/refusal_signals.py [--data-dir DIR] [--embedder minilm] [--out DIR]

For every single question and first conversation turn of the dev set (data/eval), the app's retrieval
(app.retrieve.retrieve, k=4) runs over the dev collection (evaluation.dev builds or reuses it under
--data-dir), and four scores of the retrieved passages are taken:

- support: the share of the question's content terms found in the passages (app.grounding.support, the
  app's refusal gate today);
- top: the retrieval score of the first passage (its scale depends on the retriever: fused ranks);
- cosine: the embedder's cosine of the question and the retrieved sentence closest to it (what the
  model-free baseline answers with, evaluation.dev_baseline);
- coverage: the largest share of the question's terms that one retrieved sentence holds.

For each, and for logistic combinations, it reports the AUC (the chance an unanswerable question scores
lower than an answerable one), and the refusal recall, false refusals and precision (the share of refused
questions that were unanswerable) at a threshold chosen for at most 10% false refusals,
two-fold: fitted and thresholded on even question ids, measured on odd ones, and the other way round.
Writes OUT/refusal_signals.md and .json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.evidence import EvidenceScorer  # noqa: E402
from app.retrieve import retrieve, terms  # noqa: E402
from app.sentences import sentences  # noqa: E402
from evaluation.dev import DEFAULT_DATA_DIR, open_devset_collection  # noqa: E402
from evaluation.devset import load_devset  # noqa: E402

SIGNALS = ("support", "top", "cosine", "coverage")
COMBINATIONS = (("support",), ("cosine",), ("support", "cosine"), ("support", "top", "cosine"), SIGNALS)
MAX_FALSE = 0.10


def features(collection, scorer: EvidenceScorer, question: str, k: int) -> dict:
    """The app's own signals (app.evidence: support, cosine) plus two it leaves out (top, coverage)."""
    hits = retrieve(collection, question, k)
    passages = [h.text for h in hits]
    wanted = terms(question)
    coverage = max((len(wanted & terms(s)) / max(1, len(wanted)) for p in passages for s in sentences(p)), default=0.0)
    return {**scorer.signals(question, passages), "top": float(hits[0].score) if hits else 0.0, "coverage": coverage}


def auc(y: np.ndarray, refuse_score: np.ndarray) -> float:
    """P(an unanswerable question's refusal score > an answerable one's), ties counted half."""
    pos, neg = refuse_score[y == 1], refuse_score[y == 0]
    if not len(pos) or not len(neg):
        return float("nan")
    diff = pos[:, None] - neg[None, :]
    return float((diff > 0).mean() + 0.5 * (diff == 0).mean())


def threshold(y: np.ndarray, s: np.ndarray) -> float:
    """The lowest refusal-score threshold whose false refusals (answerable, s >= t) are at most MAX_FALSE."""
    for t in np.sort(np.unique(s)):
        if ((s >= t) & (y == 0)).sum() <= MAX_FALSE * (y == 0).sum():
            return float(t)
    return float("inf")


class Logistic:
    """L2-regularised logistic regression on standardised features, fitted by Newton's method
    (a handful of features and a few hundred rows: no library needed)."""

    def __init__(self, X: np.ndarray, y: np.ndarray, l2: float = 0.1, steps: int = 50):
        self.mean, self.std = X.mean(0), X.std(0) + 1e-9
        A = self._design(X)
        w = np.zeros(A.shape[1])
        reg = l2 * np.eye(len(w))
        reg[0, 0] = 0.0  # the intercept is not shrunk
        for _ in range(steps):
            p = 1 / (1 + np.exp(-A @ w))
            grad = A.T @ (p - y) + reg @ w
            hess = A.T @ (A * (p * (1 - p))[:, None]) + reg
            w -= np.linalg.solve(hess, grad)
        self.w = w

    def _design(self, X: np.ndarray) -> np.ndarray:
        return np.hstack([np.ones((len(X), 1)), (X - self.mean) / self.std])

    def prob(self, X: np.ndarray) -> np.ndarray:
        return 1 / (1 + np.exp(-self._design(X) @ self.w))


def evaluate(rows: list[dict]) -> list[dict]:
    y = np.array([r["unanswerable"] for r in rows], dtype=int)
    even = np.array([r["number"] % 2 == 0 for r in rows])
    out = []
    for combo in COMBINATIONS:
        X = np.array([[r[f] for f in combo] for r in rows])
        res = {"signals": "+".join(combo), "folds": []}
        for name, train in (("even->odd", even), ("odd->even", ~even)):
            test = ~train
            if len(combo) == 1:  # a single signal refuses when it is low
                s_tr, s_te = -X[train, 0], -X[test, 0]
            else:
                model = Logistic(X[train], y[train])
                s_tr, s_te = model.prob(X[train]), model.prob(X[test])
            t = threshold(y[train], s_tr)
            refused = s_te >= t
            res["folds"].append({"fold": name, "auc": auc(y[test], s_te),
                                 "recall": float(refused[y[test] == 1].mean()),
                                 "precision": float(y[test][refused].mean()) if refused.any() else float("nan"),
                                 "false_refusal": float(refused[y[test] == 0].mean())})
        out.append(res)
    return out


def report(rows: list[dict], results: list[dict], meta: dict) -> str:
    n_un = sum(r["unanswerable"] for r in rows)
    lines = ["# Answerability signals on the dev set (model-free)", "",
             f"Command: `{meta['command']}` ({meta['seconds']:.0f} s, {meta['date']}).", "",
             f"{len(rows)} single questions and first turns ({n_un} unanswerable), k = 4 passages from app.retrieve, "
             f"embedder `{meta['embedder']}`. Threshold: refuse at most {MAX_FALSE:.0%} of the answerable questions "
             "of the fitting half; measured on the other half (even / odd question ids). Target (issue 13): "
             "refuse >= 80% of unanswerable questions at <= 10% false refusals.", "",
             "| signals | AUC even->odd | AUC odd->even | refusal recall | false refusals | precision |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in results:
        a, b = r["folds"]
        pair = {key: f"{a[key]:.2f} / {b[key]:.2f}" for key in ("recall", "false_refusal", "precision")}
        lines.append(f"| {r['signals']} | {a['auc']:.3f} | {b['auc']:.3f} | {pair['recall']} | "
                     f"{pair['false_refusal']} | {pair['precision']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="where the dev collection lives")
    ap.add_argument("--embedder", default="minilm", choices=["minilm", "hash"])
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args(argv)
    t0 = time.time()
    devset = load_devset()
    collection, _ = open_devset_collection(devset, args.data_dir, args.embedder, progress=True)
    scorer = EvidenceScorer(collection.embedder)
    rows = []
    try:
        for q in devset.questions:
            if q.conversation is not None and q.turn != 1:
                continue  # later turns retrieve with the conversation: the session's business
            rows.append({"id": q.id, "number": int(q.id.lstrip("q")), "unanswerable": int(not q.answerable),
                         **features(collection, scorer, q.question, args.k)})
    finally:
        collection.close()
    results = evaluate(rows)
    meta = {"command": "PYTHONPATH=. python benchmarks/refusal_signals.py " + " ".join(argv or sys.argv[1:]),
            "seconds": time.time() - t0, "date": time.strftime("%Y-%m-%d"), "embedder": args.embedder}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "refusal_signals.json").write_text(json.dumps({"meta": meta, "results": results, "rows": rows},
                                                              indent=1) + "\n")
    text = report(rows, results, meta)
    (args.out / "refusal_signals.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
