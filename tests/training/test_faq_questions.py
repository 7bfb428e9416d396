"""training.faq_questions: human-written FAQ questions mined from small hand-written documents (no corpus)."""

from __future__ import annotations

import gzip
import json
import random

import pytest

from training import faq_questions as fq
from training import reading_data as rd

from .test_reading_data import _docs
from .test_teacher_questions import RECORD_KEYS

FAQ = """Frequently asked questions about frob

How do I keep the original files?
    Use the --keep option. Without it frob replaces every file it reads with the frobnicated copy.

(2) Why is frob so slow on large directories?

Frob reads every file twice, once to measure it and once to frobnicate it. A directory of many small
files therefore costs two system calls per file.

Can I undo a frobnication?

That depends on how the file was frobnicated.

If it was frobnicated in place, run unfrob on it and the original comes back. Otherwise keep a copy first.

4. How do I frob only the files that mention a word?

frob --grep 'word' *.txt

frobnicates only the files whose text contains the word, and leaves the others alone.
"""
FAQ_PAIRS = [
    ("How do I keep the original files?",
     "Use the --keep option. Without it frob replaces every file it reads with the frobnicated copy."),
    ("Why is frob so slow on large directories?",
     "Frob reads every file twice, once to measure it and once to frobnicate it. A directory of many small "
     "files therefore costs two system calls per file."),
    ("Can I undo a frobnication?",
     "That depends on how the file was frobnicated. If it was frobnicated in place, run unfrob on it and the "
     "original comes back."),
    ("How do I frob only the files that mention a word?",
     "frob --grep 'word' *.txt frobnicates only the files whose text contains the word, and leaves the others "
     "alone."),
]
# perlfaq's layout: the heading runs into its answer, or a credit line stands between them.
PERLFAQ = """How do I reverse a string? Use "reverse()" in scalar context, as documented in perlfunc.

How do I merge two hashes? (contributed by brian d foy)

Before you decide to merge two hashes, you have to decide what to do if both hashes contain the same keys.

Does frob have a round() function? What about ceil()? Remember that "int()" merely truncates toward 0.
"""
CATALOG = """pg_collation Columns

collname name

Collation name (unique per namespace and encoding)

collisdeterministic bool

Is the collation deterministic?

collversion text

Provider-specific version of the collation

Is the constraint deferrable?

condeferred bool
"""


def _pairs(text: str, faq: bool = False) -> list[tuple[str, str]]:
    return [(f.question, " ".join(text[f.ref_start:f.ref_end].split()))
            for f in fq.find_questions(text, faq) if isinstance(f, fq.Found)]


def _doc(i: int, text: str, package: str = "perl-doc", title: str = "frob - FAQ") -> dict:
    return {"id": f"faq{i}", "source_package": package, "title": title, "text": text, "qa": []}


def test_faq_headings_give_their_questions_and_answers():
    assert _pairs(FAQ) == FAQ_PAIRS
    assert _pairs(PERLFAQ, faq=True) == [
        ("How do I reverse a string?", 'Use "reverse()" in scalar context, as documented in perlfunc.'),
        ("How do I merge two hashes?", "Before you decide to merge two hashes, you have to decide what to do if "
                                       "both hashes contain the same keys."),
        ("Does frob have a round() function? What about ceil()?",
         'Remember that "int()" merely truncates toward 0.')]
    assert _pairs(PERLFAQ) == []  # a heading running into its answer counts only in a FAQ document


def test_catalog_columns_and_table_rows_are_not_questions():
    assert list(fq.find_questions("collisdeterministic bool\nIs the collation deterministic?\ncollversion text")) \
        == []
    assert _pairs(CATALOG) == _pairs(CATALOG, faq=True) == []
    why = dict((q, r) for r, q in (g for g in fq.find_questions(CATALOG) if isinstance(g, tuple)))
    assert why == {"Is the collation deterministic?": "answer_unfinished",
                   "Is the constraint deferrable?": "answer_unfinished"}
    table = "Operator\n\nseg <@ seg → boolean\n\nIs the first seg contained in the second?\n\n" \
            "In addition to the above operators, the usual comparison operators are available for type seg."
    assert [g[0] for g in fq.find_questions(table)] == ["in_a_list"]


def test_a_question_followed_by_a_question_or_by_nothing_has_no_answer():
    text = ("How do I keep the files?\n\nWhy is frob so slow?\n\nFrob reads every file twice, once to measure it "
            "and once to frobnicate it.\n")
    assert list(fq.find_questions(text))[:2] == [("answer_is_question", "How do I keep the files?"),
                                                 ("in_a_list", "Why is frob so slow?")]
    # an index: questions between one-line titles (flex's FAQ index)
    index = "How do I keep the files?\n\nI get an error about undefined yywrap().\n\nWhy is frob so slow?\n\n" \
            "Frob is not matching my patterns in the order I defined them.\n\nCan I undo a frobnication?\n"
    assert [g[0] for g in fq.find_questions(index)] == ["in_a_list", "in_a_list", "no_answer"]
    assert list(fq.find_questions("Some text.\n\nHow do I keep the original files?\n")) == \
        [("no_answer", "How do I keep the original files?")]
    assert _pairs("How do I keep the files?\n\nUse --keep.\n") == []  # too short to be an answer
    assert _pairs("How do I keep the files?\n\nUse the following options:\n\n--keep\n") == []
    assert _pairs("Are you using a really old version of frob?\n\nNormally the files are kept in place.\n") == []
    assert _pairs("Is it close enough?\n\nThe precision is sufficient for most computations of this kind.\n") == []


def test_a_table_of_contents_defers_to_the_answers_that_follow():
    text = ("Questions\n\nHow do I keep the original files?\n\nWhy is frob so slow on large directories?\n\n"
            "Answers\n\n" + FAQ)
    records, summary = fq.mine([_doc(0, text)])
    assert [(r["question"], r["answer"]) for r in records] == FAQ_PAIRS
    assert summary["rejected"]["repeated_in_document"] == 2


def test_passages_are_verbatim_slices_holding_the_answer():
    docs = [_doc(0, "Intro line about frob and what it is for.\n\n" + FAQ * 3, title="frob FAQ"),
            _doc(1, PERLFAQ, package="sqlite3-doc", title="perlfaq4 - Data Manipulation")]
    records, summary = fq.mine(docs, seed=3)
    assert len(records) == len(FAQ_PAIRS) + 3  # FAQ's repeats are one question each
    for r in records:
        text = next(d["text"] for d in docs if d["id"] == r["doc_id"])
        assert r["passage"] in text and r["reference"] in r["passage"] and r["reference"] in text
        assert r["question"] in " ".join(r["passage"].split())
        assert len(r["passage"]) <= fq.PASSAGE_MAX
        assert r["answer"] == " ".join(r["reference"].split())
    # the passage stops before the next question heading (not a question without its answer)
    keep = next(r for r in records if r["question"].startswith("How do I keep"))
    assert "Why is frob so slow" not in keep["passage"]
    assert summary["kept"] + sum(summary["rejected"].values()) == summary["candidates"]


def test_records_have_the_teacher_question_keys_and_reading_data_takes_them():
    docs = _docs(2) + [_doc(0, FAQ), _doc(1, PERLFAQ, title="perlfaq4 - Data Manipulation")]
    records, _ = fq.mine(docs)
    assert len(records) == 7
    for r in records:
        assert set(r) == RECORD_KEYS
        assert r["kind"] == "faq" and r["match"] == "f1" and r["fact_kind"] == "section" and r["f1"] == 1.0
        json.dumps(r)
    pool = rd.teacher_pool(records, docs)
    assert [tq.question for tq in pool] == [r["question"] for r in records]
    assert all(not tq.reverse and tq.answer == r["answer"] for tq, r in zip(pool, records, strict=True))
    # in sessions: the gold passage holds the answer and no distractor does
    sessions = rd.build_sessions(docs, 60, random.Random(0), refusal_share=0.0, teacher=records, teacher_share=1.0)
    turns = [t for s in sessions for t in s if t.teacher]
    assert turns
    for t in turns:
        r = next(r for r in records if r["question"] == t.question)
        assert r["passage"] in t.passages
        assert [p for p in t.passages if r["reference"].lower() in p.lower()] == [r["passage"]]


def test_per_document_cap_keeps_an_even_spread():
    text = "".join(f"How do I frob number {i} of the files?\n\nYou pass the number {i} to frob, and it frobs that "
                   f"one file only and leaves all of the other files alone.\n\n" for i in range(10))
    records, summary = fq.mine([_doc(0, text)], max_per_doc=3)
    assert [r["question"].split()[5] for r in records] == ["0", "3", "6"]
    assert summary["rejected"]["over_max_per_doc"] == 7


def test_dictionaries_are_skipped():
    records, summary = fq.mine([_doc(0, FAQ, package="dict-gcide")])
    assert records == [] and summary["dictionaries_skipped"] == 1


def test_cli_writes_jsonl_and_summary(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    docs = [_doc(0, FAQ), _doc(1, FAQ.replace("frob", "zap"), package="coreutils"),
            _doc(2, FAQ.replace("frob", "sed"), package="not-a-corpus-package")]
    with gzip.open(corpus / "train.jsonl.gz", "wt", encoding="utf-8") as fh:
        fh.writelines(json.dumps(d) + "\n" for d in docs)
    out = tmp_path / "faq" / "q.jsonl"
    assert fq.main(["--corpus", str(corpus), "--out", str(out)]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    summary = json.loads((tmp_path / "faq" / "q.summary.json").read_text())
    assert len(records) == 7 == summary["kept"]  # "How do I keep the original files?" once
    assert summary["documents"] == 2 and summary["kept_per_package"] == {"perl-doc": 4, "coreutils": 3}
    assert summary["rejected"] == {"duplicate": 1} and summary["candidates"] == 8
    assert summary["examples"] and not list((tmp_path / "faq").glob("*.tmp"))
    assert "7 kept" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        fq.main(["--corpus", str(tmp_path / "missing")])


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as e:
        fq.main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "--max-per-doc" in text and "--min-answer-words" in text and "--teacher-questions" in text
