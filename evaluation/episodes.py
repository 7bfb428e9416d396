"""What the evaluation asks: episodes, the passages each setting gives with them, in the app's order.

An episode is one JSON object per line (``.jsonl`` or ``.jsonl.gz``) with ``question``,
``answer`` and ``passages`` (strings or ``{"text", "title", "doc_id"}`` objects); ``kind``,
``id``, ``gold`` (index of the passage holding the answer) and ``closed_book_control`` are
optional. A setting is a list of ``Point`` s (one column of numbers each: a layout, a number of
distractors, ...), each a list of ``Item`` s: a question, the passages to read (best first, as the
app's retriever would give them), the reference answer.

Settings built from episodes (the same episodes for all of them):

- ``layout_points``: each episode's own passages (gold + its 1-16 builder-chosen distractors) per layout.
- ``closed_book_point``: the same questions with no passages at all.
- ``distractor_points``: the gold passage plus exactly N distractors: the episode's own distractors
  first (BM25-hard, chosen by the episode builder; the N most similar to the question when it has
  more), topped up from a pool of passages with those most similar to the question. A top-up never
  contains the answer, never repeats a passage, never comes from the gold's document unless the
  episode's own distractors already do, never comes from another document about the same subject
  (same title before any ``:``; the builder's split-key rule), and never contains an option name or
  dotted name that the question asks about (the builder's rule for option/API questions). The sets
  for smaller N are prefixes of those for larger N; they depend on the episodes and the pool only,
  never on the model.
"""

from __future__ import annotations

import gzip
import json
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from app.prompt import PassageText

from .score import contains_answer


@dataclass
class Item:
    """One question to answer: passages best first (empty: closed book) and the reference answer."""

    question: str
    passages: list[PassageText]
    answer: str
    kind: str = "all"
    id: str = ""
    closed_book_control: bool = False


@dataclass
class Point:
    """One measured point of a setting: the items, the layout to read them with, and an x value for plots."""

    setting: str
    label: str
    layout: str
    items: list[Item] = field(default_factory=list)
    x: float | None = None


# -- episodes ----------------------------------------------------------------------------------
def load_episode_file(path: Path) -> list[dict]:
    """Every episode of a ``.jsonl`` / ``.jsonl.gz`` file (FileNotFoundError / ValueError if unusable)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no episodes file {path} (build it with python -m training.corpus.episodes)")
    episodes = load_jsonl(path)
    for e in episodes:
        missing = {"question", "answer", "passages"} - set(e)
        if missing:
            raise ValueError(f"{path}: an episode lacks {sorted(missing)}")
    return episodes


def sample_episodes(episodes: list[dict], limit: int | None = None, seed: int = 0) -> list[dict]:
    """A fixed random sample of ``limit`` episodes (all of them if ``limit`` is falsy or too large)."""
    if limit and limit < len(episodes):
        return random.Random(seed).sample(episodes, limit)
    return list(episodes)


def read_episodes(path: Path, limit: int | None = None, seed: int = 0) -> list[dict]:
    return sample_episodes(load_episode_file(path), limit, seed)


def _passage_dict(p) -> dict:
    if isinstance(p, str):
        return {"text": p, "title": None, "doc_id": None}
    return {"text": p["text"], "title": p.get("title"), "doc_id": p.get("doc_id")}


def as_passages(raw: list) -> list[PassageText]:
    return [PassageText(d["text"], d["title"]) for d in map(_passage_dict, raw)]


def gold_index(episode: dict) -> int | None:
    """The passage holding the answer: ``gold`` if given, else the first passage containing the answer."""
    if episode.get("gold") is not None:
        return int(episode["gold"])
    texts = [_passage_dict(p)["text"] for p in episode["passages"]]
    return next((i for i, t in enumerate(texts) if episode["answer"] in t), None)


def rank(question: str, passages: list[PassageText], embedder, rerank: bool = True) -> list[PassageText]:
    """Best first, as the app ranks: the embedder's cosine similarity, then the lexical re-ranking
    of app.retrieve (None: keep the given order)."""
    if embedder is None or len(passages) < 2:
        return passages
    from app.retrieve import lexical_rerank

    vecs = embedder.encode([question] + [p.text for p in passages])
    hits = sorted((SimpleNamespace(score=float(s), text=p.text, passage=p) for s, p in zip(vecs[1:] @ vecs[0],
                                                                                           passages, strict=True)),
                  key=lambda h: -h.score)
    if rerank:
        hits = lexical_rerank(question, hits)
    return [h.passage for h in hits]


def _item(e: dict, passages: list[PassageText], fallback_id: str) -> Item:
    return Item(e["question"], passages, e["answer"], e.get("kind", "all"), str(e.get("id", fallback_id)),
                bool(e.get("closed_book_control", False)))


# -- settings from episodes ----------------------------------------------------------------------
def layout_points(episodes: Sequence[dict], layouts: Sequence[str], embedder) -> list[Point]:
    """Each episode's own passages, ranked as the app ranks them, once per layout."""
    items = [_item(e, rank(e["question"], as_passages(e["passages"]), embedder), str(i))
             for i, e in enumerate(episodes)]
    return [Point("layouts", layout, layout, items) for layout in layouts]


def closed_book_point(episodes: Sequence[dict], layout: str) -> Point:
    """The same questions with no passages: what the model answers from its weights alone."""
    return Point("closed-book", "closed-book", layout, [_item(e, [], str(i)) for i, e in enumerate(episodes)])


# -- distractors -------------------------------------------------------------------------------------
_ANCHOR = re.compile(r"(?<![\w-])--?[A-Za-z0-9][\w-]*|\b\w+(?:\.\w+)+")


def anchors(question: str) -> list[str]:
    """Option names (``-r``, ``--quit``) and dotted names (``zlib.decompress``) in a question."""
    return _ANCHOR.findall(question)


def subject(title: str | None) -> str:
    """What a document is about, from its title: the part before any ``:``, lower-cased."""
    return (title or "").split(":")[0].strip().lower()


def default_pool_path(episodes_path: Path) -> Path:
    """``eval.jsonl.gz`` -> ``eval_passages.jsonl.gz`` beside it."""
    name = Path(episodes_path).name
    stem = name.split(".jsonl")[0] if ".jsonl" in name else Path(name).stem
    return Path(episodes_path).with_name(f"{stem}_passages.jsonl.gz")


def pool_passages(path: Path | None, episodes: Sequence[dict]) -> tuple[list[dict], str]:
    """The passages distractors are topped up from, and where they came from: the pool file
    (``{text, title, doc_id}`` per line) if it exists, else every passage of ``episodes``."""
    if path is not None and Path(path).is_file():
        return [_passage_dict(p) for p in load_jsonl(Path(path))], str(path)
    return [_passage_dict(p) for e in episodes for p in e["passages"]], "the passages of all episodes in the file"


def load_jsonl(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


class PassagePool:
    """Distinct passages (by document and text) with embeddings, searched by similarity to a question."""

    def __init__(self, passages: Sequence[dict], embedder=None):
        if embedder is None:
            from retrieval import HashEmbedder

            embedder = HashEmbedder()
        seen: set[tuple] = set()
        self.passages: list[dict] = []
        for p in map(_passage_dict, passages):
            key = (p["doc_id"], p["text"])
            if key not in seen and p["text"].strip():
                seen.add(key)
                self.passages.append(p)
        self.embedder = embedder
        self.vecs = embedder.encode([p["text"] for p in self.passages]) if self.passages else np.zeros((0, 1))

    def __len__(self) -> int:
        return len(self.passages)

    def nearest(self, question: str):
        """Passages, most similar to the question first."""
        if not self.passages:
            return
        sims = self.vecs @ self.embedder.encode([question])[0]
        for i in np.argsort(-sims, kind="stable"):
            yield self.passages[int(i)]

    def by_similarity(self, question: str, passages: Sequence[dict]) -> list[dict]:
        if len(passages) < 2:
            return list(passages)
        vecs = self.embedder.encode([question] + [p["text"] for p in passages])
        sims = vecs[1:] @ vecs[0]
        return [passages[int(i)] for i in np.argsort(-sims, kind="stable")]


def distractor_list(episode: dict, pool: PassagePool, n: int) -> list[dict]:
    """Up to ``n`` distractors for an episode, in the order they are taken (see the module docstring);
    the first N of them are the distractors of the N-distractor setting."""
    passages = [_passage_dict(p) for p in episode["passages"]]
    g = gold_index(episode)
    if g is None:
        return []
    gold, answer, question = passages[g], episode["answer"], episode["question"]
    own = list({p["text"]: p for j, p in enumerate(passages) if j != g and p["text"] != gold["text"]}.values())
    same_doc_ok = gold["doc_id"] is not None and any(p["doc_id"] == gold["doc_id"] for p in own)
    chosen = [p for p in pool.by_similarity(question, own) if not contains_answer(p["text"], answer)][:n]
    taken = {gold["text"], *(p["text"] for p in chosen)}
    marks = anchors(question)
    gold_subject = subject(gold["title"])
    if len(chosen) < n:
        for p in pool.nearest(question):
            if (p["text"] in taken or contains_answer(p["text"], answer)
                    or (p["doc_id"] == gold["doc_id"] and gold["doc_id"] is not None and not same_doc_ok)
                    or (p["doc_id"] != gold["doc_id"] and gold_subject and subject(p["title"]) == gold_subject)
                    or any(m in p["text"] for m in marks)):
                continue
            chosen.append(p)
            taken.add(p["text"])
            if len(chosen) == n:
                break
    return chosen


def distractor_points(episodes: Sequence[dict], counts: Sequence[int], pool: PassagePool, layout: str, embedder,
                      seed: int = 0) -> tuple[list[Point], list[str]]:
    """One point per N in ``counts``: gold + exactly N distractors, ranked as the app ranks them.

    Episodes without a gold passage, or for which not enough distractors can be found for the
    largest N, are left out of every point (the same episodes for every N); their ids are returned.
    """
    counts = sorted(set(int(c) for c in counts))
    if any(c < 0 for c in counts):
        raise ValueError(f"distractor counts must be >= 0, got {counts}")
    top = max(counts, default=0)
    kept, dropped = [], []
    for i, e in enumerate(episodes):
        g = gold_index(e)
        ds = distractor_list(e, pool, top) if g is not None else []
        if g is None or len(ds) < top:
            dropped.append(str(e.get("id", i)))
        else:
            kept.append((i, e, _passage_dict(e["passages"][g]), ds))
    points = []
    for n in counts:
        items = []
        for i, e, gold, ds in kept:
            chosen = [gold, *ds[:n]]
            random.Random(f"{seed}:{e.get('id', i)}:{n}").shuffle(chosen)  # the order "given" ranking keeps
            items.append(_item(e, rank(e["question"], as_passages(chosen), embedder), str(i)))
        points.append(Point("distractors", str(n), layout, items, x=float(n)))
    return points, dropped
