"""PDF text extraction with pypdf: one text per page, page numbers kept."""

from __future__ import annotations

import io
import logging

from .errors import LoadError
from .pdf_budget import DecompressionBudget, decompression_budget

logger = logging.getLogger(__name__)


def extract_pdf(data: bytes, max_decompressed_bytes: int | None = None) -> tuple[list[str], str | None, list[str]]:
    """Return (text of each page, metadata title or None, warnings).

    Raises LoadError for a corrupt PDF, a PDF that needs a password, one whose streams
    inflate past ``max_decompressed_bytes`` (summed over the document; see
    retrieval.pdf_budget), or one without any extractable text (typically scanned pages,
    which need OCR first).
    """
    with decompression_budget(max_decompressed_bytes) as budget:
        return _extract(data, budget)


def _extract(data: bytes, budget: DecompressionBudget) -> tuple[list[str], str | None, list[str]]:
    from pypdf import PdfReader
    from pypdf.errors import DependencyError, FileNotDecryptedError, LimitReachedError, PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            _decrypt(reader)
        pages = list(reader.pages)
    except LoadError:
        raise
    except (LimitReachedError, MemoryError) as exc:
        raise budget.error(exc) from None
    except FileNotDecryptedError:
        raise LoadError("encrypted PDF: a password is required to read it") from None
    except DependencyError as exc:
        raise LoadError(f"encrypted PDF: cannot decrypt ({exc})") from None
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, IndexError,
            AssertionError, RecursionError, OSError) as exc:
        # pypdf surfaces damage in many shapes; all mean the same thing to a user.
        raise LoadError(f"corrupt PDF: {_short(exc)}") from None
    if not pages:
        raise LoadError("corrupt PDF: no pages")

    texts: list[str] = []
    warnings: list[str] = []
    blank: list[int] = []
    failed: list[int] = []
    for number, page in enumerate(pages, start=1):
        budget.page = number
        try:
            text = page.extract_text() or ""
            budget.check()  # in case the library caught the budget's error on its way out
        except (LoadError, LimitReachedError, MemoryError) as exc:  # a budget: the document stops here
            raise budget.error(exc) from None
        except Exception as exc:  # one broken page must not lose the whole document
            warnings.append(f"page {number}: text extraction failed ({_short(exc)})")
            failed.append(number)
            text = ""
        if not text.strip():
            blank.append(number)
        texts.append(text)
    budget.page = None
    if failed and len(blank) == len(pages):
        raise LoadError(f"no text could be extracted: {warnings[0]}"
                        + (f" (and on page(s) {_ranges(failed[1:])})" if len(failed) > 1 else ""))
    if len(blank) == len(pages):
        raise LoadError(
            f"no extractable text in {len(pages)} page(s): scanned or image-only PDF? (run OCR first)"
        )
    if blank:
        warnings.append(f"no extractable text on page(s) {_ranges(blank)}")
    return texts, _title(reader), warnings


def _decrypt(reader) -> None:
    from pypdf import PasswordType

    # Many PDFs are "encrypted" only with an owner password (print/copy limits) and an
    # empty user password: those open fine, so try that before giving up.
    if reader.decrypt("") == PasswordType.NOT_DECRYPTED:
        raise LoadError("encrypted PDF: a password is required to read it")


def _title(reader) -> str | None:
    try:
        meta = reader.metadata
        title = meta.title if meta else None
    except Exception:  # metadata is optional; damage there is not worth failing for
        return None
    if isinstance(title, str) and title.strip():
        return title.strip()
    return None


def _short(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _ranges(numbers: list[int]) -> str:
    """[1, 2, 3, 7] -> '1-3, 7'."""
    parts: list[str] = []
    start = prev = numbers[0]
    for n in numbers[1:] + [None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if n is not None:
            start = prev = n
    return ", ".join(parts)
