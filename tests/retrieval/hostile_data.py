"""Builders for hostile test files: PDFs whose streams inflate far past their size, slow HTML."""

from __future__ import annotations

import io

from pypdf import PdfWriter
from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

KIB = 1024


def pdf_bomb(inflated: list[int]) -> bytes:
    """A PDF whose page i has a Flate content stream inflating to ``inflated[i]`` bytes.

    Each stream shows ``page_text(i)`` and is padded with spaces, which compress about 1000:1, so the
    file stays a few KiB while its streams add up to ``sum(inflated)``.
    """
    writer = PdfWriter()
    font = writer._add_object(DictionaryObject({
        NameObject("/Type"): NameObject("/Font"), NameObject("/Subtype"): NameObject("/Type1"),
        NameObject("/BaseFont"): NameObject("/Helvetica"),
    }))
    for number, size in enumerate(inflated, start=1):
        page = writer.add_blank_page(612, 792)
        shown = b"BT /F1 11 Tf 72 740 Td (%s) Tj ET\n" % page_text(number).encode()
        stream = DecodedStreamObject()
        stream.set_data(shown + b" " * max(0, size - len(shown)))
        page[NameObject("/Contents")] = writer._add_object(stream.flate_encode())
        fonts = DictionaryObject({NameObject("/F1"): font})
        page[NameObject("/Resources")] = DictionaryObject({NameObject("/Font"): fonts})
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def page_text(number: int) -> str:
    """What page ``number`` of a pdf_bomb shows: a different sentence on every page."""
    return f"Bomb sheet {'abcdefghijklmnopqrstuvwxyz'[(number - 1) % 26] * 3} reads fine."


def slow_html(depth: int = 400_000) -> str:
    """Markup that takes html.parser many seconds (a few MB of nested tags): for time budgets."""
    return "<div>" * depth + "deep text"
