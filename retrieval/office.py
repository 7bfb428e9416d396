"""Office files -> page texts: DOCX, PPTX and XLSX, through python-docx, python-pptx and openpyxl.

These are the optional ``office`` extra (``pip install 'retnet-rag[office]'``): without it an
office file is skipped with a reason that says so (``missing_extra``), never a crash. They were
picked over markitdown, whose office support pulls pandas, mammoth and onnxruntime (60 MB of
wheels before its office extras, against 13 MB here, most of it lxml and Pillow).

What each format becomes (headings in Markdown form, so they read as headings in a passage):

- DOCX: one page without a number; paragraphs in body order, heading styles as ``#`` headings
  (``Title`` and ``Heading 1`` as ``#``, ``Heading 2`` as ``##``...), each table row one line of
  tab-separated cells. Headers and footers are left out (running chrome, as for PDFs).
- PPTX: one page per slide, numbered as the slides are, so a citation names the slide: the title
  as a heading, then every text frame and table (groups included), then the speaker notes.
- XLSX: one page per worksheet, numbered in workbook order: the sheet name as a heading, then
  one tab-separated line per non-empty row (cached values, not formulas; read-only mode).

An office file is a ZIP package, and all three libraries inflate its parts with ``zipfile``,
which stops every member at the size its directory entry declares (more is a CRC error). So the
declared sizes bound what parsing can inflate, and ``check_package`` sums them and checks their
compression ratios *before* any parser runs: a zip bomb ends in a per-file LoadError. The XML
itself is parsed without entity expansion (python-docx, python-pptx) or by expat, which refuses
"billion laughs" expansion (openpyxl); the worker's time and memory budgets are the backstop.
"""

from __future__ import annotations

import datetime
import importlib
import importlib.util
import io
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field

from .errors import LoadError
from .limits import MIB, mib, too_much_text

OFFICE_KINDS = {".docx": "docx", ".pptx": "pptx", ".xlsx": "xlsx"}
EXTRA_HINT = "pip install 'retnet-rag[office]'"
_MODULES = {"docx": "docx", "pptx": "pptx", "xlsx": "openpyxl"}  # the module each kind imports
_PACKAGES = {"docx": "python-docx", "pptx": "python-pptx", "xlsx": "openpyxl"}  # ... and its PyPI name

MAX_MEMBERS = 50_000  # parts in one package; a 1,000-slide deck with media has a few thousand
# A part that inflates more than MAX_RATIO times is refused once it is larger than RATIO_MIN_BYTES
# (small parts compress well by nature). Real XML parts stay under ~50x; deflate tops out near 1,030x.
MAX_RATIO = 200
RATIO_MIN_BYTES = 16 * MIB
MAX_CELLS = 20_000_000  # spreadsheet cells visited, empty ones between filled ones included
# Default titles the libraries' own templates carry: they name the tool, not the document.
_GENERIC_TITLES = {"", "word document", "powerpoint presentation", "presentation", "document", "untitled"}


@dataclass
class OfficeText:
    """What an office file holds: page texts (numbered from 1 when ``numbered``), a title, warnings."""

    pages: list[str]
    numbered: bool
    title: str | None = None
    warnings: list[str] = field(default_factory=list)


def missing_extra(kind: str) -> str | None:
    """Why files of this office kind cannot be read here (the extra is not installed), or None.

    Looks the module up without importing it, so listing a folder stays cheap."""
    try:
        found = importlib.util.find_spec(_MODULES[kind]) is not None
    except (ImportError, ValueError):  # ValueError: a module set to None in sys.modules
        found = False
    return None if found else _missing_message(kind)


def _missing_message(kind: str) -> str:
    return f"{kind.upper()} files need the optional package {_PACKAGES[kind]}: {EXTRA_HINT}"


def _import(kind: str):
    try:
        return importlib.import_module(_MODULES[kind])
    except ImportError:
        raise LoadError(_missing_message(kind)) from None


def check_package(data: bytes, kind: str, max_bytes: int | None) -> None:
    """Refuse a package that is not a ZIP archive, or whose parts inflate past ``max_bytes`` in all or
    inflate suspiciously far one by one, from its directory alone (nothing is inflated here).

    Every part counts: python-docx and python-pptx load every part of the package, media included."""
    name = kind.upper()
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError) as exc:
        raise LoadError(f"not a valid {name} file: not a readable ZIP package ({_detail(exc)}); damaged, or "
                        f"another format renamed .{kind}?") from None
    if len(members) > MAX_MEMBERS:
        raise LoadError(f"{name} package has {len(members):,} parts, more than {MAX_MEMBERS:,} (hostile or damaged)")
    if max_bytes is None:
        return
    total = sum(m.file_size for m in members)
    if total > max_bytes:
        raise LoadError(f"decompression budget exceeded: the {name} package's {len(members)} parts inflate to "
                        f"{mib(total)} > limit {mib(max_bytes)} (a zip bomb? raise "
                        f"LoadLimits(max_decompressed_bytes=...) if the file is genuine)")
    for m in members:
        if m.file_size > RATIO_MIN_BYTES and m.file_size > MAX_RATIO * max(m.compress_size, 1):
            raise LoadError(f"suspicious compression: part {m.filename!r} of the {name} package inflates "
                            f"{m.file_size / max(m.compress_size, 1):,.0f}x ({mib(m.compress_size)} -> "
                            f"{mib(m.file_size)}), more than {MAX_RATIO}x (a zip bomb?)")


def extract_office(kind: str, data: bytes, max_decompressed_bytes: int | None) -> OfficeText:
    """The text of a DOCX, PPTX or XLSX file; every problem is a LoadError for a person."""
    module = _import(kind)
    check_package(data, kind, max_decompressed_bytes)
    extract = {"docx": _docx, "pptx": _pptx, "xlsx": _xlsx}[kind]
    try:
        return extract(module, io.BytesIO(data), max_decompressed_bytes)
    except (LoadError, MemoryError, RecursionError):  # the worker names the last two
        raise
    except Exception as exc:  # the libraries raise KeyError, XMLSyntaxError, BadZipFile, ... on damage
        raise LoadError(f"cannot read this {kind.upper()} file (damaged?): {type(exc).__name__}: "
                        f"{_detail(exc)}") from None


def _detail(exc: BaseException) -> str:
    return (str(exc).strip() or type(exc).__name__)[:200]


def _title(*candidates: str | None) -> str | None:
    for candidate in candidates:
        title = " ".join((candidate or "").split())
        if title.lower() not in _GENERIC_TITLES:
            return title
    return None


def _one_line(text: str) -> str:
    return " ".join(text.split())


class _Budget:
    """Characters of text produced so far, against the size budget (the text may not outgrow it)."""

    def __init__(self, max_chars: int | None) -> None:
        self.max_chars, self.used = max_chars, 0

    def add(self, text: str) -> str:
        self.used += len(text) + 2
        if self.max_chars is not None and self.used > self.max_chars:
            raise LoadError(too_much_text(self.used, self.max_chars))
        return text


# DOCX ----------------------------------------------------------------------------------------------


def _docx(docx, stream: io.BytesIO, max_chars: int | None) -> OfficeText:
    from docx.table import Table

    document = docx.Document(stream)
    budget = _Budget(max_chars)
    blocks: list[str] = []
    title_paragraph = None
    for item in document.iter_inner_content():
        if isinstance(item, Table):
            text = _table_text(item)
        else:
            text = item.text.strip()
            level = _heading_level(item)
            if level is not None and text:
                if level == 0:
                    title_paragraph = title_paragraph or text
                text = "#" * max(level, 1) + " " + _one_line(text)
        if text:
            blocks.append(budget.add(text))
    return OfficeText(["\n\n".join(blocks)], False, _title(title_paragraph, document.core_properties.title))


def _heading_level(paragraph) -> int | None:
    """0 for the Title style, n for "Heading n", None for body text."""
    try:
        name = (paragraph.style.name or "") if paragraph.style is not None else ""
    except (KeyError, ValueError, AttributeError):  # a style the styles part does not define
        return None
    if name == "Title":
        return 0
    head, _, number = name.partition(" ")
    if head == "Heading" and number.isdigit():
        return min(int(number), 6)
    return None


def _table_text(table) -> str:
    """One line per row, cells separated by tabs; a merged cell once (python-docx repeats it)."""
    lines = []
    for row in table.rows:
        cells, seen = [], set()
        for cell in row.cells:
            if id(cell._tc) in seen:
                continue
            seen.add(id(cell._tc))
            cells.append(_one_line(cell.text))
        if any(cells):
            lines.append("\t".join(cells).rstrip("\t"))
    return "\n".join(lines)


# PPTX ----------------------------------------------------------------------------------------------


def _pptx(pptx, stream: io.BytesIO, max_chars: int | None) -> OfficeText:
    presentation = pptx.Presentation(stream)
    budget = _Budget(max_chars)
    pages: list[str] = []
    first_title = None
    for slide in presentation.slides:
        title_shape = slide.shapes.title
        title = _one_line(title_shape.text_frame.text) if title_shape is not None and title_shape.has_text_frame else ""
        first_title = first_title or title
        blocks = [f"# {title}"] if title else []
        skip = title_shape.shape_id if title_shape is not None else None
        blocks.extend(text for text in _shape_texts(slide.shapes, skip) if text)
        if slide.has_notes_slide:
            frame = slide.notes_slide.notes_text_frame
            notes = _frame_text(frame) if frame is not None else ""
            if notes:
                blocks.append(f"Notes: {notes}")
        pages.append(budget.add("\n\n".join(blocks)))
    return OfficeText(pages, True, _title(presentation.core_properties.title, first_title))


def _shape_texts(shapes, skip_id: int | None) -> Iterator[str]:
    for shape in shapes:
        if shape.shape_id == skip_id:
            continue
        if hasattr(shape, "shapes"):  # a group: its shapes in order
            yield from _shape_texts(shape.shapes, None)
        elif shape.has_text_frame:
            yield _frame_text(shape.text_frame)
        elif getattr(shape, "has_table", False):
            yield _pptx_table(shape.table)


def _frame_text(frame) -> str:
    # Paragraphs are joined by "\n", line breaks inside one are "\v".
    return "\n".join(line.strip() for line in frame.text.replace("\v", "\n").split("\n") if line.strip())


def _pptx_table(table) -> str:
    lines = []
    for row in table.rows:
        cells = [_one_line(cell.text) for cell in row.cells]
        if any(cells):
            lines.append("\t".join(cells).rstrip("\t"))
    return "\n".join(lines)


# XLSX ----------------------------------------------------------------------------------------------


def _xlsx(openpyxl, stream: io.BytesIO, max_chars: int | None) -> OfficeText:
    workbook = openpyxl.load_workbook(stream, read_only=True, data_only=True)
    try:
        budget = _Budget(max_chars)
        pages: list[str] = []
        cells = 0
        for sheet in workbook.worksheets:
            # Forget the declared dimensions: a sheet claiming A1:XFD1048576 would otherwise have every row
            # padded to 16,384 cells. Rows then hold their cells up to the last filled one.
            sheet.reset_dimensions()
            lines = [budget.add(f"# {_one_line(str(sheet.title))}")]
            for row in sheet.iter_rows(values_only=True):
                cells += len(row) + 1
                if cells > MAX_CELLS:
                    raise LoadError(f"spreadsheet too large: more than {MAX_CELLS:,} cells (sheet {sheet.title!r})")
                values = [_cell_text(value) for value in row]
                while values and not values[-1]:
                    values.pop()
                if values:
                    lines.append(budget.add("\t".join(values)))
            pages.append("\n".join(lines))
        return OfficeText(pages, True, _title(workbook.properties.title))
    finally:
        workbook.close()


def _cell_text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, datetime.datetime) and value.time() == datetime.time():
        return value.date().isoformat()
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    return _one_line(str(value))
