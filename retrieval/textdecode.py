"""Turn the bytes of a text file into ``str``, or say clearly why they are not text.

Order of decisions (cheapest first, so a 50 MB UTF-8 file costs one C-level decode):

1. A byte-order mark names the encoding.
2. NUL bytes near the start mean a binary file (real text files never contain them).
3. Strict UTF-8.
4. If UTF-8 fails but the bytes also hold valid multi-byte UTF-8 characters, the file is
   UTF-8 with a few damaged bytes: decode with U+FFFD replacements and warn.
5. Otherwise it is probably a legacy 8-bit encoding (cp1252, latin-1, ...):
   charset-normalizer guesses it from a sample; no plausible guess means "not text".

A decoded text that is still full of control characters is rejected as binary.
"""

from __future__ import annotations

import codecs
import logging
import re
from dataclasses import dataclass

from .errors import LoadError

logger = logging.getLogger(__name__)

_SAMPLE = 256 * 1024  # bytes looked at for binary sniffing and encoding guesses
_BOMS = [
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
]
_NON_ASCII_VALID = re.compile("[^\x00-\x7f\ufffd]")
_CONTROL = re.compile("[\x00-\x08\x0b\x0e-\x1f\x7f]")
_MAX_CONTROL_RATIO = 0.01
_TIE = 0.05  # chaos (mess) difference within which two encoding guesses count as equal


@dataclass(frozen=True)
class DecodedText:
    text: str
    encoding: str
    warnings: tuple[str, ...] = ()


def decode_text(data: bytes) -> DecodedText:
    """Decode file bytes to text; raise LoadError if they are empty or not text."""
    if not data:
        raise LoadError("empty file")
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return _checked(data.decode(encoding), encoding)
            except UnicodeDecodeError as exc:
                raise LoadError(f"invalid {encoding} text after byte-order mark: {exc.reason}") from None
    if b"\x00" in data[:_SAMPLE]:
        raise LoadError("binary file (contains NUL bytes), not text")
    try:
        return _checked(data.decode("utf-8"), "utf-8")
    except UnicodeDecodeError:
        pass
    text = data.decode("utf-8", errors="replace")
    if _NON_ASCII_VALID.search(text):
        bad = text.count("\ufffd")
        warning = f"invalid UTF-8: {bad} damaged byte sequence(s) replaced with U+FFFD"
        logger.debug(warning)
        return _checked(text, "utf-8", (warning,))
    return _guess_legacy(data)


def _guess_legacy(data: bytes) -> DecodedText:
    from charset_normalizer import from_bytes

    matches = list(from_bytes(data[:_SAMPLE]))
    if not matches:
        raise LoadError("not a text file: no text encoding fits its bytes")
    best = min(matches, key=lambda m: m.chaos)
    encoding = best.encoding
    # Short Western text often fits several code pages about equally well; cp1252 is by
    # far the most common of them, so it wins a near tie.
    if any(m.chaos <= best.chaos + _TIE and "cp1252" in m.could_be_from_charset for m in matches):
        encoding = "cp1252"
    try:
        text = data.decode(encoding)
    except (UnicodeDecodeError, LookupError):
        # The guess held for the sample but not the whole file: keep what decodes.
        text = data.decode(encoding, errors="replace")
    return _checked(text, encoding, (f"not UTF-8; decoded as {encoding} (detected)",))


def _checked(text: str, encoding: str, warnings: tuple[str, ...] = ()) -> DecodedText:
    sample = text[:_SAMPLE]
    if sample and len(_CONTROL.findall(sample)) > _MAX_CONTROL_RATIO * len(sample):
        raise LoadError("binary file (full of control characters), not text")
    return DecodedText(text, encoding, warnings)
