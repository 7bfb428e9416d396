"""Train the project's byte-level BPE tokenizer on the train split of the corpus.

Byte-level: every UTF-8 byte sequence encodes and decodes back exactly (ByteLevel pre-tokenizer
without prefix space + ByteLevel decoder). Special tokens come first, with fixed ids.

    python -m training.corpus.tokenizer                # vocab 8192, writes data/build/tokenizer/ and data/tokenizer/
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from .text import DEFAULT_CAPS, select_docs

REPO = Path(__file__).resolve().parents[2]
log = logging.getLogger("training.corpus.tokenizer")

# Fixed order = fixed ids 0.. ; the prompt layout (app/) uses the markers, the reserved ones are
# spare so that new markers need no new tokenizer.
SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|pad|>",
    "<|passage|>",
    "<|question|>",
    "<|answer|>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
] + [f"<|reserved_{i}|>" for i in range(8)]


def iter_texts(corpus_files: list[Path], limit_bytes: int | None = None, caps: dict[str, int] | None = None
               ) -> Iterator[str]:
    """Texts of the corpus files; with ``caps`` the same per-source word caps as the pretraining stream."""
    n = 0
    for f in corpus_files:
        with gzip.open(f, "rt", encoding="utf-8") as fh:
            docs = [json.loads(line) for line in fh]
        if caps:
            docs = select_docs(docs, caps)
        for rec in docs:
            t = rec["text"]
            n += len(t)
            yield t
            if limit_bytes and n >= limit_bytes:
                return


def build_tokenizer(texts, vocab_size: int = 8192, min_frequency: int = 2):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def special_token_ids(tok) -> dict[str, int]:
    return {t: tok.token_to_id(t) for t in SPECIAL_TOKENS}


def save(tok, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    tok.save(str(out_dir / "tokenizer.json"))
    cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model": "byte-level BPE",
        "vocab_size": tok.get_vocab_size(),
        "bos_token": None,
        "eos_token": "<|endoftext|>",
        "pad_token": "<|pad|>",
        "special_tokens": special_token_ids(tok),
        "add_prefix_space": False,
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(cfg, indent=1) + "\n")


def load(path: Path | str | None = None):
    from tokenizers import Tokenizer

    p = Path(path) if path else REPO / "data" / "model" / "tokenizer.json"
    if p.is_dir():
        p = p / "tokenizer.json"
    return Tokenizer.from_file(str(p))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.corpus.tokenizer", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-dir", type=Path, default=REPO / "data" / "build")
    ap.add_argument("--vocab-size", type=int, default=8192)
    ap.add_argument("--min-frequency", type=int, default=2)
    ap.add_argument("--limit-mb", type=float, default=0, help="train on at most this much text (0 = all)")
    ap.add_argument("--copy-to", type=Path, help="also copy the tokenizer files here (e.g. a new model directory)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    t0 = time.time()
    files = [args.build_dir / "corpus" / "train.jsonl.gz"]
    texts = iter_texts(files, int(args.limit_mb * 1e6) if args.limit_mb else None, DEFAULT_CAPS)
    tok = build_tokenizer(texts, args.vocab_size, args.min_frequency)
    out = args.build_dir / "tokenizer"
    save(tok, out)
    if args.copy_to:
        args.copy_to.mkdir(parents=True, exist_ok=True)
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(out / name, args.copy_to / name)
    sample = "The -r option of rsync copies directories recursively. Ünïcödé → ok; 日本語 ✓"
    enc = tok.encode(sample)
    assert tok.decode(enc.ids, skip_special_tokens=False) == sample
    log.info("vocab %d, special %s, sample %d chars -> %d tokens, %.0fs", tok.get_vocab_size(),
             special_token_ids(tok), len(sample), len(enc.ids), time.time() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
