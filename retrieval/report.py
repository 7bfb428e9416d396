"""What happened to each file of an ingest batch."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

ADDED, DUPLICATE, FAILED, SKIPPED = "added", "duplicate", "failed", "skipped"
REMOVED = "removed"  # by Collection.update: the document of a file that is gone
MAX_SKIPPED_LISTED = 20  # skipped files named in a summary; the rest are counted


@dataclass
class FileResult:
    path: str
    status: str  # "added", "duplicate", "failed", "skipped" or "removed"
    doc_id: str | None = None
    title: str | None = None
    passages: int = 0
    error: str | None = None  # why it failed or was skipped, in words for a person
    duplicate_of: str | None = None  # source path of the document already holding these bytes
    warnings: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)  # ids of older versions of this file, now deleted
    moved_from: str | None = None  # the stored document's old source, a file now gone: it is recorded here now

    @property
    def unchanged(self) -> bool:
        """A duplicate of the version of this very file that is already stored."""
        return (self.status == DUPLICATE and self.duplicate_of is not None and self.moved_from is None
                and os.path.realpath(self.path) == os.path.realpath(self.duplicate_of))

    def __str__(self) -> str:
        if self.status == ADDED:
            extra = f" ({'; '.join(self.warnings)})" if self.warnings else ""
            verb = "replaced " if self.replaced else "added    "
            return f"{verb} {self.path}: {self.passages} passages{extra}"
        if self.moved_from is not None:
            return f"moved     {self.path}: was {self.moved_from}, which is gone (same content)"
        if self.unchanged:
            return f"unchanged {self.path}"
        if self.status == DUPLICATE:
            return f"duplicate {self.path}: same content as {self.duplicate_of}"
        if self.status == REMOVED:
            return f"removed   {self.path}: {self.error} ({self.passages} passages)"
        return f"{self.status:<9} {self.path}: {self.error}"


@dataclass
class IngestReport:
    results: list[FileResult] = field(default_factory=list)
    seconds: float = 0.0

    def _with(self, status: str) -> list[FileResult]:
        return [r for r in self.results if r.status == status]

    @property
    def added(self) -> list[FileResult]:
        return self._with(ADDED)

    @property
    def duplicates(self) -> list[FileResult]:
        return self._with(DUPLICATE)

    @property
    def failed(self) -> list[FileResult]:
        return self._with(FAILED)

    @property
    def skipped(self) -> list[FileResult]:
        return self._with(SKIPPED)

    @property
    def replaced(self) -> list[FileResult]:
        """Added files that replaced an older version of themselves."""
        return [r for r in self.added if r.replaced]

    @property
    def removed(self) -> list[FileResult]:
        return self._with(REMOVED)

    @property
    def unchanged(self) -> list[FileResult]:
        """Duplicates of the very file already stored (a re-ingested file that did not change)."""
        return [r for r in self.duplicates if r.unchanged]

    @property
    def moved(self) -> list[FileResult]:
        """Duplicates of a stored document whose file is gone: the document now points at them."""
        return [r for r in self.duplicates if r.moved_from is not None]

    @property
    def passages(self) -> int:
        return sum(r.passages for r in self.added)

    @property
    def ok(self) -> bool:
        """True when no file failed (duplicates and skipped files are not failures)."""
        return not self.failed

    def result(self, path: str) -> FileResult:
        """The result for a path as given or as found in a folder."""
        for r in self.results:
            if r.path == str(path):
                return r
        raise KeyError(path)

    def summary(self, max_skipped: int | None = MAX_SKIPPED_LISTED) -> str:
        """A count line, then one line per failed, duplicate, moved, replaced, removed or warned file, then the
        skipped files with their reason: the first ``max_skipped`` (None: all) and how many more.
        Unchanged files (duplicates of themselves) are counted apart from other duplicates, not listed."""
        replaced, removed = len(self.replaced), len(self.removed)
        unchanged, moved = len(self.unchanged), len(self.moved)
        head = (
            f"{len(self.added)} added ({self.passages} passages"
            + (f"; {replaced} replacing older version(s)" if replaced else "")
            + f"), {len(self.duplicates) - unchanged - moved} duplicate(s), "
            f"{len(self.failed)} failed, {len(self.skipped)} skipped"
            + (f", {unchanged} unchanged" if unchanged else "") + (f", {moved} moved" if moved else "")
            + (f", {removed} removed" if removed else "")
            + f" in {self.seconds:.1f} s"
        )
        lines = [str(r) for r in self.results
                 if r.status in (FAILED, REMOVED) or (r.status == DUPLICATE and not r.unchanged) or r.warnings
                 or r.replaced]
        skipped = self.skipped
        shown = skipped if max_skipped is None else skipped[: max(0, max_skipped)]
        lines += [str(r) for r in shown]
        if len(skipped) > len(shown):
            lines.append(f"          ... and {len(skipped) - len(shown)} more skipped")
        return "\n".join([head, *lines])

    def __str__(self) -> str:
        return self.summary()
