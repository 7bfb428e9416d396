"""Token streams for uptraining a converted SmolLM2: documentation text plus ChatML reading turns.

    python -m training.uptrain_data --corpus data/build/corpus --gguf PATH --out data/build/uptrain

Reads the corpus built by `training.corpus.build` (only the Debian packages of
`training/corpus/sources.py`; its train/eval split is kept: eval documents never enter training),
tokenizes with the GGUF's own tokenizer and writes:

- train.npy / eval.npy: flat uint16 token streams, documents separated by <|endoftext|>;
  dictionary packages (short entries, little prose) are capped at `dict_share` of the tokens;
- a `chat_share` of the train stream is ChatML reading turns built from the corpus' own
  question/answer annotations: a system line, the passage holding the answer among distractor
  passages, the question, and the annotated answer as the assistant turn;
- rag_prompts.json: a few such prompts from eval documents (without answers), for side-by-side
  greedy answers; meta.json: counts.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
from pathlib import Path

import numpy as np

DICT_PACKAGES = ("dict-", "wordnet-base")
SYSTEM = "Answer the question using only the passages below. Quote the passage when you can."
PASSAGE_CHARS = 700


def read_docs(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def is_dict(doc: dict) -> bool:
    return doc["source_package"].startswith(DICT_PACKAGES)


def passage_around(text: str, needle: str, rng: random.Random) -> str | None:
    """A window of the text holding `needle` (None when the answer is not literally there)."""
    at = text.find(needle)
    if at < 0:
        return None
    start = max(0, at - rng.randint(0, PASSAGE_CHARS - min(len(needle), PASSAGE_CHARS)))
    return text[start:start + PASSAGE_CHARS].strip()


def chatml(passages: list[str], question: str, answer: str | None, system: bool = True) -> str:
    """One ChatML reading turn. A session's later turns carry no system line (system=False)."""
    body = "\n\n".join(f"[{i + 1}] {p}" for i, p in enumerate(passages))
    head = f"<|im_start|>system\n{SYSTEM}<|im_end|>\n" if system else ""
    turn = (f"{head}<|im_start|>user\nPassages:\n{body}\n\n"
            f"Question: {question}<|im_end|>\n<|im_start|>assistant\n")
    return turn if answer is None else turn + f"{answer}<|im_end|>\n"


def reading_turns(docs: list[dict], rng: random.Random, limit: int, with_answer: bool = True) -> list[dict]:
    """ChatML turns from documents' QA annotations: the answer's passage among 1-3 distractors."""
    pool = [d for d in docs if len(d["text"]) > 200]
    out = []
    candidates = [(d, qa) for d in docs if not is_dict(d) for qa in (d.get("qa") or [])]
    candidates += [(d, qa) for d in docs if is_dict(d) for qa in (d.get("qa") or [])][: len(candidates) // 3]
    rng.shuffle(candidates)
    for d, qa in candidates:
        if len(out) >= limit:
            break
        gold = passage_around(d["text"], qa["answer"], rng)
        if gold is None:
            continue
        others = [o["text"][:PASSAGE_CHARS].strip() for o in rng.sample(pool, rng.randint(1, 3)) if o["id"] != d["id"]]
        passages = others + [gold]
        rng.shuffle(passages)
        out.append({"id": d["id"], "kind": qa["kind"], "question": qa["question"], "answer": qa["answer"],
                    "text": chatml(passages, qa["question"], qa["answer"] if with_answer else None)})
    return out


def tokenize_stream(texts: list[str], tok, eos_id: int, budget: int) -> np.ndarray:
    ids: list[int] = []
    for start in range(0, len(texts), 512):
        for enc in tok.encode_batch(texts[start:start + 512]):
            ids.extend(enc.ids)
            ids.append(eos_id)
        if len(ids) >= budget:
            break
    return np.asarray(ids[:budget], dtype=np.uint16)


def build(corpus: Path, gguf: Path, out: Path, train_tokens: int, eval_tokens: int, dict_share: float,
          chat_share: float, n_prompts: int, seed: int) -> dict:
    from retnet.convert.llama_gguf import gguf_tokenizer

    tok = gguf_tokenizer(gguf)
    eos = tok.token_to_id("<|endoftext|>")
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    train = read_docs(corpus / "train.jsonl.gz")
    rng.shuffle(train)
    chat_budget = int(train_tokens * chat_share)
    dict_budget = int(train_tokens * dict_share)
    # About 250 tokens per turn; build a few more than needed.
    turns = [t["text"] for t in reading_turns(train, rng, limit=chat_budget // 200 + 16)]
    chat = tokenize_stream(turns, tok, eos, chat_budget)
    dicts = tokenize_stream([d["text"] for d in train if is_dict(d)], tok, eos, dict_budget)
    prose = tokenize_stream([d["text"] for d in train if not is_dict(d)], tok, eos,
                            train_tokens - len(chat) - len(dicts))
    # Interleave in blocks of ~4k tokens so any training window sees one kind mostly, all kinds overall.
    blocks = [s[i:i + 4096] for s in (chat, dicts, prose) for i in range(0, len(s), 4096)]
    rng.shuffle(blocks)
    np.save(out / "train.npy", np.concatenate(blocks))
    evals = read_docs(corpus / "eval.jsonl.gz")
    eval_prose = tokenize_stream([d["text"] for d in evals if not is_dict(d)], tok, eos, eval_tokens)
    np.save(out / "eval.npy", eval_prose)
    prompts = reading_turns([d for d in evals if not is_dict(d)] + [d for d in evals if is_dict(d)][:200],
                            random.Random(seed + 1), n_prompts, with_answer=False)
    (out / "rag_prompts.json").write_text(json.dumps(prompts, indent=1, ensure_ascii=False))
    meta = {"train_tokens": int(sum(len(b) for b in blocks)), "chat_tokens": len(chat), "dict_tokens": len(dicts),
            "prose_tokens": len(prose), "eval_tokens": len(eval_prose), "rag_prompts": len(prompts),
            "chat_turns": len(turns), "seed": seed, "gguf": gguf.name}
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    return meta


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=Path("data/build/corpus"))
    ap.add_argument("--gguf", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=Path("data/build/uptrain"))
    ap.add_argument("--train-tokens", type=int, default=12_000_000)
    ap.add_argument("--eval-tokens", type=int, default=262_144)
    ap.add_argument("--dict-share", type=float, default=0.1)
    ap.add_argument("--chat-share", type=float, default=0.2)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    print(json.dumps(build(args.corpus, args.gguf, args.out, args.train_tokens, args.eval_tokens, args.dict_share,
                           args.chat_share, args.prompts, args.seed)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
