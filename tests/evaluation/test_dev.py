"""The dev-set scorer (evaluation.dev): scoring on hand-made cases, the model-free baseline on a tiny
collection, and the command line end to end on a 3-document, 5-question dev set with a tiny model."""

from __future__ import annotations

import hashlib
import json

import pytest

from evaluation import dev, dev_score
from evaluation.dev_baseline import best_sentence, sentences
from evaluation.dev_score import (
    best_f1,
    document_recall,
    grouped,
    is_refusal,
    key_phrase_hit,
    passage_recall,
    score_answer,
)
from evaluation.devset import Question, load_devset
from retrieval import Collection, HashEmbedder
from tests.app.app_testutil import DOCS


def _q(qtype="howto", phrases=("--keep",), answers=("Use -k / --keep.",), docs=("a.txt",), **kw) -> Question:
    if qtype == "unanswerable":
        phrases, docs = (), ()
    return Question(id=kw.pop("id", "q1"), type=qtype, question=kw.pop("question", "how?"), docs=tuple(docs),
                    answers=tuple(answers), key_phrases=tuple(phrases), **kw)


# ---------------------------------------------------------------- scoring


def test_key_phrase_hit_ignores_case_and_whitespace_but_needs_every_phrase():
    assert key_phrase_hit("Pass  --Keep\n to zstd", ["--keep"]) is True
    assert key_phrase_hit("use -T0 with\n  the default: 3", ["-T0", "default: 3"]) is True
    assert key_phrase_hit("use -T0", ["-T0", "default: 3"]) is False
    assert key_phrase_hit("anything", []) is None


def test_best_f1_takes_the_closest_reference():
    assert best_f1("zstd -d", ["something else entirely", "zstd -d"]) == pytest.approx(1.0)
    assert best_f1("the keep option", ["keep"]) == pytest.approx(2 * (1 / 2) * 1 / (1 / 2 + 1))  # articles dropped
    assert best_f1("no overlap", ["zstd"]) == 0.0


@pytest.mark.parametrize("text", ["", "   ", "That is not in the documents.", "I DON'T KNOW",
                                  "I don\u2019t know.", "Sorry, I cannot find that."])
def test_refusals_are_recognised(text):
    assert is_refusal(text)


@pytest.mark.parametrize("text", ["Use --keep.", "The documents say -k keeps files.", "know your tools"])
def test_answers_are_not_refusals(text):
    assert not is_refusal(text)


def test_the_apps_own_refusal_sentence_counts(monkeypatch):
    import app.prompt

    monkeypatch.setattr(app.prompt, "REFUSAL", "The manual is silent on this.", raising=False)
    assert is_refusal("The manual is silent on this.")
    assert "the manual is silent on this" in dev_score.refusal_phrases()


def test_passage_recall_one_passage_or_spread():
    passages = ["-k, --keep\n  Keep the source file.", "Level 3 is the default: 3 here."]
    assert passage_recall(passages, ["--KEEP", "source  file"]) is True
    assert passage_recall(passages, ["--keep", "default: 3"]) is False  # no single passage has both
    assert passage_recall(passages, ["--keep", "default: 3"], together=False) is True
    assert passage_recall(passages, ["--rm"], together=False) is False
    assert passage_recall([], ["--keep"]) is False
    assert passage_recall(passages, []) is None


def test_document_recall_needs_every_gold_document():
    assert document_recall(["a.txt", "b.txt"], ["a.txt"]) is True
    assert document_recall(["a.txt", "a.txt"], ["a.txt", "b.txt"]) is False
    assert document_recall([], []) is None


def test_score_answer_uses_the_split_rule_for_multi_and_no_recall_closed_book():
    q = _q("multi", phrases=("--keep", "default: 3"), docs=("a.txt",))
    s = score_answer("--keep; the default: 3", q, ["--keep", "default: 3"], ["a.txt", "a.txt"])
    assert s == {"hit": True, "f1": s["f1"], "refused": False, "recall": True, "doc_recall": True}
    closed = score_answer("I don't know", _q(), None, None)
    assert closed["recall"] is None and closed["doc_recall"] is None and closed["refused"] and not closed["hit"]
    un = score_answer("not in the documents", _q("unanswerable"), ["x"], ["a.txt"])
    assert un["hit"] is None and un["f1"] is None and un["recall"] is None and un["refused"]


def test_summaries_split_answerable_and_unanswerable():
    def rec(qtype, turn, hit, refused, recall, ttft, rate):
        return {"type": qtype, "turn": turn, "answerable": qtype != "unanswerable", "hit": hit,
                "f1": None if hit is None else float(hit), "refused": refused, "recall": recall,
                "doc_recall": recall, "timings": {"first_token_s": ttft, "tokens_per_s": rate}}

    records = [rec("howto", None, True, False, True, 1.0, 50.0), rec("howto", 1, False, True, False, 2.0, None),
               rec("lookup", 2, True, False, True, 3.0, 70.0), rec("unanswerable", None, None, True, None, 4.0, 60.0)]
    g = grouped(records)
    o = g["overall"]
    assert (o["n"], o["n_answerable"], o["n_unanswerable"]) == (4, 3, 1)
    assert o["hit"] == pytest.approx(2 / 3) and o["recall"] == pytest.approx(2 / 3)
    assert o["refusal"] == 1.0 and o["false_refusal"] == pytest.approx(1 / 3)
    assert o["ttft_s"] == pytest.approx(2.5) and o["tokens_per_s"] == pytest.approx(60.0)
    assert list(g["turns"]) == ["single", "turn 1", "turn 2"]
    assert g["types"]["unanswerable"]["hit"] is None and g["types"]["howto"]["hit"] == 0.5


# ---------------------------------------------------------------- the baseline


def test_sentences_split_and_keep_an_example_with_its_caption():
    text = "Gzip compresses files. The -k option keeps\n  the input files!\n\nRebuild on change:\n\n  $ ls | entr make"
    assert sentences(text) == ["Gzip compresses files.", "The -k option keeps the input files!",
                               "Rebuild on change: $ ls | entr make"]


def test_baseline_picks_the_answering_sentence_from_a_tiny_collection(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    for name, text in DOCS.items():
        (docs / name).write_text(text)
    with Collection.create("tiny", tmp_path / "cols", embedder=HashEmbedder(256)) as col:
        col.add(docs, progress=False)
        from app.retrieve import retrieve

        hits = retrieve(col, "which gzip option keeps the input files?", 2)
        assert best_sentence("which gzip option keeps the input files?", [h.text for h in hits],
                             col.embedder) == "The -k option keeps the input files."
        hits = retrieve(col, "how do I extract an archive with tar", 2)
        assert "-x option extracts" in best_sentence("how do I extract an archive with tar",
                                                     [h.text for h in hits], col.embedder)
    assert best_sentence("anything", [], HashEmbedder(64)) == ""


def test_ties_in_cosine_are_broken_by_shared_question_terms():
    class Flat:  # every text gets the same vector: only the lexical overlap can decide
        def encode(self, texts):
            import numpy as np

            return np.ones((len(texts), 4), dtype=np.float32) / 2

    assert best_sentence("keep input files", ["Gzip is fast.", "It keeps input files."], Flat()) == \
        "It keeps input files."


# ---------------------------------------------------------------- end to end

_TINY_DOCS = {
    "gzip.txt": "Gzip compresses files with Lempel-Ziv coding.\n\nThe -k option keeps the input files. "
                "The -d option decompresses.",
    "tar.md": "# Tar\n\nTar stores many files in one archive. The -x option extracts an archive.",
    "rsync.txt": "Rsync copies files between machines. The -n option performs a dry run.\n\n"
                 "The --delete option removes extra files on the receiver.",
}
_TINY_QUESTIONS = [
    {"id": "q1", "type": "reverse", "question": "which gzip option keeps the input files", "docs": ["gzip.txt"],
     "answers": ["-k keeps the input files."], "key_phrases": ["-k"], "conversation": None, "turn": None},
    {"id": "q2", "type": "howto", "question": "how do I extract a tar archive", "docs": ["tar.md"],
     "answers": ["Use -x."], "key_phrases": ["-x"], "conversation": None, "turn": None},
    {"id": "q3", "type": "unanswerable", "question": "how do I encrypt with gzip", "docs": [],
     "answers": ["Not in the documents."], "key_phrases": [], "conversation": None, "turn": None,
     "near_docs": ["gzip.txt"]},
    {"id": "q4", "type": "howto", "question": "how do I try rsync without changing anything", "docs": ["rsync.txt"],
     "answers": ["Use -n for a dry run."], "key_phrases": ["-n"], "conversation": "c1", "turn": 1},
    {"id": "q5", "type": "lookup", "question": "and what removes extra files?", "docs": ["rsync.txt"],
     "answers": ["--delete."], "key_phrases": ["--delete"], "conversation": "c1", "turn": 2},
]


def _tiny_devset(root):
    docs = root / "docs"
    docs.mkdir(parents=True)
    lines = []
    for name, text in _TINY_DOCS.items():
        (docs / name).write_text(text)
        lines.append({"record": "document", "doc": name, "title": name, "genre": "man", "package": "p",
                      "source_package": "p", "version": "1", "original_path": f"/usr/share/{name}",
                      "licence": "MIT", "conversion": "none",
                      "sha256": hashlib.sha256(text.encode()).hexdigest()})
    lines += [{"record": "question", **q} for q in _TINY_QUESTIONS]
    path = root / "questions.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def test_units_keep_conversations_whole(tmp_path):
    ds = load_devset(_tiny_devset(tmp_path))
    assert [[q.id for q in u] for u in dev.units(ds)] == [["q1"], ["q2"], ["q3"], ["q4", "q5"]]
    for seed in range(5):
        sample = dev.units(ds, limit=2, seed=seed)
        assert all(len(u) == 2 for u in sample if u[0].conversation) and sum(map(len, sample)) >= 2


def test_help_describes_the_command(capsys):
    with pytest.raises(SystemExit) as exc:
        dev.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--limit" in out and "--model" in out and "--embedder" in out and "baseline" in out


@pytest.mark.slow
def test_command_line_end_to_end(tmp_path, tiny_model_dir, monkeypatch):
    questions = _tiny_devset(tmp_path / "devset")
    out, data = tmp_path / "out", tmp_path / "cols"
    argv = ["--devset", str(questions), "--model", str(tiny_model_dir), "--embedder", "hash", "--k", "2",
            "--max-new-tokens", "4", "--out", str(out), "--data-dir", str(data), "--quiet"]
    assert dev.main(argv) == 0

    report = json.loads((out / "dev_eval.json").read_text())
    assert [s["name"] for s in report["systems"]] == ["baseline", "reader", "closed book"]
    assert len(report["records"]) == 3 * 5
    for r in report["records"]:
        for key in ("hit", "recall", "doc_recall"):
            assert r[key] in (None, True, False)
        assert r["f1"] is None or 0.0 <= r["f1"] <= 1.0
        assert (r["retrieved"] is None) == (r["system"] == "closed book")
        if r["retrieved"] is not None:
            assert 1 <= len(r["retrieved"]) <= 2
            assert {p["doc"] for p in r["retrieved"]} <= set(_TINY_DOCS)
    by = {(r["system"], r["id"]): r for r in report["records"]}
    # the baseline reads what the app retrieved: retrieve() for single questions, the session for follow-ups
    for qid in ("q1", "q2", "q3", "q5"):
        assert by[("baseline", qid)]["retrieved"] == by[("reader", qid)]["retrieved"], qid
    assert by[("baseline", "q1")]["answer"] == "The -k option keeps the input files."
    assert by[("baseline", "q1")]["hit"] is True and by[("baseline", "q1")]["recall"] is True
    for name, summary in report["summary"].items():
        o = summary["overall"]
        assert o["n"] == 5 and o["n_answerable"] == 4
        for key in ("hit", "f1", "refusal", "false_refusal"):
            assert 0.0 <= o[key] <= 1.0, (name, key)
        assert set(summary["turns"]) == {"single", "turn 1", "turn 2"}
        assert (o["recall"] is None) == (name == "closed book")
    assert report["summary"]["reader"]["overall"]["ttft_s"] > 0
    md = (out / "dev_eval.md").read_text()
    assert "## Overall" in md and "## By conversation turn" in md and "python -m evaluation.dev --devset" in md
    assert (out / "dev_eval.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*"))

    # a second run reuses the collection: nothing is ingested again
    def no_add(*a, **k):
        raise AssertionError("the dev-set collection was ingested again")

    monkeypatch.setattr(Collection, "add", no_add)
    assert dev.main([*argv, "--systems", "baseline"]) == 0
    again = json.loads((out / "dev_eval.json").read_text())
    assert [s["name"] for s in again["systems"]] == ["baseline"]
    # (the follow-up q5 may retrieve differently: the retrieval-only session's answers are shorter)
    assert [r["answer"] for r in again["records"][:4]] == [by[("baseline", f"q{i}")]["answer"] for i in range(1, 5)]
