"""Choose the prompt layout: answer evaluation episodes with each layout and score the answers.

    python -m app.evaluate --episodes data/build/episodes/eval.jsonl.gz --limit 400
    python -m app.evaluate --model path/to/model --layouts qpq pq --json results.json

An episode is one JSON object per line (``.jsonl`` or ``.jsonl.gz``) with ``question``,
``answer`` and ``passages`` (strings or ``{"text", "title"}`` objects); ``kind`` is
optional and used to break scores down. Each episode is answered from an empty state,
greedily, exactly as the app would answer it (app.layout + app.encoder + app.decoder).

Passages are put in the order the app's retriever would give (best first) by ``--rank``:
``hash`` (default: fast word-overlap embedder), ``minilm`` (the app's default
embedder) or ``given`` (the file's order); the embedders' order is then re-ranked
lexically as the app does (app.rerank). Scores (SQuAD-style normalisation):
exact match, answer contained in the output, token F1. The layout with the best F1
should be ``app.layout.DEFAULT_LAYOUT``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import re
import string
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

from .layout import LAYOUTS, PassageText

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize(text: str) -> str:
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCT)).split())


def token_f1(prediction: str, answer: str) -> float:
    p, a = normalize(prediction).split(), normalize(answer).split()
    common = sum((Counter(p) & Counter(a)).values())
    if not p or not a or not common:
        return float(p == a)
    precision, recall = common / len(p), common / len(a)
    return 2 * precision * recall / (precision + recall)


def score(prediction: str, answer: str) -> dict:
    n_pred, n_ans = normalize(prediction), normalize(answer)
    return {"em": float(n_pred == n_ans), "contains": float(bool(n_ans) and n_ans in n_pred),
            "f1": token_f1(prediction, answer)}


def read_episodes(path: Path, limit: int | None = None, seed: int = 0) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        episodes = [json.loads(line) for line in f if line.strip()]
    for e in episodes:
        missing = {"question", "answer", "passages"} - set(e)
        if missing:
            raise ValueError(f"{path}: an episode lacks {sorted(missing)}")
    if limit and limit < len(episodes):
        episodes = random.Random(seed).sample(episodes, limit)
    return episodes


def as_passages(raw: list) -> list[PassageText]:
    return [PassageText(p) if isinstance(p, str) else PassageText(p["text"], p.get("title")) for p in raw]


def rank(question: str, passages: list[PassageText], embedder, rerank: bool = True) -> list[PassageText]:
    """Best first, as the app ranks: the embedder's cosine similarity, then the lexical re-ranking
    of app.rerank (None: keep the given order)."""
    if embedder is None or len(passages) < 2:
        return passages
    from types import SimpleNamespace

    from .rerank import lexical_rerank

    vecs = embedder.encode([question] + [p.text for p in passages])
    hits = sorted((SimpleNamespace(score=float(s), text=p.text, passage=p) for s, p in zip(vecs[1:] @ vecs[0],
                                                                                           passages, strict=True)),
                  key=lambda h: -h.score)
    if rerank:
        hits = lexical_rerank(question, hits)
    return [h.passage for h in hits]


def evaluate(reader, episodes: list[dict], layouts, embedder=None, max_new_tokens: int = 48,
             progress: bool = True) -> dict:
    """Per layout: mean scores overall and per kind, mean prompt tokens, seconds."""
    from .decoder import AnswerStream

    ranked = [rank(e["question"], as_passages(e["passages"]), embedder) for e in episodes]
    cfg = reader.sampling_config(max_new_tokens=max_new_tokens, temperature=0.0)
    results = {}
    for layout in layouts:
        started = time.perf_counter()
        totals, kinds, prompt_tokens, samples = Counter(), defaultdict(Counter), 0, []
        for i, (e, passages) in enumerate(zip(episodes, ranked, strict=True)):
            turn = reader.layout_turn(e["question"], passages, first_turn=True, layout=layout)
            ing = reader.ingest(turn, reader.new_state(), reader.root_key())
            stream = AnswerStream(reader, ing.state, ing.logits, ing.key, sampling=cfg)
            text = stream.result().text
            s = score(text, e["answer"])
            totals.update(s)
            kinds[e.get("kind", "all")].update({**s, "n": 1})
            prompt_tokens += ing.prompt_tokens
            if len(samples) < 5:
                samples.append({"question": e["question"], "answer": e["answer"], "output": text})
            if progress and (i + 1) % 50 == 0:
                print(f"  {layout}: {i + 1}/{len(episodes)} f1 {totals['f1'] / (i + 1):.3f}", file=sys.stderr)
        n = max(len(episodes), 1)
        results[layout] = {
            "n": len(episodes), **{k: totals[k] / n for k in ("em", "contains", "f1")},
            "prompt_tokens": prompt_tokens / n, "seconds": time.perf_counter() - started,
            "kinds": {k: {m: c[m] / c["n"] for m in ("em", "contains", "f1")} | {"n": c["n"]}
                      for k, c in sorted(kinds.items())},
            "samples": samples,
        }
    return results


def table(results: dict) -> str:
    best = max(results, key=lambda k: results[k]["f1"])
    lines = ["| layout | episodes | exact match | contains answer | token F1 | prompt tokens |",
             "|---|---:|---:|---:|---:|---:|"]
    for layout, r in results.items():
        mark = " (best)" if layout == best else ""
        lines.append(f"| {layout}{mark} | {r['n']} | {r['em']:.3f} | {r['contains']:.3f} | {r['f1']:.3f} | "
                     f"{r['prompt_tokens']:.0f} |")
    kinds = sorted({k for r in results.values() for k in r["kinds"]})
    if len(kinds) > 1:
        lines += ["", "Token F1 by kind:", "", "| kind | " + " | ".join(results) + " |",
                  "|---|" + "---:|" * len(results)]
        for k in kinds:
            lines.append(f"| {k} | " + " | ".join(f"{r['kinds'].get(k, {}).get('f1', float('nan')):.3f}"
                                                 for r in results.values()) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from .defaults import configure_threads, make_embedder
    from .encoder import Reader

    ap = argparse.ArgumentParser(prog="python -m app.evaluate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None, help="model directory (default: the bundled data/model)")
    ap.add_argument("--episodes", type=Path, default=Path("data/build/episodes/eval.jsonl.gz"))
    ap.add_argument("--layouts", nargs="+", choices=LAYOUTS, default=list(LAYOUTS))
    ap.add_argument("--limit", type=int, default=400, help="episodes to use (a fixed random sample; 0 = all)")
    ap.add_argument("--rank", choices=("hash", "minilm", "given"), default="hash")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="also write the full results here")
    args = ap.parse_args(argv)
    if not args.episodes.is_file():
        print(f"python -m app.evaluate: error: no episodes file {args.episodes} (build it with "
              "python -m data.corpus.episodes)", file=sys.stderr)
        return 1
    reader = Reader.from_pretrained(args.model, cache=None)
    configure_threads(args.threads, reader.model)
    episodes = read_episodes(args.episodes, args.limit or None, args.seed)
    embedder = None if args.rank == "given" else make_embedder(args.rank)
    results = evaluate(reader, episodes, args.layouts, embedder, args.max_new_tokens)
    print(f"{len(episodes)} episodes from {args.episodes}, passages ranked by {args.rank}, "
          f"model {args.model or 'data/model'}\n")
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
