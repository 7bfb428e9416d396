"""Training rows: single episodes, multi-question sessions, packing."""

import random
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

from app.prompt import END, PASSAGE, marker_ids
from training import training_set
from training.recall_rows import END_ID, mqar_example, mqar_rows, repeat_rows
from training.sessions import MAX_PASSAGES, MAX_QUESTIONS, group_sessions, lay_out_session

TOKENIZER = Path(__file__).resolve().parents[2] / "data" / "model" / "tokenizer.json"


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.from_file(str(TOKENIZER))


def _words(rng, n):
    return " ".join(rng.choice(["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa"]) for _ in range(n))


def make_episodes(n_kv_sheets=7, n_other=11, seed=0):
    """Synthetic kv episodes share gold sheets (3-6 facts each); others each have their own gold."""
    rng = random.Random(seed)
    episodes, pid = [], 0
    for s in range(n_kv_sheets):
        sheet = {"text": f"Sheet {s}: " + _words(rng, 30), "title": f"Registry sheet {s}", "doc_id": f"syn/{s}"}
        distractors = [{"text": _words(rng, 25), "title": None, "doc_id": f"d/{s}/{j}"} for j in range(4)]
        for f in range(rng.randint(3, 6)):
            episodes.append({"kind": "synthetic_kv", "question": f"What is fact {f} of sheet {s}?",
                             "answer": f"value{s}x{f}", "passages": [sheet] + distractors, "gold": 0,
                             "passage_ids": [1000 + s] + list(range(pid, pid + 4))})
            pid += 4
    for i in range(n_other):
        ps = [{"text": _words(rng, 40), "title": f"t{i}-{j}", "doc_id": f"o/{i}/{j}"} for j in range(rng.randint(2, 9))]
        episodes.append({"kind": "dict_wordnet", "question": f"What does word{i} mean?", "answer": f"meaning {i}",
                         "passages": ps, "gold": rng.randrange(len(ps)),
                         "passage_ids": list(range(pid, pid + len(ps)))})
        pid += len(ps)
    return episodes


def test_group_sessions_uses_every_episode_once_and_keeps_sheets_together():
    episodes = make_episodes()
    sessions = group_sessions(episodes, seed=3)
    flat = [id(e) for s in sessions for e in s]
    assert sorted(flat) == sorted(id(e) for e in episodes)
    for s in sessions:
        assert len(s) <= MAX_QUESTIONS
        kinds = {e["kind"] for e in s}
        if "synthetic_kv" in kinds:
            assert kinds == {"synthetic_kv"}
    # all facts of one sheet are asked in the same session
    sheet_session = {}
    for n, s in enumerate(sessions):
        for e in s:
            if e["kind"] == "synthetic_kv":
                assert sheet_session.setdefault(e["passage_ids"][0], n) == n
    assert group_sessions(episodes, seed=3) == sessions
    assert group_sessions(episodes, seed=4) != sessions


def _decode_targets(tok, ids, mask):
    """Each run of target tokens, decoded (one per answered question)."""
    runs, cur = [], []
    for t, m in zip(ids, mask, strict=True):
        if m:
            cur.append(t)
        elif cur:
            runs.append(cur)
            cur = []
    if cur:
        runs.append(cur)
    return [tok.decode(r, skip_special_tokens=False) for r in runs]


@pytest.mark.parametrize("seed", range(4))
def test_session_layout_asks_every_question_after_reading_all_golds(tok, seed):
    episodes = make_episodes(seed=seed)
    session = group_sessions(episodes, seed)[0]
    ids, mask = lay_out_session(tok, session, seed, max_chunk=64, max_tokens=100_000)
    text = tok.decode(ids, skip_special_tokens=False)
    targets = _decode_targets(tok, ids, mask)
    end = tok.decode(marker_ids(tok, END), skip_special_tokens=False)
    assert sorted(t.removesuffix(end).strip() for t in targets) == sorted(e["answer"] for e in session)
    first_answer = ids.index(next(i for i, m in zip(ids, mask, strict=True) if m))
    first_turn = tok.decode(ids[:first_answer], skip_special_tokens=False)
    for e in session:
        assert e["passages"][e["gold"]]["text"] in first_turn  # every gold is read in turn 1
        assert e["question"] in text
    n_passages = first_turn.count(tok.decode(marker_ids(tok, PASSAGE), skip_special_tokens=False))
    assert 1 <= n_passages <= MAX_PASSAGES


def test_session_drops_distractors_to_fit_and_gives_up_without_room_for_golds(tok):
    session = group_sessions(make_episodes(seed=5), 5)
    session = max(session, key=len)
    full, _ = lay_out_session(tok, session, 1, 64, 100_000)
    golds_only = [dict(e, passages=[e["passages"][e["gold"]]], gold=0) for e in session]
    minimal, _ = lay_out_session(tok, golds_only, 1, 64, 100_000)
    budget = (len(full) + len(minimal)) // 2
    ids, mask = lay_out_session(tok, session, 1, 64, budget)
    assert minimal and len(minimal) <= len(ids) <= budget < len(full)
    assert lay_out_session(tok, session, 1, 64, len(minimal) - 1) == ([], [])


def test_pack_rows_keep_examples_whole_and_pad():
    examples = [([5] * 4, [False, False, True, True]), ([], []), ([6] * 7, [True] * 7), ([7] * 3, [False] * 3),
                ([8] * 20, [True] * 20)]
    rows, masks = training_set.pack(examples, row_length=9, pad_id=1)
    assert rows.shape == masks.shape == (2, 10)
    assert rows[0].tolist() == [5] * 4 + [1] * 6 and masks[0].tolist() == [False] * 2 + [True] * 2 + [False] * 6
    assert rows[1].tolist() == [6] * 7 + [7] * 3  # the 20-token example cannot fit a row and is dropped
    assert np.count_nonzero(masks) == 2 + 7


def test_repeat_rows_read_every_segment_twice():
    stream = np.arange(100_000, dtype=np.uint32)  # distinct tokens: a copy is found by value
    rows = repeat_rows(stream, n_rows=5, row_length=600, seed=1)
    assert rows.shape == (5, 601)
    for row in rows:
        i, pairs = 0, 0
        while i < len(row):
            # a segment is a run of consecutive stream tokens; its copy follows after a gap
            j = i + 1
            while j < len(row) and row[j] == row[j - 1] + 1:
                j += 1
            rest = row[j:]
            copies = np.flatnonzero(rest == row[i])
            if copies.size:
                k = j + copies[0]
                n = min(j - i, len(row) - k)
                assert (row[k : k + n] == row[i : i + n]).all()
                pairs += 1
            i = j
        assert pairs >= 1
    assert not (rows[0] == repeat_rows(stream, 5, 600, seed=2)[0]).all()


def test_short_repeat_rows_keep_segment_and_gap_bounds():
    stream = np.arange(100_000, dtype=np.uint32)
    row = repeat_rows(stream, n_rows=1, row_length=2000, seed=3, segment=(8, 64), max_gap=32)[0]
    runs = np.split(row, np.flatnonzero(np.diff(row.astype(np.int64)) != 1) + 1)[:-1]  # the last run may be cut
    assert len(runs) >= 3 * 10
    i = 0
    while i + 1 < len(runs):  # segment, (gap,) copy of the segment
        seg = runs[i]
        assert 8 <= len(seg) < 64
        if len(runs[i + 1]) == len(seg) and (runs[i + 1] == seg).all():
            i += 2
        else:
            assert len(runs[i + 1]) <= 32 and (runs[i + 2] == seg).all()
            i += 3
    with pytest.raises(ValueError, match="segment lengths"):
        repeat_rows(stream, 1, 100, seed=0, segment=(10, 5))


@pytest.mark.parametrize("pairs", [1, 2, 7, 64])
def test_mqar_example_targets_are_the_values_of_the_repeated_keys(pairs):
    stream = np.random.default_rng(pairs).integers(0, 300, 5000).astype(np.uint16)
    tokens, target = mqar_example(stream, pairs, np.random.default_rng(0))
    assert len(tokens) == 4 * pairs + 1 and tokens[-1] == END_ID and target.sum() == pairs
    context = {int(k): int(v) for k, v in zip(tokens[0 : 2 * pairs : 2], tokens[1 : 2 * pairs : 2], strict=True)}
    assert len(context) == pairs and min(context) > END_ID + 15  # distinct ordinary keys
    for i in np.flatnonzero(target):
        assert i >= 2 * pairs and context[int(tokens[i - 1])] == tokens[i]
    assert sorted(tokens[2 * pairs : 4 * pairs : 2].tolist()) == sorted(context)  # every key asked once


def test_mqar_rows_are_full_and_seeded():
    stream = np.random.default_rng(1).integers(0, 8192, 20_000).astype(np.uint16)
    tokens, mask = mqar_rows(3, 500, seed=4, stream=stream)
    assert tokens.shape == mask.shape == (3, 501) and 0.1 < mask.mean() < 0.25
    again, _ = mqar_rows(3, 500, seed=4, stream=stream)
    other, _ = mqar_rows(3, 500, seed=5, stream=stream)
    assert (tokens == again).all() and not (tokens == other).all()
