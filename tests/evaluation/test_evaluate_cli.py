"""The evaluation end to end: the RetNet answerer, load_answerer's dispatch, the command line."""

from __future__ import annotations

import gzip
import json
import sys
import types
from pathlib import Path

import pytest
import torch

from app import prompt as L
from app.decoder import AnswerStream
from app.errors import ModelNotFoundError
from evaluation.answerers import Answerer, RetNetAnswerer, load_answerer
from evaluation.evaluate import SETTINGS, main
from retnet import load_tokenizer
from tests.helpers import make_model

SHIPPED_TOKENIZER_DIR = Path(__file__).resolve().parents[2] / "data" / "model"

EPISODES = [
    {"id": "t1", "kind": "man_option", "question": "What does the -r option of rsync do?",
     "answer": "It copies directories recursively.", "gold": 1, "closed_book_control": False,
     "passages": [{"text": "Tar stores many files in one archive.", "title": "tar: archiver", "doc_id": "man/tar"},
                  {"text": "The -r option: It copies directories recursively.", "title": "rsync: copy",
                   "doc_id": "man/rsync"}]},
    {"id": "t2", "kind": "synthetic_kv", "question": "What is the access code of the locker C77?", "answer": "9624",
     "gold": 0, "closed_book_control": True,
     "passages": [{"text": "The access code of the locker C77 is 9624.", "title": "Registry sheet 3",
                   "doc_id": "synthetic/eval/3"},
                  {"text": "The owner of the boat Kalo is Ada Brandt.", "title": "Registry sheet 4",
                   "doc_id": "synthetic/eval/4"}]},
    {"id": "t3", "kind": "dict_gcide", "question": 'What does the word "Zebrine" mean?', "answer": "Like a zebra",
     "gold": 0, "closed_book_control": False,
     "passages": [{"text": "Zebrine, a. Like a zebra.", "title": "Zebrine", "doc_id": "gcide/zebrine"},
                  {"text": "Zebu, n. An Asiatic ox.", "title": "Zebu", "doc_id": "gcide/zebu"},
                  {"text": "Gzip compresses files with Lempel-Ziv coding.", "title": "gzip: compress",
                   "doc_id": "man/gzip"}]},
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny randomly initialised RetNet saved with the shipped tokenizer."""
    tok = load_tokenizer(SHIPPED_TOKENIZER_DIR)
    assert tok is not None, "data/model/tokenizer.json is missing"
    path = tmp_path_factory.mktemp("tiny-retnet")
    make_model(seed=2, dtype=torch.float32, vocab_size=tok.get_vocab_size()).save_pretrained(path, tokenizer=tok)
    return path


@pytest.fixture
def episodes_file(tmp_path):
    path = tmp_path / "eval.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.writelines(json.dumps(e) + "\n" for e in EPISODES)
    return path


class FakeTransformer:
    """Stands in for evaluation.transformer_answerer.TransformerAnswerer: answers with the last passage's last word."""

    made: list = []

    def __init__(self, model_dir, device="cpu"):
        self.name = "transformer"
        self.args = (model_dir, device)
        self.calls = []
        FakeTransformer.made.append(self)

    def answer(self, question, passages, layout, max_new_tokens):
        self.calls.append((question, [p.text for p in passages], layout))
        return (passages[-1].text.split()[-1] if passages else "unknown"), 3 + len(passages)


@pytest.fixture
def transformer_dir(tmp_path, monkeypatch):
    d = tmp_path / "transformer"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "transformer-baseline", "hidden_size": 32}))
    fake = types.SimpleNamespace(TransformerAnswerer=FakeTransformer)
    monkeypatch.setitem(sys.modules, "evaluation.transformer_answerer", fake)
    FakeTransformer.made = []
    return d


def test_retnet_answerer_answers_as_the_app_does(model_dir):
    a = RetNetAnswerer(model_dir)
    assert isinstance(a, Answerer) and a.reader.device.type == "cpu" and a.reader.cache is None
    reader, q = a.reader, EPISODES[0]["question"]
    passages = [L.PassageText(p["text"], p["title"]) for p in EPISODES[0]["passages"]]
    for layout in L.LAYOUTS:
        text, n = a.answer(q, passages, layout, 6)
        turn = reader.layout_turn(q, passages, first_turn=True, layout=layout)
        ing = reader.ingest(turn, reader.new_state(), reader.root_key())
        cfg = reader.sampling_config(max_new_tokens=6, temperature=0.0)
        stream = AnswerStream(reader, ing.state, ing.logits, ing.key, sampling=cfg)
        assert (text, n) == (stream.result().text, len(turn.prompt_ids)) and len(stream.token_ids) <= 6
    _, n_closed = a.answer(q, [], "qpq", 4)
    assert n_closed == len(L.encode_turn(reader.tokenizer, q, [], "qpq").prompt_ids)
    assert n_closed < a.answer(q, passages, "qpq", 4)[1]


def test_load_answerer_dispatches_on_model_type(model_dir, transformer_dir, tmp_path):
    assert isinstance(load_answerer(model_dir), RetNetAnswerer)
    t = load_answerer(transformer_dir, device="cuda:1")
    assert isinstance(t, FakeTransformer) and t.args == (transformer_dir, "cuda:1")
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        load_answerer(tmp_path / "nowhere")
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        load_answerer(tmp_path)


def test_command_end_to_end_side_by_side(model_dir, transformer_dir, episodes_file, tmp_path, capsys):
    out = {ext: tmp_path / f"report.{ext}" for ext in ("json", "md", "png")}
    rc = main(["--model", str(model_dir), "--model", str(transformer_dir), "--episodes", str(episodes_file),
               "--settings", *SETTINGS, "--distractors", "1", "2", "--mqar-pairs", "1", "4", "--mqar-queries", "2",
               "--max-new-tokens", "3", "--quiet", "--json", str(out["json"]), "--markdown", str(out["md"]),
               "--plot", str(out["png"])])
    assert rc == 0
    report = json.loads(out["json"].read_text())
    names = [m["name"] for m in report["models"]]
    assert len(names) == 2 and names[1] == "transformer" and report["models"][1]["model_type"] == "transformer-baseline"
    assert list(report["results"]) == list(SETTINGS)
    assert set(report["results"]["layouts"]) == set(L.LAYOUTS)
    assert list(report["results"]["distractors"]) == ["1", "2"] and list(report["results"]["mqar"]) == ["1", "4"]
    expected_n = {"layouts": 3, "closed-book": 3, "distractors": 3, "mqar": 2}
    for setting, points in report["results"].items():
        for point in points.values():
            assert set(point["models"]) == set(names)
            for s in point["models"].values():
                assert s["n"] == expected_n[setting] and len(s["records"]) == s["n"]
                assert s["f1"] == pytest.approx(sum(r["f1"] for r in s["records"]) / s["n"])
    # the fake transformer saw exactly what the distractor setting promises: gold + N, never the answer
    fake = FakeTransformer.made[-1]
    for q, texts, layout in fake.calls:
        e = next((e for e in EPISODES if e["question"] == q), None)
        if e is None:
            continue  # an MQAR question
        gold = e["passages"][e["gold"]]["text"]
        assert layout in L.LAYOUTS and (not texts or gold in texts)
    records = report["results"]["distractors"]["2"]["models"]["transformer"]["records"]
    assert [r["passages"] for r in records] == [3, 3, 3] and [r["prompt_tokens"] for r in records] == [6, 6, 6]
    closed = report["results"]["closed-book"]["closed-book"]["models"]
    assert all(r["passages"] == 0 for s in closed.values() for r in s["records"])
    assert closed["transformer"]["groups"]["closed_book_control"]["n"] == 1
    assert [t["name"] for t in report["targets"]] == ["token F1 with 4 distractors", "closed-book token F1"]
    assert report["targets"][0]["values"][names[0]]["met"] is None  # 4 distractors were not run
    assert report["targets"][1]["values"]["transformer"]["met"] == (closed["transformer"]["f1"] <= 0.15)
    md = out["md"].read_text()
    assert md.strip() == capsys.readouterr().out.strip()
    for needle in ("## Targets", "closed_book_control", "| distractors |", "| key-value pairs |", "Token F1 by kind",
                   f"{names[0]} EM / F1", "transformer EM / F1", "not run", "Best layout by token F1"):
        assert needle in md, needle
    assert out["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_command_errors(model_dir, episodes_file, tmp_path, capsys):
    assert main(["--episodes", str(tmp_path / "none.jsonl.gz"), "--model", str(model_dir)]) == 1
    assert "no episodes file" in capsys.readouterr().err
    assert main(["--episodes", str(episodes_file), "--model", str(tmp_path / "no-model")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(["--episodes", str(episodes_file), "--model", str(model_dir), "--pool", str(tmp_path / "p.gz")]) == 1
    assert "no passage pool" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["--episodes", str(episodes_file), "--model", str(model_dir), "--device", "cuda"]) == 1
        assert "CUDA is not available" in capsys.readouterr().err


def test_same_model_twice_gets_two_columns(model_dir, episodes_file, tmp_path):
    out = tmp_path / "r.json"
    assert main(["--model", str(model_dir), "--model", str(model_dir), "--episodes", str(episodes_file),
                 "--settings", "closed-book", "--max-new-tokens", "2", "--quiet", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    names = [m["name"] for m in report["models"]]
    assert len(set(names)) == 2
    s = report["results"]["closed-book"]["closed-book"]["models"]
    assert s[names[0]]["records"][0]["output"] == s[names[1]]["records"][0]["output"]  # greedy: deterministic


def test_reports_of_separate_runs_merge_side_by_side(model_dir, transformer_dir, episodes_file, tmp_path, capsys):
    """Two single-model runs merge into what one two-model run would report (models renamed)."""
    from evaluation.report import main as report_main

    common = ["--episodes", str(episodes_file), "--settings", "closed-book", "distractors", "--distractors", "1",
              "--max-new-tokens", "3", "--quiet"]
    for name, d in (("a", model_dir), ("b", transformer_dir)):
        assert main(["--model", str(d), *common, "--json", str(tmp_path / f"{name}.json")]) == 0
    assert main(["--model", str(model_dir), "--model", str(transformer_dir), *common,
                 "--json", str(tmp_path / "both.json")]) == 0
    capsys.readouterr()
    out = tmp_path / "merged.json"
    assert report_main([f"reader={tmp_path / 'a.json'}", f"baseline={tmp_path / 'b.json'}", "--json", str(out),
                        "--markdown", str(tmp_path / "merged.md")]) == 0
    merged, both = json.loads(out.read_text()), json.loads((tmp_path / "both.json").read_text())
    assert [m["name"] for m in merged["models"]] == ["reader", "baseline"]
    rename = dict(zip([m["name"] for m in both["models"]], ["reader", "baseline"], strict=True))
    for setting, points in both["results"].items():
        for label, point in points.items():
            got = merged["results"][setting][label]["models"]
            assert set(got) == {"reader", "baseline"}
            for name, summary in point["models"].items():
                assert got[rename[name]]["f1"] == summary["f1"] and got[rename[name]]["n"] == summary["n"]
    assert [t["values"]["baseline"]["value"] for t in merged["targets"]] == \
        [t["values"]["transformer"]["value"] for t in both["targets"]]
    assert "| reader EM / F1 | baseline EM / F1 |" in (tmp_path / "merged.md").read_text()


def test_reports_of_other_settings_or_same_names_do_not_merge(tmp_path):
    from evaluation.report import merge_reports

    report = {"config": {"seed": 0, "seconds": 1.0}, "models": [{"name": "m"}], "results": {}}
    other = {**report, "config": {"seed": 1, "seconds": 2.0}}
    with pytest.raises(ValueError, match=r"other settings \(seed\)"):
        merge_reports([report, other])
    with pytest.raises(ValueError, match="two models are named 'm'"):
        merge_reports([report, {**report, "config": {"seed": 0, "seconds": 5.0}}])
    assert [m["name"] for m in merge_reports([report, report], ["x", "y"])["models"]] == ["x", "y"]
