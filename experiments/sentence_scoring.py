"""Can the reader *choose* an answer sentence better than the embedder? (issues 12 and 13)

The readers write poor free answers (dev set: key-phrase hit 0.00-0.02 against the model-free
baseline's 0.19), yet teacher-forced they put real probability on answers. This measures the
reader as a *scorer*: for each dev-set question, the candidates are the baseline's sentences of the
passages the app retrieves (k = 4), and each system answers with one of them:

- ``cosine``: the baseline (the embedder's cosine to the question; evaluation.dev_baseline);
- ``logprob``: the highest mean log-probability of the candidate's tokens as the reader's answer,
  after the turn the app reads (passages + question), one batched forward from a copy of that state
  per group of candidates (the recurrent state makes the fork free);
- ``pmi``: ``logprob`` minus the same with a question-free turn (same passages, the question
  replaced by a neutral one): how much the *question* raises the sentence, so fluent generic
  sentences stop winning;
- ``fused``: the sum of the candidate's ranks under ``cosine`` and ``pmi`` (ties: ``cosine``).

    PYTHONPATH=. python experiments/sentence_scoring.py --model data/model --limit 60 --threads 2
    PYTHONPATH=. python experiments/sentence_scoring.py --model data/readers/smollm2-135m-retnet ...

Single questions only (follow-ups would need the session's own retrieval); unanswerable questions
count for nothing here (none of these systems refuses). Writes a Markdown table and the per-question
records under experiments/results/.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

NEUTRAL_QUESTION = "What do these passages say?"
MAX_CANDIDATE_TOKENS = 48  # a longer sentence is judged by its first 48 tokens
GROUP = 16  # candidates per batched forward


@torch.no_grad()
def candidate_logprobs(reader, question: str, sources, candidates: list[str]) -> np.ndarray:
    """Mean log-probability of each candidate as the answer to ``question`` over ``sources``."""
    turn = reader.layout_turn(question, sources, first_turn=True)
    ing = reader.ingest(turn, reader.new_state(), reader.root_key())
    first = F.log_softmax(ing.logits.float(), -1)[0]  # the answer's first token
    out = np.zeros(len(candidates))
    for lo in range(0, len(candidates), GROUP):
        group = [reader.encode(c)[:MAX_CANDIDATE_TOKENS] or [0] for c in candidates[lo:lo + GROUP]]
        width = max(len(g) for g in group)
        ids = torch.zeros(len(group), width, dtype=torch.long, device=reader.device)
        for r, g in enumerate(group):
            ids[r, :len(g)] = torch.tensor(g)
        state = ing.state._map(lambda t: t.repeat(len(group), *([1] * (t.dim() - 1))))  # noqa: B023
        logits = reader.model(ids, state=state, mode="chunkwise").logits.float()
        logp = F.log_softmax(logits, -1)  # position t predicts token t + 1
        for r, g in enumerate(group):
            total = float(first[g[0]]) + sum(float(logp[r, t, g[t + 1]]) for t in range(len(g) - 1))
            out[lo + r] = total / len(g)
    return out


def ranks(scores: np.ndarray) -> np.ndarray:
    """0 for the best score, 1 for the next, ... (higher score = better)."""
    order = np.argsort(-scores, kind="stable")
    r = np.empty(len(scores), dtype=np.int64)
    r[order] = np.arange(len(scores))
    return r


def main(argv: list[str] | None = None) -> int:
    from app.encoder import Reader
    from app.retrieve import retrieve
    from app.types import Source
    from evaluation.dev import open_devset_collection, units
    from evaluation.dev_baseline import sentences
    from evaluation.dev_score import score_answer
    from evaluation.devset import load_devset

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--limit", type=int, default=60, help="about this many questions (a fixed sample)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data-dir", type=Path, default=Path("/tmp/retnet-rag-devset"))
    ap.add_argument("--out", type=Path, default=Path("experiments/results"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    devset = load_devset()
    collection, _ = open_devset_collection(devset, args.data_dir)
    reader = Reader.from_pretrained(args.model)
    qs = [u[0] for u in units(devset, args.limit) if len(u) == 1 and u[0].answerable]
    systems = ("cosine", "logprob", "pmi", "fused")
    records, t0 = [], time.perf_counter()
    for n, q in enumerate(qs, 1):
        hits = retrieve(collection, q.question, 4)
        sources = [Source.from_hit(i + 1, h) for i, h in enumerate(hits)]
        cands = list(dict.fromkeys(s for src in sources for s in sentences(src.text)))
        if not cands:
            continue
        vecs = np.asarray(collection.embedder.encode([q.question, *cands]), dtype=np.float32)
        cos = vecs[1:] @ vecs[0]
        lp = candidate_logprobs(reader, q.question, sources, cands)
        pmi = lp - candidate_logprobs(reader, NEUTRAL_QUESTION, sources, cands)
        fused = -(ranks(cos) + ranks(pmi)) + 1e-3 * cos  # rank sum, ties to the cosine
        picks = {"cosine": cos, "logprob": lp, "pmi": pmi, "fused": fused}
        passages = [s.text for s in sources]
        rec = {"id": q.id, "type": q.type, "question": q.question}
        for name in systems:
            answer = cands[int(np.argmax(picks[name]))]
            sc = score_answer(answer, q, passages, None)
            rec[name] = {"answer": answer, "hit": sc["hit"], "f1": sc["f1"]}
        rec["recall"] = score_answer("", q, passages, None)["recall"]
        records.append(rec)
        print(f"[{n}/{len(qs)} {time.perf_counter() - t0:.0f}s] {q.id} "
              + " ".join(f"{s}={int(bool(rec[s]['hit']))}" for s in systems), flush=True)

    name = args.model.resolve().name
    lines = [f"# Sentence choice by the reader ({name}): {len(records)} answerable single questions", "",
             f"Command: `PYTHONPATH=. python experiments/sentence_scoring.py --model {args.model} --limit {args.limit} "
             f"--threads {args.threads}`; {time.perf_counter() - t0:.0f} s. Retrieval recall@4 on these: "
             f"{np.mean([bool(r['recall']) for r in records]):.3f}.", "",
             "| system | key-phrase hit | F1 |", "|---|---:|---:|"]
    for s in systems:
        lines.append(f"| {s} | {np.mean([bool(r[s]['hit']) for r in records]):.3f} | "
                     f"{np.mean([r[s]['f1'] for r in records]):.3f} |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"sentence_scoring_{name}.md").write_text("\n".join(lines) + "\n")
    (args.out / f"sentence_scoring_{name}.json").write_text(json.dumps(records, indent=1, ensure_ascii=False))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
