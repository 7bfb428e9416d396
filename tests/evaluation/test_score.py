"""Scoring of answers (evaluation.score) on hand-made cases."""

from __future__ import annotations

import math

import pytest

from evaluation.score import contains_answer, normalize, score, summarize, token_f1


def test_normalize_drops_case_punctuation_articles_and_spaces():
    assert normalize("  The Quick,  brown FOX!  ") == "quick brown fox"
    assert normalize("An apple a day") == "apple day"
    assert normalize("theory") == "theory"  # "the" only as a word


def test_token_f1():
    assert token_f1("copies files recursively", "copies recursively") == pytest.approx(2 * (2 / 3) * 1 / (2 / 3 + 1))
    assert token_f1("the cat", "a cat") == 1.0
    assert token_f1("dog", "cat") == 0.0
    assert token_f1("", "") == 1.0 and token_f1("", "cat") == 0.0 and token_f1("cat", "") == 0.0
    assert token_f1("cat cat", "cat") == pytest.approx(2 * 0.5 * 1 / 1.5)  # repeated words count once each


def test_score():
    assert score("The answer, exactly!", "answer exactly") == {"em": 1.0, "contains": 1.0, "f1": 1.0}
    s = score("it is 9624.", "9624")
    assert s["em"] == 0.0 and s["contains"] == 1.0 and s["f1"] == pytest.approx(0.5)  # precision 1/3, recall 1
    assert score("", "x") == {"em": 0.0, "contains": 0.0, "f1": 0.0}


def test_contains_answer():
    assert contains_answer("Records show the code is 9624.", "9624")
    assert contains_answer("THE OWNER IS ADA LUND", "Ada Lund")
    assert contains_answer("having reached the limits of growth", "Having reached the limits of growth.")
    assert not contains_answer("room 1750", "175.")  # normalised words must match whole words...
    assert contains_answer("room 1750", "175")  # ...but the raw answer anywhere gives it away
    assert not contains_answer("nothing here", "Ada Lund")


def test_summarize_means_kinds_groups():
    recs = [{"kind": "a", "em": 1.0, "contains": 1.0, "f1": 1.0, "prompt_tokens": 10, "seconds": 1.0, "flag": True},
            {"kind": "a", "em": 0.0, "contains": 0.0, "f1": 0.5, "prompt_tokens": 20, "seconds": 3.0, "flag": False},
            {"kind": "b", "em": 0.0, "contains": 1.0, "f1": 0.0, "prompt_tokens": 30, "seconds": 2.0, "flag": True}]
    s = summarize(recs, {"flagged": lambda r: r["flag"]})
    assert s["n"] == 3 and s["em"] == pytest.approx(1 / 3) and s["f1"] == pytest.approx(0.5)
    assert s["prompt_tokens"] == 20 and s["seconds"] == 6.0 and s["seconds_per_answer"] == 2.0
    assert s["kinds"]["a"] == {"em": 0.5, "contains": 0.5, "f1": 0.75, "n": 2}
    assert s["kinds"]["b"]["n"] == 1
    assert s["groups"]["flagged"]["n"] == 2 and s["groups"]["flagged"]["f1"] == 0.5
    assert "records" not in s["groups"]["flagged"] and len(s["records"]) == 3
    empty = summarize([])
    assert empty["n"] == 0 and math.isnan(empty["f1"])
