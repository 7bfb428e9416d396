"""Crash consistency: kill -9 at random moments, then index and metadata must agree."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from retrieval import Collection, HashEmbedder

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


def _run_worker(
    data_dir: Path, first: Path, second: Path, kill_after: float | None, checkpoint: float = 0
) -> tuple[str, float]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _WORKER, str(data_dir), str(first), str(second), str(checkpoint)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
    )
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
