"""The evaluation's settings (evaluation.episodes): distractor sets, closed book, layouts; the runner feeds
every model the same items."""

from __future__ import annotations

import gzip
import json

import pytest

from app.prompt import LAYOUTS
from evaluation.episodes import (
    PassagePool,
    anchors,
    closed_book_point,
    default_pool_path,
    distractor_points,
    gold_index,
    layout_points,
    pool_passages,
    read_episodes,
)
from evaluation.evaluate import run
from evaluation.score import contains_answer
from retrieval import HashEmbedder


def P(text, doc, title=None):
    return {"text": text, "doc_id": doc, "title": title or doc}


ZEBRA = {"id": "e-zebra", "kind": "dict_gcide", "question": 'What does the word "Zebrine" mean?',
         "answer": "Like a zebra", "gold": 1, "closed_book_control": False,
         "passages": [P("Zebu, n. An Asiatic ox with a hump.", "gcide/zebu", "Zebu"),
                      P("Zebrine, a. Like a zebra in its stripes.", "gcide/zebrine", "Zebrine"),
                      P("Zebra, n. A striped African horse.", "gcide/zebra", "Zebra")]}
MERGE = {"id": "e-merge", "kind": "man_option", "question": "What does the --quit option of git-merge do?",
         "answer": "Forget about the current merge.", "gold": 0, "closed_book_control": False,
         "passages": [P("--quit Forget about the current merge. Leave the index.", "git/merge", "git-merge: join"),
                      P("git-merge joins two or more histories of development.", "git/merge", "git-merge: join"),
                      # an own distractor that gives the answer away in another case: never used
                      P("git-rebase: FORGET ABOUT THE CURRENT MERGE. too", "git/rebase", "git-rebase: reapply")]}
SECTION = {"id": "e-section", "kind": "section", "question": 'What is the first sentence of "SYNOPSIS" in tar?',
           "answer": "Tar saves many files together.",  # no "gold": found by the answer
           "passages": [P("Gzip compresses files.", "gzip"), P("SYNOPSIS Tar saves many files together.", "tar")],
           "closed_book_control": True}
EPISODES = [ZEBRA, MERGE, SECTION]

POOL = [
    # similar to the questions, but forbidden for the reasons named
    P("Zebrine: like a zebra, striped.", "other/zebrine-note", "Notes"),  # contains the answer (any case)
    P("Zebrine is also said of LIKE A ZEBRA patterns: what does the word mean?", "x/1", "x"),  # the answer, upper case
    P("More about the word Zebrine and what it does mean, in stripes.", "gcide/zebrine", "Zebrine"),  # gold's document
    P("ZEBRINE (another dictionary): what the word does mean, stripy.", "wordnet/zebrine", "zebrine"),  # same subject
    P("The --quit option of git-rebase does something else; what does it do?", "git/rebase", "git-rebase: reapply"),
    # allowed for MERGE: its own distractors already come from the gold's document
    P("What does the --no-ff option of git-merge do? It makes a merge commit.", "git/merge", "git-merge: join"),
] + [P(f"Filler {i}: what does the word mean, option of git, merge do, zebra stripes, first sentence of tar {i}.",
       f"filler/{i}", f"Filler {i}") for i in range(24)]
FORBIDDEN = {"e-zebra": [0, 1, 2, 3], "e-merge": [4]}


@pytest.fixture(scope="module")
def pool():
    return PassagePool(POOL + [p for e in EPISODES for p in e["passages"]], HashEmbedder())


@pytest.fixture(scope="module")
def points(pool):
    pts, dropped = distractor_points(EPISODES, [8, 1, 4, 2], pool, "qpq", HashEmbedder(), seed=0)
    assert dropped == []
    return pts


def texts(item):
    return [p.text for p in item.passages]


def test_exactly_n_distractors_with_the_gold_and_never_the_answer(points):
    assert [p.label for p in points] == ["1", "2", "4", "8"] and [p.x for p in points] == [1.0, 2.0, 4.0, 8.0]
    for point in points:
        n = int(point.label)
        assert [it.id for it in point.items] == [e["id"] for e in EPISODES]  # the same episodes for every N
        for e, item in zip(EPISODES, point.items, strict=True):
            gold = e["passages"][gold_index(e)]["text"]
            assert len(item.passages) == n + 1 and len(set(texts(item))) == n + 1
            assert texts(item).count(gold) == 1
            assert [contains_answer(t, e["answer"]) for t in texts(item) if t != gold] == [False] * n
            assert item.answer == e["answer"] and item.kind == e["kind"]


def test_own_distractors_first_and_forbidden_top_ups_never(points):
    by_n = {int(p.label): p for p in points}
    for i, e in enumerate(EPISODES):
        g = gold_index(e)
        own = {p["text"] for j, p in enumerate(e["passages"]) if j != g and not contains_answer(p["text"], e["answer"])}
        for n, point in by_n.items():
            chosen = set(texts(point.items[i])) - {e["passages"][g]["text"]}
            assert chosen <= own if n <= len(own) else own <= chosen
            for k in FORBIDDEN.get(e["id"], []):
                assert POOL[k]["text"] not in chosen, (e["id"], n, POOL[k]["text"])
        smaller = set(texts(by_n[2].items[i]))
        assert smaller <= set(texts(by_n[8].items[i]))  # smaller sets are prefixes of larger ones
    # MERGE's own distractor is from the gold's document, so same-document passages may top it up
    assert POOL[5]["text"] in texts(by_n[8].items[1])


def test_distractor_sets_do_not_depend_on_the_run(pool, points):
    again, _ = distractor_points(EPISODES, [1, 2, 4, 8], pool, "qpq", HashEmbedder(), seed=0)
    assert [[texts(it) for it in p.items] for p in again] == [[texts(it) for it in p.items] for p in points]


def test_too_few_distractors_drops_the_episode_from_every_point(pool):
    pts, dropped = distractor_points(EPISODES, [1, 40], pool, "pq", None)
    assert dropped == ["e-zebra", "e-merge", "e-section"]
    assert all(p.items == [] for p in pts)
    empty = PassagePool([], HashEmbedder())
    pts, dropped = distractor_points(EPISODES, [1, 2], empty, "pq", None)  # own lists: 2, 1, 1 distractors
    assert dropped == ["e-merge", "e-section"] and [it.id for it in pts[1].items] == ["e-zebra"]
    assert [len(it.passages) for it in pts[0].items] == [2]


def test_gold_index_and_anchors():
    assert gold_index(ZEBRA) == 1 and gold_index(SECTION) == 1
    assert gold_index({"question": "q", "answer": "zz", "passages": ["a", "b"]}) is None
    assert anchors("What does the --quit option of git-merge do?") == ["--quit"]
    assert anchors("What does the Python method zlib.decompress() do? And -r?") == ["zlib.decompress", "-r"]
    assert anchors('What does the word "Zebrine" mean?') == []


class Recorder:
    def __init__(self, name):
        self.name = name
        self.calls = []

    def answer(self, question, passages, layout, max_new_tokens):
        self.calls.append((question, tuple((p.text, p.title) for p in passages), layout, max_new_tokens))
        return (passages[-1].text if passages else "no idea"), 10 * len(passages) + 1


def test_every_model_gets_the_same_items_and_closed_book_gets_no_passages(points):
    a, b = Recorder("a"), Recorder("b")
    cb = closed_book_point(EPISODES, "pq")
    res = run([a, b], [*layout_points(EPISODES, LAYOUTS, HashEmbedder()), cb, *points], max_new_tokens=5,
              progress=False)
    assert a.calls == b.calls and len(a.calls) == len(EPISODES) * (len(LAYOUTS) + 1 + len(points))
    assert all(c[3] == 5 for c in a.calls)
    closed = a.calls[len(EPISODES) * len(LAYOUTS) : len(EPISODES) * (len(LAYOUTS) + 1)]
    assert [c[1] for c in closed] == [()] * len(EPISODES) and {c[2] for c in closed} == {"pq"}
    assert list(res) == ["layouts", "closed-book", "distractors"]
    s = res["closed-book"]["closed-book"]["models"]["a"]
    assert s["n"] == 3 and s["prompt_tokens"] == 1 and s["f1"] == 0.0
    assert s["groups"]["closed_book_control"]["n"] == 1 and s["groups"]["other"]["n"] == 2
    assert res["distractors"]["4"]["models"]["b"]["prompt_tokens"] == 51
    assert set(res["layouts"]) == set(LAYOUTS)
    assert res["layouts"]["qpq"]["models"]["a"]["records"][0]["passages"] == 3


def test_layout_points_rank_the_best_passage_first():
    (point,) = layout_points([ZEBRA], ["pq"], HashEmbedder())
    assert point.items[0].passages[0].text == ZEBRA["passages"][1]["text"]
    (given,) = layout_points([ZEBRA], ["pq"], None)
    assert [p.text for p in given.items[0].passages] == [p["text"] for p in ZEBRA["passages"]]


def test_episode_files_and_pools(tmp_path):
    path = tmp_path / "eval.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.writelines(json.dumps(e) + "\n" for e in EPISODES)
    assert read_episodes(path) == EPISODES
    assert read_episodes(path, limit=2, seed=1) == read_episodes(path, limit=2, seed=1)
    assert len(read_episodes(path, limit=2)) == 2
    assert default_pool_path(path) == tmp_path / "eval_passages.jsonl.gz"
    passages, source = pool_passages(default_pool_path(path), EPISODES)
    assert len(passages) == 8 and "episodes" in source
    with gzip.open(default_pool_path(path), "wt") as f:
        f.writelines(json.dumps({"pid": i, **p}) + "\n" for i, p in enumerate(POOL))
    passages, source = pool_passages(default_pool_path(path), EPISODES)
    assert [p["text"] for p in passages] == [p["text"] for p in POOL] and source == str(default_pool_path(path))
    with pytest.raises(FileNotFoundError):
        read_episodes(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "q"}) + "\n")
    with pytest.raises(ValueError, match="lacks"):
        read_episodes(bad)
