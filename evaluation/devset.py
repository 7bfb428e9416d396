"""The public dev set in ``data/eval/``: documents, natural questions, three-turn conversations.

``data/eval/questions.jsonl`` holds one JSON object per line. Lines with ``"record": "document"``
describe the files under ``data/eval/docs/`` (origin, licence, checksum); lines with
``"record": "question"`` are the questions. The schema is documented at the top of
``data/eval/README.md``; :func:`load_devset` enforces it and names the line and the field of
anything malformed, so a typo in a hand-edited line fails loudly instead of skewing a score.

Turns 2 and 3 of a conversation carry the earlier turns implicitly: they share a
``conversation`` id and are ordered by ``turn``; :meth:`DevSet.conversations` returns them
in that order and :meth:`Conversation.history` gives the turns before a given one.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EVAL_DIR = Path(__file__).resolve().parent.parent / "data" / "eval"
DEFAULT_PATH = EVAL_DIR / "questions.jsonl"
DEFAULT_DOCS_DIR = EVAL_DIR / "docs"

QUESTION_TYPES = ("howto", "reverse", "lookup", "why", "multi", "unanswerable")
GENRES = ("man", "readme", "html-reference", "pdf", "faq", "policy")
MAX_KEY_PHRASES = 3

_DOCUMENT_FIELDS = {
    # name: (type, required)
    "record": (str, True),
    "doc": (str, True),
    "title": (str, True),
    "genre": (str, True),
    "package": (str, True),
    "source_package": (str, True),
    "version": (str, True),
    "original_path": (str, True),
    "licence": (str, True),
    "conversion": (str, True),
    "sha256": (str, True),
}
_QUESTION_FIELDS = {
    "record": (str, True),
    "id": (str, True),
    "type": (str, True),
    "question": (str, True),
    "docs": (list, True),
    "answers": (list, True),
    "key_phrases": (list, True),
    "conversation": ((str, type(None)), True),
    "turn": ((int, type(None)), True),
    "near_docs": (list, False),
}
_SHA256 = re.compile(r"[0-9a-f]{64}")
_WS = re.compile(r"\s+")


class DevSetError(ValueError):
    """A malformed dev-set file; the message names the file, the line and the field."""


@dataclass(frozen=True)
class Document:
    doc: str  # file name under the docs folder, e.g. "jq.1.txt"
    title: str
    genre: str
    package: str  # Debian binary package the file came from
    source_package: str  # its Debian source package
    version: str
    original_path: str  # path inside the package
    licence: str
    conversion: str  # how the shipped file was made from the original
    sha256: str
    path: Path  # absolute path of the shipped file


@dataclass(frozen=True)
class Question:
    id: str
    type: str
    question: str
    docs: tuple[str, ...]  # documents holding the answer; empty when unanswerable
    answers: tuple[str, ...]  # reference answers
    key_phrases: tuple[str, ...]  # 1-3 exact strings of the documents a correct answer contains
    conversation: str | None = None
    turn: int | None = None
    near_docs: tuple[str, ...] = ()  # for unanswerable questions: where a reader will look in vain
    line: int = 0  # line of questions.jsonl, for messages

    @property
    def answerable(self) -> bool:
        return self.type != "unanswerable"

    @property
    def is_followup(self) -> bool:
        """Turn 2 or later of a conversation: it leans on the turns before it."""
        return self.turn is not None and self.turn > 1


@dataclass(frozen=True)
class Conversation:
    id: str
    turns: tuple[Question, ...]  # in turn order, turn 1 first

    def history(self, turn: int) -> tuple[Question, ...]:
        """The turns before ``turn`` (1-based), i.e. what a follow-up implicitly carries."""
        if not 1 <= turn <= len(self.turns):
            raise ValueError(f"conversation {self.id} has turns 1-{len(self.turns)}, not {turn}")
        return self.turns[: turn - 1]

    def __len__(self) -> int:
        return len(self.turns)


@dataclass
class DevSet:
    path: Path
    docs_dir: Path
    documents: dict[str, Document]  # by file name, in file order
    questions: tuple[Question, ...]  # in file order
    _by_id: dict[str, Question] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._by_id = {q.id: q for q in self.questions}

    def question(self, qid: str) -> Question:
        return self._by_id[qid]

    def answerable(self) -> list[Question]:
        return [q for q in self.questions if q.answerable]

    def unanswerable(self) -> list[Question]:
        return [q for q in self.questions if not q.answerable]

    def by_type(self, qtype: str) -> list[Question]:
        if qtype not in QUESTION_TYPES:
            raise ValueError(f"unknown question type {qtype!r}; expected one of {', '.join(QUESTION_TYPES)}")
        return [q for q in self.questions if q.type == qtype]

    def single_turn(self) -> list[Question]:
        """Questions that are not part of a conversation."""
        return [q for q in self.questions if q.conversation is None]

    def conversations(self) -> list[Conversation]:
        """Every conversation, sorted by id, each with its turns in turn order."""
        groups: dict[str, list[Question]] = {}
        for q in self.questions:
            if q.conversation is not None:
                groups.setdefault(q.conversation, []).append(q)
        return [Conversation(cid, tuple(sorted(turns, key=lambda q: q.turn or 0)))
                for cid, turns in sorted(groups.items())]

    def conversation(self, cid: str) -> Conversation:
        for conv in self.conversations():
            if conv.id == cid:
                return conv
        raise KeyError(f"no conversation {cid!r} in {self.path}")

    def genres(self) -> dict[str, list[Document]]:
        out: dict[str, list[Document]] = {}
        for doc in self.documents.values():
            out.setdefault(doc.genre, []).append(doc)
        return out

    def document_text(self, doc: str) -> str:
        """The text of a document as the system indexes it (through ``retrieval.loaders``)."""
        from retrieval.loaders import load_document

        return load_document(self.documents[doc].path).text

    def missing_key_phrases(self) -> list[tuple[str, str]]:
        """``(question id, key phrase)`` for every key phrase absent from all the documents its
        question names, after :func:`normalise` (case and whitespace). Empty when all is well."""
        texts: dict[str, str] = {}
        missing = []
        for q in self.answerable():
            for doc in q.docs:
                if doc not in texts:
                    texts[doc] = normalise(self.document_text(doc))
            for phrase in q.key_phrases:
                if not any(normalise(phrase) in texts[doc] for doc in q.docs):
                    missing.append((q.id, phrase))
        return missing


def normalise(text: str) -> str:
    """Lower case, every run of whitespace one space: how key phrases are matched against text."""
    return _WS.sub(" ", text).strip().lower()


def load_devset(
    path: str | Path = DEFAULT_PATH,
    docs_dir: str | Path | None = None,
    check_files: bool = True,
) -> DevSet:
    """Read and validate a dev-set file; raise :class:`DevSetError` naming the line and field.

    ``docs_dir`` defaults to ``docs/`` beside the file. With ``check_files`` every document's
    file must exist and match its recorded SHA-256.
    """
    path = Path(path)
    docs_dir = Path(docs_dir) if docs_dir is not None else path.parent / "docs"
    try:
        raw_lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DevSetError(f"{path}: file not found") from None
    except UnicodeDecodeError as exc:
        raise DevSetError(f"{path}: not UTF-8 ({exc.reason} at byte {exc.start})") from None

    documents: dict[str, Document] = {}
    questions: list[Question] = []
    seen_ids: dict[str, int] = {}
    for number, raw in enumerate(raw_lines, start=1):
        if not raw.strip():
            continue
        where = f"{path.name}:{number}"
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise DevSetError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(obj, dict):
            raise DevSetError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        record = obj.get("record")
        if record == "document":
            doc = _document(obj, where, docs_dir, check_files)
            if doc.doc in documents:
                raise DevSetError(f"{where}: field 'doc': document {doc.doc!r} is listed twice")
            documents[doc.doc] = doc
        elif record == "question":
            q = _question(obj, where, number)
            if q.id in seen_ids:
                raise DevSetError(f"{where}: field 'id': {q.id!r} already used on line {seen_ids[q.id]}")
            seen_ids[q.id] = number
            questions.append(q)
        else:
            raise DevSetError(f"{where}: field 'record': expected 'document' or 'question', got {record!r}")

    if not documents:
        raise DevSetError(f"{path.name}: no document records")
    if not questions:
        raise DevSetError(f"{path.name}: no question records")
    for q in questions:
        where = f"{path.name}:{q.line}"
        for name, docs in (("docs", q.docs), ("near_docs", q.near_docs)):
            for doc in docs:
                if doc not in documents:
                    raise DevSetError(f"{where}: field '{name}': unknown document {doc!r} "
                                      f"(known: {', '.join(documents)})")
    _check_conversations(questions, path.name)
    return DevSet(path=path, docs_dir=docs_dir, documents=documents, questions=tuple(questions))


def _check_fields(obj: dict[str, Any], spec: dict[str, tuple[Any, bool]], where: str) -> None:
    unknown = sorted(set(obj) - set(spec))
    if unknown:
        raise DevSetError(f"{where}: unknown field(s) {', '.join(map(repr, unknown))} "
                          f"(allowed: {', '.join(spec)})")
    for name, (types, required) in spec.items():
        if name not in obj:
            if required:
                raise DevSetError(f"{where}: field '{name}' is missing")
            continue
        value = obj[name]
        # bool is an int in Python; a turn of true is still a mistake
        if not isinstance(value, types) or (isinstance(value, bool) and types is not bool):
            want = " or ".join(t.__name__.replace("NoneType", "null") for t in
                               (types if isinstance(types, tuple) else (types,)))
            raise DevSetError(f"{where}: field '{name}' must be {want}, got {type(value).__name__}")
        if isinstance(value, str) and not value.strip():
            raise DevSetError(f"{where}: field '{name}' is empty")


def _str_list(obj: dict[str, Any], name: str, where: str) -> tuple[str, ...]:
    values = obj.get(name, [])
    for i, v in enumerate(values):
        if not isinstance(v, str) or not v.strip():
            raise DevSetError(f"{where}: field '{name}'[{i}] must be a non-empty string, got {v!r}")
    if len(set(values)) != len(values):
        raise DevSetError(f"{where}: field '{name}' repeats an entry")
    return tuple(values)


def _document(obj: dict[str, Any], where: str, docs_dir: Path, check_files: bool) -> Document:
    _check_fields(obj, _DOCUMENT_FIELDS, where)
    name = obj["doc"]
    if "/" in name or "\\" in name or name.startswith("."):
        raise DevSetError(f"{where}: field 'doc' must be a plain file name inside the docs folder, got {name!r}")
    if obj["genre"] not in GENRES:
        raise DevSetError(f"{where}: field 'genre': {obj['genre']!r} is not one of {', '.join(GENRES)}")
    if not _SHA256.fullmatch(obj["sha256"]):
        raise DevSetError(f"{where}: field 'sha256' must be 64 lower-case hex digits")
    file = (docs_dir / name).resolve()
    if check_files:
        if not file.is_file():
            raise DevSetError(f"{where}: field 'doc': file {file} not found")
        digest = hashlib.sha256(file.read_bytes()).hexdigest()
        if digest != obj["sha256"]:
            raise DevSetError(f"{where}: field 'sha256': {name} has changed (file hashes to {digest})")
    return Document(doc=name, title=obj["title"], genre=obj["genre"], package=obj["package"],
                    source_package=obj["source_package"], version=obj["version"],
                    original_path=obj["original_path"], licence=obj["licence"],
                    conversion=obj["conversion"], sha256=obj["sha256"], path=file)


def _question(obj: dict[str, Any], where: str, number: int) -> Question:
    _check_fields(obj, _QUESTION_FIELDS, where)
    qtype = obj["type"]
    if qtype not in QUESTION_TYPES:
        raise DevSetError(f"{where}: field 'type': {qtype!r} is not one of {', '.join(QUESTION_TYPES)}")
    docs = _str_list(obj, "docs", where)
    answers = _str_list(obj, "answers", where)
    phrases = _str_list(obj, "key_phrases", where)
    near = _str_list(obj, "near_docs", where)
    if not answers:
        raise DevSetError(f"{where}: field 'answers' needs at least one reference answer")
    if qtype == "unanswerable":
        if docs:
            raise DevSetError(f"{where}: field 'docs' must be empty for an unanswerable question (use 'near_docs')")
        if phrases:
            raise DevSetError(f"{where}: field 'key_phrases' must be empty for an unanswerable question")
    else:
        if not docs:
            raise DevSetError(f"{where}: field 'docs' must name the document(s) holding the answer")
        if not 1 <= len(phrases) <= MAX_KEY_PHRASES:
            raise DevSetError(f"{where}: field 'key_phrases' needs 1-{MAX_KEY_PHRASES} phrases, got {len(phrases)}")
        if near:
            raise DevSetError(f"{where}: field 'near_docs' is only for unanswerable questions")
    conv, turn = obj["conversation"], obj["turn"]
    if (conv is None) != (turn is None):
        raise DevSetError(f"{where}: fields 'conversation' and 'turn' must both be set or both be null")
    if turn is not None and turn < 1:
        raise DevSetError(f"{where}: field 'turn' must be 1 or more, got {turn}")
    return Question(id=obj["id"], type=qtype, question=obj["question"], docs=docs, answers=answers,
                    key_phrases=phrases, conversation=conv, turn=turn, near_docs=near, line=number)


def _check_conversations(questions: list[Question], name: str) -> None:
    turns: dict[str, dict[int, Question]] = {}
    for q in questions:
        if q.conversation is None:
            continue
        seen = turns.setdefault(q.conversation, {})
        if q.turn in seen:
            raise DevSetError(f"{name}:{q.line}: field 'turn': conversation {q.conversation!r} already has "
                              f"turn {q.turn} (line {seen[q.turn].line})")
        seen[q.turn] = q
    for cid, seen in turns.items():
        expected = list(range(1, len(seen) + 1))
        if sorted(seen) != expected:
            last = max(seen.values(), key=lambda q: q.line)
            raise DevSetError(f"{name}:{last.line}: field 'turn': conversation {cid!r} has turns "
                              f"{sorted(seen)}, expected {expected}")
