"""Tokenize the corpus into pretraining streams.

Writes ``data/build/pretrain/{train,eval}.npz`` (``np.savez_compressed``) with

- ``tokens``: uint16 token ids, documents in a deterministic shuffled order, each followed by
  ``<|endoftext|>``;
- ``doc_offsets``: int64, start of each document in ``tokens`` (length n_docs + 1);
- ``passage_start``, ``passage_end`` (int64), ``passage_doc`` (int32): token spans of the passages
  (:func:`training.corpus.text.chunk_passages`, 200 words) of each document, tokenized one by one;
- ``{split}_docs.jsonl.gz``: ``{doc, id, title}`` per document
  (the id starts with the source package) for the documents in stream order;

and ``meta.json`` with token counts per split and per source package. Very large dictionary
sources are capped (``--max-words``) so that dictionary entries do not swamp the prose.

    python -m training.corpus.pretrain
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import random
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from .text import DEFAULT_CAPS, chunk_passages, select_docs, word_count
from .tokenizer import load

REPO = Path(__file__).resolve().parents[2]
log = logging.getLogger("training.corpus.pretrain")



def read_docs(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


PASSAGE_WORDS = 200  # passage size used by the episode builder; the stream is tokenized passage by passage


def doc_pieces(text: str, max_words: int = PASSAGE_WORDS) -> tuple[list[str], list[bool]]:
    """The document cut into its passages and the whitespace between them (``is_passage`` flags)."""
    pieces, flags = [], []
    pos = 0
    for s, e in chunk_passages(text, max_words=max_words):
        if s > pos:
            pieces.append(text[pos:s])
            flags.append(False)
        pieces.append(text[s:e])
        flags.append(True)
        pos = e
    if pos < len(text):
        pieces.append(text[pos:])
        flags.append(False)
    return pieces, flags


def tokenize_stream(docs: list[dict], tok, seed: int = 0, batch: int = 1024, max_words: int = PASSAGE_WORDS):
    """Token stream of ``docs`` in a shuffled order, ``<|endoftext|>`` after each document.

    Each passage (see :func:`doc_pieces`) is tokenized on its own, so ``tokens[start:end]`` of a
    passage equals the tokenization of the passage text alone: the episode builder refers to
    passages by these spans instead of storing their text a second time."""
    eot = tok.token_to_id("<|endoftext|>")
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    pieces_out = []
    offsets = [0]
    p_start, p_end, p_doc = [], [], []
    per_src: Counter = Counter()
    pos = 0
    for i in range(0, len(order), batch):
        idx = order[i : i + batch]
        flat, owner, flags = [], [], []
        for j in idx:
            ps, fl = doc_pieces(docs[j]["text"], max_words)
            flat.extend(ps)
            flags.extend(fl)
            owner.extend([j] * len(ps))
        encs = tok.encode_batch(flat, add_special_tokens=False)
        k = 0
        for j in idx:
            n_doc = 0
            while k < len(flat) and owner[k] == j:
                ids = encs[k].ids
                if flags[k]:
                    p_start.append(pos)
                    p_end.append(pos + len(ids))
                    p_doc.append(len(offsets) - 1)
                pieces_out.append(np.asarray(ids, dtype=np.uint16))
                pos += len(ids)
                n_doc += len(ids)
                k += 1
            pieces_out.append(np.asarray([eot], dtype=np.uint16))
            pos += 1
            offsets.append(pos)
            per_src[docs[j]["source_package"]] += n_doc + 1
    tokens = np.concatenate(pieces_out) if pieces_out else np.zeros(0, np.uint16)
    doc_order = [docs[j] for j in order]
    passages = {"passage_start": np.asarray(p_start, np.int64), "passage_end": np.asarray(p_end, np.int64),
                "passage_doc": np.asarray(p_doc, np.int32)}
    return tokens, np.asarray(offsets, dtype=np.int64), passages, doc_order, per_src


def parse_caps(items: list[str] | None) -> dict[str, int]:
    if items is None:
        return dict(DEFAULT_CAPS)
    caps = {}
    for it in items:
        k, _, v = it.partition("=")
        caps[k] = int(float(v))
    return caps


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.corpus.pretrain", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-dir", type=Path, default=REPO / "data" / "build")
    ap.add_argument("--tokenizer", type=Path, default=None, help="default: <build-dir>/tokenizer/tokenizer.json")
    ap.add_argument("--max-words", nargs="*", metavar="PACKAGE=WORDS",
                    help=f"word caps per source package (default {DEFAULT_CAPS}); pass none to disable")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    t0 = time.time()
    tok = load(args.tokenizer or args.build_dir / "tokenizer" / "tokenizer.json")
    caps = parse_caps(args.max_words)
    out = args.build_dir / "pretrain"
    out.mkdir(parents=True, exist_ok=True)
    meta = {"tokenizer_vocab": tok.get_vocab_size(), "caps_words": caps, "passage_words": PASSAGE_WORDS,
            "splits": {}}
    for split in ("train", "eval"):
        docs = select_docs(read_docs(args.build_dir / "corpus" / f"{split}.jsonl.gz"), caps)
        tokens, offsets, passages, doc_order, per_src = tokenize_stream(docs, tok, seed=args.seed)
        assert tokens.max(initial=0) < 65536
        np.savez_compressed(out / f"{split}.npz", tokens=tokens, doc_offsets=offsets, **passages)
        with gzip.open(out / f"{split}_docs.jsonl.gz", "wt", encoding="utf-8") as fh:
            for n, d in enumerate(doc_order):
                fh.write(json.dumps({"doc": n, "id": d["id"], "title": d["title"]}, ensure_ascii=False) + "\n")
        size = (out / f"{split}.npz").stat().st_size
        meta["splits"][split] = {"docs": len(docs), "tokens": int(tokens.size),
                                 "passages": int(passages["passage_start"].size),
                                 "words": int(sum(word_count(d["text"]) for d in docs)),
                                 "npz_bytes": size, "tokens_per_source": dict(per_src.most_common())}
        log.info("%s: %d docs, %d tokens, %.1f MB compressed", split, len(docs), tokens.size, size / 1e6)
    meta["elapsed_s"] = time.time() - t0
    (out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
