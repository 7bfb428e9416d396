"""Atomic writes: temp files carry the writer's pid; the next write to a target removes the temps that
killed writes to it left (writer gone, or idle for STALE_AFTER_S), and nothing else."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from retnet.io import STALE_AFTER_S, atomic_directory, atomic_write_text, remove_stale_temps


@pytest.fixture(scope="module")
def dead_pid() -> int:
    out = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                         check=True)
    return int(out.stdout)


def _touch(path, age_s: float = 0.0, data: bytes = b"partial"):
    path.write_bytes(data)
    t = time.time() - age_s
    os.utime(path, (t, t))
    return path


def test_temp_names_carry_the_writers_pid(tmp_path, monkeypatch):
    seen = []
    import retnet.io as io

    real = io.os.replace
    monkeypatch.setattr(io.os, "replace", lambda src, dst: seen.append(os.path.basename(src)) or real(src, dst))
    atomic_write_text(tmp_path / "a.json", "{}")
    assert len(seen) == 1 and seen[0].startswith(f".a.json.{os.getpid()}.") and seen[0].endswith(".tmp")


def test_temps_of_dead_writers_go_at_once(tmp_path, dead_pid):
    stale = _touch(tmp_path / f".a.json.{dead_pid}.abc_1234.tmp")
    atomic_write_text(tmp_path / "a.json", "{}")
    assert not stale.exists() and (tmp_path / "a.json").read_text() == "{}"


def test_temps_of_live_writers_stay_until_idle(tmp_path):
    live = os.getppid()  # our parent: certainly running
    fresh = _touch(tmp_path / f".a.json.{live}.abcdefgh.tmp")
    mine = _touch(tmp_path / f".a.json.{os.getpid()}.abcdefgh.tmp")  # another thread of ours may be writing
    idle = _touch(tmp_path / f".a.json.{live}.zyxwvuts.tmp", age_s=STALE_AFTER_S + 5)
    assert remove_stale_temps(tmp_path / "a.json") == [idle]
    assert fresh.exists() and mine.exists()
    assert sorted(remove_stale_temps(tmp_path / "a.json", now=time.time() + STALE_AFTER_S + 5)) == sorted(
        [fresh, mine])


def test_old_style_temps_go_by_age(tmp_path):
    fresh = _touch(tmp_path / ".a.json.abcdefgh.tmp")
    old = _touch(tmp_path / ".a.json.hgfedcba.tmp", age_s=STALE_AFTER_S + 5)
    atomic_write_text(tmp_path / "a.json", "{}")
    assert fresh.exists() and not old.exists()


def test_only_this_targets_temps_of_our_pattern_are_touched(tmp_path, dead_pid):
    age = STALE_AFTER_S + 5
    keep = [
        _touch(tmp_path / f".b.json.{dead_pid}.abcdefgh.tmp", age),  # another target
        _touch(tmp_path / f".a.json.{dead_pid}.abcdefgh.tmp.bak", age),  # not our suffix
        _touch(tmp_path / f".a.json.{dead_pid}.abc.tmp", age),  # not tempfile's 8 random characters
        _touch(tmp_path / f"a.json.{dead_pid}.abcdefgh.tmp", age),  # no leading dot
        _touch(tmp_path / ".a.json.ABCDEFGH.tmp", age),  # tempfile never makes capitals
        _touch(tmp_path / "a.json.tmp", age),
    ]
    outside = _touch(tmp_path / "precious", age)
    link = tmp_path / f".a.json.{dead_pid}.linkabcd.tmp"
    link.symlink_to(outside)  # never ours: left alone, and its target too
    atomic_write_text(tmp_path / "a.json", "{}")
    assert all(p.exists() for p in keep) and link.is_symlink() and outside.read_bytes() == b"partial"


def test_stale_temp_folders_of_atomic_directory_go(tmp_path, dead_pid):
    stale = tmp_path / f".model.{dead_pid}.abcdefgh.tmp"
    stale.mkdir()
    _touch(stale / "weights.safetensors")
    with atomic_directory(tmp_path / "model") as tmp:
        (tmp / "config.json").write_text("{}")
    assert not stale.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_cleanup_never_fails_a_write(tmp_path, dead_pid, monkeypatch):
    import retnet.io as io

    _touch(tmp_path / f".a.json.{dead_pid}.abcdefgh.tmp")

    def refuse(path):
        raise PermissionError("not yours")

    monkeypatch.setattr(io, "_remove", refuse)
    assert remove_stale_temps(tmp_path / "a.json") == []
    assert remove_stale_temps(tmp_path / "no-such-folder" / "a.json") == []
    atomic_write_text(tmp_path / "a.json", "{}")
    assert (tmp_path / "a.json").read_text() == "{}"


def test_read_safetensors_copies_so_a_later_change_to_the_file_cannot_reach_the_tensors(tmp_path):
    import torch
    from safetensors.torch import save_file

    from retnet.io import read_safetensors

    path = tmp_path / "t.safetensors"
    want = {"a": torch.randn(300, 70, dtype=torch.float64), "b": torch.arange(11)}
    save_file(want, str(path), metadata={"note": "hi"})
    meta, got = read_safetensors(path)
    assert meta == {"note": "hi"} and set(got) == {"a", "b"}
    with open(path, "r+b") as f:  # truncated in place: a mapped tensor would now raise SIGBUS when read
        f.truncate(64)
    assert torch.equal(got["a"].clone(), want["a"]) and torch.equal(got["b"], want["b"])
    for damaged in (b"", b"\x01\x02", (10**6).to_bytes(8, "little") + b"{}", (2).to_bytes(8, "little") + b"[]"):
        path.write_bytes(damaged)
        with pytest.raises(ValueError):
            read_safetensors(path)
