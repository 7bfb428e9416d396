"""Cleaner text from the pages pypdf extracts: what a reader of the printed page would read.

``clean_pages`` takes the text of every page of one document and returns them repaired:

- typographic ligatures (U+FB00-FB06: "ﬁ" -> "fi") and groff's minus sign for hyphens
  (U+2212 in "−−login") become plain letters and hyphens, so words match what people type;
- running headers and footers go: among the first and last two lines of each page, a line
  that recurs (digits ignored, so "- 4 -" and "Chapter 6: Features 93" match their
  siblings) on at least three pages no more than two pages apart is kept only where it first
  appears; bare page numbers ("12", "- 4 -", "iv", "5 / 57") recurring that way go everywhere;
- hyphenation at line ends is undone ("imple-" + "ments" -> "implements"; the hyphen stays
  when the document spells the word with one elsewhere and never without);
- words that pypdf split with a space ("b uilt", "clic kable": justified text whose word
  spacing pypdf leaves out of its gap test) are joined when the joined word occurs in the same
  document more often than its rarer piece occurs elsewhere, so real pairs ("a way", "in to")
  stay; never into what looks like two frequent words run together, and not at all in a
  document whose extraction lost its spaces (many 16+ letter "words").

Everything is a pass or two over the text (counters of the document's words are the only
state, and joined words are capped at ``_MAX_WORD`` letters), so cost stays linear in the
document's size.
"""

from __future__ import annotations

import re
from collections import Counter

_LIGATURES = str.maketrans(
    {"\ufb00": "ff", "\ufb01": "fi", "\ufb02": "fl", "\ufb03": "ffi", "\ufb04": "ffl", "\ufb05": "st",
     "\ufb06": "st", "\u2212": "-"}
)
_WORD = re.compile(r"[^\W\d_]+")
_DIGITS = re.compile(r"\d+")
_PAGE_NUMBER = re.compile(r"^[\W_]*(?:page\s*)?(?:\d+|[ivxlcdm]+)(?:\s*(?:/|of)\s*\d+)?[\W_]*$", re.I)
_LONG_WORD = 16  # letters; English prose has ~0.01% of words this long, space-less extraction far more
_MAX_LONG_SHARE = 0.005
_MAX_WORD = 40  # letters: longer joins are never tried (and the run-together test stays cheap)
_ZONE = 2  # lines at the top and at the bottom of a page that may be a running header or footer
_MIN_PAGES = 3  # a running line recurs on at least this many pages ...
_MAX_GAP = 2  # ... each within this many pages of the previous one (odd/even pages differ)
# A word broken at a line end: letters then a hyphen (ASCII, U+2010, soft hyphen) closing the line.
_LINE_HYPHEN = re.compile(r"(?:^|(?<=\s))([^\W\d_]{2,})[-\u2010\u00ad]$")
_FIRST_PIECE = re.compile(r"[(\[{\"'\u2018\u201c]*([^\W\d_]+)")  # opening brackets or quotes only: not "-m"
_LAST_PIECE = re.compile(r"([^\W\d_]+)[\W\d_]*")
# Starts only where a word starts: tried at every letter, a long word would cost its length squared.
_COMPOUND = re.compile(r"(?<![^\W\d_])[^\W\d_]+(?:-[^\W\d_]+)+")
_LINE_START = re.compile(r"^\s*([^\W\d_A-Z]+)(.*)$", re.S)


def clean_pages(pages: list[str]) -> list[str]:
    """The pages' text without running headers, footers and page numbers, with hyphenation
    and split words repaired (see the module docstring)."""
    lines = [page.translate(_LIGATURES).split("\n") for page in pages]
    _drop_running_lines(lines)
    # Mixed-case words (identifiers: "errorDescription") would teach that "error description" is one word.
    vocab = Counter(
        word.lower() for page in lines for line in page for word in _WORD.findall(line) if not _mixed_case(word)
    )
    compounds = Counter(word.lower() for page in lines for line in page for word in _COMPOUND.findall(line))
    # pypdf also drops real spaces in some documents ("documentationwhichyoushould"): there
    # the document's own words cannot be trusted to say what a word is, so nothing is joined.
    words = sum(vocab.values())
    joins = words > 0 and sum(n for w, n in vocab.items() if len(w) >= _LONG_WORD) <= _MAX_LONG_SHARE * words
    out = []
    for page in lines:
        page = _join_hyphenated(page, vocab, compounds)
        out.append("\n".join(_join_split_words(line, vocab) if joins else line for line in page))
    return out


# -- running headers and footers ------------------------------------------------------


def _zone(page: list[str]) -> list[int]:
    """Indexes of the first and last ``_ZONE`` non-blank lines of a page."""
    filled = [i for i, line in enumerate(page) if line.strip()]
    return sorted(set(filled[:_ZONE] + filled[-_ZONE:]))


def _signature(line: str) -> str:
    return _DIGITS.sub("#", " ".join(line.split()))


def _drop_running_lines(pages: list[list[str]]) -> None:
    """Blank, in place, the running header and footer lines of every page."""
    where: dict[str, list[tuple[int, int]]] = {}
    for number, page in enumerate(pages):
        for index in _zone(page):
            where.setdefault(_signature(page[index]), []).append((number, index))
    for signature, places in where.items():
        numbers = sorted({number for number, _ in places})
        if not _recurs(numbers):
            continue
        # A line with words keeps its first appearance (a chapter title, the document's name);
        # a bare page number carries nothing anywhere.
        keep_first = _PAGE_NUMBER.match(signature.replace("#", "1")) is None
        for number, index in sorted(places)[1 if keep_first else 0 :]:
            pages[number][index] = ""


def _recurs(numbers: list[int]) -> bool:
    """Whether some run of ``_MIN_PAGES`` of these (sorted) pages has no gap above ``_MAX_GAP``."""
    run = 1
    for prev, cur in zip(numbers, numbers[1:], strict=False):
        run = run + 1 if cur - prev <= _MAX_GAP else 1
        if run >= _MIN_PAGES:
            return True
    return False


# -- hyphenation ------------------------------------------------------------------------


def _join_hyphenated(page: list[str], vocab: Counter, compounds: Counter) -> list[str]:
    """Undo line-end hyphenation: the rest of the word moves up to the line that broke it."""
    out = list(page)
    for i in range(len(out) - 1):
        head = _LINE_HYPHEN.search(out[i].rstrip())
        if head is None:
            continue
        j = i + 1
        while j < len(out) and not out[j].strip():  # a removed footer may sit in between
            j += 1
        tail = _LINE_START.match(out[j]) if j < len(out) else None
        if tail is None:
            continue
        first, second = head.group(1), tail.group(1)
        compound = f"{first}-{second}"
        if compounds[compound.lower()] > 0 and vocab[(first + second).lower()] == 0:
            word = compound  # "command-" + "line": the document writes "command-line"
        else:
            word = first + second
        out[i] = out[i].rstrip()[: head.start(1)] + word
        out[j] = tail.group(2).lstrip()
    return out


# -- words split by a space ---------------------------------------------------------------


def _join_split_words(line: str, vocab: Counter) -> str:
    """Join pieces of a word that extraction split with one space (see ``_joinable``)."""
    if " " not in line:
        return line
    tokens = line.split(" ")
    out: list[str] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        for width in (3, 2):  # prefer the longest join (a word split twice: "clic kab le")
            pieces = tokens[i : i + width]
            if len(pieces) == width and _joinable(pieces, vocab):
                token = "".join(pieces)
                i += width - 1
                break
        out.append(token)
        i += 1
    return " ".join(out)


def _joinable(pieces: list[str], vocab: Counter) -> bool:
    """Whether these space-separated tokens are one word that extraction split.

    The document decides: the joined word must be more frequent in it than some piece is
    elsewhere ("clic" + "kable" where "clickable" occurs; "a" + "way" stays apart unless
    "away" is more frequent than "way"), and must not itself look like two frequent words
    run together ("theyappear": pypdf also drops real spaces, and the same document then
    holds such artefacts).
    """
    # The first piece may open with punctuation and the last close with it; letters in between.
    first = _FIRST_PIECE.fullmatch(pieces[0])
    last = _LAST_PIECE.fullmatch(pieces[-1])
    if first is None or last is None or not last.group(1)[0].islower():
        return False
    words = [first.group(1).lower(), *(p.lower() for p in pieces[1:-1]), last.group(1).lower()]
    if any(not w.isalpha() for w in words[1:-1]):
        return False
    joined = "".join(words)
    if not 3 <= len(joined) <= _MAX_WORD:
        return False
    count = vocab[joined]
    if count == 0 or min(vocab[w] - 1 for w in words) >= count:
        return False
    return not _run_together(joined, count, vocab)


def _mixed_case(word: str) -> bool:
    return not (word.islower() or word.isupper() or word[1:].islower())


def _run_together(word: str, count: int, vocab: Counter) -> bool:
    """Whether ``word`` splits into two words that are each more frequent than it (and seen
    at least three times): then it is more likely two words missing a space."""
    for cut in range(2, len(word) - 1):
        left, right = vocab[word[:cut]], vocab[word[cut:]]
        if left >= 3 and right >= 3 and min(left, right) > count:
            return True
    return False
