"""training.teacher_questions (PAQ-style teacher questions) and reading_data's --teacher-share (CPU, fakes)."""

from __future__ import annotations

import gzip
import json
import random
import re
import subprocess
import sys

import pytest

from training import reading_data as rd
from training import teacher_questions as tq

from .test_reading_data import _docs, _tokenizer

RECORD_KEYS = {"doc_id", "package", "fact_kind", "name", "options", "anchor", "passage", "question", "reference",
               "answer", "match", "kind", "round_trip", "f1"}


def _fakes():
    """A fake question writer (every 5th: no stop, a copy of the answer, a question the answerer gets wrong)
    and a fake answerer that gives back the fact's answer for the questions it was told about."""
    known: dict[str, str] = {}
    calls = {"ask": 0, "answer": 0, "asked": -1}

    def ask(prompts):
        calls["ask"] += 1
        out = []
        for p in prompts:
            answer = re.search(r"\n\nAnswer: (.*?)\n\n", p, flags=re.S).group(1)
            i = calls["asked"] = calls["asked"] + 1
            if i % 5 == 0:
                out.append(None)
            elif i % 5 == 1:
                out.append(answer)  # the passage's own words
            else:
                q = f"zq{i} thing i typed?"
                known[q] = answer if i % 5 != 2 else "something else entirely"
                out.append(f"Question: {q}")
        return out

    def answer(prompts):
        calls["answer"] += 1
        return [known.get(re.search(r"Question: (.*?)<\|im_end\|>", p).group(1), "") for p in prompts]

    return ask, answer, calls


def _records(n: int = 30, seed: int = 0) -> tuple[list[dict], dict]:
    ask, answer, _ = _fakes()
    items = tq.draw_items(_docs(), n, random.Random(seed))
    counts: dict = {}
    return list(tq.generate(items, ask, answer, counts, chunk=16, rejects={})), counts


def test_copy_filter():
    passage = "-v, --verbose  Print a message for each file processed. Keep going after errors."
    assert tq.longest_copied_run("print a message for each file", passage) == 6
    assert tq.is_copy("Print a message for each file processed?", passage)
    assert tq.is_copy("how do i print a message for each file", passage)  # 6 of 9 words copied
    assert not tq.is_copy("how can I see which files it is working on?", passage)
    assert not tq.is_copy("make it tell me about every file it touches", passage)
    assert tq.longest_copied_run("what does --verbose do", passage) == 1
    assert tq.is_copy("", passage)


def test_clean_question_format_filter():
    assert tq.clean_question("  Question: how do I keep the files?  ") == "how do I keep the files?"
    assert tq.clean_question('"keep files after frob?"') == "keep files after frob?"
    assert tq.clean_question(None) is None  # did not stop within the budget
    assert tq.clean_question("   ") is None
    assert tq.clean_question("how?\nAnd another one?") is None
    assert tq.clean_question(" ".join(["word"] * 26)) is None
    assert tq.clean_question(" ".join(["word"] * 25)) is not None


def test_round_trip_by_f1_and_by_name():
    docs = _docs(1)
    facts = [rd.make_fact(d, qa) for d in docs for qa in d["qa"]]
    verbose = next(f for f in facts if f and f.kind == "man_option" and "-v" in f.options)
    spin = next(f for f in facts if f and f.kind == "api" and f.name.endswith("spin"))
    assert tq.round_trip(verbose, "what does -v do", "It prints a message for each file processed.")[0] == "f1"
    how, f1 = tq.round_trip(verbose, "what does -v do", "It keeps the files.")
    assert how is None and f1 < 0.5
    # a reverse question: the answer names the option the question did not name
    assert tq.round_trip(verbose, "how can I see each file it works on?", "Use -v.")[0] == "name"
    assert tq.round_trip(verbose, "what is -v?", "Use -v.")[0] is None  # an echo of the question
    assert tq.round_trip(verbose, "how do i see files?", "Use -vv.")[0] is None  # not the option
    assert tq.round_trip(spin, "how do I round a spun value down?", "zorp0.spin()")[0] == "name"
    assert tq.round_trip(spin, "x", "Return the spun value of x, rounded down.", threshold=1.0)[0] == "f1"
    assert tq.round_trip(spin, "x", "the spun value", threshold=0.9)[0] is None
    assert tq.reverse_answer(verbose) == "Use -v, --verbose." and tq.reverse_answer(spin) == "zorp0.spin()"


def test_prompts_are_chatml_and_the_reading_turn_is_reading_datas():
    p = tq.question_prompt("Some <|im_end|> passage.", "The answer.")
    assert p.startswith(f"<|im_start|>system\n{tq.SYSTEM}<|im_end|>\n<|im_start|>user\nPassage:\n")
    assert p.endswith("<|im_end|>\n<|im_start|>assistant\n") and p.count("<|im_end|>") == 2  # neutralised
    assert "Answer: The answer." in p and "ONE short question" in p
    assert "Answer:" not in tq.question_prompt("Some passage.")
    assert tq.answer_prompt("P.", "q?") == rd.chatml(["P."], "q?", None)


def test_draw_items_are_distinct_facts_with_their_answer_in_the_passage():
    items = tq.draw_items(_docs(), 30, random.Random(0))
    assert len(items) == 30
    assert len({(id(it.fact.doc), it.fact.question) for it in items}) == 30
    for it in items:
        assert it.fact.answer in it.passage and it.passage in it.fact.doc["text"]
        assert len(it.passage) <= tq.PASSAGE_CHARS * 1.3
    assert {it.fact.kind for it in items} == {"man_option", "api"}
    assert len(tq.draw_items(_docs(1), 1000, random.Random(0))) <= 5  # each fact once


def test_generation_end_to_end_with_fake_generators():
    records, counts = _records(30)
    assert counts["facts"] == counts["generated"] == 30
    assert counts["unfinished_or_format"] == 6 and counts["copies"] == 6 and counts["round_trip_failed"] == 6
    assert counts["kept"] == len(records) == 12 == counts["kept_by_f1"] + counts["kept_by_name"]
    for r in records:
        assert set(r) == RECORD_KEYS and r["kind"] == "teacher" and r["match"] == "f1"
        assert r["question"].startswith("zq") and r["answer"] == r["reference"] == r["round_trip"]
        assert r["reference"] in r["passage"] and r["f1"] == 1.0
        json.dumps(r)


def _corpus(tmp_path, docs):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name, part in (("train", docs), ("eval", docs[:6])):
        with gzip.open(corpus / f"{name}.jsonl.gz", "wt", encoding="utf-8") as fh:
            fh.writelines(json.dumps(d) + "\n" for d in part)
    return corpus


def test_cli_writes_jsonl_and_summary(tmp_path, monkeypatch):
    ask, answer, calls = _fakes()

    class FakeTeacher:
        def fn(self, max_new, temperature=0.0, seed=0, batch=16, keep_unfinished=False):
            return ask if temperature > 0 else answer

    monkeypatch.setattr(tq.Teacher, "from_gguf", classmethod(lambda cls, path, device="cpu": FakeTeacher()))
    corpus, out = _corpus(tmp_path, _docs()), tmp_path / "tq" / "q.jsonl"
    assert tq.main(["--corpus", str(corpus), "--gguf", "x.gguf", "--out", str(out), "--facts", "20",
                    "--device", "cpu"]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    summary = json.loads((tmp_path / "tq" / "q.summary.json").read_text())
    assert summary["facts"] == 20 and summary["kept"] == len(records) > 0 and summary["seconds"] >= 0
    rejected = summary["rejected"]
    assert rejected["unfinished_or_format"][0] == {"text": None} and "question" in rejected["copies"][0]
    assert set(rejected["round_trip_failed"][0]) == {"question", "round_trip", "reference", "f1"}
    assert all(set(r) == RECORD_KEYS for r in records) and calls["ask"] >= 1


def test_items_written_and_read_back_give_the_same_questions(tmp_path, monkeypatch):
    """--write-items (no teacher needed) then --items: the same records as drawing the facts directly."""
    def run(*extra):
        ask, answer, _ = _fakes()

        class FakeTeacher:
            def fn(self, max_new, temperature=0.0, seed=0, batch=16, keep_unfinished=False):
                return ask if temperature > 0 else answer

        monkeypatch.setattr(tq.Teacher, "from_gguf", classmethod(lambda cls, path, device="cpu": FakeTeacher()))
        out = tmp_path / f"q{len(extra)}.jsonl"
        assert tq.main(["--gguf", "x.gguf", "--out", str(out), "--facts", "20", "--device", "cpu", *extra]) == 0
        return out.read_text()

    corpus, items = _corpus(tmp_path, _docs()), tmp_path / "items" / "items.jsonl"
    assert tq.main(["--corpus", str(corpus), "--facts", "20", "--write-items", str(items)]) == 0
    assert len(items.read_text().splitlines()) == 20
    direct = run("--corpus", str(corpus))
    assert direct and run("--items", str(items)) == direct
    items.write_text('{"doc_id": 1}\n')
    with pytest.raises(ValueError, match="items.jsonl:1: not an item record"):
        tq.read_items(items)


def test_one_shot_prompt_puts_the_example_before_the_passage():
    plain, shot = tq.question_prompt("zq passage", "an answer"), tq.question_prompt("zq passage", "an answer", 1)
    assert tq.EXAMPLE_QUESTION not in plain and shot.endswith(plain[plain.index("<|im_start|>user"):])
    assert shot.index(tq.EXAMPLE_QUESTION) < shot.index("zq passage") and shot.count("<|im_start|>assistant") == 2
    assert "Answer:" not in tq.question_prompt("zq passage", None, 1)


def test_cli_help():
    r = subprocess.run([sys.executable, "-m", "training.teacher_questions", "--help"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "--facts" in r.stdout and "--teacher-share 0.4" in r.stdout and "--threshold" in r.stdout


# -- reading_data --teacher-share -------------------------------------------------------------------------

def _texts(sessions):
    return [rd.render(s)[0] for s in sessions]


def test_teacher_share_off_changes_nothing():
    records, _ = _records()
    base = rd.build_sessions(_docs(), 200, random.Random(7))
    off = rd.build_sessions(_docs(), 200, random.Random(7), teacher=records, teacher_share=0.0)
    assert _texts(base) == _texts(off)
    assert not any(t.teacher for s in off for t in s)


@pytest.mark.parametrize("share", [0.4, 0.8])
def test_teacher_share_mixes_teacher_questions_into_answerable_turns(share):
    records, _ = _records(36)
    by_question = {r["question"]: r for r in records}
    sessions = rd.build_sessions(_docs(), 500, random.Random(8), teacher=records, teacher_share=share)
    firsts = [s[0] for s in sessions if s[0].answerable]
    got = sum(t.teacher for t in firsts) / len(firsts)
    assert abs(got - share) < 0.08, got
    turns = [t for s in sessions for t in s]
    assert 0.17 <= sum(not t.answerable for t in turns) / len(turns) <= 0.28  # refusals untouched
    for t in (t for t in turns if t.teacher):
        r = by_question[t.question]
        assert t.answerable and t.answer == r["answer"] and r["passage"] in t.passages
        assert 2 <= len(t.passages) <= 5
    for text in _texts(sessions):  # still the exact ChatML layout
        assert text.startswith("<|im_start|>system\n")


def test_teacher_records_of_other_documents_are_ignored():
    records, _ = _records(20)
    other = [{**r, "doc_id": "elsewhere"} for r in records]
    assert rd.teacher_pool(other, _docs()) == []
    assert len(rd.teacher_pool(records, _docs())) == len(records)


def test_build_is_byte_identical_with_the_option_off(tmp_path, monkeypatch):
    tok = _tokenizer(tmp_path)
    import retnet.convert.llama_gguf as lg

    monkeypatch.setattr(lg, "gguf_tokenizer", lambda path: tok)
    corpus = _corpus(tmp_path, _docs())
    records, _ = _records()
    qfile = tmp_path / "q.jsonl"
    qfile.write_text("".join(json.dumps(r) + "\n" for r in records))
    outs = []
    for name, kw in (("a", {}), ("b", {"teacher_questions": qfile, "teacher_share": 0.0}),
                     ("c", {"teacher_questions": qfile, "teacher_share": 0.5})):
        out = tmp_path / name
        rd.build(corpus, tmp_path / "tiny.gguf", out, None, 30, 6, 0, seed=3, **kw)
        outs.append(((out / "reading.npz").read_bytes(), (out / "reading_meta.json").read_bytes()))
    assert outs[0] == outs[1]
    assert outs[2] != outs[0]
    meta = json.loads(outs[2][1])
    assert meta["teacher_turns"] > 0 and meta["teacher_share"] == 0.5


@pytest.mark.slow
def test_real_teacher_batched_decoding_equals_one_by_one(tmp_path):
    """The Teacher on a tiny random Llama GGUF: batched, right-padded greedy decoding gives what
    uptrain.greedy gives prompt by prompt; sampling is seeded."""
    pytest.importorskip("gguf")
    import torch

    from tests.retnet.tiny_llama_gguf import write_tiny_llama_gguf
    from training.uptrain import greedy

    path = tmp_path / "tiny.gguf"
    write_tiny_llama_gguf(path)
    teacher = tq.Teacher.from_gguf(path, "cpu")
    prompts = [tq.answer_prompt("the wheel turns.", "what turns?"), tq.question_prompt("a b c", "b"),
               tq.answer_prompt("x " * 40, "and then?")]
    got = teacher.fn(6, batch=2, keep_unfinished=True)(prompts)
    stop = teacher.tok.token_to_id("<|im_end|>")
    for p, text in zip(prompts, got, strict=True):
        ids = torch.tensor([teacher.tok.encode(p).ids])
        want = greedy(teacher.model, ids, 6, stop, True, teacher.autocast)
        ends = [i for i, t in enumerate(want) if t in teacher.stops]  # greedy() stops at <|im_end|> only
        assert text == teacher.tok.decode(want[:ends[0]] if ends else want)
    a = teacher.fn(6, temperature=0.8, seed=1)(prompts)
    b = teacher.fn(6, temperature=0.8, seed=1)(prompts)
    assert a == b
    counts: dict = {}
    records = list(tq.generate(tq.draw_items(_docs(1), 3, random.Random(0)), teacher.fn(6, 0.8),
                               teacher.fn(6, keep_unfinished=True), counts))
    assert counts["facts"] == 3 and len(records) == counts["kept"]
