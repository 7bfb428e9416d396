"""Cleaning, deduplication, document split and passage chunking of the corpus builder."""

from training.corpus.build import dedup_docs, verify_qa
from training.corpus.text import chunk_passages, normalize_text, paragraphs, sentences, split_of, word_count


def _doc(i, text, split="train", key=None):
    return {"id": f"d{i}", "text": text, "split": split, "split_key": key or f"d{i}", "title": f"t{i}",
            "source_package": "x", "qa": []}


PAR_A = "The quick brown fox jumps over the lazy dog near the river bank today."
PAR_B = "Retention replaces attention with a decaying recurrent state of constant size."
PAR_C = "Passages are cut at paragraph boundaries and never in the middle of a word."


def test_normalize_text():
    t = normalize_text("a\u00a0 b\r\n\r\n\r\n\r\nc\t d  \x07\n")
    assert t == "a b\n\nc d"


def test_exact_duplicate_documents_are_dropped():
    docs = [_doc(0, PAR_A + "\n\n" + PAR_B), _doc(1, PAR_A + "\n\n" + PAR_B)]
    out, stats = dedup_docs(docs)
    assert [d["id"] for d in out] == ["d0"]
    assert stats["exact_duplicate_docs"] == 1


def test_near_duplicate_paragraphs_are_removed():
    # same words, different case / punctuation / spacing: the normalised paragraph key matches
    near = PAR_A.upper().replace(" ", "  ").replace(".", "!")
    docs = [_doc(0, PAR_A + "\n\n" + PAR_B), _doc(1, near + "\n\n" + PAR_C + "\n\n" + PAR_C.replace("word", "term"))]
    out, stats = dedup_docs(docs)
    assert len(out) == 2
    assert paragraphs(out[1]["text"]) == [PAR_C, PAR_C.replace("word", "term")]
    assert stats["duplicate_paragraphs"] == 1


def test_mostly_duplicate_document_is_dropped():
    docs = [_doc(0, PAR_A + "\n\n" + PAR_B + "\n\n" + PAR_C), _doc(1, PAR_A + "\n\n" + PAR_B + "\n\nShort tail.")]
    out, stats = dedup_docs(docs)
    assert [d["id"] for d in out] == ["d0"]
    assert stats["near_duplicate_docs"] == 1


def test_eval_first_order_keeps_text_in_eval():
    docs = [_doc(0, PAR_A + "\n\n" + PAR_B, split="eval"), _doc(1, PAR_A + "\n\n" + PAR_C + "\n\n" + PAR_C + " More.")]
    out, _ = dedup_docs(docs)
    train = [d for d in out if d["split"] == "train"][0]
    assert PAR_A not in train["text"]


def test_split_is_deterministic_by_key_and_about_five_percent():
    keys = [f"doc-{i}" for i in range(20000)]
    a = [split_of(k) for k in keys]
    b = [split_of(k) for k in keys]
    assert a == b
    frac = a.count("eval") / len(a)
    assert 0.04 < frac < 0.06
    # documents sharing a split key (e.g. two dictionaries' entries for one word) share the split
    assert split_of("word:apple") == split_of("word:apple")
    assert split_of("k", 0.0) == "train" and split_of("k", 1.0) == "eval"


def test_verify_qa_keeps_only_verbatim_answers():
    d = _doc(0, "ls - list directory contents\n\n-a, --all\n  do not ignore entries starting with .")
    d["qa"] = [
        {"kind": "man_option", "question": "q1", "answer": "do not ignore entries starting with .",
         "anchor": "-a, --all"},
        {"kind": "man_option", "question": "q2", "answer": "not in the text", "anchor": "-a, --all"},
        {"kind": "man_option", "question": "q1", "answer": "do not ignore entries starting with .",
         "anchor": "-a, --all"},
    ]
    assert [q["question"] for q in verify_qa(d)] == ["q1"]
    # the same question with two different answers is ambiguous: dropped
    d["qa"].append({"kind": "man_option", "question": "q1", "answer": "do not ignore", "anchor": "-a, --all"})
    assert verify_qa(d) == []


def test_chunk_passages_are_verbatim_bounded_and_complete():
    pars = [f"Sentence number {i} is here. " * (i % 7 + 1) for i in range(60)]
    pars.insert(10, "HEADING")
    pars.insert(20, "word " * 500 + ".")  # an over-long paragraph without sentence ends
    text = "\n\n".join(p.strip() for p in pars)
    spans = chunk_passages(text, max_words=50)
    assert spans == sorted(spans)
    for s, e in spans:
        assert word_count(text[s:e]) <= 63  # 1.25 * max_words after merging a short tail
        assert text[s:e].strip() == text[s:e]
    # every word of the document is in exactly one passage
    assert sum(word_count(text[s:e]) for s, e in spans) == word_count(text)
    # a heading-like paragraph is never the last thing in a passage
    for s, e in spans[:-1]:
        assert not text[s:e].endswith("HEADING")


def test_sentences():
    assert sentences("One, e.g. this. Two! Three? Mr. Smith came. end") == [
        "One, e.g. this.", "Two!", "Three?", "Mr. Smith came. end"]
