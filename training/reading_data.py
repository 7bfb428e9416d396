"""Reading data for stage 3 of the SmolLM2 uptraining: ChatML reading turns with a loss mask.

    python -m training.reading_data --corpus /tmp/corpus/build/corpus --gguf PATH \
        --text data/build/uptrain/data --out data/build/uptrain/reading

Every turn is laid out exactly as `training.uptrain_data.chatml()` does (the format the app uses):
a system line (first turn of a session only), `Passages:` with `[i] ` items separated by blank
lines, `Question: ...`, then the assistant's answer and `<|im_end|>`. Built from the corpus' own
QA annotations (packages of `training/corpus/sources.py`; the dev set's packages, listed in
`data/eval/SOURCES.md`, are dropped even if a corpus build held them):

- answerable turns: the passage holding the answer among 1-4 distractors, hard ones first (other
  windows of the same document, then documents of the same package, then any);
- unanswerable turns (`refusal_share`, 20-25%): the same kind of question with the answer's
  passage left out; the answer is exactly `app.prompt.REFUSAL`;
- questions as people type them: the annotation's own wording, paraphrase frames, lowercase,
  keyword-only, a typo now and then; reverse questions (description -> name): "how do I <man-page
  option description>?" -> the option, "which function returns ...?" -> the function, the word or
  acronym for a definition;
- sessions of 2-3 turns (about `session_share` of the sessions): later turns have no system line,
  their own passages, and often lean on the previous turn ("and -v?", "what about Context.copy()?");
- the loss mask is 1 on exactly the assistant tokens of every turn (answer text + its `<|im_end|>`);
- teacher questions (`--teacher-questions FILE.jsonl --teacher-share S`, off by default): a share S of
  the answerable turns (first turns and fresh later turns) asks a question the teacher wrote about a
  gold passage and answered again from it (`training/teacher_questions.py`, PAQ-style), with that
  passage as gold among the usual distractors. With the share at 0 the output is byte-identical to
  the builder without the option.

Output (`--out`): `reading.npz` (train rows [N, row_len] uint16 + mask, held-out sessions from the
corpus' eval split as flat tokens + per-token turn labels), `reading_meta.json` (held-out turn
descriptions, counts, samples), and `text.npy` / `eval.npy`: a slice of the stage-2 text stream
for distillation (so the model does not forget) and its held-out text.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from app.prompt import REFUSAL  # the app's one refusal sentence (app.prompt needs no torch)
from training.uptrain_data import PASSAGE_CHARS, chatml, is_dict, read_docs

ROW_LEN = 2049  # tokens per training row (2048 inputs + 1)
# Reverse questions (description -> option, function, word) where the fact allows one. Stage 4 (0.35) read
# them worst (held-out exact 0-16%) while the dev set asks mostly how-to questions of this kind.
REVERSE_SHARE = 0.35
SOURCES_MD = Path(__file__).resolve().parent.parent / "data" / "eval" / "SOURCES.md"

VERBS = set("""use specify print display show set make read write list output ignore keep force suppress remove
delete create enable disable add follow skip send treat assume change append preserve report sort compare search
exclude include copy move limit select run stop start allow prevent produce generate save load check verify match
recurse descend prompt override interpret give return exit try wait cause count convert read dump get put open close
pass pack unpack print mark reset retry restore resolve register replace rename request separate show strip store
suppress tell test trace update wrap format build call decode encode define determine emit enforce expand fetch find
flush install join kill lock merge mount parse quote raise reverse rotate scan split sync truncate unlink unset
watch work omit operate apply assign avoid attempt connect disconnect describe construct locate yield
compute calculate translate transform wait handle insert fill initialize iterate measure modify query remember
shift sleep schedule submit""".split())
STOP = set("""the a an of to in for on is are what does do how which i my me can with by from that this it be as at
or and about mean means manual page option flag command function method python c library""".split())


@dataclass
class Fact:
    """One annotated QA pair, normalised: the question, the answer and what the gold passage must hold."""
    doc: dict
    kind: str
    question: str
    answer: str
    name: str = ""  # command / function / word / acronym the question is about
    options: list[str] = field(default_factory=list)  # man_option: option spellings
    anchor: str = ""


@dataclass
class Turn:
    question: str
    answer: str
    passages: list[str]
    kind: str
    answerable: bool
    reverse: bool
    teacher: bool = False  # the question is a teacher question (training/teacher_questions.py)


@dataclass
class TeacherQuestion:
    """A kept record of training/teacher_questions.py, its fact rebuilt on the document it was written for."""
    fact: Fact
    passage: str
    question: str
    answer: str
    reverse: bool  # kept because the teacher's answer named the fact's key: answered with the name


# -- dev-set exclusion ----------------------------------------------------------------------------------

def dev_packages(sources_md: Path = SOURCES_MD) -> set[str]:
    """Binary and source package names of the dev-set documents (the table in data/eval/SOURCES.md)."""
    names = set()
    for line in sources_md.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) > 4 and cells[1].startswith("`"):
            m = re.match(r"([\w.+-]+)\s*\(([\w.+-]+)\)", cells[3])
            if m:
                names |= {m.group(1), m.group(2)}
    return names


def corpus_packages() -> set[str]:
    from training.corpus.sources import all_packages

    return set(all_packages())


def load_docs(corpus: Path, split: str = "train") -> list[dict]:
    """A corpus split (``<corpus>/<split>.jsonl.gz``) as the reading data reads it: the corpus' packages
    only, the dev set's packages dropped."""
    corpus_pk, dev = corpus_packages(), dev_packages()
    return [d for d in read_docs(corpus / f"{split}.jsonl.gz") if allowed(d, corpus_pk, dev)]


def allowed(doc: dict, corpus: set[str], dev: set[str]) -> bool:
    pkg = doc["source_package"]
    if pkg not in corpus or pkg in dev:
        return False
    head = re.split(r"[:\s(]", doc.get("title") or "", maxsplit=1)[0].lower()
    return head not in dev  # e.g. a page about a dev-set program in another package


# -- facts ---------------------------------------------------------------------------------------------

def make_fact(doc: dict, qa: dict) -> Fact | None:
    kind, q, ans, anchor = qa["kind"], qa["question"], qa["answer"].strip(), qa.get("anchor", "")
    if not ans or len(ans) > 300:
        return None
    title = doc.get("title") or ""
    if kind == "man_option":
        if anchor.endswith(","):  # the parser left the long option in the answer: "-h," + "--help Display ..."
            m = re.match(r"(--[\w-]+)\s+([A-Z(].*)", ans)
            if not m:
                return None
            anchor, ans = f"{anchor} {m.group(1)}", m.group(2)
        if ans.startswith("-"):
            return None
        opts = re.findall(r"(?<![\w-])(--?[A-Za-z0-9][\w-]*)", anchor)
        cmd = title.split(":")[0].strip()
        if not opts or not cmd or " " in cmd:
            return None
        return Fact(doc, kind, q, ans, name=cmd, options=opts, anchor=anchor)
    if kind == "api":
        m = re.search(r"Python (?:function|method|class|attribute|exception) ([\w.]+)\(\)", q)
        if not m:
            return None
        return Fact(doc, kind, q, ans, name=m.group(1), anchor=anchor)
    if kind == "man_name":
        name = anchor or re.split(r":| - ", title)[0].strip()
        return Fact(doc, kind, q, ans, name=name, anchor=anchor)
    if kind in ("dict_definition", "acronym"):
        return Fact(doc, kind, q, ans, name=anchor or title, anchor=anchor)
    if kind == "section":
        return Fact(doc, kind, q, ans, name=title, anchor=anchor)
    return None


# -- wording ---------------------------------------------------------------------------------------------

def _imperative(word: str) -> str | None:
    w = word.lower()
    for cand in (w, w[:-3] + "y" if w.endswith("ies") else None,
                 w[:-2] if w.endswith(("ses", "xes", "ches", "shes")) else None,
                 w[:-1] if w.endswith("s") and not w.endswith("ss") else None):
        if cand and cand in VERBS:
            return cand
    return None


def _third_person(verb: str) -> str:
    if verb.endswith("y") and verb[-2:-1] not in "aeiou":
        return verb[:-1] + "ies"
    return verb + ("es" if verb.endswith(("s", "x", "ch", "sh")) else "s")


def _clause(text: str, max_words: int = 14) -> str | None:
    """The description as a lowercase clause (no trailing period, no '(HTTP) ' tag), or None if too long."""
    t = re.sub(r"^\([^)]*\)\s*", "", text.strip())
    t = re.split(r"(?<=[a-z0-9)])\.\s", t)[0].rstrip(". ")
    if not t or len(t.split()) > max_words or "\n" in t or t.count("(") != t.count(")") or "=" in t:
        return None
    return t[0].lower() + t[1:]


def how_do_i(desc: str) -> str | None:
    """'Display help text and exit.' -> 'display help text and exit' when it starts with a verb, else None."""
    c = _clause(desc)
    if not c:
        return None
    first, _, rest = c.partition(" ")
    verb = _imperative(first)
    return f"{verb} {rest}".strip() if verb else None


def keywords(question: str, rng: random.Random) -> str:
    words = [w for w in re.findall(r"[\w.+#/-]+(?:\(\))?", question) if w.lower() not in STOP]
    return " ".join(words) if words else question


def typo(text: str, rng: random.Random) -> str:
    words = text.split()
    cands = [i for i, w in enumerate(words) if w.isalpha() and len(w) > 4]
    if not cands:
        return text
    i = rng.choice(cands)
    w = words[i]
    j = rng.randrange(1, len(w) - 2)
    words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2:]
    return " ".join(words)


def typed(question: str, rng: random.Random) -> str:
    """How people type: as written, lowercase, no question mark, keywords only, a typo."""
    r = rng.random()
    if r < 0.45:
        return question
    if r < 0.7:
        return question.lower().rstrip("?") if rng.random() < 0.5 else question.lower()
    if r < 0.85:
        return keywords(question, rng).lower()
    return typo(question.lower(), rng)


def _cmd(name: str, rng: random.Random) -> str:
    return "git " + name[4:] if name.startswith("git-") and rng.random() < 0.5 else name


def forward(f: Fact, rng: random.Random) -> str:
    """A question asking for the annotated answer, in one of several frames."""
    if f.kind == "man_option":
        cmd, opt = _cmd(f.name, rng), rng.choice(f.options)
        frames = [f.question, f"what does {cmd} {opt} do?", f"What is {opt} for in {cmd}?", f"{cmd} {opt}",
                  f"what does the {opt} flag of {cmd} mean?", f"explain {opt} in {cmd}", f"{opt} option {cmd}?"]
    elif f.kind == "api":
        mod, _, short = f.name.rpartition(".")
        frames = [f.question, f"what does {f.name}() do?", f"{f.name}", f"python {mod} {short}",
                  f"What is {short}() in {mod} used for?", f"explain {f.name}"]
    elif f.kind == "man_name":
        frames = [f.question, f"what is {f.name} for?", f"what does {f.name} do", f"man {f.name}",
                  f"What is {f.name}?"]
    elif f.kind == "dict_definition":
        frames = [f.question, f"what does {f.name} mean?", f"define {f.name}", f"{f.name} meaning",
                  f"meaning of {f.name}"]
    elif f.kind == "acronym":
        frames = [f.question, f"what does {f.name} stand for?", f"what is {f.name} short for?", f"{f.name} acronym",
                  f"{f.name} stands for"]
    else:  # section
        frames = [f.question, f'How does the section "{f.anchor}" of "{f.name}" begin?',
                  f'What does the "{f.anchor}" section in {f.name} start with?']
    q = rng.choice(frames)
    return q if f.kind == "section" else typed(q, rng)


def reverse_answer(f: Fact) -> str:
    """What a reverse question (description -> name) is answered with: the option to use, the function,
    the command or the word."""
    if f.kind == "man_option":
        return f"Use {f.anchor}."
    if f.kind == "api":
        return f"{f.name}()"
    return f.name


def reverse(f: Fact, rng: random.Random) -> tuple[str, str] | None:
    """Description -> name: (question, answer) or None when this fact has no natural reverse question."""
    if f.kind == "man_option":
        cmd, act = _cmd(f.name, rng), how_do_i(f.answer)
        if act:
            q = rng.choice([f"how do I {act} with {cmd}?", f"How can I {act} in {cmd}?", f"{cmd}: how to {act}",
                            f"which {cmd} option lets me {act}?", f"how do i make {cmd} {act}?"])
            return typed(q, rng), reverse_answer(f)
        c = _clause(f.answer, 10)
        if c:
            return typed(rng.choice([f"which {cmd} option is described as \"{c}\"?", f"{cmd} option for {c}",
                                     f"Which flag of {cmd} means: {c}?"]), rng), f.anchor
        return None
    if f.kind in ("api", "man_name"):
        c = _clause(f.answer, 12)
        if not c:
            return None
        first, _, rest = c.partition(" ")
        verb = _imperative(first)
        what = "function" if f.kind == "api" or "function" in f.question else "command"
        where = f" in {f.name.rpartition('.')[0]}" if f.kind == "api" and "." in f.name else ""
        if verb:
            q = rng.choice([f"which {what}{where} {_third_person(verb)} {rest}?", f"how do I {verb} {rest}?",
                            f"what should I use to {verb} {rest}?"])
        elif f.kind == "man_name":
            q = f"which manual page is about {c}?"
        else:
            return None
        return typed(q, rng), reverse_answer(f)
    if f.kind == "dict_definition":
        c = _clause(f.answer, 10)
        return (typed(f'what is the word for "{c}"?', rng), reverse_answer(f)) if c else None
    if f.kind == "acronym":
        q = rng.choice([f"what is the acronym for {f.answer}?", f"{f.answer} abbreviation"])
        return typed(q, rng), reverse_answer(f)
    return None


def follow_up(prev: Fact, nxt: Fact, rng: random.Random) -> str:
    """A later turn about another fact of the same document, leaning on the previous turn."""
    if nxt.kind == "man_option":
        opt = rng.choice(nxt.options)
        return rng.choice([f"and {opt}?", f"what about {opt}?", f"And what does {opt} do?", f"how about {opt}"])
    if nxt.kind == "api":
        return rng.choice([f"and {nxt.name}()?", f"what about {nxt.name.rpartition('.')[2]}()?",
                           f"And what does {nxt.name}() do?"])
    return forward(nxt, rng)


# -- passages --------------------------------------------------------------------------------------------

def _snap(text: str, start: int, end: int) -> str:
    """text[start:end] widened to whitespace boundaries."""
    while start > 0 and not text[start - 1].isspace():
        start -= 1
    while end < len(text) and not text[end].isspace():
        end += 1
    return text[start:end].strip()


def gold_passage(text: str, must: list[str], rng: random.Random, size: int) -> str | None:
    """A window of about `size` characters holding every string in `must` (None if they are not all there)."""
    spans = []
    for s in must:
        at = text.find(s)
        if at < 0:
            return None
        spans.append((at, at + len(s)))
    lo, hi = min(a for a, _ in spans), max(b for _, b in spans)
    if hi - lo > size * 1.5:
        return None
    start = max(0, lo - rng.randint(0, max(0, size - (hi - lo))))
    return _snap(text, start, max(hi, start + size))


def _overlaps(w: str, others: list[str]) -> bool:
    probe = w[len(w) // 2 - 30: len(w) // 2 + 30]
    return any(probe in o or o[len(o) // 2 - 30: len(o) // 2 + 30] in w for o in others)


def other_window(text: str, forbidden: list[str], rng: random.Random, size: int, tries: int = 6,
                 avoid: list[str] = ()) -> str | None:
    """A window of the text holding none of `forbidden` (lower-cased match) and overlapping no `avoid`."""
    if len(text) < 120:
        return None
    for _ in range(tries):
        start = rng.randint(0, max(0, len(text) - size))
        w = _snap(text, start, start + size)
        low = w.lower()
        if w and not any(s.lower() in low for s in forbidden) and not _overlaps(w, avoid):
            return w
    return None


class Library:
    """Documents by package, to draw hard and easy distractors from."""

    def __init__(self, docs: list[dict]):
        self.docs = [d for d in docs if len(d["text"]) > 200]
        self.by_package: dict[str, list[dict]] = {}
        for d in self.docs:
            self.by_package.setdefault(d["source_package"], []).append(d)

    def distractors(self, f: Fact, n: int, forbidden: list[str], rng: random.Random, size: int,
                    gold: str = "") -> list[str]:
        out: list[str] = []
        same_doc = rng.randint(0, min(2, n))
        for _ in range(same_doc):
            w = other_window(f.doc["text"], forbidden, rng, size, avoid=out + ([gold] if gold else []))
            if w:
                out.append(w)
        pool = self.by_package.get(f.doc["source_package"], [])
        tries = 0
        while len(out) < n and tries < 4 * n:
            tries += 1
            src = rng.choice(pool) if pool and rng.random() < 0.7 else rng.choice(self.docs)
            if src["id"] == f.doc["id"]:
                continue
            w = other_window(src["text"], forbidden, rng, size, tries=2)
            if w and w not in out:
                out.append(w)
        return out


def _forbidden(f: Fact) -> list[str]:
    """What must not be in a distractor: the answer, and for man options the option's own spellings."""
    forbidden = [f.answer] + ([o for o in f.options if o.startswith("--")] if f.kind == "man_option" else [])
    if f.kind in ("dict_definition", "acronym", "api", "man_name") and len(f.name) > 3:
        forbidden.append(f.name)
    return forbidden


def make_turn(lib: Library, f: Fact, rng: random.Random, answerable: bool, question: str | None = None,
              allow_reverse: bool = True, reverse_share: float = REVERSE_SHARE) -> Turn | None:
    size = rng.randint(PASSAGE_CHARS // 2, PASSAGE_CHARS)
    rev = reverse(f, rng) if allow_reverse and rng.random() < reverse_share else None
    q, a = rev if rev else (question or forward(f, rng), f.answer)
    must = [f.answer] + ([f.anchor] if rev and f.kind == "man_option" else [])
    forbidden = _forbidden(f)
    n = rng.randint(1, 4)
    gold = gold_passage(f.doc["text"], must, rng, size) if answerable else None
    if answerable and gold is None:
        return None
    passages = lib.distractors(f, n if answerable else n + 1, forbidden, rng, size, gold=gold or "")
    if not passages:
        return None
    if answerable:
        passages = passages[:n]
        passages.insert(rng.randint(0, len(passages)), gold)
    else:
        a = REFUSAL
    return Turn(q, a, passages, f.kind, answerable, bool(rev) and answerable)


def teacher_turn(lib: Library, tq: TeacherQuestion, rng: random.Random) -> Turn | None:
    """An answerable turn asking a teacher question: its passage as gold among 1-4 distractors."""
    size = rng.randint(PASSAGE_CHARS // 2, PASSAGE_CHARS)
    n = rng.randint(1, 4)
    passages = lib.distractors(tq.fact, n, _forbidden(tq.fact), rng, size, gold=tq.passage)
    if not passages:
        return None
    passages.insert(rng.randint(0, len(passages)), tq.passage)
    return Turn(tq.question, tq.answer, passages, tq.fact.kind, True, tq.reverse, teacher=True)


def load_teacher_questions(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def teacher_pool(records: list[dict], docs: list[dict]) -> list[TeacherQuestion]:
    """The records whose document is among `docs` (one split's), as TeacherQuestions in file order."""
    by_id = {d["id"]: d for d in docs}
    out = []
    for r in records:
        doc = by_id.get(r["doc_id"])
        if doc is None or r["passage"] not in doc["text"]:
            continue
        f = Fact(doc, r["fact_kind"], r["question"], r["reference"], name=r.get("name", ""),
                 options=list(r.get("options") or []), anchor=r.get("anchor", ""))
        out.append(TeacherQuestion(f, r["passage"], r["question"], r["answer"], r.get("match") == "name"))
    return out


def render(turns: list[Turn]) -> tuple[str, list[tuple[int, int]]]:
    """A session's text and the character spans of its assistant tokens (answer + <|im_end|>)."""
    text, spans = "", []
    for i, t in enumerate(turns):
        prompt = chatml(t.passages, t.question, None, system=i == 0)
        start = len(text) + len(prompt)
        text += chatml(t.passages, t.question, t.answer, system=i == 0)
        spans.append((start, start + len(t.answer) + len("<|im_end|>")))
    return text, spans


# -- sessions -------------------------------------------------------------------------------------------

KIND_WEIGHTS = {"man_option": 0.30, "api": 0.20, "man_name": 0.15, "section": 0.13, "dict_definition": 0.12,
                "acronym": 0.10}


def collect_facts(docs: list[dict], rng: random.Random, dict_cap: int) -> dict[str, list[Fact]]:
    by_kind: dict[str, list[Fact]] = {k: [] for k in KIND_WEIGHTS}
    dict_docs = [d for d in docs if is_dict(d)]
    rng.shuffle(dict_docs)
    for d in [d for d in docs if not is_dict(d)] + dict_docs[:dict_cap]:
        for qa in d.get("qa") or []:
            f = make_fact(d, qa)
            if f and f.kind in by_kind:
                by_kind[f.kind].append(f)
    for v in by_kind.values():
        rng.shuffle(v)
    return by_kind


def build_sessions(docs: list[dict], n_sessions: int, rng: random.Random, refusal_share: float = 0.22,
                   session_share: float = 0.3, dict_cap: int = 20000,
                   reverse_share: float = REVERSE_SHARE, teacher: list[dict] = (),
                   teacher_share: float = 0.0) -> list[list[Turn]]:
    """Sessions of reading turns. `teacher`: records of training/teacher_questions.py (those of other
    documents are ignored); a `teacher_share` of the answerable fresh turns then asks one of them."""
    lib = Library(docs)
    pool = teacher_pool(list(teacher), docs) if teacher_share > 0 else []
    teacher_facts = {id(tq.fact) for tq in pool}  # rebuilt facts: a follow-up must not ask the same one
    facts = collect_facts(docs, rng, dict_cap)
    siblings: dict[str, list[Fact]] = {}
    for fs in facts.values():
        for f in fs:
            siblings.setdefault(f.doc["id"], []).append(f)
    kinds, weights = zip(*[(k, w) for k, w in KIND_WEIGHTS.items() if facts[k]], strict=True)
    cursor = {k: 0 for k in kinds}
    sessions = []

    def next_fact():
        kind = rng.choices(kinds, weights)[0]
        f = facts[kind][cursor[kind] % len(facts[kind])]
        cursor[kind] += 1
        return f

    tcursor = [0]

    def teacher_fresh(answerable: bool) -> tuple[Fact, Turn] | None:
        """A teacher question's turn for a share of the answerable fresh turns (no draw when off)."""
        if not (pool and answerable and rng.random() < teacher_share):
            return None
        for _ in range(10):
            tq = pool[tcursor[0] % len(pool)]
            tcursor[0] += 1
            t = teacher_turn(lib, tq, rng)
            if t is not None:
                return tq.fact, t
        return None

    while len(sessions) < n_sessions:
        # Draw answerable/unanswerable first and keep it through retries: a fact that cannot make an
        # answerable turn (answer not literally in its text) must not tilt the share toward refusals.
        answerable = rng.random() >= refusal_share
        first = None
        got = teacher_fresh(answerable)
        if got:
            f, first = got
        for _ in range(0 if got else 20):
            f = next_fact()
            first = make_turn(lib, f, rng, answerable=answerable, reverse_share=reverse_share)
            if first is not None:
                break
        if first is None:
            continue
        turns = [first]
        if rng.random() < session_share:
            for _ in range(rng.choice((1, 1, 2))):
                answerable = rng.random() >= refusal_share
                t = None
                for _ in range(10):
                    same = [s for s in siblings.get(f.doc["id"], []) if s is not f and s.kind == f.kind
                            and (id(f) not in teacher_facts or s.answer != f.answer)]
                    if same and rng.random() < 0.7:
                        nxt = rng.choice(same)
                        t = make_turn(lib, nxt, rng, answerable, question=follow_up(f, nxt, rng),
                                      allow_reverse=False)
                    else:
                        got = teacher_fresh(answerable)
                        if got:
                            nxt, t = got
                        else:
                            nxt = next_fact()
                            t = make_turn(lib, nxt, rng, answerable, reverse_share=reverse_share)
                    if t is not None:
                        break
                if t is None:
                    break
                turns.append(t)
                f = nxt
        sessions.append(turns)
    return sessions


# -- tokens ---------------------------------------------------------------------------------------------

def tokenize_session(tok, turns: list[Turn]) -> tuple[list[int], list[int]]:
    """Token ids and per-token labels: turn number (1, 2, ...) on that turn's assistant tokens, else 0."""
    text, spans = render(turns)
    enc = tok.encode(text)
    labels = []
    for s, e in enc.offsets:
        lab = 0
        for k, (a, b) in enumerate(spans, 1):
            if s >= a and e <= b and e > s:
                lab = k
                break
        labels.append(lab)
    return list(enc.ids), labels


def pack_rows(sessions: list[tuple[list[int], list[int]]], eos: int, row_len: int, rng: random.Random
              ) -> tuple[np.ndarray, np.ndarray]:
    """Whole sessions packed into rows of row_len tokens, separated and padded by <|endoftext|> (mask 0)."""
    rows, masks, cur, curm = [], [], [], []
    order = list(range(len(sessions)))
    rng.shuffle(order)
    for i in order:
        ids, lab = sessions[i]
        if len(ids) + 1 > row_len:
            continue
        if len(cur) + len(ids) + 1 > row_len:
            rows.append(cur + [eos] * (row_len - len(cur)))
            masks.append(curm + [0] * (row_len - len(curm)))
            cur, curm = [], []
        cur += ids + [eos]
        curm += [1 if x else 0 for x in lab] + [0]
    if cur:
        rows.append(cur + [eos] * (row_len - len(cur)))
        masks.append(curm + [0] * (row_len - len(curm)))
    return np.asarray(rows, dtype=np.uint16), np.asarray(masks, dtype=np.uint8)


def build(corpus: Path, gguf: Path, out: Path, text_dir: Path | None, n_train: int, n_eval: int,
          text_tokens: int, seed: int, refusal_share: float = 0.22,
          reverse_share: float = REVERSE_SHARE, teacher_questions: Path | None = None,
          teacher_share: float = 0.0) -> dict:
    from retnet.convert.llama_gguf import gguf_tokenizer

    tok = gguf_tokenizer(gguf)
    eos = tok.token_to_id("<|endoftext|>")
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    teacher = load_teacher_questions(teacher_questions) if teacher_questions and teacher_share > 0 else []
    train_s = build_sessions(load_docs(corpus, "train"), n_train, rng, refusal_share, reverse_share=reverse_share,
                             teacher=teacher, teacher_share=teacher_share)
    eval_s = build_sessions(load_docs(corpus, "eval"), n_eval, random.Random(seed + 1), refusal_share,
                            reverse_share=reverse_share, teacher=teacher, teacher_share=teacher_share)
    train_tok = [tokenize_session(tok, s) for s in train_s]
    rows, mask = pack_rows(train_tok, eos, ROW_LEN, rng)
    eval_tok = [tokenize_session(tok, s) for s in eval_s]
    items = [{"turns": [{"kind": t.kind, "answerable": t.answerable, "reverse": t.reverse, "question": t.question,
                         "answer": t.answer, **({"teacher": True} if t.teacher else {})} for t in s], "alt": False}
             for s in eval_s]
    # A refusal continuation for every answerable single-turn item: does the model refuse where it should not?
    for i, s in enumerate(eval_s):
        if len(s) == 1 and s[0].answerable:
            alt = Turn(s[0].question, REFUSAL, s[0].passages, s[0].kind, True, s[0].reverse, s[0].teacher)
            eval_tok.append(tokenize_session(tok, [alt]))
            items.append({"turns": [{"kind": alt.kind, "answerable": True, "reverse": alt.reverse,
                                     "question": alt.question, "answer": REFUSAL,
                                     **({"teacher": True} if alt.teacher else {})}], "alt": True, "alt_of": i})
    eval_tok_flat = np.concatenate([np.asarray(ids, dtype=np.uint16) for ids, _ in eval_tok])
    eval_lab_flat = np.concatenate([np.asarray(lab, dtype=np.uint8) for _, lab in eval_tok])
    offsets = np.cumsum([0] + [len(ids) for ids, _ in eval_tok]).astype(np.int64)
    np.savez_compressed(out / "reading.npz", train_rows=rows, train_mask=mask, eval_tokens=eval_tok_flat,
                        eval_labels=eval_lab_flat, eval_offsets=offsets)
    samples = [{"question": s[0].question, "answer": s[0].answer, "kind": s[0].kind,
                "answerable": s[0].answerable, "text": chatml(s[0].passages, s[0].question, None)}
               for s in _pick_samples(eval_s)]
    turns = [t for s in train_s for t in s]
    meta = {"train_sessions": len(train_s), "train_turns": len(turns), "train_rows": int(len(rows)),
            "row_len": ROW_LEN, "train_tokens": int(rows.size), "train_target_tokens": int(mask.sum()),
            "refusal_share": sum(not t.answerable for t in turns) / len(turns),
            "reverse_share": sum(t.reverse for t in turns) / len(turns),
            "multi_turn_sessions": sum(len(s) > 1 for s in train_s) / len(train_s),
            "kinds": {k: sum(t.kind == k for t in turns) for k in KIND_WEIGHTS},
            "eval_sessions": len(eval_s), "eval_sequences": len(items), "eval_tokens": int(len(eval_tok_flat)),
            "dev_packages_excluded": sorted(dev_packages()), "seed": seed, "gguf": gguf.name,
            "eval_items": items, "samples": samples}
    if teacher:  # only with the option on: off, the meta is what it always was
        answerable = [t for t in turns if t.answerable]
        meta.update(teacher_questions=str(teacher_questions), teacher_records=len(teacher),
                    teacher_share=teacher_share, teacher_turns=sum(t.teacher for t in turns),
                    teacher_share_of_answerable=sum(t.teacher for t in answerable) / max(1, len(answerable)),
                    eval_teacher_turns=sum(t.teacher for s in eval_s for t in s))
    if text_dir is not None:  # distillation text: a slice of the stage-2 stream + its held-out rows
        np.save(out / "text.npy", np.load(text_dir / "train.npy")[:text_tokens])
        np.save(out / "eval.npy", np.load(text_dir / "eval.npy"))
        meta["text_tokens"] = int(text_tokens)
    (out / "reading_meta.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False))
    return {k: v for k, v in meta.items() if k not in ("eval_items", "samples")}


def _pick_samples(sessions: list[list[Turn]], n: int = 8) -> list[list[Turn]]:
    """A few first turns for greedy side-by-side answers: forward, reverse and unanswerable ones."""
    single = [s for s in sessions if len(s) == 1]
    want = [lambda t: t.answerable and not t.reverse and t.kind == "man_option",
            lambda t: t.reverse and t.kind == "man_option", lambda t: t.answerable and t.kind == "api",
            lambda t: t.reverse and t.kind in ("api", "man_name"), lambda t: not t.answerable,
            lambda t: t.answerable and t.kind == "man_name", lambda t: not t.answerable and t.kind == "man_option",
            lambda t: t.answerable and t.kind == "acronym"]
    out = []
    for pred in want[:n]:
        for s in single:
            if pred(s[0]) and s not in out:
                out.append(s)
                break
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=Path("data/build/corpus"))
    ap.add_argument("--gguf", type=Path, required=True)
    ap.add_argument("--text", type=Path, default=None, help="stage-2 data dir (train.npy, eval.npy) to slice")
    ap.add_argument("--out", type=Path, default=Path("data/build/uptrain/reading"))
    ap.add_argument("--sessions", type=int, default=12000)
    ap.add_argument("--eval-sessions", type=int, default=320)
    ap.add_argument("--text-tokens", type=int, default=1_500_000)
    ap.add_argument("--refusal-share", type=float, default=0.22)
    ap.add_argument("--reverse-share", type=float, default=REVERSE_SHARE,
                    help="share of turns asked in reverse where the fact allows it (description -> name: the "
                         "dev set's how-to questions)")
    ap.add_argument("--teacher-questions", type=Path, default=None,
                    help="JSONL of training.teacher_questions (teacher-written, round-trip filtered questions)")
    ap.add_argument("--teacher-share", type=float, default=0.0,
                    help="share of answerable fresh turns that ask a teacher question (0: the template data only)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.teacher_share > 0 and args.teacher_questions is None:
        ap.error("--teacher-share needs --teacher-questions")
    print(json.dumps(build(args.corpus, args.gguf, args.out, args.text, args.sessions, args.eval_sessions,
                           args.text_tokens, args.seed, args.refusal_share, args.reverse_share,
                           args.teacher_questions, args.teacher_share)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
