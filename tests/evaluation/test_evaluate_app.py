"""Layout evaluation: scoring, episodes, ranking, and the command that picks the default layout."""

from __future__ import annotations

import gzip
import json

from app import prompt as L
from evaluation.evaluate import evaluate, main, rank, read_episodes, score
from retrieval import HashEmbedder
from tests.app.app_testutil import scripted_tokens

EPISODES = [
    {"question": "What does -r do?", "answer": "It copies recursively.", "kind": "man_option",
     "passages": [{"text": "Tar makes archives.", "title": "tar"},
                  {"text": "The -r option: It copies recursively.", "title": "rsync"}]},
    {"question": "What is gzip?", "answer": "A compressor.", "kind": "man_name",
     "passages": ["Gzip is a compressor.", "Rsync copies."]},
]


def test_scores():
    assert score("The answer, exactly!", "answer exactly") == {"em": 1.0, "contains": 1.0, "f1": 1.0}
    s = score("it copies files recursively", "copies recursively")
    assert s["em"] == 0.0 and s["contains"] == 0.0 and 0.5 < s["f1"] < 1.0
    assert score("", "x") == {"em": 0.0, "contains": 0.0, "f1": 0.0}


def test_rank_puts_the_best_passage_first():
    ps = [L.PassageText("Tar makes archives."), L.PassageText("The -r option copies recursively.")]
    assert rank("What does the -r option do?", ps, HashEmbedder(64))[0] is ps[1]
    assert rank("q", ps, None) == ps


def test_evaluate_scores_every_layout(special_reader, special_tok, monkeypatch):
    end = special_tok.token_to_id(L.END)
    script = scripted_tokens(monkeypatch, [*special_tok.encode("It copies recursively.").ids, end])
    orig = special_reader.ingest
    monkeypatch.setattr(special_reader, "ingest", lambda *a: script.update(n=0) or orig(*a))
    res = evaluate(special_reader, EPISODES, L.LAYOUTS, HashEmbedder(64), max_new_tokens=40, progress=False)
    assert set(res) == set(L.LAYOUTS)
    for r in res.values():
        assert r["n"] == 2 and r["em"] == 0.5 and r["kinds"]["man_option"]["em"] == 1.0
    assert res["qpq"]["prompt_tokens"] > res["pq"]["prompt_tokens"]  # the question is read twice


def test_evaluate_command(tiny_model_dir, tmp_path, capsys):
    path = tmp_path / "eval.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.writelines(json.dumps(e) + "\n" for e in EPISODES)
    assert len(read_episodes(path, limit=1)) == 1
    out_json = tmp_path / "res.json"
    assert main(["--model", str(tiny_model_dir), "--episodes", str(path), "--rank", "given", "--max-new-tokens",
                 "3", "--settings", "layouts", "--quiet", "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "| layout |" in out and "man_option" in out
    assert set(json.loads(out_json.read_text())["results"]["layouts"]) == set(L.LAYOUTS)
    assert main(["--episodes", str(tmp_path / "none.jsonl")]) == 1
