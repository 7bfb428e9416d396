"""Crash consistency: kill -9 at random moments, then index and metadata must agree."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from retrieval import Collection, HashEmbedder, content_id

from .retrieval_testdata import assert_consistent, on_disk_state, write

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow  # kill -9 of subprocesses

# Ingests two folders with a delete in between, in small batches. With checkpoint 0 the
# index is saved after every batch, so a kill can land in embedding, in a SQLite commit
# or in an index write; with a long checkpoint the index on disk falls behind the store.
_WORKER = """
import sys
from retrieval import Collection, HashEmbedder
col = Collection.open_or_create("crash", sys.argv[1], embedder=HashEmbedder(dim=64), progress=False,
                                batch_passages=4, checkpoint_seconds=float(sys.argv[4]))
print("ready", flush=True)
col.add(sys.argv[2])
for doc in col.documents()[:3]:
    col.delete(doc.id)
col.add(sys.argv[3])
print("done", flush=True)
"""


def _corpus(root: Path, tag: str, n: int) -> Path:
    for i in range(n):
        body = "\n\n".join(f"{tag} file {i} paragraph {j}: words about topic {i * j % 17}." for j in range(6))
        write(root / tag / f"{i:03d}.txt", body)
    return root / tag


def _check_on_disk(collection_dir: Path) -> dict:
    state = on_disk_state(collection_dir)
    assert state["vectors"] == state["passages"] and state["orphans"] == 0, state
    assert state["fts_mismatch"] == 0, state  # the BM25 table commits with the passages
    assert all(recorded == actual for _, recorded, actual in state["per_doc"]), state
    # An index file named after the current generation must hold exactly the stored passages.
    assert state["index_ntotal"] in (None, state["passages"]), state
    return state


def _run_script(code: str, args: list, kill_after: float | None) -> tuple[str, float]:
    """Run a worker script that prints "ready" then "done"; SIGKILL it ``kill_after`` s after "ready"
    (None: let it finish). Returns ("finished" | "killed", seconds from "ready")."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", code, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "ready"
        ready = time.monotonic()
        if kill_after is None:
            assert proc.stdout.readline().strip() == "done"
            return "finished", time.monotonic() - ready
        time.sleep(kill_after)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        return ("finished" if "done" in proc.stdout.read() else "killed"), kill_after
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()


def _run_worker(
    data_dir: Path, first: Path, second: Path, kill_after: float | None, checkpoint: float = 0
) -> tuple[str, float]:
    return _run_script(_WORKER, [data_dir, first, second, checkpoint], kill_after)


def test_kill_during_ingest_at_random_points(tmp_path):
    data_dir = tmp_path / "data"
    folders = []

    def fresh_folders(trial: int) -> tuple[Path, Path]:
        pair = _corpus(tmp_path, f"t{trial}a", 150), _corpus(tmp_path, f"t{trial}b", 150)
        folders.extend(pair)
        return pair

    # A run left alone tells how long the work takes; kills then fall anywhere inside it.
    spans = {}
    for trial, checkpoint in enumerate((0, 1000)):
        outcome, spans[checkpoint] = _run_worker(data_dir, *fresh_folders(trial), None, checkpoint)
        assert outcome == "finished"
    rng = random.Random(1234)
    outcomes = []
    deadline = time.monotonic() + 60
    for trial in range(2, 10):
        checkpoint = 0 if trial % 2 else 1000
        kill_after = rng.uniform(0, spans[checkpoint])
        outcomes.append(_run_worker(data_dir, *fresh_folders(trial), kill_after, checkpoint)[0])
        state = _check_on_disk(data_dir / "crash")
        with Collection.open("crash", data_dir, progress=False) as col:
            assert_consistent(col)
            hit = col.search("paragraph 3: words about topic", k=3)[0]
            assert col.store.hits([hit.passage_id])[hit.passage_id][1] == hit.text
        _check_on_disk(data_dir / "crash")
        # Reopening repaired the index and saved it under the current generation.
        assert on_disk_state(data_dir / "crash")["index_ntotal"] == state["passages"], f"trial {trial}"
        if time.monotonic() > deadline:
            break
    assert outcomes.count("killed") >= 4, outcomes  # the test did interrupt ingests
    # Finishing the job after all those crashes gives the complete collection.
    with Collection.open("crash", data_dir, progress=False) as col:
        col.add(folders)
        assert_consistent(col)
        assert len(col.documents()) == 150 * len(folders)
        assert not list((data_dir / "crash").glob("*.tmp"))


@pytest.fixture
def filled(make_collection, tmp_path):
    col = make_collection("fill")
    col.add(_corpus(tmp_path, "gamma", 10))
    col.close()
    return col.path


def _reopen(path: Path) -> Collection:
    return Collection.open(path.name, path.parent, embedder=HashEmbedder(dim=64), progress=False)


def test_stale_index_file_is_rebuilt(filled):
    generation = on_disk_state(filled)["generation"]
    (filled / f"index.{generation}.faiss").rename(filled / f"index.{generation - 1}.faiss")
    with _reopen(filled) as col:
        assert_consistent(col)
        assert sorted(p.name for p in filled.glob("index.*")) == [f"index.{generation}.faiss"]


def test_truncated_index_file_is_rebuilt(filled):
    generation = on_disk_state(filled)["generation"]
    index_file = filled / f"index.{generation}.faiss"
    index_file.write_bytes(index_file.read_bytes()[:100])
    with _reopen(filled) as col:
        assert_consistent(col)
        assert col.search("gamma file 3 paragraph 2")


def test_missing_index_file_and_leftover_temp_file(filled):
    for f in filled.glob("index.*.faiss"):
        f.unlink()
    (filled / "index.99.faiss.12345.tmp").write_bytes(b"half written")
    with _reopen(filled) as col:
        assert_consistent(col)
    assert not list(filled.glob("*.tmp"))


def test_second_writer_waits_for_the_lock(filled):
    from retrieval.locking import exclusive_lock

    with _reopen(filled) as col:
        col.lock_timeout = 0.2
        with exclusive_lock(filled / "lock"):
            with pytest.raises(Exception, match="collection is busy"):
                col.delete(col.documents()[0].id)
        assert col.delete(col.documents()[0].id)



# Edits every file of a folder and re-adds it (each file replaced), three rounds, then removes two
# documents by path and one whose file was deleted (update). Small batches, the index saved after every
# batch or only at the end, so a kill lands in a replace's commit, between it and the index save, or in
# a removal. Files are rewritten atomically: what is on disk is always some whole edition.
_EDITION = "file {i} edition {n} paragraph {j}: words about topic {t}."
_UPDATE_WORKER = """
import os, sys
from pathlib import Path
from retrieval import Collection, HashEmbedder
folder, template = Path(sys.argv[2]), sys.argv[4]
col = Collection.open("crash", sys.argv[1], embedder=HashEmbedder(dim=64), progress=False,
                      batch_passages=4, checkpoint_seconds=float(sys.argv[3]))
files = sorted(folder.glob("*.txt"))
print("ready", flush=True)
for n in (2, 3, 4):
    for i, f in enumerate(files):
        f.with_suffix(".tmp").write_text("\\n\\n".join(template.format(i=i, n=n, j=j, t=i * j % 17) for j in range(6)))
        os.replace(f.with_suffix(".tmp"), f)
    col.add(folder)
col.remove_documents([str(files[0]), str(files[1])])
files[2].unlink()
col.update(folder)
print("done", flush=True)
"""


def edition(i: int, n: int) -> str:
    return "\n\n".join(_EDITION.format(i=i, n=n, j=j, t=i * j % 17) for j in range(6))


def _run_update_worker(data_dir: Path, folder: Path, kill_after: float | None, checkpoint: float) -> tuple[str, float]:
    return _run_script(_UPDATE_WORKER, [data_dir, folder, checkpoint, _EDITION], kill_after)


def _check_versions(data_dir: Path, folder: Path, n_files: int) -> None:
    """One version per file, never none: files 3.. (never removed) have exactly one document at every
    moment, the others at most one; and each document's passages are all of one edition."""
    from retrieval.store import source_key

    with Collection.open("crash", data_dir, embedder=HashEmbedder(dim=64), progress=False) as col:
        assert_consistent(col)
        by_path: dict[str, list] = {}
        for doc in col.documents():
            by_path.setdefault(source_key(doc.source), []).append(doc)
        assert len(by_path) == len(col.documents())
        for i in range(n_files):
            docs = by_path.get(source_key(str(folder / f"{i:03d}.txt")), [])
            assert len(docs) == 1 if i >= 3 else len(docs) <= 1, (i, docs)
            for doc in docs:
                text = " ".join(p.text for p in col.passages(doc.id))
                assert len(set(re.findall(r"edition (\d+)", text))) == 1, (i, text)
        hit = col.search("paragraph 3: words about topic", k=1)[0]
        assert col.store.hits([hit.passage_id])[hit.passage_id][1] == hit.text


def test_kill_during_replace_and_remove_at_random_points(tmp_path):
    n_files = 40

    def fresh(trial: int) -> tuple[Path, Path]:
        data_dir, folder = tmp_path / f"data{trial}", tmp_path / f"docs{trial}"
        for i in range(n_files):
            write(folder / f"{i:03d}.txt", edition(i, 1))
        with Collection.create("crash", data_dir, embedder=HashEmbedder(dim=64), progress=False) as col:
            col.add(folder)
        return data_dir, folder

    spans = {}
    for trial, checkpoint in enumerate((0, 1000)):
        data_dir, folder = fresh(trial)
        outcome, spans[checkpoint] = _run_update_worker(data_dir, folder, None, checkpoint)
        assert outcome == "finished"
        _check_versions(data_dir, folder, n_files)
    rng = random.Random(4321)
    outcomes = []
    deadline = time.monotonic() + 60
    for trial in range(2, 12):
        checkpoint = 0 if trial % 2 else 1000
        data_dir, folder = fresh(trial)
        outcomes.append(_run_update_worker(data_dir, folder, rng.uniform(0, spans[checkpoint]), checkpoint)[0])
        _check_on_disk(data_dir / "crash")
        _check_versions(data_dir, folder, n_files)
        _check_on_disk(data_dir / "crash")
        # Running update after the crash brings the collection in step with the folder (removed
        # documents whose files still exist come back: update reads every file under the folder).
        with Collection.open("crash", data_dir, embedder=HashEmbedder(dim=64), progress=False) as col:
            assert col.update(folder).ok
            assert sorted(d.id for d in col.documents()) == sorted(
                content_id(f.read_bytes()) for f in folder.glob("*.txt"))
            assert_consistent(col)
        if time.monotonic() > deadline:
            break
    assert outcomes.count("killed") >= 4, outcomes
