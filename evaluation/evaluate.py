"""Evaluate readers on held-out episodes: layouts, closed book, distractors, MQAR recall; models side by side.

    python -m evaluation.evaluate --limit 150 --json eval.json --markdown eval.md --plot eval.png
    python -m evaluation.evaluate --model data/model --model path/to/transformer-baseline --device cuda
    python -m evaluation.evaluate --settings layouts --layouts qpq pq          # only choose the layout

Settings (``--settings``; all share one fixed sample of ``--limit`` episodes and greedy decoding):

- ``layouts``: each episode's own passages (gold + 1-16 builder-chosen distractors), per layout
  of app.prompt.LAYOUTS (``--layouts``). The layout with the best F1 should be the app's default.
- ``closed-book``: the same questions with no passages, overall and for the episodes marked
  ``closed_book_control`` (answers that cannot be known without the passages).
- ``distractors``: gold + exactly N distractors for N in ``--distractors`` (the episode's own
  hard distractors first, topped up from the passage pool ``--pool``; see evaluation.episodes).
- ``mqar``: synthetic key-value recall, ``--mqar-queries`` contexts of N facts per N in
  ``--mqar-pairs`` (evaluation.mqar).

Every answer is produced exactly as the app would produce it (for a RetNet: app.prompt +
app.encoder + app.decoder from an empty state); passages are put in the order the app's retriever
would give (best first) by ``--rank``: ``hash`` (default: fast word-overlap embedder), ``minilm``
(the app's default embedder) or ``given`` (the file's order), re-ranked lexically as the app does.
Scores (SQuAD-style normalisation): exact match, answer contained in the output, token F1.
Several ``--model`` directories are evaluated on the same items; a directory whose config.json
says ``"model_type": "transformer-baseline"`` is answered by evaluation.transformer_answerer.TransformerAnswerer.
Output: markdown tables on stdout (and ``--markdown``), everything in ``--json``, and a two-panel
plot (``--plot``): F1 against distractors, MQAR accuracy against key-value pairs.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from app.defaults import default_model_dir
from app.prompt import DEFAULT_LAYOUT, LAYOUTS

from .answerers import Answerer, RetNetAnswerer, load_answerer, read_model_config
from .episodes import (
    PassagePool,
    Point,
    as_passages,
    closed_book_point,
    default_pool_path,
    distractor_points,
    layout_points,
    load_episode_file,
    pool_passages,
    rank,
    read_episodes,
    sample_episodes,
)
from .mqar import mqar_points
from .score import normalize, score, summarize, token_f1

__all__ = ["Answerer", "RetNetAnswerer", "as_passages", "evaluate", "load_answerer", "main", "normalize", "rank",
           "read_episodes", "run", "score", "token_f1"]

SETTINGS = ("layouts", "closed-book", "distractors", "mqar")
DEFAULT_DISTRACTORS = (1, 4, 8, 16)
DEFAULT_MQAR_PAIRS = (1, 2, 4, 8, 16, 32, 64, 128)
# Sub-groups reported inside a setting: closed book overall, on the unguessable episodes, on the rest.
GROUPS = {"closed-book": {"closed_book_control": lambda r: r["closed_book_control"],
                          "other": lambda r: not r["closed_book_control"]}}


def answer_point(answerer: Answerer, point: Point, max_new_tokens: int, bar=None) -> list[dict]:
    """Answer every item of a point; one scored record per item."""
    records = []
    for item in point.items:
        t0 = time.perf_counter()
        text, prompt_tokens = answerer.answer(item.question, list(item.passages), point.layout, max_new_tokens)
        records.append({"id": item.id, "kind": item.kind, "closed_book_control": item.closed_book_control,
                        "question": item.question, "answer": item.answer, "output": text,
                        "passages": len(item.passages), "prompt_tokens": int(prompt_tokens),
                        "seconds": time.perf_counter() - t0, **score(text, item.answer)})
        if bar is not None:
            bar.update(1)
    return records


def run(answerers: Sequence[Answerer], points: Sequence[Point], max_new_tokens: int = 48,
        progress: bool = True) -> dict:
    """``{setting: {label: {"x", "layout", "models": {answerer name: summary}}}}``, settings and
    labels in the order of ``points``."""
    from tqdm.auto import tqdm

    results: dict[str, dict] = {}
    for p in points:
        results.setdefault(p.setting, {})[p.label] = {"x": p.x, "layout": p.layout, "models": {}}
    for a in answerers:
        for setting in results:
            todo = [p for p in points if p.setting == setting]
            with tqdm(total=sum(len(p.items) for p in todo), desc=f"{a.name} {setting}", unit="answer",
                      file=sys.stderr, disable=not progress, mininterval=2.0, leave=True) as bar:
                for p in todo:
                    summary = summarize(answer_point(a, p, max_new_tokens, bar), GROUPS.get(setting))
                    results[setting][p.label]["models"][a.name] = summary
                    bar.set_postfix_str(f"{p.label}: F1 {summary['f1']:.3f}")
    return results


def evaluate(reader, episodes: list[dict], layouts, embedder=None, max_new_tokens: int = 48,
             progress: bool = True) -> dict:
    """The layout setting for one app.encoder.Reader: per layout, mean scores overall and per kind,
    mean prompt tokens, seconds, a few samples."""
    answerer = RetNetAnswerer(reader=reader, name="reader")
    res = run([answerer], layout_points(episodes, layouts, embedder), max_new_tokens, progress)
    return {label: point["models"][answerer.name] for label, point in res.get("layouts", {}).items()}


# -- command line ----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m evaluation.evaluate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, action="append", default=None,
                    help="model directory; repeat to compare models side by side (default: the bundled data/model)")
    ap.add_argument("--episodes", type=Path, default=Path("data/build/episodes/eval.jsonl.gz"))
    ap.add_argument("--pool", type=Path, default=None,
                    help="passages to top distractors up from ({text, title, doc_id} per line; default: "
                         "<episodes>_passages.jsonl.gz beside the episodes if it exists, else every passage of "
                         "the episodes file)")
    ap.add_argument("--settings", nargs="+", choices=SETTINGS, default=list(SETTINGS))
    ap.add_argument("--layouts", nargs="+", choices=LAYOUTS, default=list(LAYOUTS),
                    help="layouts compared by the layouts setting")
    ap.add_argument("--layout", choices=LAYOUTS, default=DEFAULT_LAYOUT,
                    help="layout of the other settings (default: the app's)")
    ap.add_argument("--distractors", type=int, nargs="+", default=list(DEFAULT_DISTRACTORS))
    ap.add_argument("--mqar-pairs", type=int, nargs="+", default=list(DEFAULT_MQAR_PAIRS))
    ap.add_argument("--mqar-queries", type=int, default=50, help="questions (fresh contexts) per number of pairs")
    ap.add_argument("--limit", type=int, default=150, help="episodes to use (a fixed random sample; 0 = all)")
    ap.add_argument("--rank", choices=("hash", "minilm", "given"), default="hash")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (cuda:N)")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: one for small models)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="write everything (every answer too) here")
    ap.add_argument("--markdown", type=Path, default=None, help="write the report here")
    ap.add_argument("--plot", type=Path, default=None, help="PNG: F1 vs distractors, MQAR accuracy vs pairs")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    return ap


def _fail(msg: str) -> int:
    print(f"python -m evaluation.evaluate: error: {msg}", file=sys.stderr)
    return 1


def _unique_names(answerers: list, dirs: list) -> None:
    """Column names must differ: add the directory to a repeated name, then a number to a repeated directory."""
    names = [a.name for a in answerers]
    for a, d in zip(answerers, dirs, strict=True):
        if names.count(a.name) > 1:
            a.name = f"{a.name} ({d or default_model_dir()})"
    seen: Counter = Counter()
    for a in answerers:
        seen[a.name] += 1
        if seen[a.name] > 1:
            a.name = f"{a.name} #{seen[a.name]}"


def _points(args, episodes: list[dict], all_episodes: list[dict], config: dict) -> list[Point]:
    from app.defaults import make_embedder

    embedder = None if args.rank == "given" else make_embedder(args.rank)
    points: list[Point] = []
    for setting in args.settings:
        if setting == "layouts":
            points += layout_points(episodes, args.layouts, embedder)
        elif setting == "closed-book":
            points.append(closed_book_point(episodes, args.layout))
        elif setting == "distractors":
            passages, source = pool_passages(args.pool or default_pool_path(args.episodes), all_episodes)
            pool = PassagePool(passages)
            pts, dropped = distractor_points(episodes, args.distractors, pool, args.layout, embedder, args.seed)
            config.update(pool=f"{source} ({len(pool)} distinct passages)", distractors_dropped=dropped)
            if dropped:
                print(f"python -m evaluation.evaluate: {len(dropped)} episodes have too few distractors for "
                      f"N={max(args.distractors)} and are left out of the distractor setting", file=sys.stderr)
            points += pts
        elif setting == "mqar":
            points += mqar_points(args.mqar_pairs, args.mqar_queries, args.layout, args.seed)
    return points


def main(argv: list[str] | None = None) -> int:
    from app.defaults import configure_threads
    from app.errors import ModelNotFoundError

    from .report import check_targets, write_outputs

    args = build_parser().parse_args(argv)
    dirs = args.model or [None]
    try:
        all_episodes = load_episode_file(args.episodes)
        model_types = [read_model_config(d).get("model_type", "retnet") for d in dirs]
    except (FileNotFoundError, ValueError, ModelNotFoundError) as e:
        return _fail(str(e))
    if args.pool is not None and not args.pool.is_file():
        return _fail(f"no passage pool file {args.pool}")
    if any(n < 0 for n in args.distractors) or any(n < 1 for n in args.mqar_pairs) or args.mqar_queries < 1:
        return _fail("--distractors must be >= 0, --mqar-pairs and --mqar-queries >= 1")
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            return _fail(f"--device {args.device}: CUDA is not available on this machine")
    if args.plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            return _fail("--plot needs matplotlib (pip install matplotlib)")
    try:
        answerers = [load_answerer(d, args.device) for d in dirs]
    except ModelNotFoundError as e:
        return _fail(str(e))
    _unique_names(answerers, dirs)
    if args.device == "cpu":
        configure_threads(args.threads, getattr(answerers[0], "model", None))
    episodes = sample_episodes(all_episodes, args.limit or None, args.seed)
    config = {"episodes": str(args.episodes), "n_episodes": len(episodes), "limit": args.limit, "seed": args.seed,
              "rank": args.rank, "layout": args.layout, "layouts": list(args.layouts), "settings": list(args.settings),
              "distractors": sorted(set(args.distractors)), "mqar_pairs": sorted(set(args.mqar_pairs)),
              "mqar_queries": args.mqar_queries, "max_new_tokens": args.max_new_tokens, "device": args.device}
    points = _points(args, episodes, all_episodes, config)
    started = time.perf_counter()
    results = run(answerers, points, args.max_new_tokens, progress=not args.quiet)
    config["seconds"] = time.perf_counter() - started
    models = []
    for a, d, t in zip(answerers, dirs, model_types, strict=True):
        summaries = [p["models"][a.name] for pts in results.values() for p in pts.values()]
        n, secs = sum(s["n"] for s in summaries), sum(s["seconds"] for s in summaries)
        models.append({"name": a.name, "dir": str(d or default_model_dir()), "model_type": t, "answers": n,
                       "seconds": secs, "seconds_per_answer": secs / n if n else None})
    report = {"config": config, "models": models, "results": results,
              "targets": check_targets(results, [a.name for a in answerers])}
    write_outputs(report, args.markdown, args.json, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
