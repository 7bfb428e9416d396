"""What happened to each file of an ingest batch."""

from __future__ import annotations

from dataclasses import dataclass, field

ADDED, DUPLICATE, FAILED, SKIPPED = "added", "duplicate", "failed", "skipped"
MAX_SKIPPED_LISTED = 20  # skipped files named in a summary; the rest are counted


@dataclass
class FileResult:
    path: str
    status: str  # "added", "duplicate", "failed" or "skipped"
    doc_id: str | None = None
    title: str | None = None
    passages: int = 0
    error: str | None = None  # why it failed or was skipped, in words for a person
    duplicate_of: str | None = None  # source path of the document already holding these bytes
    warnings: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        if self.status == ADDED:
            extra = f" ({'; '.join(self.warnings)})" if self.warnings else ""
            return f"added     {self.path}: {self.passages} passages{extra}"
        if self.status == DUPLICATE:
            return f"duplicate {self.path}: same content as {self.duplicate_of}"
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
        """A count line, then one line per failed, duplicate or warned file, then the skipped files with
        their reason: the first ``max_skipped`` (None: all) and how many more."""
        head = (
            f"{len(self.added)} added ({self.passages} passages), {len(self.duplicates)} duplicate(s), "
            f"{len(self.failed)} failed, {len(self.skipped)} skipped in {self.seconds:.1f} s"
        )
        lines = [str(r) for r in self.results if r.status in (FAILED, DUPLICATE) or r.warnings]
        skipped = self.skipped
        shown = skipped if max_skipped is None else skipped[: max(0, max_skipped)]
        lines += [str(r) for r in shown]
        if len(skipped) > len(shown):
            lines.append(f"          ... and {len(skipped) - len(shown)} more skipped")
        return "\n".join([head, *lines])

    def __str__(self) -> str:
        return self.summary()
