"""benchmarks/refusal_signals.py: its statistics against brute force, and one run over the dev set."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from .test_gpu_benchmarks import _load

rs = _load("refusal_signals")


def test_auc_is_the_share_of_correctly_ordered_pairs():
    rng = np.random.default_rng(3)
    for _ in range(5):
        y = rng.integers(0, 2, 23)
        s = rng.integers(0, 5, 23).astype(float)  # ties on purpose
        pairs = [(p, n) for p, n in itertools.product(s[y == 1], s[y == 0])]
        brute = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs) / len(pairs)
        assert rs.auc(y, s) == pytest.approx(brute)


def test_threshold_is_the_lowest_that_keeps_false_refusals_within_the_limit():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 57)
    s = rng.normal(size=57) + y
    t = rs.threshold(y, s)
    false = ((s >= t) & (y == 0)).sum()
    assert false <= rs.MAX_FALSE * (y == 0).sum()
    lower = s[s < t]
    if len(lower):  # one step lower would refuse too many answerable questions
        t2 = lower.max()
        assert ((s >= t2) & (y == 0)).sum() > rs.MAX_FALSE * (y == 0).sum()


def test_logistic_fit_matches_the_regularised_likelihood_optimum():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(200, 2)) * [1.0, 3.0] + [0.5, -1.0]
    y = (X @ [2.0, -0.7] + rng.normal(size=200) > 0).astype(int)
    model = rs.Logistic(X, y, l2=0.1)
    A = model._design(X)
    p = 1 / (1 + np.exp(-A @ model.w))
    reg = 0.1 * model.w
    reg[0] = 0.0
    assert np.abs(A.T @ (p - y) + reg).max() < 1e-8  # the gradient vanishes: an optimum
    assert model.w[1] > 0 > model.w[2]  # the signs of the true weights


@pytest.mark.slow  # builds the dev collection with the hash embedder: ~20 s
def test_a_run_over_the_dev_set_reports_every_combination(tmp_path):
    assert rs.main(["--embedder", "hash", "--data-dir", str(tmp_path / "cols"), "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "refusal_signals.json").read_text())
    assert {r["signals"] for r in data["results"]} == {"+".join(c) for c in rs.COMBINATIONS}
    assert len(data["rows"]) > 200 and any(r["unanswerable"] for r in data["rows"])
    for r in data["results"]:
        for fold in r["folds"]:
            assert all(0 <= fold[key] <= 1 for key in ("auc", "recall", "false_refusal"))
    text = (tmp_path / "refusal_signals.md").read_text()
    assert text.count("\n| support") == 4 and "| cosine |" in text
