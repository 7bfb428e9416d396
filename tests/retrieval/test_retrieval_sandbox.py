"""The loader worker behind the per-file time budget (retrieval.sandbox): same documents as in process,
a clean restart after a kill or a crash, its own imports, its warnings logged here."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import retrieval.sandbox as sandbox
from retrieval import LoadError, LoadLimits, load_document

from .hostile_data import slow_html
from .retrieval_testdata import text_pdf, write


def test_time_budget_off_loads_in_this_process(tmp_path, monkeypatch):
    monkeypatch.setattr(sandbox, "LoaderProcess", None)  # any use of a worker would fail
    doc = sandbox.load_limited(tmp_path / "x.txt", b"in process", LoadLimits(max_seconds=None))
    assert doc.text == "in process" and doc.source == str((tmp_path / "x.txt").absolute())


def test_worker_round_trip_keeps_the_document(tmp_path):
    data = text_pdf(["First page.", "", "Third \u00e9t\u00e9 page."], title="T")
    path = write(tmp_path / "w.pdf", data)
    here = load_document(path)
    there = sandbox.load_limited(path, data, LoadLimits())
    assert there == here


def test_a_worker_that_dies_costs_one_file(tmp_path):
    """The worker killed mid-file (as the OOM killer would) gives a per-file error and a fresh worker."""
    sandbox.load_limited(tmp_path / "warm.txt", b"start the worker", LoadLimits())
    box: dict = {}

    def slow() -> None:
        try:
            sandbox.load_limited(tmp_path / "s.html", slow_html().encode(), LoadLimits(max_seconds=300))
        except LoadError as exc:
            box["error"] = str(exc)

    thread = threading.Thread(target=slow, daemon=True)
    thread.start()
    pid = sandbox._current.proc.pid
    time.sleep(0.3)  # let the request reach the worker; the kill lands wherever it is
    os.kill(pid, signal.SIGKILL)
    thread.join(60)
    assert "(killed by SIGKILL" in box["error"], box
    assert sandbox.load_limited(tmp_path / "after.txt", b"next file", LoadLimits()).text == "next file"
    assert sandbox._current.proc.pid != pid


def test_a_missing_parser_package_is_named_not_blamed_on_memory(tmp_path, monkeypatch):
    """A worker that cannot import a parser says which one (it once read "killed by SIGKILL (out of
    memory?)" because the parent killed the exiting worker first)."""
    write(tmp_path / "fake" / "bs4" / "__init__.py", "raise ImportError(\"No module named 'bs4'\")")
    before = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "fake"))
    sandbox.shutdown()  # the next load starts a worker that sees the broken bs4
    try:
        missing = r"did not start \(a document parser is not installed: No module named 'bs4"
        with pytest.raises(LoadError, match=missing):
            sandbox.load_limited(tmp_path / "a.txt", b"text", LoadLimits())
    finally:
        if before is None:
            monkeypatch.delenv("PYTHONPATH")
        else:
            monkeypatch.setenv("PYTHONPATH", before)
        sandbox.shutdown()
    assert sandbox.load_limited(tmp_path / "b.txt", b"works again", LoadLimits()).text == "works again"


def test_modules_in_the_working_directory_are_not_imported(tmp_path, monkeypatch):
    write(tmp_path / "retrieval" / "__init__.py", "raise SystemExit('imported the wrong package')")
    write(tmp_path / "retrieval" / "load_worker.py", "raise SystemExit('imported the wrong worker')")
    write(tmp_path / "bs4.py", "raise SystemExit('imported the wrong bs4')")
    monkeypatch.chdir(tmp_path)
    sandbox.shutdown()  # the next load starts a worker from here
    doc = sandbox.load_limited("rel.txt", b"right package", LoadLimits())
    assert doc.text == "right package" and doc.source == str(tmp_path / "rel.txt")


def test_worker_warnings_are_logged_here(tmp_path, caplog):
    data = text_pdf(["Some text."])
    at = re.search(rb"startxref\s+(\d+)", data)  # a wrong pointer: pypdf warns, then finds the table itself
    damaged = data[: at.start(1)] + str(int(at.group(1)) + 7).encode() + data[at.end(1) :]
    with caplog.at_level(logging.WARNING):
        doc = sandbox.load_limited(tmp_path / "w.pdf", damaged, LoadLimits())
    assert doc.text.strip() == "Some text."
    assert any(r.name.startswith("pypdf") and r.getMessage().endswith("(w.pdf)") for r in caplog.records), \
        [(r.name, r.getMessage()) for r in caplog.records]


_PARENT = """
import sys
import retrieval.sandbox as sandbox
from retrieval import LoadLimits
sandbox.load_limited("warm.txt", b"warm", LoadLimits())
print(sandbox._current.proc.pid, flush=True)
sandbox.load_limited("slow.html", ("<div>" * 2_000_000).encode(), LoadLimits(max_seconds=float(sys.argv[1])))
"""


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return "\nState:\tZ" not in f.read()  # a zombie has stopped
    except FileNotFoundError:
        return False


@pytest.mark.slow  # kill -9 of a subprocess
@pytest.mark.skipif(not os.path.isdir("/proc/self") or not hasattr(signal, "setitimer"), reason="needs /proc, SIGALRM")
def test_a_worker_orphaned_by_kill_9_stops_by_itself(tmp_path):
    """The parent killed mid-file cannot kill its worker; the worker's own alarm (budget + 5 s) ends it,
    where the file would have kept it busy for minutes."""
    env = {**os.environ, "PYTHONPATH": str(Path(sandbox.__file__).resolve().parents[1])}
    parent = subprocess.Popen([sys.executable, "-c", _PARENT, "1"], stdout=subprocess.PIPE, text=True, env=env,
                              cwd=tmp_path)
    worker = int(parent.stdout.readline())
    time.sleep(0.5)  # the slow file is in the worker now
    parent.kill()
    parent.wait()
    parent.stdout.close()
    assert _running(worker)
    for _ in range(300):  # the alarm fires 6 s after the file started; parsing it would take minutes
        if not _running(worker):
            break
        time.sleep(0.1)
    assert not _running(worker)
