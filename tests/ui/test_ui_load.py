"""Load on loopback: 20 gradio_client users at once, 5 questions each, through the bounded queue. Every
answer completes, each user only ever sees its own document, and once the users leave the server's
sessions are freed and its memory is back near where it started."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

pytestmark = pytest.mark.slow

USERS, QUESTIONS = 20, 5
TIME_LIMIT_S = 240
MEMORY_SLACK_MIB = 30


def text_of(message: dict) -> str:
    content = message["content"]
    return content if isinstance(content, str) else "".join(b.get("text", "") for b in content)


def one_user(url: str, i: int, doc, questions: int) -> int:
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False, download_files=False)
    try:
        table = client.predict([handle_file(str(doc))], False, api_name="/upload")[0]
        assert [row[1] for row in table["data"]] == ["added"], table
        updates = 0
        for n in range(questions):
            job = client.submit(f"user {i} question {n}: what is code word {i}?", api_name="/ask")
            updates += sum(1 for _ in job)
            chat, sources, status, _, notice = job.result(timeout=TIME_LIMIT_S)
            assert not notice, notice
            assert len(chat) == 2 * (n + 1) and chat[-1]["role"] == "assistant" and text_of(chat[-1])
            assert f"**turns** {n + 1} " in status
            assert f"word{i} " in sources and "rr-source" in sources  # its own document ...
            assert all(f"word{j} " not in sources for j in range(USERS) if j != i)  # ... and nobody else's
        return updates
    finally:
        client.close()


def run_round(server, docs, questions: int) -> tuple[float, int]:
    """All users at once, ``questions`` each; returns the seconds it took and the streamed updates seen."""
    started = time.monotonic()
    with ThreadPoolExecutor(USERS) as pool:
        updates = sum(pool.map(lambda i: one_user(server.url, i, docs[i], questions), range(USERS)))
    elapsed = time.monotonic() - started
    server.wait_live(0, timeout=30)  # every user freed once its client left
    return elapsed, updates


def test_twenty_users_five_questions_each(ui_server, tmp_path):
    docs = []
    for i in range(USERS):
        doc = tmp_path / f"user{i}.txt"
        doc.write_text(f"Code word{i} belongs to user {i} only. " * 3)
        docs.append(doc)
    # A first, shorter round brings the server to its working size (thread pools, queue workers, allocator
    # arenas, Gradio's per-session records): memory measured after it is the baseline a leak would grow from.
    run_round(ui_server, docs, 1)
    time.sleep(1)
    baseline = ui_server.rss_mib()

    peak = [baseline]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], ui_server.rss_mib())
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        elapsed, updates = run_round(ui_server, docs, QUESTIONS)
    finally:
        done.set()
        sampler.join()
    time.sleep(1)
    after = ui_server.rss_mib()
    answers = USERS * QUESTIONS
    print(f"\nUI load: {answers} answers from {USERS} users in {elapsed:.1f} s "
          f"({answers / elapsed:.1f} answers/s, {updates} streamed updates); server RSS baseline {baseline:.0f} MiB, "
          f"peak {peak[0]:.0f} MiB, after the users left {after:.0f} MiB")
    assert elapsed < TIME_LIMIT_S
    assert updates > answers  # answers streamed in several updates, not one each
    assert after - baseline < MEMORY_SLACK_MIB, (baseline, peak[0], after)
    assert ui_server.alive()
