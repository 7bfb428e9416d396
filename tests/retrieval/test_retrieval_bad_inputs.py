"""Bad input: each bad file gets one clear error, good files of the batch still go in."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import retrieval.ingest as ingest_module
from retrieval import HashEmbedder, LoadLimits

from .retrieval_testdata import assert_consistent, text_pdf, write

REPO = Path(__file__).resolve().parents[2]


def test_mixed_batch(make_collection, tmp_path):
    root = tmp_path / "batch"
    write(root / "good.txt", "Plain text about gardening and tomatoes.")
    write(root / "good.pdf", text_pdf(["A PDF page about bicycles."]))
    write(root / "good.html", "<p>An HTML page about <i>sailing</i>.</p>")
    write(root / "corrupt.pdf", b"%PDF-1.4\n1 0 obj << /Type /Catalog >> garbage")
    write(root / "encrypted.pdf", text_pdf(["secret"], encrypt="hunter2"))
    write(root / "empty.txt", b"")
    write(root / "scanned.pdf", text_pdf(["", ""]))
    write(root / "binary.txt", b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 16)
    write(root / "latin1-damaged.txt", "Café crème. ".encode() * 5 + b"\xe9\xff" + b" fin.")
    write(root / "photo.jpg", b"\xff\xd8\xff")
    col = make_collection()
    report = col.add(root)

    by_name = {Path(r.path).name: r for r in report.results}
    assert len(by_name) == len(report.results) == 10  # one result per file
    expected_errors = {
        "corrupt.pdf": "corrupt PDF: ",
        "encrypted.pdf": "encrypted PDF: a password is required to read it",
        "empty.txt": "empty file",
        "scanned.pdf": "no extractable text in 2 page(s)",
        "binary.txt": "binary file",
    }
    for name, message in expected_errors.items():
        assert by_name[name].status == "failed" and by_name[name].error.startswith(message), by_name[name]
    for name in ("good.txt", "good.pdf", "good.html", "latin1-damaged.txt"):
        assert by_name[name].status == "added" and by_name[name].passages == 1, by_name[name]
    assert "invalid UTF-8" in by_name["latin1-damaged.txt"].warnings[0]
    assert by_name["photo.jpg"].status == "skipped"
    assert len(col.documents()) == 4
    assert col.search("bicycles")[0].source == str(root / "good.pdf")
    assert_consistent(col)


class DeletingEmbedder(HashEmbedder):
    """Deletes a file of the batch the first time it embeds: the file vanishes mid-batch."""

    def __init__(self, victim: Path) -> None:
        super().__init__(dim=64)
        self.victim = victim

    def encode(self, texts):
        self.victim.unlink(missing_ok=True)
        return super().encode(texts)


def test_file_deleted_while_batch_runs(make_collection, tmp_path):
    files = [write(tmp_path / "b" / f"{i}.txt", f"Document number {i} text.") for i in range(4)]
    col = make_collection(embedder=DeletingEmbedder(files[2]), batch_passages=1)
    report = col.add(tmp_path / "b")
    assert [r.status for r in report.results] == ["added", "added", "failed", "added"]
    assert report.results[2].error.startswith("file not found")
    assert_consistent(col)


def test_folder_of_thousands_of_small_files(make_collection, tmp_path):
    root = tmp_path / "many"
    for i in range(3000):
        write(root / f"d{i % 10}" / f"note{i:05d}.txt", f"Note {i}: remember item {i * 7} for project {i % 13}.")
    col = make_collection()
    start = time.perf_counter()
    report = col.add(root, progress=True)
    elapsed = time.perf_counter() - start
    assert len(report.added) == 3000 and report.ok
    assert len(col) == 3000 and len(col.documents()) == 3000
    top = col.search("Note 1234: remember item 8638 for project 12.")[0]
    assert top.source.endswith("note01234.txt")  # passages are embedded after their titles: no longer an exact match
    assert elapsed < 60, elapsed
    assert_consistent(col)


def test_file_over_size_limit(make_collection, tmp_path):
    write(tmp_path / "s" / "small.txt", "small file")
    write(tmp_path / "s" / "large.txt", "large file " * 500)
    report = make_collection(limits=LoadLimits(max_file_bytes=1000)).add(tmp_path / "s")
    large = report.result(str(tmp_path / "s" / "large.txt"))
    assert large.status == "failed" and large.error.startswith("file too large: ")
    assert report.result(str(tmp_path / "s" / "small.txt")).status == "added"


def test_unexpected_loader_error_costs_one_file(make_collection, tmp_path, monkeypatch):
    real = ingest_module.load_limited

    def flaky(path, data, limits):
        if Path(path).name == "boom.txt":
            raise RuntimeError("loader bug")
        return real(path, data, limits)

    monkeypatch.setattr(ingest_module, "load_limited", flaky)
    write(tmp_path / "u" / "boom.txt", "x")
    write(tmp_path / "u" / "fine.txt", "y")
    report = make_collection().add(tmp_path / "u")
    assert [(r.status, r.error) for r in report.results] == [
        ("failed", "unexpected error: RuntimeError: loader bug"),
        ("added", None),
    ]


class PoisonEmbedder(HashEmbedder):
    def encode(self, texts):
        if any("POISON" in t for t in texts):
            raise ValueError("cannot embed this")
        return super().encode(texts)


def test_embedding_failure_costs_one_file(make_collection, tmp_path):
    for name in ("a", "b", "c"):
        write(tmp_path / "p" / f"{name}.txt", f"text {name}" + (" POISON" if name == "b" else ""))
    col = make_collection(embedder=PoisonEmbedder(dim=64))
    report = col.add(tmp_path / "p")
    assert [r.status for r in report.results] == ["added", "failed", "added"]
    assert report.results[1].error == "embedding failed: ValueError: cannot embed this"
    assert len(col.documents()) == 2
    assert_consistent(col)


_BIG_INGEST = """
import json, sys, time
from retrieval import Collection, HashEmbedder

def peak_rss_mb():
    # VmHWM is this process's own high-water mark. (ru_maxrss is not: Linux carries the parent's
    # peak across fork+exec, so under a big pytest process it reports the parent's memory.)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

col = Collection.create("big", sys.argv[1], embedder=HashEmbedder(dim=32, bigrams=False), progress=False)
start = time.perf_counter()
report = col.add(sys.argv[2])
print(json.dumps({"seconds": time.perf_counter() - start, "status": report.results[0].status,
                  "passages": report.passages, "index": col.index.ntotal,
                  "max_rss_mb": peak_rss_mb()}))
"""


@pytest.mark.slow
def test_50mb_text_file(tmp_path):
    """Loads, splits and indexes fully; memory stays a small multiple of the file size."""
    para = "Paragraph {i} of the big file: the quick brown fox jumps over the lazy dog. Again and again.\n\n"
    block = "".join(para.format(i=i) for i in range(1000))
    big = tmp_path / "big.txt"
    with open(big, "w") as fh:
        for _ in range(50 * 2**20 // len(block) + 1):
            fh.write(block)
    assert big.stat().st_size >= 50 * 2**20
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", _BIG_INGEST, str(tmp_path / "data"), str(big)],
        capture_output=True, text=True, env=env, timeout=120, check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["status"] == "added"
    assert result["passages"] == result["index"] > 50 * 2**20 // 1500
    assert result["max_rss_mb"] < 700, result
