"""Write ``data/samples``: a few held-out (eval split) documents and questions about them.

    python -m training.corpus.samples

The documents come from the eval split only (never trained on); ``manifest.json`` records each
file's document id and split key, and the tests check that the split key hashes to "eval".
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import sys
from pathlib import Path

from .text import split_of

REPO = Path(__file__).resolve().parents[2]

# (document id, file name, how many questions to take, original file to copy instead of the text)
SAMPLES = [
    ("grep/man/grep.1", "grep.1.txt", 3, None),
    ("gzip/man/gzip.1", "gzip.1.txt", 2, None),
    ("python3.11-doc/usr/share/doc/python3.11/html/library/zlib.html", "python-zlib.html", 3,
     "python3.11-doc/usr/share/doc/python3.11/html/library/zlib.html"),
    ("python3.11-doc/usr/share/doc/python3.11/html/howto/sorting.html", "python-sorting-howto.txt", 2, None),
    ("postgresql-doc-15/usr/share/doc/postgresql-doc-15/html/sql-createindex.html", "postgresql-create-index.txt",
     2, None),
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.corpus.samples", description=__doc__)
    ap.add_argument("--build-dir", type=Path, default=REPO / "data" / "build")
    ap.add_argument("--out", type=Path, default=REPO / "data" / "samples")
    args = ap.parse_args(argv)
    docs = {}
    with gzip.open(args.build_dir / "corpus" / "eval.jsonl.gz", "rt", encoding="utf-8") as fh:
        for line in fh:
            d = json.loads(line)
            docs[d["id"]] = d
    with gzip.open(args.build_dir / "corpus" / "train.jsonl.gz", "rt", encoding="utf-8") as fh:
        train_ids = {json.loads(line)["id"] for line in fh}
    args.out.mkdir(parents=True, exist_ok=True)
    manifest, questions = [], []
    for doc_id, fname, nq, original in SAMPLES:
        d = docs[doc_id]
        assert d["split"] == "eval" and doc_id not in train_ids and split_of(d["split_key"]) == "eval"
        if original:
            shutil.copy(args.build_dir / "root" / original, args.out / fname)
        else:
            (args.out / fname).write_text(f"{d['title']}\n\n{d['text']}\n", encoding="utf-8")
        manifest.append({"file": fname, "doc_id": doc_id, "split_key": d["split_key"], "split": "eval",
                         "title": d["title"], "source_package": d["source_package"], "licence": d["licence"]})
        # prefer option/API questions, then sections; spread over the document
        qa = sorted(d["qa"], key=lambda q: ("man_option", "api", "man_name", "section").index(q["kind"])
                    if q["kind"] in ("man_option", "api", "man_name", "section") else 9)
        step = max(1, len(qa) // max(1, nq))
        picked = qa[::step][:nq]
        for q in picked:
            questions.append({"question": q["question"], "answer": q["answer"], "file": fname, "kind": q["kind"]})
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    (args.out / "questions.json").write_text(json.dumps(questions, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {len(manifest)} documents and {len(questions)} questions to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
