"""Human-written questions for the reading data, mined from the FAQ-style headings of the corpus.

The converted reader learned the template questions of `training/reading_data.py`, not the way people
ask, and the teacher-written questions (`training/teacher_questions.py`) were mostly unusable. The corpus
itself holds a few hundred questions people wrote, each followed by its answer: perlfaq ("How do I ...?"),
the Python and SQLite FAQs, gitfaq, grep's and flex's FAQs, the Debian guides. This module finds them:

- a question is a paragraph's first line (list, number and heading markup stripped) that starts with an
  interrogative or auxiliary word (How, What, Why, Can, Is, Does, ...), ends with "?" and has 3-30 words;
  in a FAQ document (its id or title says so) it may also be the leading question sentences of a paragraph
  that goes on with the answer on the same line (perlfaq4: "How do I reverse a string? Use reverse() ...");
- the answer is the first one or two complete sentences that follow (at most `max_chars`, at least
  `min_words` words, mostly words rather than code); a first paragraph that is one code line is joined to
  the lowercase sentence that explains it (grep: "grep -w 'hello' test*.log" / "searches only for ...").
  Table cells are not answers: PostgreSQL's catalog rows ("collisdeterministic bool" / "Is the collation
  deterministic?" / "collencoding int4") are followed by a short cell with no sentence end, and rejected;
- not a question people ask: an item of a list of questions (a table of contents, a list of examples, a
  row of a PostgreSQL function table), the text asking its reader ("Are you using a really old version of
  Perl?"), a short question leaning on what came before ("Is it close enough?"), an all-capitals heading;
- the passage is a verbatim slice of the document from the question's line (or a line or two before) to a
  sentence or line end 400-700 characters on, holding the whole answer and stopping before the next question.

Dictionaries are skipped (their quotations are questions without answers). A question repeated in a
document is taken at its last occurrence (a table of contents lists the questions before the answers),
and once over all documents; at most `--max-per-doc` are kept from one document, evenly spread over it.

Output: JSONL in the record format of `training/teacher_questions.py` (the same keys, `kind` "faq",
`fact_kind` "section", `match` "f1"; `reference` is the verbatim answer text, `answer` the same with its
whitespace collapsed), and `<out>.summary.json` (counts, rejections per reason with samples, examples).

    python -m training.faq_questions            # -> data/build/uptrain/faq_questions.jsonl
    python -m training.reading_data --corpus data/build/corpus --gguf $GGUF --text data/build/uptrain/data \\
        --teacher-questions data/build/uptrain/faq_questions.jsonl --teacher-share 0.1 --out DIR
"""

from __future__ import annotations

import argparse
import json
import random
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from training.reading_data import load_docs
from training.uptrain_data import is_dict

MIN_Q_WORDS, MAX_Q_WORDS = 3, 30
MIN_ANSWER_WORDS = 6
MAX_ANSWER_CHARS = 300
PASSAGE_MIN, PASSAGE_MAX = 400, 700
MAX_PER_DOC = 40

_ASK = (r"(?:how|what|why|when|where|which|who|whom|whose|can|could|is|are|was|were|does|do|did|should|will"
        r"|would|has|have|may|must|shall)")
QUESTION_START = re.compile(rf"{_ASK}(?:n[’']t|[’']s|[’']re)?\b|(?:won|can)[’']t\b", re.I)
# List bullets, numbers ("5.", "(2)", "5.14.4.1."), "Q:" and heading marks in front of a question.
MARKUP = re.compile(r"^(?:[*•+#=-]+\s*|\(?\d+(?:\.\d+)*[.)]?\s+|Q\s*[:.]\s*|=head\d\s+)+")
CONTRIBUTED = re.compile(r"\s*\([^()]*contributed by[^()]*\)\s*", re.I)  # perlfaq's "(contributed by ...)"
# A complete sentence ends with . or ! (closing quotes or brackets allowed), then whitespace or the end.
SENTENCE_END = re.compile(r"[.!][\"'”’)\]]*(?=\s+[A-Z0-9\"“'‘(\[`$-]|\s*$)")
QUESTION_END = re.compile(r"\?[\"'”’)\]]*(?=\s|$)")
NOT_PROSE_START = re.compile(r"(?:[*•+-]\s|(?:To|From|Subject|Date|In-reply-to|Cc):\s)", re.I)
ASKER = re.compile(r"(?:I|My|I[’']m|I[’']ve)\s")  # the asker restating the question (Autoconf's FAQ), not an answer
TO_READER = re.compile(r"(?:are|do|did|have|would|will|can|could|should)(?:n[’']t)? you\b", re.I)
DEICTIC = re.compile(r"\b(?:it|this|that|these|those|they|them|he|she)\b", re.I)
WORD = re.compile(r"[A-Za-z][A-Za-z’'-]*[,.;:!?)\"”’]*|\(?[A-Za-z][\w’'-]*[,.;:)\"”’]*")


@dataclass
class Found:
    """A question and its answer in a document: offsets into its text."""
    question: str
    line_start: int  # where the question's line begins (markup included)
    ref_start: int  # the answer, text[ref_start:ref_end] verbatim
    ref_end: int


def is_faq_doc(doc: dict) -> bool:
    return bool(re.search(r"faq|frequently asked", f"{doc.get('id', '')} {doc.get('title', '')}", re.I))


def paragraphs(text: str) -> list[tuple[int, int]]:
    """(start, end) of each run of non-blank lines."""
    return [(m.start(), m.end()) for m in re.finditer(r"[^\n]*\S[^\n]*(?:\n[^\n]*\S[^\n]*)*", text)]


def question_shape(q: str) -> bool:
    """Starts with an interrogative/auxiliary word, ends with "?", 3-30 words, no ellipsis ("How do I…?"),
    no sentence before it ("What is X? It is Y. Is it Z?" is a question and its answer), not all capitals (a
    man page's section heading: "HOW DOES THE MERGE WORK?" is followed by an introduction, not an answer)."""
    q = q.strip()
    return (q.endswith("?") and bool(QUESTION_START.match(q)) and "…" not in q and "..." not in q
            and MIN_Q_WORDS <= len(q.split()) <= MAX_Q_WORDS and not SENTENCE_END.search(q)
            and any(c.islower() for c in q))


def question_flaw(q: str) -> str | None:
    """Why a well-shaped question is still no user's question: the text asking its reader ("Are you using
    a really old version of Perl?") or a short one that leans on what came before ("Is it close enough?")."""
    if TO_READER.match(q):
        return "question_to_reader"
    if len(q.split()) < 7 and DEICTIC.search(q):
        return "question_vague"
    return None


def in_a_list(text: str, pars: list[tuple[int, int]], i: int) -> bool:
    """Whether paragraph i is an item of a list of questions or a table row, not a heading: the paragraph
    before is a question too (a table of contents, a list of examples; a numbered heading such as
    "20.6 What is autom4te.cache?" does not count), or a function signature of a PostgreSQL table
    ("seg <@ seg → boolean"), or the question is followed by a one-liner and then another question
    (flex's FAQ index, where questions alternate with titles such as "I get an error about undefined yywrap().")."""
    def par(j: int) -> str:
        return text[pars[j][0]:pars[j][1]].strip() if 0 <= j < len(pars) else ""

    prev = par(i - 1)
    if "→" in prev or (question_shape(MARKUP.sub("", prev)) and not re.match(r"\d+(?:\.\d+)+\s", prev)):
        return True
    answer = par(i + 1)
    return bool(answer) and "\n" not in answer and len(answer.split()) <= 15 \
        and question_shape(MARKUP.sub("", par(i + 2).split("\n")[0]))


def leading_question(par: str, faq: bool) -> tuple[str, int] | None:
    """The question a paragraph opens with and where it ends in `par`: its whole first line, or in a FAQ
    document its leading question sentences when the answer follows on the same line."""
    line_end = par.find("\n") if "\n" in par else len(par)
    m = MARKUP.match(par)
    body_at = m.end() if m else 0
    line = par[body_at:line_end]
    if line.rstrip().endswith("?"):
        return " ".join(line.split()), line_end
    if not faq:
        return None
    end = body_at
    for n, seg in enumerate(re.finditer(r"[^?]*\?(?=\s|$)", par[body_at:])):
        # each question follows the last; a follow-up ("What about ceil() and floor()?") is short
        if body_at + seg.start() != end or re.search(r"[.!]\s", seg.group()) or (n and len(seg.group().split()) > 15):
            break
        end = body_at + seg.end()
    if end == body_at:
        return None
    return " ".join(par[body_at:end].split()), end


def is_prose(text: str) -> bool:
    """Mostly words (not code, paths or a table row), not a list item or a mail header."""
    tokens = text.split()
    words = sum(bool(WORD.fullmatch(t)) for t in tokens)
    return bool(tokens) and words >= 0.6 * len(tokens) and not NOT_PROSE_START.match(text.lstrip())


def sentence_ends(text: str, start: int, end: int) -> list[int]:
    """Offsets just past each complete sentence in text[start:end]."""
    return [start + m.end() for m in SENTENCE_END.finditer(text[start:end])]


def take_sentences(text: str, start: int, end: int, max_chars: int) -> int | str:
    """The end of the first one or two complete sentences of text[start:end] within max_chars, or why not."""
    ends = sentence_ends(text, start, end)
    q = QUESTION_END.search(text, start, end)
    if q and (not ends or q.start() < ends[0]):
        return "answer_is_question"
    if not ends:
        return "answer_unfinished"  # a table cell, a heading, or "Use the following functions:"
    if ends[0] - start > max_chars:
        return "answer_too_long"
    if len(ends) > 1 and ends[1] - start <= max_chars and not QUESTION_END.search(text, ends[0], ends[1]):
        return ends[1]
    return ends[0]


def _skip_space(text: str, at: int, end: int) -> int:
    return at + len(text[at:end]) - len(text[at:end].lstrip())


def answer_at(text: str, pars: list[tuple[int, int]], i: int, start: int, min_words: int,
              max_chars: int) -> tuple[int, int] | str:
    """The answer that begins at `start` in paragraph i (or the next paragraph when nothing is left of
    paragraph i): (ref_start, ref_end), or the reason there is none."""
    a, b = start, pars[i][1]
    if not text[a:b].strip():
        if i + 1 >= len(pars):
            return "no_answer"
        i += 1
        a, b = pars[i]
    a = _skip_space(text, a, b)
    explained = None  # a lone code line is explained by the lowercase paragraph after it (grep's FAQ)
    if "\n" not in text[a:b] and not is_prose(text[a:b]) and i + 1 < len(pars):
        nxt = _skip_space(text, *pars[i + 1])
        if text[nxt:nxt + 1].islower():
            explained, b = nxt, pars[i + 1][1]
    got = take_sentences(text, a, b, max_chars)
    if isinstance(got, str):
        return got
    words = text[explained or a:got]
    if not is_prose(words):
        return "answer_not_prose"
    if len(words.split()) < min_words:
        return "answer_too_short"
    if ASKER.match(words):
        return "answer_is_the_askers"
    if explained is None and not text[got:b].strip() and len(sentence_ends(text, a, got)) == 1 \
            and got - a < max_chars // 3 and i + 1 < len(pars):
        # one short sentence ("That depends on where Python came from."): the first of the next paragraph
        # too, when that is a paragraph (two sentences or more), not a heading ("(3) SQLite lets me ...!")
        na = _skip_space(text, *pars[i + 1])
        ends = sentence_ends(text, na, pars[i + 1][1])
        if len(ends) > 1 and ends[0] - a <= max_chars and is_prose(text[na:ends[0]]) \
                and not MARKUP.match(text, na) and not QUESTION_END.search(text, na, ends[0]):
            got = ends[0]
    return a, got


def find_questions(text: str, faq: bool = False, min_words: int = MIN_ANSWER_WORDS,
                   max_chars: int = MAX_ANSWER_CHARS) -> Iterator[Found | tuple[str, str]]:
    """Every candidate question heading of a document, in order: a Found, or (reason, question)."""
    pars = paragraphs(text)
    for i, (ps, pe) in enumerate(pars):
        got = leading_question(text[ps:pe], faq)
        if got is None or not QUESTION_START.match(got[0]):
            continue
        q, q_end = got
        why = "question_shape" if not question_shape(q) else question_flaw(q)
        if why is None and in_a_list(text, pars, i):
            why = "in_a_list"
        if why:
            yield why, q
            continue
        rest = ps + q_end
        credit = CONTRIBUTED.match(text, rest, pe)  # perlfaq: "How do I ...? (contributed by ...)"
        if credit:
            rest = credit.end()
        ans = answer_at(text, pars, i, rest, min_words, max_chars)
        yield (ans, q) if isinstance(ans, str) else Found(q, ps, *ans)


def passage(text: str, line_start: int, ref_end: int, rng: random.Random) -> str | None:
    """A verbatim slice from the question's line (or a line or two before it) to a sentence or line end
    400-700 characters on, holding the whole answer and not the next question; None when the answer ends
    past 700 characters."""
    nl = text.find("\n", max(0, line_start - rng.randint(0, 150)), line_start)
    want = rng.randint(PASSAGE_MIN, PASSAGE_MAX)
    for start in ([nl + 1] if nl >= 0 else []) + [line_start]:
        cap = min(len(text), start + PASSAGE_MAX)
        if ref_end > cap:
            continue
        for m in re.finditer(r"\n[ \t]*\n([^\n]*)", text[ref_end:cap]):
            if question_shape(MARKUP.sub("", m.group(1))):  # the next question: the passage stops before it
                cap = ref_end + m.start()
                break
        ends = sentence_ends(text, ref_end, cap) + [m.start() + ref_end for m in re.finditer("\n", text[ref_end:cap])]
        ends = sorted({ref_end, *ends, *([cap] if cap == len(text) else [])})
        end = next((e for e in ends if e >= start + want), ends[-1])
        return text[start:end].strip()
    return None


def record(doc: dict, f: Found, psg: str, text: str) -> dict:
    """A teacher_questions record: the same keys, so either file feeds reading_data --teacher-questions."""
    ref = text[f.ref_start:f.ref_end]
    return {"doc_id": doc["id"], "package": doc["source_package"], "fact_kind": "section",
            "name": doc.get("title") or "", "options": [], "anchor": f.question, "passage": psg,
            "question": f.question, "reference": ref, "answer": " ".join(ref.split()), "match": "f1",
            "kind": "faq", "round_trip": "", "f1": 1.0}


def _spread(items: list, cap: int) -> list:
    """At most `cap` items, evenly spread over the list (a long FAQ keeps all its topics)."""
    if len(items) <= cap:
        return items
    return [items[int(k * len(items) / cap)] for k in range(cap)]


def mine(docs: list[dict], max_per_doc: int = MAX_PER_DOC, min_words: int = MIN_ANSWER_WORDS,
         max_chars: int = MAX_ANSWER_CHARS, seed: int = 0, samples: int = 5) -> tuple[list[dict], dict]:
    """(records, summary) over the documents."""
    rng = random.Random(seed)
    seen: set[str] = set()
    out: list[dict] = []
    rejected: Counter = Counter()
    rejects: dict[str, list[str]] = {}
    counts = Counter(documents=len(docs))

    def reject(why: str, what: str, n: int = 1) -> None:
        rejected[why] += n
        if len(rejects.setdefault(why, [])) < samples:
            rejects[why].append(what)

    for doc in docs:
        if is_dict(doc):
            counts["dictionaries_skipped"] += 1
            continue
        text = doc["text"]
        last: dict[str, Found | tuple[str, str]] = {}  # a table of contents lists questions before answers
        for got in find_questions(text, is_faq_doc(doc), min_words, max_chars):
            counts["candidates"] += 1
            q = got.question if isinstance(got, Found) else got[1]
            if q.lower() in last:
                reject("repeated_in_document", q)
            last[q.lower()] = got
        kept = []
        for key, got in last.items():
            if isinstance(got, tuple):
                reject(*got)
            elif key in seen:
                reject("duplicate", got.question)
            elif (psg := passage(text, got.line_start, got.ref_end, rng)) is None:
                reject("passage_too_long", got.question)
            else:
                seen.add(key)
                kept.append(record(doc, got, psg, text))
        capped = _spread(kept, max_per_doc)
        if len(capped) < len(kept):
            reject("over_max_per_doc", doc["id"], len(kept) - len(capped))
        out += capped
    per_package = Counter(r["package"] for r in out)
    step = max(1, len(out) // 20)
    summary = {**counts, "kept": len(out), "rejected": dict(rejected.most_common()),
               "kept_per_package": dict(per_package.most_common()),
               "examples": [{"package": r["package"], "question": r["question"], "answer": r["answer"]}
                            for r in out[::step][:20]],
               "rejected_samples": rejects}
    return out, summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[2:]))
    ap.add_argument("--corpus", type=Path, default=Path("data/build/corpus"))
    ap.add_argument("--split", default="train", choices=["train", "eval"])
    ap.add_argument("--out", type=Path, default=Path("data/build/uptrain/faq_questions.jsonl"))
    ap.add_argument("--max-per-doc", type=int, default=MAX_PER_DOC, help="questions kept from one document")
    ap.add_argument("--min-answer-words", type=int, default=MIN_ANSWER_WORDS)
    ap.add_argument("--max-answer-chars", type=int, default=MAX_ANSWER_CHARS)
    ap.add_argument("--seed", type=int, default=0, help="where each passage starts and ends")
    args = ap.parse_args(argv)
    path = args.corpus / f"{args.split}.jsonl.gz"
    if not path.exists():
        ap.error(f"no corpus split at {path} (build it with python -m training.corpus, or pass --corpus)")
    records, summary = mine(load_docs(args.corpus, args.split), args.max_per_doc, args.min_answer_words,
                            args.max_answer_chars, args.seed)
    summary["args"] = {k: str(v) for k, v in vars(args).items()}
    from retnet.io import atomic_write_text  # (imports torch: not at module level)

    atomic_write_text(args.out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    summary_path = args.out.with_name(args.out.name.removesuffix(".jsonl") + ".summary.json")
    atomic_write_text(summary_path, json.dumps(summary, indent=1, ensure_ascii=False))
    print(f"{summary['documents']} documents, {summary.get('candidates', 0)} candidate questions, "
          f"{summary['kept']} kept -> {args.out}; per package {summary['kept_per_package']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
