"""Plain-text utilities shared by the corpus builder, the episode builder and the tests.

Conventions: a document's text is a sequence of paragraphs separated by one blank line
("\\n\\n"). Inside a paragraph single newlines are allowed (tag + description of a manual
page option, lines of a code example). Passages are runs of whole paragraphs (a paragraph
longer than the passage limit is split at sentence boundaries).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

_WS = re.compile(r"[ \t\f\v\u00a0\u2000-\u200b\u202f\u205f\u3000]+")
_CTRL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\ufeff\u00ad]")
_MANY_NL = re.compile(r"\n{3,}")
_WORD = re.compile(r"\w+", re.UNICODE)
# A sentence ends at . ! ? (optionally followed by a closing quote/bracket) then whitespace,
# unless the word before the dot is a common abbreviation or a single letter.
_SENT_END = re.compile(r"(?<=[.!?])[\"')\]]?\s+(?=[\"'(\[]?[A-Z0-9])")
_ABBREV = {"e.g", "i.e", "etc", "vs", "cf", "mr", "mrs", "dr", "no", "fig", "approx", "st", "sec", "ch"}


def normalize_text(text: str) -> str:
    """NFC, drop control characters, unify spaces, trim lines, at most one blank line in a row."""
    text = unicodedata.normalize("NFC", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CTRL.sub("", text)
    lines = []
    for ln in text.split("\n"):
        body = ln.lstrip(" \t")
        ind = min(len(ln) - len(body), 8)
        lines.append(" " * ind + _WS.sub(" ", body).rstrip() if body else "")
    text = "\n".join(lines)
    text = _MANY_NL.sub("\n\n", text)
    return text.strip("\n")


def paragraphs(text: str) -> list[str]:
    return [p for p in (q.strip("\n") for q in text.split("\n\n")) if p.strip()]


def words(text: str) -> list[str]:
    return _WORD.findall(text)


def word_count(text: str) -> int:
    return len(text.split())


def para_key(par: str) -> str:
    """Normalised form of a paragraph for duplicate detection: lower-case words only."""
    return " ".join(w.lower() for w in _WORD.findall(par))


def stable_hash(s: str) -> int:
    return int.from_bytes(hashlib.sha1(s.encode("utf-8")).digest()[:8], "big")


def split_of(split_key: str, eval_fraction: float = 0.05, salt: str = "retnet-rag-v1") -> str:
    """Deterministic document-level split: the same key always lands in the same split."""
    h = stable_hash(salt + "\x00" + split_key) % 1_000_000
    return "eval" if h < eval_fraction * 1_000_000 else "train"


def sentences(par: str) -> list[str]:
    """Rough sentence split of one paragraph (joined to a single line first)."""
    flat = " ".join(par.split())
    out: list[str] = []
    start = 0
    for m in _SENT_END.finditer(flat):
        cand = flat[start : m.start()].rstrip()
        last = cand.rsplit(" ", 1)[-1].rstrip(".!?\"')]").lower()
        if last in _ABBREV or (len(last) == 1 and last.isalpha()):
            continue
        out.append(flat[start : m.end()].strip())
        start = m.end()
    tail = flat[start:].strip()
    if tail:
        out.append(tail)
    return out


def first_sentence(par: str) -> str:
    s = sentences(par)
    return s[0] if s else ""


def reflow(block: str) -> str:
    """Join the hard-wrapped lines of a prose paragraph. Blocks whose lines do not all share the
    same indentation (code, tables, option lists) keep their lines, with common indentation removed."""
    lines = [ln for ln in block.split("\n") if ln.strip()]
    if not lines:
        return ""
    indents = [len(ln) - len(ln.lstrip(" ")) for ln in lines]
    base = min(indents)
    if len(set(indents)) == 1 and base <= 4:
        return " ".join(ln.strip() for ln in lines)
    # first line indented differently (info/texinfo paragraphs, dictionary entries), rest uniform
    if len(lines) >= 2 and len(set(indents[1:])) == 1 and indents[1] <= 4 and indents[0] <= 8:
        return " ".join(ln.strip() for ln in lines)
    return "\n".join(ln[base:].rstrip() for ln in lines)


def is_heading_like(par: str) -> bool:
    """Short line without final punctuation: a heading or an option tag, to keep with what follows."""
    if "\n" in par:
        return False
    n = len(par.split())
    return n <= 12 and not par.rstrip().endswith((".", "!", "?", ":", ";"))


def chunk_passages(text: str, max_words: int = 200, min_words: int = 20) -> list[tuple[int, int]]:
    """Cut a document into passages of at most ``max_words`` words at paragraph boundaries
    (sentence boundaries inside over-long paragraphs). Returns (start, end) character spans into
    ``text`` so that ``text[start:end]`` is the passage, verbatim. Heading-like paragraphs stay
    with the paragraph that follows them; a short trailing passage is merged into the previous one
    when that stays within 1.25 * max_words."""
    # paragraph spans
    spans: list[tuple[int, int]] = []
    pos = 0
    for m in re.finditer(r"\n\n+", text):
        if m.start() > pos:
            spans.append((pos, m.start()))
        pos = m.end()
    if pos < len(text):
        spans.append((pos, len(text)))
    # split long paragraphs at sentence ends (spans stay verbatim)
    units: list[tuple[int, int, int, bool]] = []  # start, end, words, heading-like
    for s, e in spans:
        par = text[s:e]
        n = word_count(par)
        if n <= max_words:
            units.append((s, e, n, is_heading_like(par)))
            continue
        cut_points = [s]
        acc = 0
        last_ok = None
        for m in re.finditer(r"(?<=[.!?;:])\s+|\n", par):
            seg_words = word_count(text[cut_points[-1] : s + m.start()])
            if seg_words >= max_words and last_ok is not None:
                cut_points.append(last_ok)
            last_ok = s + m.end()
            acc = seg_words
        del acc
        if word_count(text[cut_points[-1] : e]) > max_words and last_ok is not None and last_ok > cut_points[-1]:
            cut_points.append(last_ok)
        bounds = cut_points + [e]
        for a, b in zip(bounds[:-1], bounds[1:], strict=False):
            seg = text[a:b].rstrip()
            if seg.strip():
                # hard cut of pathological sentence-free text
                ws = list(re.finditer(r"\S+", seg))
                for i in range(0, len(ws), max_words):
                    chunk = ws[i : i + max_words]
                    units.append((a + chunk[0].start(), a + chunk[-1].end(), len(chunk), False))
    passages: list[tuple[int, int]] = []
    cur_s = cur_e = None
    cur_n = 0
    pending_heading = False
    for s, e, n, head in units:
        if cur_s is not None and cur_n + n > max_words and not pending_heading:
            passages.append((cur_s, cur_e))
            cur_s = None
            cur_n = 0
        if cur_s is None:
            cur_s = s
        cur_e = e
        cur_n += n
        pending_heading = head and cur_n <= max_words // 2
    if cur_s is not None:
        passages.append((cur_s, cur_e))
    # merge a short tail
    if len(passages) >= 2:
        ps, pe = passages[-1]
        qs, _ = passages[-2]
        if word_count(text[ps:pe]) < min_words and word_count(text[qs:pe]) <= int(max_words * 1.25):
            passages[-2:] = [(qs, pe)]
    return passages


# Word caps per source package for the pretraining stream and the tokenizer: the dictionaries are large
# and would otherwise crowd out the documentation.
DEFAULT_CAPS = {"dict-gcide": 1_200_000, "wordnet-base": 1_500_000}


def select_docs(docs: list[dict], caps: dict[str, int]) -> list[dict]:
    """Keep every document of uncapped sources; for a capped source keep documents in a fixed
    pseudo-random order until its word budget is spent."""
    by_src: dict[str, list[dict]] = {}
    for d in docs:
        by_src.setdefault(d["source_package"], []).append(d)
    out = []
    for src, ds in by_src.items():
        cap = caps.get(src)
        if cap is None:
            out.extend(ds)
            continue
        ds = sorted(ds, key=lambda d: stable_hash("pretrain:" + d["id"]))
        n = 0
        for d in ds:
            w = word_count(d["text"])
            if n + w > cap:
                continue
            n += w
            out.append(d)
    return out
