"""The MQAR-style key-value generator (evaluation.mqar)."""

from __future__ import annotations

import random
import re
from collections import Counter

import pytest

from evaluation.mqar import kv_context, mqar_items, mqar_points

PAIRS = (1, 2, 3, 4, 8, 16, 32, 64, 128)


def test_deterministic_by_seed():
    a, b = mqar_items(16, 5, seed=3), mqar_items(16, 5, seed=3)
    assert a == b
    c = mqar_items(16, 5, seed=4)
    assert [i.question for i in a] != [i.question for i in c]
    assert len({(i.question, i.answer) for i in a}) == 5  # the queries are independent contexts


@pytest.mark.parametrize("n_pairs", PAIRS)
def test_answer_occurs_exactly_once(n_pairs):
    for item in mqar_items(n_pairs, 20, seed=1):
        text = "\n".join(p.text for p in item.passages).lower()
        assert text.count(item.answer.lower()) == 1, (item.question, item.answer)
        m = re.fullmatch(r"What is the (.+) of the (.+)\?", item.question)
        assert m and f"the {m.group(1)} of the {m.group(2)} is {item.answer}".lower() in text \
            or f"for the {m.group(2)}, the {m.group(1)} is {item.answer}".lower() in text


@pytest.mark.parametrize("n_pairs", (1, 5, 64, 128))
def test_facts_distinct_and_grouped(n_pairs):
    passages, facts = kv_context(n_pairs, random.Random(n_pairs))
    assert len(facts) == n_pairs
    assert len({(a, e) for a, e, _ in facts}) == n_pairs  # distinct keys
    assert len({v for _, _, v in facts}) == n_pairs  # distinct values
    text = " ".join(p.text for p in passages).lower()
    assert all(text.count(v.lower()) == 1 for _, _, v in facts)  # no value inside another fact or its key
    per_passage = Counter()
    for a, e, v in facts:
        holders = [i for i, p in enumerate(passages) if f"{e} is {v}" in p.text or f"{e}, the {a} is {v}" in p.text]
        assert len(holders) == 1
        per_passage[holders[0]] += 1
    assert sorted(per_passage) == list(range(len(passages)))
    sizes = [per_passage[i] for i in range(len(passages))]
    assert all(3 <= s <= 6 for s in sizes[:-1]) and 1 <= sizes[-1] <= 6
    assert all(re.fullmatch(r"Registry sheet \d+", p.title) for p in passages)


def test_entity_names_are_fresh():
    for item in mqar_items(32, 10, seed=0):
        entity = re.fullmatch(r"What is the .+ of the \w+ (\w+)\?", item.question).group(1)
        assert "x" in entity.lower() or re.fullmatch(r"[A-Z]\d{3}", entity), entity


def test_asked_fact_is_uniform_over_positions():
    counts = Counter()
    for item in mqar_items(4, 400, seed=0):
        text = " ".join(p.text for p in item.passages)
        counts[text.index(item.answer) * 4 // len(text)] += 1  # which quarter of the context holds the answer
    assert len(counts) == 4 and min(counts.values()) > 50


def test_points():
    pts = mqar_points([4, 1, 4], 3, "pq", seed=0)
    assert [p.label for p in pts] == ["1", "4"] and [p.x for p in pts] == [1.0, 4.0]
    assert all(p.setting == "mqar" and p.layout == "pq" and len(p.items) == 3 for p in pts)
    with pytest.raises(ValueError):
        kv_context(0, random.Random(0))
