"""The public dev set (data/eval/): it validates, meets issue 13's minimums, its key phrases are
really in the documents the system indexes, none of it was used for training, and malformed
files fail with messages that name the line and the field."""

from __future__ import annotations

import hashlib
import importlib
import json
from collections import Counter
from pathlib import Path

import pytest

from evaluation.devset import (
    DEFAULT_PATH,
    GENRES,
    QUESTION_TYPES,
    DevSetError,
    load_devset,
    normalise,
)

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "data" / "samples"


@pytest.fixture(scope="module")
def devset():
    return load_devset()


# ---------------------------------------------------------------- the shipped set


def test_shipped_set_validates(devset):
    assert devset.path == DEFAULT_PATH
    assert devset.questions and devset.documents


def test_minimums_of_the_issue(devset):
    assert len(devset.questions) >= 150
    assert len(devset.documents) >= 12
    assert len(devset.genres()) >= 4
    three_turn = [c for c in devset.conversations() if len(c) == 3]
    assert len(three_turn) >= 20
    share = len(devset.unanswerable()) / len(devset.questions)
    assert 0.10 <= share <= 0.20, share


def test_every_type_and_genre_is_present(devset):
    types = Counter(q.type for q in devset.questions)
    assert set(types) == set(QUESTION_TYPES), types
    assert set(devset.genres()) == set(GENRES)
    # the five kinds of document the issue names
    assert {"man", "readme", "html-reference", "pdf"} <= set(devset.genres())
    assert {"faq", "policy"} & set(devset.genres())


def test_documents_folder_matches_the_records(devset):
    on_disk = {p.name for p in devset.docs_dir.iterdir() if p.is_file()}
    assert on_disk == set(devset.documents)
    total = sum((devset.docs_dir / name).stat().st_size for name in on_disk)
    assert total < 3 * 2**20
    kinds = {Path(name).suffix for name in on_disk}
    assert {".txt", ".md", ".html", ".pdf"} <= kinds


def test_every_document_is_cited_and_the_pdf_has_pages(devset):
    cited = {doc for q in devset.answerable() for doc in q.docs}
    assert cited == set(devset.documents)
    from retrieval.loaders import load_document

    pdfs = [d for d in devset.documents.values() if d.genre == "pdf"]
    for doc in pdfs:
        loaded = load_document(doc.path)
        assert len(loaded.pages) >= 3 and len(loaded.text) > 5000


def test_key_phrases_occur_in_the_indexed_text(devset):
    """Catches typos in phrases and wrong document references: the text is what
    retrieval.loaders extracts, i.e. what the system indexes."""
    assert devset.missing_key_phrases() == []
    texts = {doc: normalise(devset.document_text(doc)) for doc in devset.documents}
    for q in devset.answerable():
        for doc in q.docs:  # each named document contributes to the answer
            assert any(normalise(p) in texts[doc] for p in q.key_phrases), (q.id, doc)


def test_conversations_are_in_turn_order_and_lean_on_earlier_turns(devset):
    convs = devset.conversations()
    assert [c.id for c in convs] == sorted(c.id for c in convs)
    for conv in convs:
        assert [q.turn for q in conv.turns] == list(range(1, len(conv) + 1))
        assert conv.history(1) == ()
        assert conv.history(3) == conv.turns[:2]
        assert not conv.turns[0].is_followup and all(q.is_followup for q in conv.turns[1:])
    follow_ups = [q for c in convs for q in c.turns[1:]]
    assert len(follow_ups) >= 40
    # later turns are short and elliptical, as typed: most are under eight words
    assert sum(len(q.question.split()) < 8 for q in follow_ups) >= len(follow_ups) // 2


def test_helpers_partition_the_questions(devset):
    qs = devset.questions
    assert len(devset.answerable()) + len(devset.unanswerable()) == len(qs)
    assert sum(len(devset.by_type(t)) for t in QUESTION_TYPES) == len(qs)
    assert len(devset.single_turn()) + sum(len(c) for c in devset.conversations()) == len(qs)
    first = qs[0]
    assert devset.question(first.id) is first
    assert devset.conversation("c01").turns[0].turn == 1
    with pytest.raises(ValueError):
        devset.by_type("trivia")
    with pytest.raises(KeyError):
        devset.conversation("nope")


def test_questions_are_phrased_as_people_type_them(devset):
    qs = [q.question for q in devset.questions]
    assert len(set(map(normalise, qs))) == len(qs), "duplicate questions"
    lowercase = sum(q[0].islower() for q in qs)
    terse = sum(not q.rstrip().endswith("?") and len(q.split()) <= 6 for q in qs)
    assert lowercase >= len(qs) // 3
    assert terse >= 20


def _corpus_packages() -> set[str]:
    for module in ("training.corpus.sources", "data.corpus.sources"):
        try:
            return set(importlib.import_module(module).all_packages())
        except ModuleNotFoundError:
            continue
    pytest.fail("cannot find the training corpus's package list (training/corpus/sources.py)")


def test_nothing_was_used_for_training(devset):
    corpus = _corpus_packages()
    assert len(corpus) > 10
    for doc in devset.documents.values():
        assert doc.package not in corpus, doc
        assert doc.source_package not in corpus, doc
    # the bundled samples are excluded too: neither their packages nor their files
    manifest = json.loads((SAMPLES / "manifest.json").read_text(encoding="utf-8"))
    sample_packages = {entry["source_package"] for entry in manifest}
    sample_hashes = {hashlib.sha256(p.read_bytes()).hexdigest() for p in SAMPLES.iterdir() if p.is_file()}
    for doc in devset.documents.values():
        assert doc.package not in sample_packages and doc.source_package not in sample_packages, doc
        assert doc.sha256 not in sample_hashes, doc
        assert doc.doc not in {entry["file"] for entry in manifest}, doc


def test_sources_md_lists_every_document(devset):
    sources = (devset.path.parent / "SOURCES.md").read_text(encoding="utf-8")
    for doc in devset.documents.values():
        assert doc.doc in sources and doc.package in sources and doc.version in sources


# ---------------------------------------------------------------- malformed input


def _write(tmp_path: Path, records: list) -> Path:
    docs = tmp_path / "docs"
    docs.mkdir(exist_ok=True)
    (docs / "a.txt").write_text("Use --keep to keep the original file.\n")
    path = tmp_path / "questions.jsonl"
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    path.write_text("\n".join(lines) + "\n")
    return path


def _doc(**over):
    rec = {"record": "document", "doc": "a.txt", "title": "A", "genre": "man", "package": "a",
           "source_package": "a", "version": "1", "original_path": "/usr/share/man/man1/a.1.gz",
           "licence": "MIT", "conversion": "none",
           "sha256": hashlib.sha256(b"Use --keep to keep the original file.\n").hexdigest()}
    rec.update(over)
    return rec


def _q(qid="q1", **over):
    rec = {"record": "question", "id": qid, "type": "reverse", "question": "which flag keeps the file?",
           "docs": ["a.txt"], "answers": ["--keep"], "key_phrases": ["--keep"], "conversation": None, "turn": None}
    rec.update(over)
    return rec


def test_small_valid_file_loads(tmp_path):
    ds = load_devset(_write(tmp_path, [_doc(), _q(), _q("q2", type="unanswerable", docs=[], key_phrases=[],
                                                     answers=["not in the documents"], near_docs=["a.txt"])]))
    assert [q.id for q in ds.answerable()] == ["q1"] and [q.id for q in ds.unanswerable()] == ["q2"]
    assert ds.missing_key_phrases() == []


@pytest.mark.parametrize("records, line, needle", [
    ([_doc(), '{"record": "question", "id": '], 2, "not valid JSON"),
    ([_doc(), "[1, 2]"], 2, "expected a JSON object"),
    ([_doc(), {**_q(), "record": "answer"}], 2, "field 'record'"),
    ([_doc(), {k: v for k, v in _q().items() if k != "answers"}], 2, "field 'answers' is missing"),
    ([_doc(), _q(type="trivia")], 2, "field 'type'"),
    ([_doc(), _q(docs=["b.txt"])], 2, "field 'docs': unknown document 'b.txt'"),
    ([_doc(), _q(), _q()], 3, "field 'id': 'q1' already used on line 2"),
    ([_doc(), _q(key_phrases=["a", "b", "c", "d"])], 2, "field 'key_phrases' needs 1-3"),
    ([_doc(), _q(key_phrases=[])], 2, "field 'key_phrases' needs 1-3"),
    ([_doc(), _q(key_phrase=["--keep"])], 2, "unknown field(s) 'key_phrase'"),
    ([_doc(), _q(answers=[""])], 2, "field 'answers'[0]"),
    ([_doc(), _q(turn=2)], 2, "'conversation' and 'turn'"),
    ([_doc(), _q(conversation="c1", turn=True)], 2, "field 'turn' must be"),
    ([_doc(), _q(question="   ")], 2, "field 'question' is empty"),
    ([_doc(), _q(type="unanswerable", key_phrases=[], answers=["no"])], 2, "field 'docs' must be empty"),
    ([_doc(), _q(conversation="c1", turn=1), _q("q2", conversation="c1", turn=3)], 3,
     "conversation 'c1' has turns [1, 3]"),
    ([_doc(), _q(conversation="c1", turn=1), _q("q2", conversation="c1", turn=1)], 3,
     "already has turn 1"),
    ([_doc(genre="novel"), _q()], 1, "field 'genre'"),
    ([_doc(sha256="0" * 64), _q()], 1, "field 'sha256': a.txt has changed"),
    ([_doc(doc="../a.txt"), _q()], 1, "field 'doc' must be a plain file name"),
    ([_doc(doc="missing.txt", sha256="0" * 64), _q()], 1, "not found"),
])
def test_malformed_lines_name_line_and_field(tmp_path, records, line, needle):
    path = _write(tmp_path, records)
    with pytest.raises(DevSetError) as err:
        load_devset(path)
    message = str(err.value)
    assert f"questions.jsonl:{line}:" in message, message
    assert needle in message, message


def test_missing_file_and_empty_file(tmp_path):
    with pytest.raises(DevSetError, match="file not found"):
        load_devset(tmp_path / "nope.jsonl")
    with pytest.raises(DevSetError, match="no question records"):
        load_devset(_write(tmp_path, [_doc()]))


def test_wrong_key_phrase_is_reported(tmp_path):
    ds = load_devset(_write(tmp_path, [_doc(), _q(key_phrases=["--kepe"])]))
    assert ds.missing_key_phrases() == [("q1", "--kepe")]
