"""Tokenizer, pretraining stream and episodes on a tiny hand-made corpus."""

import gzip
import json
import random

import numpy as np
import pytest

from training.corpus import episodes as ep
from training.corpus import pretrain, tokenizer
from training.corpus.text import split_of

UNICODE_SAMPLES = [
    "plain ASCII text with  two spaces and a tab\tand newline\n",
    "Ünïcödé — “quotes”, ellipsis…, naïve café, Ærøskøbing",
    "日本語のテキスト、中文文本, 한국어 텍스트",
    "emoji 🚀🔥👍🏽 and ZWJ 👩‍💻 and flags 🇩🇪",
    "combining e\u0301 vs \u00e9, math ∑∫√∞ ≤ ≥, arrows → ←, box ┌─┐",
    "\x00 control \x1b[31m escape \u2028 line sep \ufeff bom",
    "<|endoftext|> is also just text here",
]


def _train_tok(texts, vocab=400):
    return tokenizer.build_tokenizer(texts, vocab_size=vocab, min_frequency=1)


def test_tokenizer_roundtrip_multibyte():
    tok = _train_tok(["the quick brown fox jumps over the lazy dog " * 50] + UNICODE_SAMPLES)
    ids = tokenizer.special_token_ids(tok)
    assert ids["<|endoftext|>"] == 0 and ids["<|pad|>"] == 1 and ids["<|passage|>"] == 2
    assert ids["<|question|>"] == 3 and ids["<|answer|>"] == 4
    for s in UNICODE_SAMPLES[:-1]:
        enc = tok.encode(s, add_special_tokens=False)
        assert tok.decode(enc.ids, skip_special_tokens=False) == s
    rnd = random.Random(0)
    for _ in range(50):
        s = "".join(chr(rnd.choice([rnd.randint(32, 126), rnd.randint(0x80, 0x7FF), rnd.randint(0x800, 0xD7FF),
                                    rnd.randint(0x10000, 0x10FFFF)])) for _ in range(40))
        assert tok.decode(tok.encode(s).ids, skip_special_tokens=False) == s


def test_committed_tokenizer_roundtrip():
    from pathlib import Path

    p = Path(tokenizer.REPO) / "data" / "model" / "tokenizer.json"
    if not p.exists():
        pytest.skip("committed tokenizer not present")
    tok = tokenizer.load(p)
    assert tok.get_vocab_size() == 8192
    assert tokenizer.special_token_ids(tok) == {t: i for i, t in enumerate(tokenizer.SPECIAL_TOKENS)}
    cfg = json.loads((p.parent / "tokenizer_config.json").read_text())
    assert cfg["special_tokens"]["<|endoftext|>"] == 0
    for s in UNICODE_SAMPLES[:-1]:
        assert tok.decode(tok.encode(s).ids, skip_special_tokens=False) == s


# --------------------------------------------------------------------------- fake corpus

WORDS = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda omicron sigma tau upsilon phi chi psi "
         "omega river mountain cloud stone garden window lantern harbor meadow").split()


def _prose(rnd, n):
    return " ".join(rnd.choice(WORDS) for _ in range(n)).capitalize() + "."


def _fake_corpus(root, n_words=60, n_man=30):
    """Dictionary-like and manual-page-like documents with QA items, split by the real split rule."""
    rnd = random.Random(1)
    docs = []
    for i in range(n_words):
        head = f"word{i}"
        definition = f"a kind of {rnd.choice(WORDS)} found near the {rnd.choice(WORDS)} number {i}"
        text = f"{head}\n\n1. (noun) {definition}; \"{_prose(rnd, 6)}\""
        docs.append({"id": f"wordnet-base/wordnet/{head}", "source_package": "wordnet-base", "title": head,
                     "text": text, "licence": "WordNet", "split_key": f"word:{head}", "format": "wordnet",
                     "qa": [{"kind": "dict_definition", "anchor": head, "answer": definition,
                             "question": f'What does the word "{head}" mean?'}]})
    for i in range(n_man):
        page = f"tool{i}"
        blocks = [f"NAME\n\n{page} - run tool number {i}", "DESCRIPTION", _prose(rnd, 40)]
        qa = []
        for o in "abcdef":
            ans = f"make {page} do the {o} thing with {rnd.choice(WORDS)} {rnd.choice(WORDS)}."
            blocks.append(f"-{o}, --opt-{o}\n  {ans} {_prose(rnd, 30)}")
            qa.append({"kind": "man_option", "anchor": f"-{o}, --opt-{o}", "answer": ans,
                       "question": f"What does the -{o} option of {page} do?"})
        blocks.append("DETAILS\n\n" + "\n\n".join(_prose(rnd, 120) for _ in range(3)))
        docs.append({"id": f"pkg/man/{page}.1", "source_package": "pkg", "title": page, "text": "\n\n".join(blocks),
                     "licence": "GPL", "split_key": f"man:{page}", "format": "man", "qa": qa})
    for d in docs:
        d["split"] = split_of(d["split_key"], 0.2)
    (root / "corpus").mkdir(parents=True)
    for sp in ("train", "eval"):
        with gzip.open(root / "corpus" / f"{sp}.jsonl.gz", "wt", encoding="utf-8") as fh:
            for d in docs:
                if d["split"] == sp:
                    fh.write(json.dumps(d) + "\n")
    return docs


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("build")
    docs = _fake_corpus(root)
    assert {d["split"] for d in docs} == {"train", "eval"}
    assert tokenizer.main(["--build-dir", str(root), "--vocab-size", "600", "--copy-to", str(root / "tokcopy")]) == 0
    assert pretrain.main(["--build-dir", str(root), "--max-words"]) == 0
    old_caps = dict(ep.EVAL_CAPS)
    ep.EVAL_CAPS["synthetic_kv"] = 40
    try:
        assert ep.main(["--build-dir", str(root), "--train-scale", "0.002", "--max-distractors", "6",
                        "--train-extra-pool", "50", "--eval-extra-pool", "20"]) == 0
    finally:
        ep.EVAL_CAPS.clear()
        ep.EVAL_CAPS.update(old_caps)
    return root, docs


def test_pretrain_stream(built):
    root, docs = built
    tok = tokenizer.load(root / "tokenizer" / "tokenizer.json")
    for sp in ("train", "eval"):
        z = np.load(root / "pretrain" / f"{sp}.npz")
        tokens, offs = z["tokens"], z["doc_offsets"]
        assert tokens.dtype == np.uint16 and offs[-1] == tokens.size
        assert (tokens[offs[1:] - 1] == 0).all()  # <|endoftext|> closes every document
        with gzip.open(root / "pretrain" / f"{sp}_docs.jsonl.gz", "rt") as fh:
            order = [json.loads(line)["id"] for line in fh]
        by_id = {d["id"]: d for d in docs}
        assert {by_id[i]["split"] for i in order} == {sp}
        for n, did in enumerate(order):
            text = tok.decode(tokens[offs[n] : offs[n + 1] - 1].tolist(), skip_special_tokens=False)
            assert text == by_id[did]["text"]


def test_episode_answers_are_verbatim_in_gold_only(built):
    root, _ = built
    tok = tokenizer.load(root / "tokenizer" / "tokenizer.json")
    for sp in ("train", "eval"):
        eps = list(ep.load_episodes(sp, root))
        assert eps, sp
        kinds = {e["kind"] for e in eps}
        assert {"dict_wordnet", "man_option", "synthetic_kv"} <= kinds
        for e in eps:
            assert e["split"] == sp
            assert e["answer"] in e["passages"][e["gold"]]["text"]
            for j, p in enumerate(e["passages"]):
                if j != e["gold"]:
                    assert e["answer"] not in p["text"]
            assert 2 <= len(e["passages"]) <= 7
            assert len(tok.encode(e["answer"]).ids) <= ep.MAX_ANSWER_TOKENS


def test_eval_never_in_train(built):
    root, docs = built
    tr = list(ep.load_episodes("train", root))
    ev = list(ep.load_episodes("eval", root))
    assert not {e["question"] for e in ev} & {e["question"] for e in tr}
    eval_docs = {d["id"] for d in docs if d["split"] == "eval"}
    for e in tr:
        for p in e["passages"]:
            assert p["doc_id"] not in eval_docs
    for e in ev:
        for p in e["passages"]:
            assert p["doc_id"] in eval_docs or p["doc_id"].startswith("synthetic/eval/")


def test_passage_store_tokens_match_text(built):
    root, _ = built
    store = ep.PassageStore("train", root)
    tok = store.tok
    e = next(iter(ep.load_episodes("train", root)))
    for pid, p in zip(e["passage_ids"], e["passages"], strict=True):
        assert tok.decode(store.tokens(pid).tolist(), skip_special_tokens=False) == p["text"]
