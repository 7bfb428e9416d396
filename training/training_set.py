"""Turn the corpus builder's outputs into the trainer's token rows.

    python -m training.training_set --build-dir data/build --out data/build/train --row-length 2048 --workers 16

Reading-comprehension episodes are laid out with `app.prompt.encode_turn`, the
exact code the app uses at answer time, with a layout drawn at random per
episode (so every layout the app offers is trained) and a random number of
distractors (1 to all). Episodes are packed back to back into rows; the loss
covers only the answers (and their end marker). Pretraining text is cut into
rows with the loss on every token.

Recall rows (training.recall_rows) reward in-context recall on every supervised token instead of a
few answer tokens per episode: ``text_repeat_{split}.npz`` (text segments read twice),
``text_repeat_short_{split}.npz`` (short segments, the easy start of a copy curriculum) and
``mqar_{split}.npz`` (token-level multi-query associative recall).

Multi-question sessions (training.sessions) are a second QA source: the passages of several
episodes read once, then every question asked in its own turn (``qa_multi_{split}.npz``).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from app.prompt import LAYOUTS, PassageText, encode_turn
from training.recall_rows import mqar_rows, repeat_rows
from training.sessions import group_sessions, lay_out_session

log = logging.getLogger(__name__)
_TOKENIZER = None


def _init(tokenizer_file: str) -> None:
    global _TOKENIZER
    from tokenizers import Tokenizer

    _TOKENIZER = Tokenizer.from_file(tokenizer_file)


def lay_out(args: tuple[dict, int, int, int]) -> tuple[list[int], list[bool]]:
    """One episode -> (ids, target mask), with a seeded choice of layout and distractors."""
    episode, seed, max_chunk, max_distractors = args
    rng = random.Random(seed)
    passages = [dict(text=p["text"], title=p.get("title")) for p in episode["passages"]]
    gold = passages[episode["gold"]]
    others = [p for i, p in enumerate(passages) if i != episode["gold"]]
    keep = rng.randint(min(1, len(others)), min(len(others), max_distractors)) if others else 0
    chosen = rng.sample(others, keep) + [gold]
    rng.shuffle(chosen)  # retrieval order is unknown to the model: gold anywhere
    turn = encode_turn(_TOKENIZER, episode["question"], [PassageText(p["text"], p["title"]) for p in chosen],
                       layout=rng.choice(LAYOUTS), max_chunk=max_chunk, answer=episode["answer"])
    return turn.ids, turn.target_mask()


def lay_out_multi(args: tuple[list[dict], int, int, int]) -> tuple[list[int], list[bool]]:
    """One multi-question session -> (ids, target mask); empty if it cannot fit max_tokens."""
    session, seed, max_chunk, max_tokens = args
    return lay_out_session(_TOKENIZER, session, seed, max_chunk, max_tokens)


def pack(examples, row_length: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Greedy packing of (ids, mask) examples into rows of row_length + 1 tokens (input + shifted target)."""
    width = row_length + 1
    rows, masks = [], []
    cur_ids: list[int] = []
    cur_mask: list[bool] = []
    for ids, mask in examples:
        if not ids or len(ids) > width:
            continue  # an episode longer than a row is dropped rather than cut mid-answer
        if len(cur_ids) + len(ids) > width:
            rows.append(cur_ids + [pad_id] * (width - len(cur_ids)))
            masks.append(cur_mask + [False] * (width - len(cur_mask)))
            cur_ids, cur_mask = [], []
        cur_ids += ids
        cur_mask += mask
    if cur_ids:
        rows.append(cur_ids + [pad_id] * (width - len(cur_ids)))
        masks.append(cur_mask + [False] * (width - len(cur_mask)))
    return np.array(rows, dtype=np.uint16), np.array(masks, dtype=bool)


def read_episodes(build_dir: Path, split: str, limit: int | None) -> list[dict]:
    from training.corpus.episodes import load_episodes

    out = []
    for episode in load_episodes(split, build_dir):
        out.append(episode)
        if limit and len(out) >= limit:
            break
    return out


def build(build_dir: Path, out: Path, tokenizer_file: Path, row_length: int, workers: int, max_chunk: int,
          max_distractors: int, limit: int | None, seed: int) -> dict:
    from tokenizers import Tokenizer

    pad_id = Tokenizer.from_file(str(tokenizer_file)).token_to_id("<|pad|>")
    out.mkdir(parents=True, exist_ok=True)
    summary = {}
    for split in ("train", "eval"):
        episodes = read_episodes(build_dir, split, limit if split == "train" else None)
        jobs = [(e, seed * 1_000_003 + i, max_chunk, max_distractors) for i, e in enumerate(episodes)]
        sessions = group_sessions(episodes, seed + (split == "eval"))
        session_jobs = [(s, seed * 1_000_003 + i, max_chunk, row_length + 1) for i, s in enumerate(sessions)]
        with ProcessPoolExecutor(workers, initializer=_init, initargs=(str(tokenizer_file),)) as pool:
            laid = list(tqdm(pool.map(lay_out, jobs, chunksize=256), total=len(jobs), desc=f"layout {split}"))
            multi = list(tqdm(pool.map(lay_out_multi, session_jobs, chunksize=64), total=len(session_jobs),
                              desc=f"sessions {split}"))
        tokens, mask = pack(laid, row_length, pad_id)
        np.savez(out / f"qa_{split}.npz", tokens=tokens, loss_mask=mask)
        multi_tokens, multi_mask = pack(multi, row_length, pad_id)
        np.savez(out / f"qa_multi_{split}.npz", tokens=multi_tokens, loss_mask=multi_mask)
        with np.load(build_dir / "pretrain" / f"{split}.npz") as data:
            stream = data["tokens"]
        n = len(stream) // (row_length + 1)
        np.savez(out / f"text_{split}.npz", tokens=stream[: n * (row_length + 1)].reshape(n, row_length + 1))
        n_repeat = n if split == "train" else max(1, n // 4)
        np.savez(out / f"text_repeat_{split}.npz", tokens=repeat_rows(stream, n_repeat, row_length, seed + 7))
        np.savez(out / f"text_repeat_short_{split}.npz",
                 tokens=repeat_rows(stream, n_repeat, row_length, seed + 13, segment=(8, 64), max_gap=32))
        mqar_tokens, mqar_mask = mqar_rows(n_repeat, row_length, seed + 11 + (split == "eval"), stream)
        np.savez(out / f"mqar_{split}.npz", tokens=mqar_tokens, loss_mask=mqar_mask)
        summary[split] = {"episodes": len(episodes), "qa_rows": len(tokens), "qa_target_tokens": int(mask.sum()),
                          "sessions": len(sessions), "sessions_kept": sum(bool(ids) for ids, _ in multi),
                          "multi_rows": len(multi_tokens), "multi_target_tokens": int(multi_mask.sum()),
                          "text_rows": n, "text_tokens": n * (row_length + 1), "repeat_rows": n_repeat}
        print(split, summary[split], flush=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--build-dir", type=Path, default=Path("data/build"), help="the corpus builder's output")
    p.add_argument("--tokenizer", type=Path, default=Path("data/model/tokenizer.json"))
    p.add_argument("--out", type=Path, default=Path("data/build/train"))
    p.add_argument("--row-length", type=int, default=1024)
    p.add_argument("--max-chunk", type=int, default=256)
    p.add_argument("--max-distractors", type=int, default=7)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--limit", type=int, default=None, help="at most this many training episodes")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO)
    build(a.build_dir, a.out, a.tokenizer, a.row_length, a.workers, a.max_chunk, a.max_distractors, a.limit, a.seed)


if __name__ == "__main__":
    main()
