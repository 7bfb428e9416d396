"""Reading-comprehension episodes built from the corpus.

An episode is several passages (one holds the answer, the others are distractors), a question
and a short answer that occurs verbatim in the gold passage. The prompt layout (special tokens,
chunk boundaries, passage order) is applied later by app code; here passages are raw text of at
most ~200 words cut at paragraph/sentence boundaries (:func:`training.corpus.text.chunk_passages`).

Kinds: ``dict_wordnet``, ``dict_gcide``, ``dict_other`` (FOLDOC, Jargon File, Devil's Dictionary),
``acronym`` (VERA), ``man_option`` (option descriptions in manual pages), ``man_name`` (NAME line of
manual pages / POD), ``api`` (Python library functions and methods), ``section`` (first sentence of
a titled section), ``synthetic_kv`` (random key-value facts: pure recall, unknowable closed-book).

Distractors come from the same split: mostly the best lexical (BM25) matches of the question in a
pool of passages (all passages of the gold documents, so same-document passages are typical hard
distractors, plus a random sample of other passages), the rest drawn at random from the pool. A
distractor never contains the answer string, never comes from another document with the same split
key (e.g. another dictionary's entry for the same word), and for option/API questions never
contains the option tag / dotted name. The real sentence-transformers retriever is not used here:
embedding a few hundred thousand passages on 2 CPU cores is too slow for a routine rebuild.

Files (``data/build/episodes``):

- ``train.jsonl.gz``: compact records ``{id, split, kind, source_package, question, answer,
  passage_ids, gold, closed_book_control}``; passages in ``train_passages.jsonl.gz``
  (``{pid, doc_id, title, text}``). :func:`load_episodes` joins them into full records.
- ``eval.jsonl.gz``: full records, i.e. also ``passages: [{text, doc_id, title}, ...]``.
- ``eval_passages.jsonl.gz`` and ``meta.json`` (counts).

``closed_book_control`` marks questions whose answer cannot be known without the passages
(synthetic facts, section openings): run closed-book, they measure how much the model guesses.

    python -m training.corpus.episodes
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import math
import random
import re
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .text import chunk_passages, stable_hash

REPO = Path(__file__).resolve().parents[2]
log = logging.getLogger("training.corpus.episodes")

KINDS = ["dict_wordnet", "dict_gcide", "dict_other", "acronym", "man_option", "man_name", "api", "section",
         "synthetic_kv"]
TRAIN_CAPS = {"dict_wordnet": 30000, "dict_gcide": 15000, "dict_other": 8000, "acronym": 8000,
              "man_option": None, "man_name": None, "api": None, "section": None, "synthetic_kv": 45000}
EVAL_CAPS = {"dict_wordnet": 250, "dict_gcide": 200, "dict_other": 150, "acronym": 150, "man_option": 250,
             "man_name": 150, "api": 200, "section": 300, "synthetic_kv": 400}
CLOSED_BOOK_CONTROL = {"synthetic_kv", "section"}
MAX_ANSWER_TOKENS = 30


def episode_kind(qa_kind: str, package: str) -> str:
    if qa_kind == "dict_definition":
        return {"wordnet-base": "dict_wordnet", "dict-gcide": "dict_gcide"}.get(package, "dict_other")
    return qa_kind


# --------------------------------------------------------------------------- synthetic facts

_SYL = ["ka", "lo", "mi", "ra", "ven", "tor", "sa", "quel", "dan", "ri", "mo", "bel", "tha", "gor", "ni", "ve",
        "lan", "dre", "ko", "zu", "phi", "mar", "sel", "wyn", "ta", "bri", "os", "cal", "fen", "jo"]
_FIRST = ["Ada", "Boris", "Chiara", "Dmitri", "Elena", "Farid", "Greta", "Hiro", "Ines", "Jonas", "Kemal", "Lena",
          "Mateo", "Nadia", "Oskar", "Priya", "Quentin", "Rosa", "Stefan", "Tala", "Umar", "Vera", "Wim", "Ximena",
          "Yusuf", "Zofia", "Aurel", "Bianca", "Cyril", "Dalia"]
_LAST = ["Abbott", "Brandt", "Castillo", "Dorsey", "Eklund", "Fontaine", "Gruber", "Halloran", "Ivanova", "Jensen",
         "Kowalski", "Lindqvist", "Moreau", "Novak", "Okafor", "Petrov", "Quist", "Rinaldi", "Sato", "Tanaka",
         "Ulrich", "Varga", "Weiss", "Yilmaz", "Zeller", "Ortega", "Haddad", "Mbeki", "Lund", "Costa"]
_COLOURS = ["amber", "crimson", "teal", "ochre", "violet", "charcoal", "ivory", "olive", "scarlet", "cobalt blue",
            "mint green", "rust orange", "pale yellow", "navy", "silver", "maroon"]
_CITIES = ["Lisbon", "Gdansk", "Valparaiso", "Tromso", "Marseille", "Halifax", "Mombasa", "Osaka", "Hobart",
           "Reykjavik", "Genoa", "Bergen", "Antwerp", "Durban", "Split", "Kiel", "Odessa", "Vigo", "Cork", "Perth"]
_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December"]
_WORDS = ["falcon", "granite", "meadow", "harbor", "lantern", "copper", "willow", "thunder", "saffron", "glacier",
          "orchid", "cinder", "marble", "juniper", "quartz", "tundra", "ember", "cobalt", "maple", "sparrow"]


def _name(r: random.Random) -> str:
    return "".join(r.choice(_SYL) for _ in range(r.randint(2, 3))).capitalize()


def _code(r: random.Random) -> str:
    return r.choice("ABCDEFGHJKLMNPQRSTUVWXYZ") + str(r.randint(1, 99))


_ATTRS = [
    ("access code", ["vault", "locker", "gate", "safe"], lambda r: str(r.randint(1000, 9999))),
    ("owner", ["boat", "workshop", "warehouse", "orchard"], lambda r: f"{r.choice(_FIRST)} {r.choice(_LAST)}"),
    ("colour", ["car", "kite", "tent", "flag"], lambda r: r.choice(_COLOURS)),
    ("home port", ["ship", "ferry", "trawler", "yacht"], lambda r: r.choice(_CITIES)),
    ("launch date", ["satellite", "probe", "rocket"],
     lambda r: f"{r.randint(1, 28)} {r.choice(_MONTHS)} {r.randint(1961, 2049)}"),
    ("serial number", ["printer", "engine", "router", "turbine"],
     lambda r: f"{r.choice('ABCDEFGHKMNPRSTXZ')}{r.choice('ABCDEFGHKMNPRSTXZ')}-{r.randint(1000, 99999)}"),
    ("radio frequency", ["beacon", "station", "transmitter"], lambda r: f"{r.randint(30, 990)}.{r.randint(0, 9)} MHz"),
    ("password", ["account", "server", "terminal"], lambda r: f"{r.choice(_WORDS)}{r.randint(10, 999)}"),
    ("room number", ["office", "laboratory", "archive", "studio"], lambda r: str(r.randint(100, 999))),
    ("capacity", ["tank", "reservoir", "cistern"], lambda r: f"{r.randint(2, 900) * 10} litres"),
    ("head keeper", ["lighthouse", "museum", "library"], lambda r: f"{r.choice(_FIRST)} {r.choice(_LAST)}"),
    ("founding year", ["guild", "club", "choir", "society"], lambda r: str(r.randint(1500, 2020))),
]


def synthetic_passages(n_facts: int, split: str, seed: int, forbidden_keys: set[str] | None = None
                       ) -> tuple[list[dict], list[dict]]:
    """Synthetic fact passages (3-6 facts each) and one question per fact. Entity keys are unique
    within the call and avoid ``forbidden_keys`` (the other split's keys)."""
    r = random.Random(f"{seed}:{split}")
    forbidden = forbidden_keys or set()
    facts = []
    keys = set()
    while len(facts) < n_facts:
        attr, types, gen = r.choice(_ATTRS)
        etype = r.choice(types)
        ent = f"{etype} {_name(r)}" if r.random() < 0.6 else f"{etype} {_code(r)}"
        key = f"{attr}|{ent}"
        if key in keys or key in forbidden:
            continue
        keys.add(key)
        facts.append((attr, ent, gen(r), key))
    passages, items = [], []
    i = 0
    while i < len(facts):
        k = r.randint(3, 6)
        group = facts[i : i + k]
        i += k
        pid_local = len(passages)
        sents = []
        for attr, ent, val, _ in group:
            tmpl = r.choice(["The {a} of the {e} is {v}.", "For the {e}, the {a} is {v}.",
                             "Records show that the {a} of the {e} is {v}."])
            sents.append(tmpl.format(a=attr, e=ent, v=val))
        text = " ".join(sents)
        doc_id = f"synthetic/{split}/{pid_local}"
        passages.append({"doc_id": doc_id, "title": f"Registry sheet {pid_local}", "text": text,
                         "split_key": doc_id})
        for attr, ent, val, key in group:
            items.append({"kind": "synthetic_kv", "question": f"What is the {attr} of the {ent}?", "answer": val,
                          "anchor": ent, "local_pid": pid_local, "key": key, "source_package": "synthetic"})
    return passages, items


# --------------------------------------------------------------------------- lexical retrieval

_STOP = set("""a an the of to in on for and or is are was be by with as at it its this that what which who does do
did mean means meaning word words option options python function method manual page section first sentence
according stand acronym term computing hacker jargon define devil dictionary s t from how about c library
system call command""".split())
_TOK = re.compile(r"\w+")


class BM25:
    def __init__(self, texts: list[str], k1: float = 1.2, b: float = 0.75):
        from scipy import sparse

        vocab: dict[str, int] = {}
        indptr = [0]
        indices: list[int] = []
        data: list[int] = []
        for t in texts:
            c = Counter(w for w in _TOK.findall(t.lower()) if w not in _STOP)
            for w, n in c.items():
                j = vocab.setdefault(w, len(vocab))
                indices.append(j)
                data.append(n)
            indptr.append(len(indices))
        X = sparse.csr_matrix((np.asarray(data, np.float32), np.asarray(indices, np.int32),
                               np.asarray(indptr, np.int64)), shape=(len(texts), max(1, len(vocab))))
        dl = np.diff(X.indptr).astype(np.float32)
        lens = np.asarray(X.sum(axis=1)).ravel()
        avg = max(1.0, float(lens.mean())) if len(lens) else 1.0
        df = np.bincount(X.indices, minlength=X.shape[1]).astype(np.float32)
        n = X.shape[0]
        self.idf = np.log(1 + (n - df + 0.5) / (df + 0.5)).astype(np.float32)
        rows = np.repeat(np.arange(n), np.diff(X.indptr))
        tf = X.data
        X.data = tf * (k1 + 1) / (tf + k1 * (1 - b + b * lens[rows] / avg))
        del dl
        self.XT = X.T.tocsr()  # vocab x passages
        self.vocab = vocab
        self.n = n

    def search(self, queries: list[str], k: int = 40, batch: int = 256) -> list[list[int]]:
        from scipy import sparse

        out: list[list[int]] = []
        for s in range(0, len(queries), batch):
            rows, cols, vals = [], [], []
            for i, q in enumerate(queries[s : s + batch]):
                for w in set(_TOK.findall(q.lower())):
                    j = self.vocab.get(w)
                    if j is not None and w not in _STOP:
                        rows.append(i)
                        cols.append(j)
                        vals.append(self.idf[j])
            nq = len(queries[s : s + batch])
            Q = sparse.csr_matrix((np.asarray(vals, np.float32), (rows, cols)), shape=(nq, self.XT.shape[0]))
            S = (Q @ self.XT).tocsr()
            for i in range(nq):
                a, b = S.indptr[i], S.indptr[i + 1]
                if a == b:
                    out.append([])
                    continue
                d = S.data[a:b]
                idx = S.indices[a:b]
                if b - a > k:
                    top = np.argpartition(-d, k)[:k]
                    idx, d = idx[top], d[top]
                out.append(idx[np.argsort(-d, kind="stable")].tolist())
        return out


# --------------------------------------------------------------------------- building

def synth_keys_of(episodes: list[dict]) -> set[str]:
    """Keys ``attribute|entity`` of synthetic questions (so the other split can avoid them)."""
    keys = set()
    for e in episodes:
        m = re.fullmatch(r"What is the (.+) of the (.+)\?", e["question"])
        if e["kind"] == "synthetic_kv" and m:
            keys.add(f"{m.group(1)}|{m.group(2)}")
    return keys


def read_corpus(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def find_gold(passages: list[str], answer: str, anchor: str) -> int | None:
    al = anchor.lower()
    for i, p in enumerate(passages):
        if answer in p and al in p.lower():
            return i
    return None


class Stream:
    """The pretraining stream of one split, as written by :mod:`training.corpus.pretrain`."""

    def __init__(self, build_dir: Path, split: str):
        z = np.load(Path(build_dir) / "pretrain" / f"{split}.npz")
        self.tokens = z["tokens"]
        self.start = z["passage_start"]
        self.end = z["passage_end"]
        self.pdoc = z["passage_doc"]
        with gzip.open(Path(build_dir) / "pretrain" / f"{split}_docs.jsonl.gz", "rt", encoding="utf-8") as fh:
            self.docs = [json.loads(line) for line in fh]
        self.doc_no = {d["id"]: d["doc"] for d in self.docs}
        first = np.searchsorted(self.pdoc, np.arange(len(self.docs) + 1), side="left")
        self.doc_passages = [(int(first[i]), int(first[i + 1])) for i in range(len(self.docs))]
        meta = json.loads((Path(build_dir) / "pretrain" / "meta.json").read_text())
        self.passage_words = int(meta.get("passage_words", 200))

    @property
    def n_passages(self) -> int:
        return int(self.start.size)


def build_split(split: str, docs: list[dict], stream: Stream, caps: dict, seed: int, dmin: int, dmax: int,
                extra_pool: int, n_synth: int, synth_forbidden: set[str], tok=None,
                max_answer_tokens: int = MAX_ANSWER_TOKENS) -> tuple[list[dict], dict, list[dict]]:
    """Episodes of one split. ``docs`` are the corpus documents of the split; only those in the
    pretraining stream are used, and real passages are identified by their index in the stream's
    passage table. Synthetic passages get ids from ``stream.n_passages`` on. With ``tok``, answers
    longer than ``max_answer_tokens`` tokens are skipped."""
    docs = [d for d in docs if d["id"] in stream.doc_no]
    if tok is not None:
        for d in docs:
            qa = d.get("qa", [])
            if qa:
                lens = [len(e.ids) for e in tok.encode_batch([q["answer"] for q in qa], add_special_tokens=False)]
                d["qa"] = [q for q, n in zip(qa, lens, strict=True) if n <= max_answer_tokens]
    r = random.Random(f"{seed}:{split}:select")
    cands: dict[str, list[tuple[int, dict]]] = defaultdict(list)
    for di, d in enumerate(docs):
        for q in d.get("qa", []):
            cands[episode_kind(q["kind"], d["source_package"])].append((di, q))
    chosen: list[tuple[int, dict, str]] = []
    for kind, lst in cands.items():
        lst.sort(key=lambda x: stable_hash(f"{split}:{x[1]['question']}:{docs[x[0]]['id']}"))
        cap = caps.get(kind)
        chosen.extend((di, q, kind) for di, q in (lst if cap is None else lst[: int(cap * 1.3)]))
    pool: dict[int, dict] = {}
    doc_pids: dict[int, list[int]] = {}

    def add_doc(di: int) -> list[int]:
        if di in doc_pids:
            return doc_pids[di]
        d = docs[di]
        spans = chunk_passages(d["text"], max_words=stream.passage_words)
        a, b = stream.doc_passages[stream.doc_no[d["id"]]]
        assert b - a == len(spans), f"passage table mismatch for {d['id']}"
        ids = list(range(a, b))
        for pid, (s, e) in zip(ids, spans, strict=True):
            pool[pid] = {"doc_id": d["id"], "title": d["title"], "text": d["text"][s:e], "split_key": d["split_key"],
                         "source_package": d["source_package"]}
        doc_pids[di] = ids
        return ids

    items = []
    for di, q, kind in chosen:
        ids = add_doc(di)
        g = find_gold([pool[i]["text"] for i in ids], q["answer"], q["anchor"])
        if g is None:
            continue
        items.append({"kind": kind, "question": q["question"], "answer": q["answer"], "anchor": q["anchor"],
                      "gold_pid": ids[g], "source_package": docs[di]["source_package"]})
    by_kind: dict[str, list[dict]] = defaultdict(list)
    for it in items:
        by_kind[it["kind"]].append(it)
    items = []
    for kind, lst in by_kind.items():
        cap = caps.get(kind)
        items.extend(lst if cap is None else lst[:cap])
    others = [di for di in range(len(docs)) if di not in doc_pids]
    r.shuffle(others)
    n_extra = 0
    for di in others:
        if n_extra >= extra_pool:
            break
        n_extra += len(add_doc(di))
    real_pids = sorted(pool)
    # synthetic facts
    synth_cap = min(n_synth, caps.get("synthetic_kv") or n_synth)
    spass, sitems = synthetic_passages(synth_cap, split, seed, synth_forbidden)
    base = stream.n_passages
    synth_pids = []
    for k, p in enumerate(spass):
        synth_pids.append(base + k)
        pool[base + k] = {**p, "source_package": "synthetic"}
    for it in sitems:
        it = dict(it)
        it["gold_pid"] = base + it.pop("local_pid")
        it.pop("key")
        items.append(it)
    log.info("%s: %d items, pool of %d passages (%d synthetic)", split, len(items), len(pool), len(spass))
    bm = BM25([pool[p]["text"] for p in real_pids])
    t0 = time.time()
    hits = bm.search([it["question"] for it in items], k=48)
    log.info("%s: BM25 over %d passages for %d questions in %.0fs", split, bm.n, len(items), time.time() - t0)
    episodes = []
    rr = random.Random(f"{seed}:{split}:distractors")
    for n, (it, hit) in enumerate(zip(items, hits, strict=True)):
        gold = pool[it["gold_pid"]]
        ans = it["answer"]
        strict_anchor = it["kind"] == "man_option" or (it["kind"] == "api" and "." in it["anchor"])

        def ok(pid: int, it=it, gold=gold, ans=ans, strict_anchor=strict_anchor) -> bool:
            if pid == it["gold_pid"]:
                return False
            p = pool[pid]
            if ans in p["text"]:
                return False
            if p["split_key"] == gold["split_key"] and p["doc_id"] != gold["doc_id"]:
                return False
            if strict_anchor and it["anchor"] in p["text"]:
                return False
            return True

        k = rr.randint(dmin, dmax)
        chosen_d: list[int] = []
        if it["kind"] == "synthetic_kv":
            n_real = rr.randint(0, k // 3)
            tries = 0
            while len(chosen_d) < k - n_real and tries < 10 * k:
                tries += 1
                pid = rr.choice(synth_pids)
                if pid not in chosen_d and ok(pid):
                    chosen_d.append(pid)
        else:
            n_hard = math.ceil(0.75 * k)
            for h in hit:
                pid = real_pids[h]
                if len(chosen_d) >= n_hard:
                    break
                if pid not in chosen_d and ok(pid):
                    chosen_d.append(pid)
        tries = 0
        while len(chosen_d) < k and tries < 10 * k:
            tries += 1
            pid = rr.choice(real_pids)
            if pid not in chosen_d and ok(pid):
                chosen_d.append(pid)
        pids = chosen_d + [it["gold_pid"]]
        rr.shuffle(pids)
        episodes.append({
            "id": f"{split}-{n:06d}",
            "split": split,
            "kind": it["kind"],
            "source_package": it["source_package"],
            "question": it["question"],
            "answer": ans,
            "passage_ids": pids,
            "gold": pids.index(it["gold_pid"]),
            "closed_book_control": it["kind"] in CLOSED_BOOK_CONTROL,
        })
    synth = [{"pid": base + k, "doc_id": p["doc_id"], "title": p["title"], "text": p["text"]}
             for k, p in enumerate(spass)]
    return episodes, pool, synth


def write_jsonl_gz(path: Path, records) -> None:
    with gzip.open(path, "wt", encoding="utf-8", compresslevel=9) as fh:
        for r in records:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")


def expand(ep: dict, text_of) -> dict:
    e = dict(ep)
    e["passages"] = [text_of(p) for p in ep["passage_ids"]]
    return e


class PassageStore:
    """Passage ids of one split -> token ids / text / provenance.

    Ids below ``n_stream`` are passages of the pretraining stream (``pretrain/{split}.npz``); the
    others are synthetic passages stored with the episodes (``{split}_synthetic.npz`` + ``.jsonl.gz``)."""

    def __init__(self, split: str, build_dir: Path | str = REPO / "data" / "build", tokenizer=None):
        bd = Path(build_dir)
        self.stream = Stream(bd, split)
        z = np.load(bd / "episodes" / f"{split}_synthetic.npz")
        self.local_tokens, self.local_offsets = z["tokens"], z["offsets"]
        self.n_stream = int(z["n_stream_passages"])
        with gzip.open(bd / "episodes" / f"{split}_synthetic.jsonl.gz", "rt", encoding="utf-8") as fh:
            self.synth = [json.loads(line) for line in fh]
        if tokenizer is None:
            from .tokenizer import load

            tokenizer = load(bd / "tokenizer" / "tokenizer.json")
        self.tok = tokenizer

    def tokens(self, pid: int) -> np.ndarray:
        if pid < self.n_stream:
            return self.stream.tokens[self.stream.start[pid] : self.stream.end[pid]]
        k = pid - self.n_stream
        return self.local_tokens[self.local_offsets[k] : self.local_offsets[k + 1]]

    def passage(self, pid: int) -> dict:
        if pid < self.n_stream:
            d = self.stream.docs[int(self.stream.pdoc[pid])]
            text = self.tok.decode(self.tokens(pid).tolist(), skip_special_tokens=False)
            return {"text": text, "doc_id": d["id"], "title": d["title"]}
        s = self.synth[pid - self.n_stream]
        return {"text": s["text"], "doc_id": s["doc_id"], "title": s["title"]}


def load_episodes(split: str, build_dir: Path | str = REPO / "data" / "build", tokenizer=None) -> Iterator[dict]:
    """Full episode records ``{id, split, kind, question, answer, passages: [{text, doc_id, title}], gold, ...}``."""
    d = Path(build_dir) / "episodes"
    store = None
    with gzip.open(d / f"{split}.jsonl.gz", "rt", encoding="utf-8") as fh:
        for line in fh:
            e = json.loads(line)
            if "passages" not in e:
                store = store or PassageStore(split, build_dir, tokenizer)
                e = expand(e, store.passage)
            yield e


def check_episodes(episodes: list[dict], pool: dict[int, dict]) -> None:
    for e in episodes:
        gold = pool[e["passage_ids"][e["gold"]]]["text"]
        assert e["answer"] in gold, e["id"]
        for j, p in enumerate(e["passage_ids"]):
            if j != e["gold"]:
                assert e["answer"] not in pool[p]["text"], e["id"]


def write_split(out: Path, split: str, episodes: list[dict], pool: dict, synth: list[dict], stream: Stream, tok,
                full: bool) -> None:
    check_episodes(episodes, pool)
    # the stream's token spans must decode to the passage text (spot check)
    rng = random.Random(0)
    real = [p for p in pool if p < stream.n_passages]
    for pid in rng.sample(real, min(300, len(real))):
        dec = tok.decode(stream.tokens[stream.start[pid] : stream.end[pid]].tolist(), skip_special_tokens=False)
        assert dec == pool[pid]["text"], f"passage {pid} does not round-trip"
    encs = tok.encode_batch([s["text"] for s in synth], add_special_tokens=False)
    offs = np.cumsum([0] + [len(e.ids) for e in encs]).astype(np.int64)
    toks = np.concatenate([np.asarray(e.ids, np.uint16) for e in encs]) if encs else np.zeros(0, np.uint16)
    np.savez_compressed(out / f"{split}_synthetic.npz", tokens=toks, offsets=offs,
                        n_stream_passages=np.int64(stream.n_passages))
    write_jsonl_gz(out / f"{split}_synthetic.jsonl.gz", synth)

    def text_of(pid: int) -> dict:
        p = pool[pid]
        return {"text": p["text"], "doc_id": p["doc_id"], "title": p["title"]}

    write_jsonl_gz(out / f"{split}.jsonl.gz", (expand(e, text_of) if full else e for e in episodes))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.corpus.episodes", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-dir", type=Path, default=REPO / "data" / "build")
    ap.add_argument("--min-distractors", type=int, default=1)
    ap.add_argument("--max-distractors", type=int, default=16)
    ap.add_argument("--max-answer-tokens", type=int, default=MAX_ANSWER_TOKENS)
    ap.add_argument("--train-extra-pool", type=int, default=20000, help="passages of non-gold documents added")
    ap.add_argument("--eval-extra-pool", type=int, default=3000)
    ap.add_argument("--train-scale", type=float, default=1.0, help="multiply the train caps")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    t0 = time.time()
    out = args.build_dir / "episodes"
    out.mkdir(parents=True, exist_ok=True)
    for f in out.glob("*"):
        f.unlink()
    cdir = args.build_dir / "corpus"
    from .tokenizer import load

    tok = load(args.build_dir / "tokenizer" / "tokenizer.json")
    ev_stream = Stream(args.build_dir, "eval")
    ev, ev_pool, ev_synth = build_split("eval", read_corpus(cdir / "eval.jsonl.gz"), ev_stream, EVAL_CAPS, args.seed,
                                        args.min_distractors, args.max_distractors, args.eval_extra_pool,
                                        EVAL_CAPS["synthetic_kv"], set(), tok, args.max_answer_tokens)
    ev_keys = {f"{e['question']}" for e in ev}
    tr_docs = read_corpus(cdir / "train.jsonl.gz")
    eval_doc_ids = {p["doc_id"] for p in ev_pool.values()}
    assert not eval_doc_ids & {d["id"] for d in tr_docs}, "eval documents leaked into train"
    caps = {k: (None if v is None else int(v * args.train_scale)) for k, v in TRAIN_CAPS.items()}
    forbidden = synth_keys_of(ev)
    tr_stream = Stream(args.build_dir, "train")
    tr, tr_pool, tr_synth = build_split("train", tr_docs, tr_stream, caps, args.seed, args.min_distractors,
                                        args.max_distractors, args.train_extra_pool, caps["synthetic_kv"],
                                        forbidden, tok, args.max_answer_tokens)
    del tr_docs
    n0 = len(tr)
    tr = [e for e in tr if e["question"] not in ev_keys]
    log.info("dropped %d train episodes whose question is also an eval question", n0 - len(tr))
    assert not ev_keys & {e["question"] for e in tr}, "an eval question appears in train"
    write_split(out, "eval", ev, ev_pool, ev_synth, ev_stream, tok, full=True)
    write_split(out, "train", tr, tr_pool, tr_synth, tr_stream, tok, full=False)
    passages_used = {sp: len({p for e in eps for p in e["passage_ids"]}) for sp, eps in (("train", tr), ("eval", ev))}
    meta = {"counts": {sp: dict(Counter(e["kind"] for e in eps)) for sp, eps in (("train", tr), ("eval", ev))},
            "distinct_passages": passages_used,
            "mean_passages_per_episode": {sp: float(np.mean([len(e["passage_ids"]) for e in eps]))
                                          for sp, eps in (("train", tr), ("eval", ev))},
            "distractors": [args.min_distractors, args.max_distractors], "retrieval": "BM25 (lexical)",
            "files_bytes": {p.name: p.stat().st_size for p in sorted(out.glob("*.gz"))},
            "elapsed_s": time.time() - t0}
    (out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    log.info("episodes: %s", json.dumps(meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
