"""Multi-question sessions: several questions asked over one set of passages read once.

A single-question episode supervises a handful of answer tokens per thousand prompt tokens, and
the answer can sometimes be guessed from the question alone. A session reads the passages of
several episodes in the first turn, then asks every question in turn, as a user of the app's
chat does. The later questions arrive after all passages were read, so they can only be
answered from what the state kept: dense supervision for exactly the recall the reader needs.

Grouping (:func:`group_sessions`): synthetic key-value episodes are grouped by their gold passage
(every fact of a registry sheet is asked, several sheets per session: MQAR-style recall);
the other kinds are grouped at random, 2 to 5 per session.
"""

from __future__ import annotations

import random
from collections import defaultdict

from app.prompt import LAYOUTS, PassageText, encode_turn

MAX_PASSAGES = 17  # as many as the evaluation's largest setting (gold + 16 distractors)
MAX_QUESTIONS = 16


def group_sessions(episodes: list[dict], seed: int) -> list[list[dict]]:
    """Episodes -> sessions (lists of episodes). Every episode lands in exactly one session."""
    rng = random.Random(seed)
    by_sheet: dict[int, list[dict]] = defaultdict(list)
    others = []
    for e in episodes:
        if e.get("kind") == "synthetic_kv" and "passage_ids" in e:
            by_sheet[e["passage_ids"][e["gold"]]].append(e)
        else:
            others.append(e)
    sessions = []
    sheets = list(by_sheet.values())
    rng.shuffle(sheets)
    i = 0
    while i < len(sheets):
        want, session = rng.randint(1, 4), list(sheets[i])
        i += 1
        while want > 1 and i < len(sheets) and len(session) + len(sheets[i]) <= MAX_QUESTIONS:
            session += sheets[i]
            i, want = i + 1, want - 1
        sessions.append(session)
    rng.shuffle(others)
    i = 0
    while i < len(others):
        n = rng.randint(2, 5)
        sessions.append(others[i : i + n])
        i += n
    rng.shuffle(sessions)
    return sessions


def _passage_key(p: dict) -> tuple:
    return (p.get("doc_id"), p["text"])


def session_passages(session: list[dict], rng: random.Random) -> list[dict]:
    """The golds of every episode plus distractors from their own lists, shuffled (retrieval order
    is unknown to the model), at most MAX_PASSAGES."""
    golds, pool, seen = [], [], set()
    for e in session:
        for i, p in enumerate(e["passages"]):
            key = _passage_key(p)
            if key in seen:
                continue
            seen.add(key)
            (golds if i == e["gold"] else pool).append(p)
    room = max(0, MAX_PASSAGES - len(golds))
    chosen = golds[:MAX_PASSAGES] + rng.sample(pool, rng.randint(min(1, room, len(pool)), min(room, len(pool))))
    rng.shuffle(chosen)
    return chosen


def lay_out_session(tokenizer, session: list[dict], seed: int, max_chunk: int, max_tokens: int
                    ) -> tuple[list[int], list[bool]]:
    """One session -> (ids, target mask): turn 1 = first question + all passages, then one turn per
    further question without passages. Distractors are dropped until the session fits max_tokens
    (an empty result if even the golds alone do not)."""
    rng = random.Random(seed)
    layout = rng.choice(LAYOUTS)
    questions = list(session)
    rng.shuffle(questions)
    passages = session_passages(session, rng)
    golds = {_passage_key(e["passages"][e["gold"]]) for e in session}
    while True:
        ids: list[int] = []
        mask: list[bool] = []
        for n, e in enumerate(questions):
            shown = [PassageText(p["text"], p.get("title")) for p in passages] if n == 0 else []
            turn = encode_turn(tokenizer, e["question"], shown, layout=layout, max_chunk=max_chunk,
                               answer=e["answer"])
            ids += turn.ids
            mask += turn.target_mask()
        if len(ids) <= max_tokens:
            return ids, mask
        droppable = [i for i, p in enumerate(passages) if _passage_key(p) not in golds]
        if not droppable:
            return [], []
        passages.pop(rng.choice(droppable))
