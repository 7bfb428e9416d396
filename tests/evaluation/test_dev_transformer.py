"""evaluation.dev_transformer: the source Transformer answering dev questions in the reader's ChatML layout."""

from __future__ import annotations

import pytest

from app.chatml import CHAT_SYSTEM
from evaluation import dev_transformer as dt
from evaluation.devset import Question


def _q(qid: str, text: str, conversation: str | None = None, turn: int | None = None) -> Question:
    return Question(qid, "lookup", text, ("a.txt",), ("blue",), ("blue",), conversation, turn)


def _passages(q: Question) -> tuple[list[dict], float]:
    texts = [f"best passage for {q.id}", f"second passage for {q.id}"]  # as retrieved: best first
    return [{"passage_id": i, "doc": "a.txt", "score": 1.0 - i / 10, "text": t} for i, t in enumerate(texts)], 0.01


def test_turns_use_the_app_layout_and_a_conversation_keeps_its_history(monkeypatch):
    prompts: list[str] = []

    def fake_answer(teacher, prompt, max_new):
        prompts.append(prompt)
        return f"answer {len(prompts)} is blue", {"retrieve_s": 0.0, "first_token_s": 0.5, "total_s": 1.0,
                                                 "tokens_per_s": 10.0}, 4

    monkeypatch.setattr(dt, "answer_turn", fake_answer)
    todo = [[_q("s1", "what colour?")], [_q("c1", "first?", "conv", 1), _q("c2", "and then?", "conv", 2)]]
    records = dt.run_transformer(None, todo, _passages, max_new=16)
    assert [r["id"] for r in records] == ["s1", "c1", "c2"] and {r["system"] for r in records} == {dt.SYSTEM_NAME}
    single, first, second = prompts
    assert single.count(CHAT_SYSTEM) == 1
    assert single.endswith("Question: what colour?<|im_end|>\n<|im_start|>assistant\n")
    assert single.index("second passage for s1") < single.index("best passage for s1")  # most relevant last
    assert second.startswith(first + "answer 2 is blue<|im_end|>\n")  # turn 1, its answer, then turn 2
    assert second.count(CHAT_SYSTEM) == 1 and "best passage for c2" in second
    assert all(r["hit"] for r in records) and records[0]["timings"]["first_token_s"] == pytest.approx(0.51)
    assert records[0]["stop_reason"] == "stop" and records[0]["answer_tokens"] == 4


def test_a_tiny_transformer_answers_with_timings(tmp_path):
    pytest.importorskip("gguf")
    from tests.retnet.tiny_llama_gguf import write_tiny_llama_gguf

    path = tmp_path / "tiny.gguf"
    write_tiny_llama_gguf(path)
    teacher = dt.load_transformer(path)
    answer, timings, n = dt.answer_turn(teacher, "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n", 5)
    assert isinstance(answer, str) and 0 <= n <= 5
    assert 0 < timings["first_token_s"] <= timings["total_s"]
