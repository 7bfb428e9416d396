"""IngestReport.summary(): counts, then failed/duplicate/warned files, then skipped files named with reasons."""

from __future__ import annotations

from retrieval.report import ADDED, DUPLICATE, FAILED, MAX_SKIPPED_LISTED, SKIPPED, FileResult, IngestReport


def _skipped(n: int) -> list[FileResult]:
    return [FileResult(f"docs/file{i:02d}.docx", SKIPPED, error="unsupported file type '.docx'") for i in range(n)]


def test_summary_names_skipped_files_with_their_reason():
    report = IngestReport([FileResult("docs/a.txt", ADDED, passages=2),
                           FileResult("docs/b.json", SKIPPED, error="unsupported file type '.json'"),
                           FileResult("docs/c.csv", SKIPPED, error="unsupported file type '.csv'"),
                           FileResult("docs/d.txt", FAILED, error="empty file"),
                           FileResult("docs/e.txt", DUPLICATE, duplicate_of="docs/a.txt")])
    lines = report.summary().splitlines()
    assert lines[0].startswith("1 added (2 passages), 1 duplicate(s), 1 failed, 2 skipped")
    assert lines[1:] == ["failed    docs/d.txt: empty file", "duplicate docs/e.txt: same content as docs/a.txt",
                         "skipped   docs/b.json: unsupported file type '.json'",
                         "skipped   docs/c.csv: unsupported file type '.csv'"]
    assert str(report) == report.summary()


def test_summary_caps_the_skipped_list():
    report = IngestReport(_skipped(MAX_SKIPPED_LISTED + 5))
    lines = report.summary().splitlines()
    named = [ln for ln in lines if ln.startswith("skipped ")]
    assert len(named) == MAX_SKIPPED_LISTED and named[0].startswith("skipped   docs/file00.docx")
    assert lines[-1].strip() == "... and 5 more skipped"
    assert len([ln for ln in report.summary(max_skipped=None).splitlines() if ln.startswith("skipped ")]) == 25
    two = report.summary(max_skipped=2).splitlines()
    assert len(two) == 4 and two[-1].strip() == f"... and {MAX_SKIPPED_LISTED + 3} more skipped"
    none = report.summary(max_skipped=0).splitlines()
    assert len(none) == 2 and none[1].strip() == f"... and {MAX_SKIPPED_LISTED + 5} more skipped"


def test_summary_of_exactly_the_cap_has_no_more_line():
    lines = IngestReport(_skipped(MAX_SKIPPED_LISTED)).summary().splitlines()
    assert len(lines) == 1 + MAX_SKIPPED_LISTED and "more skipped" not in lines[-1]


def test_summary_without_skipped_files_is_unchanged():
    report = IngestReport([FileResult("a.txt", ADDED, passages=1)], seconds=0.25)
    assert report.summary() == "1 added (1 passages), 0 duplicate(s), 0 failed, 0 skipped in 0.2 s"
