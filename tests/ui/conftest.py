"""Fixtures for the UI tests: a tiny model directory, a real ``retnet-rag ui`` server on loopback (one
per test session: it takes ~15 s to start on a busy 2-core machine), and a headless Debian chromium."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.app.app_testutil import special_tokenizer, tiny_model

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
START_TIMEOUT_S = 120
HEARTBEAT_S = 0.5  # how soon the server notices a closed tab or client (Gradio's default is 15 s)


@pytest.fixture(scope="session")
def ui_model_dir(tmp_path_factory):
    """A tiny model with the layout's marker tokens. RETNET_RAG_UI_TEST_MODEL picks another, and
    RETNET_RAG_UI_TEST_EMBEDDER ("minilm") the embedder: the README screenshot is taken with the bundled ones."""
    chosen = os.environ.get("RETNET_RAG_UI_TEST_MODEL")
    if chosen:
        return Path(chosen)
    path = tmp_path_factory.mktemp("ui-model")
    tok = special_tokenizer()
    tiny_model(vocab_size=tok.get_vocab_size(), seed=1).save_pretrained(path, tokenizer=tok)
    return path


class Server:
    """A ``retnet-rag ui`` process: its URL, memory, and log (one line per user opened or closed)."""

    def __init__(self, proc: subprocess.Popen, url: str, log: Path, data_dir: Path):
        self.proc, self.url, self.log, self.data_dir = proc, url, log, data_dir

    def rss_mib(self) -> float:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def live_users(self) -> int:
        """Users in memory, from the last 'N live' the server logged (0 before any)."""
        found = re.findall(r"\((\d+) live\)", self.log_text())
        return int(found[-1]) if found else 0

    def wait_live(self, n: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while self.live_users() != n:
            assert time.monotonic() < deadline, f"{self.live_users()} users live, expected {n}"
            time.sleep(0.2)

    def alive(self) -> bool:
        try:
            with urllib.request.urlopen(self.url, timeout=10) as r:
                return r.status == 200
        except OSError:
            return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def ui_server(ui_model_dir, tmp_path_factory):
    pytest.importorskip("gradio", reason="the UI needs gradio (pip install -e '.[ui]')")
    root = tmp_path_factory.mktemp("ui-server")
    data_dir, log = root / "collections", root / "server.log"
    port = _free_port()
    env = {**os.environ, "GRADIO_HEARTBEAT_INTERVAL": str(HEARTBEAT_S), "GRADIO_ANALYTICS_ENABLED": "False",
           "NO_PROXY": "127.0.0.1,localhost", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    embedder = os.environ.get("RETNET_RAG_UI_TEST_EMBEDDER", "hash")
    cmd = [sys.executable, "-c", "from app.cli import main; raise SystemExit(main())", "ui", "--model",
           str(ui_model_dir), "--data-dir", str(data_dir), "--embedder", embedder, "--port", str(port),
           "--max-new-tokens", "24", "--k", "2"]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                cwd=Path(__file__).resolve().parents[2])
    server = Server(proc, f"http://127.0.0.1:{port}/", log, data_dir)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.alive():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"retnet-rag ui did not start:\n{server.log_text()[-3000:]}")
        time.sleep(0.5)
    yield server
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="session")
def browser():
    """Debian's chromium driven by Playwright (no browser download)."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (no browser download)")
    if not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists():
        pytest.skip(f"no chromium at {CHROMIUM}: apt-get install -y chromium")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def docs(tmp_path):
    """Small documents whose words the tests look for in the sources panel."""
    d = tmp_path / "docs"
    d.mkdir()
    (d / "rsync.txt").write_text("Rsync copies files between machines. The -r option copies directories "
                                 "recursively. The -n option performs a dry run that changes nothing.")
    (d / "gzip.md").write_text("# Gzip\n\nGzip compresses files with Lempel-Ziv coding. The -d option "
                               "decompresses. The -k option keeps the input files.")
    return d
