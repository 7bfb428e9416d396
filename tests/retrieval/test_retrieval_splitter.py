"""Splitter: budget, boundaries, offsets, overlap, pages, token counters."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from retrieval import Document, Page, Splitter, approx_token_count, split_document, token_counter


def doc_of(text: str, pages: list[Page] | None = None) -> Document:
    return Document("d0", "mem", "t", "text", text, pages or [Page(None, 0, len(text))])


def check_invariants(doc: Document, passages, splitter: Splitter) -> None:
    count = splitter.count_tokens
    assert [p.position for p in passages] == list(range(len(passages)))
    covered = [False] * len(doc.text)
    for p in passages:
        assert doc.text[p.start : p.end] == p.text
        assert p.text and p.text == p.text.strip()
        assert p.tokens == count(p.text)
        assert p.tokens <= splitter.max_tokens or len(p.text) == 1  # only a lone char may exceed
        page = next(pg for pg in doc.pages if pg.start <= p.start and p.end <= pg.end)
        assert p.page == page.number
        for i in range(p.start, p.end):
            covered[i] = True
    missed = [i for i, ch in enumerate(doc.text) if not ch.isspace() and not covered[i]]
    assert not missed, f"uncovered text at {missed[:5]}"
    starts = [p.start for p in passages if p.page == passages[0].page] if passages else []
    assert starts == sorted(starts)
    if splitter.overlap == 0:
        for a, b in zip(passages, passages[1:], strict=False):
            assert a.end <= b.start


# Text with words, sentence ends, line breaks, blank lines, long unspaced runs and CJK.
_pieces = st.sampled_from(
    ["word", "Word", "a", "longerword", ".", "!", "?", " ", " ", " ", "\n", "\n\n", "\t", "x" * 40,
     "\u3002", "\u6f22\u5b57", "\u201d", "e.g.", "..."]
)
texts = st.lists(_pieces, min_size=0, max_size=300).map("".join)


def subword_count(text: str) -> int:
    """A non-additive counter, like BPE: counts of pieces do not sum to the count of the whole."""
    return len(re.findall(r"\w{1,3}|[^\w\s]", text)) + (1 if text.strip() else 0)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=texts, budget=st.integers(1, 40), overlap_frac=st.floats(0, 0.9),
       counter=st.sampled_from([None, subword_count, len]))
def test_invariants(text, budget, overlap_frac, counter):
    overlap = min(budget - 1, int(budget * overlap_frac))
    splitter = Splitter(max_tokens=budget, overlap=overlap, tokenizer=counter)
    doc = doc_of(text)
    check_invariants(doc, splitter.split(doc), splitter)


@settings(max_examples=40, deadline=None)
@given(page_texts=st.lists(texts, min_size=1, max_size=5), budget=st.integers(3, 30))
def test_passages_never_cross_pages(page_texts, budget):
    text, pages, pos = "", [], 0
    for number, page_text in enumerate(page_texts, start=1):
        if text:
            text += "\n\n"
            pos += 2
        pages.append(Page(number, pos, pos + len(page_text)))
        text += page_text
        pos += len(page_text)
    doc = Document("d", "s", "t", "pdf", text, pages)
    splitter = Splitter(max_tokens=budget)
    check_invariants(doc, splitter.split(doc), splitter)


def test_cuts_at_sentences_and_paragraphs():
    text = "One two three. Four five six.\n\nSeven eight nine. Ten eleven twelve."
    assert [p.text for p in split_document(doc_of(text), max_tokens=6)] == [
        "One two three. Four five six.",
        "Seven eight nine. Ten eleven twelve.",
    ]
    # A paragraph that does not fit a half-full passage starts the next passage.
    text = "Alpha beta gamma delta.\n\nOne two. Three four. Five six."
    assert [p.text for p in split_document(doc_of(text), max_tokens=8)] == [
        "Alpha beta gamma delta.",
        "One two. Three four. Five six.",
    ]


def test_long_sentence_cut_at_words_then_chars():
    text = " ".join(f"w{i}" for i in range(25)) + " " + "z" * 100
    passages = split_document(doc_of(text), max_tokens=10)
    assert [p.tokens for p in passages][:2] == [10, 10]
    assert passages[0].text == " ".join(f"w{i}" for i in range(10))
    assert all(p.tokens <= 10 for p in passages)
    assert "".join(p.text for p in passages if p.text.startswith("z")) == "z" * 100


def test_overlap_repeats_last_sentences():
    text = "S one. S two. S three. S four. S five."
    passages = split_document(doc_of(text), max_tokens=6, overlap=2)
    assert [p.text for p in passages] == ["S one. S two. S three.", "S three. S four. S five."]


def test_cjk_text_without_spaces():
    text = "\u6f22\u5b57\u304b\u306a\u3002" * 30
    passages = split_document(doc_of(text), max_tokens=12)
    assert all(p.tokens <= 12 for p in passages) and len(passages) > 5
    assert all(p.text.endswith("\u3002") for p in passages)  # cut at the CJK full stop


def test_default_overlap_is_a_share_of_the_budget():
    assert Splitter().overlap == 30 and Splitter(max_tokens=40).overlap == 6
    assert Splitter(max_tokens=5).overlap == 0  # a tiny budget has no room to repeat anything
    assert Splitter(overlap=0).overlap == 0


def test_default_overlap_repeats_the_sentence_that_ends_a_passage():
    text = " ".join(f"Sentence {i} says {i} words here." for i in range(60))
    splitter = Splitter(max_tokens=40)
    passages = splitter.split(doc_of(text))
    assert len(passages) > 2
    for before, after in zip(passages, passages[1:], strict=False):
        last = re.findall(r"Sentence \d+ [^.]*\.", before.text)[-1]
        assert after.text.startswith(last) and after.start < before.end and after.tokens <= 40
    check_invariants(doc_of(text), passages, splitter)


def test_default_budget_and_validation():
    assert Splitter().max_tokens == 200
    with pytest.raises(ValueError):
        Splitter(max_tokens=0)
    with pytest.raises(ValueError):
        Splitter(max_tokens=10, overlap=10)


def test_approx_token_count():
    assert approx_token_count("") == 0
    assert approx_token_count("Hello, world!  Two") == 3
    assert approx_token_count("x" * 40) == 3  # long unspaced runs are not one token
    assert approx_token_count("\u6f22\u5b57 ok") == 3


class ListTokenizer:
    def encode(self, text, add_special_tokens=True):
        return [0] * (len(text.split()) + (2 if add_special_tokens else 0))


class OldTokenizer:
    def encode(self, text):
        return [0] * len(text)


def test_token_counter_adapters():
    from tokenizers import Tokenizer, models, pre_tokenizers

    assert token_counter(None) is approx_token_count
    assert token_counter(len)("abc") == 3
    assert token_counter(ListTokenizer())("a b c") == 3  # special tokens left out
    assert token_counter(OldTokenizer())("abcd") == 4
    tok = Tokenizer(models.WordLevel({"a": 0, "b": 1, "[UNK]": 2}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    assert token_counter(tok)("a b zz a") == 4  # tokenizers.Encoding: counted by .ids
    with pytest.raises(TypeError):
        token_counter(42)


def test_splitter_with_tokenizer_object():
    text = "alpha beta gamma. delta epsilon zeta. eta theta iota."
    passages = Splitter(max_tokens=4, tokenizer=ListTokenizer()).split(doc_of(text))
    assert [p.text for p in passages] == ["alpha beta gamma.", "delta epsilon zeta.", "eta theta iota."]


def test_large_text_is_fast():
    import time

    text = ("A sentence of moderate length with several words. " * 8 + "\n\n") * 5000  # ~2.6 MB
    start = time.perf_counter()
    passages = Splitter(overlap=0).split(doc_of(text))
    assert time.perf_counter() - start < 10
    assert all(p.tokens <= 200 for p in passages) and len(passages) == 5000 // 3 + 1  # three 64-word paragraphs each
    start = time.perf_counter()
    overlapping = Splitter().split(doc_of(text))  # the default overlap re-reads sentence tails: still linear
    assert time.perf_counter() - start < 10
    assert all(p.tokens <= 200 for p in overlapping) and len(overlapping) > len(passages)
