"""data/samples: held-out documents only, and every expected answer is in its document."""

import json
from pathlib import Path

from training.corpus.extract import html_to_doc
from training.corpus.text import split_of

SAMPLES = Path(__file__).resolve().parents[2] / "data" / "samples"


def _text(path: Path) -> str:
    if path.suffix == ".html":
        return html_to_doc(path, "pkg", path.name, "", "div.body")["text"]
    return path.read_text(encoding="utf-8")


def test_samples_are_eval_documents_and_small():
    manifest = json.loads((SAMPLES / "manifest.json").read_text())
    assert 3 <= len(manifest) <= 5
    total = 0
    for m in manifest:
        assert m["split"] == "eval"
        assert split_of(m["split_key"]) == "eval", m  # the corpus split rule puts it in eval
        total += (SAMPLES / m["file"]).stat().st_size
    assert total < 200_000


def test_sample_answers_are_in_their_documents():
    questions = json.loads((SAMPLES / "questions.json").read_text())
    files = {m["file"] for m in json.loads((SAMPLES / "manifest.json").read_text())}
    assert len(questions) >= 10
    for q in questions:
        assert q["file"] in files
        assert q["answer"] in _text(SAMPLES / q["file"]), q
