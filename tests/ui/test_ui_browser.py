"""The page in a real browser (headless Debian chromium through Playwright) against a real `retnet-rag ui`
server on loopback: upload, a streamed answer with its sources, reload and tab close, two users at once,
and bad input."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

WAIT_MS = 30_000
QUESTION = "How does gzip compress files?"

# Records every text the newest assistant message shows, to see the answer grow while it streams.
WATCH_BOT = """() => {
  window.botTexts = [];
  const chat = document.querySelector('#chat');
  new MutationObserver(() => {
    const bots = chat.querySelectorAll('[data-testid="bot"]');
    if (bots.length) window.botTexts.push(bots[bots.length - 1].innerText);
  }).observe(chat, {subtree: true, childList: true, characterData: true});
}"""


@pytest.fixture
def open_page(browser, ui_server):
    """Opens pages, each in its own browser context (its own user); closes them after the test and waits
    until the server has freed their sessions, so every test starts with none."""
    contexts = []

    def open_one():
        context = browser.new_context(viewport={"width": 1280, "height": 1000})
        contexts.append(context)
        context.set_default_timeout(WAIT_MS)
        page = context.new_page()
        page.goto(ui_server.url)
        page.wait_for_function("document.querySelector('#status')?.innerText.includes('constant')")
        return page

    yield open_one
    for context in contexts:
        context.close()
    ui_server.wait_live(0)


def notice_has(page, text: str) -> None:
    page.wait_for_function("t => document.querySelector('#notice')?.innerText.includes(t)", arg=text)


def upload(page, paths) -> None:
    page.set_input_files("#upload input[type=file]", [str(p) for p in paths])


def ask(page, question: str, turns: int) -> None:
    page.fill("#question textarea", question)
    page.click("#ask")
    page.wait_for_function("n => document.querySelector('#status')?.innerText.includes('turns ' + n)", arg=turns)


def test_upload_ask_streamed_answer_with_sources(open_page, docs, tmp_path):
    page = open_page()
    upload(page, [docs / "rsync.txt", docs / "gzip.md"])
    notice_has(page, "2 added")
    assert "rsync.txt" in page.inner_text("#upload-results") and "Gzip" in page.inner_text("#documents")

    page.evaluate(WATCH_BOT)
    ask(page, QUESTION, 1)
    final = page.locator('#chat [data-testid="bot"]').last.inner_text()
    seen = [t for t in page.evaluate("window.botTexts") if t.strip() not in ("", "…")]
    assert len(set(seen)) >= 2, f"the answer did not stream: {seen}"  # partial answers, then the whole one
    assert final.strip() and seen[-1] == final

    cards = page.locator("#sources .rr-source")
    assert cards.count() >= 1
    assert "Gzip" in cards.first.inner_text() and "Lempel-Ziv coding" in page.inner_text("#sources")
    status = page.inner_text("#status")
    assert "(constant)" in status and "tokens read 0" not in status and "turns 1" in status
    shot = Path(os.environ.get("RETNET_RAG_UI_SCREENSHOT") or tmp_path / "ui.png")
    shot.parent.mkdir(parents=True, exist_ok=True)
    page.locator("#question textarea").fill("And how do I decompress?")
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000


def test_reload_resumes_and_closing_the_tab_frees_the_session(open_page, ui_server):
    page = open_page()
    ask(page, "Is anybody there?", 1)
    status = page.inner_text("#status")
    page.reload()
    page.wait_for_function("document.querySelector('#status')?.innerText.includes('turns 1')")
    assert "Is anybody there?" in page.inner_text("#chat")
    assert page.inner_text("#status") == status  # same state: same tokens read
    ui_server.wait_live(1)  # the old tab's session went, the user stayed for the new one
    page.context.close()
    ui_server.wait_live(0)


def test_two_browsers_see_only_their_own_things(open_page, docs):
    a, b = open_page(), open_page()
    upload(a, [docs / "rsync.txt"])
    upload(b, [docs / "gzip.md"])
    notice_has(a, "1 added")
    notice_has(b, "1 added")
    for page, q in ((a, "Which option copies directories?"), (b, "Which option keeps the input files?")):
        page.fill("#question textarea", q)
        page.click("#ask")  # both answers are in flight at once
    for page in (a, b):
        page.wait_for_function("document.querySelector('#status')?.innerText.includes('turns 1')")
    assert "Rsync" in a.inner_text("#sources") and "Gzip" not in a.inner_text("#sources")
    assert "Gzip" in b.inner_text("#sources") and "Rsync" not in b.inner_text("#sources")
    assert "keeps the input" not in a.inner_text("#chat") and "copies directories" not in b.inner_text("#chat")
    assert "gzip" not in a.inner_text("#documents").lower() and "rsync" not in b.inner_text("#documents")


def test_bad_input_gets_a_clear_message_and_the_server_keeps_serving(open_page, ui_server, tmp_path):
    page = open_page()
    page.click("#ask")
    notice_has(page, "the question is empty")
    page.fill("#question textarea", "why " * 30_000)
    page.click("#ask")
    notice_has(page, "the question is too long")

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "tool.exe").write_bytes(b"MZ\x90\x00" * 100)
    (bad / "broken.pdf").write_bytes(b"%PDF-1.4\n" + os.urandom(3000))
    with open(bad / "big.txt", "wb") as f:
        f.truncate(50 * 2**20)  # 50 MiB (sparse: cheap to make)
    upload(page, [bad / "tool.exe", bad / "broken.pdf", bad / "big.txt"])
    notice_has(page, "0 added")
    results = page.inner_text("#upload-results")
    assert "unsupported file type '.exe'" in results
    assert "broken.pdf" in results and results.count("failed") == 3
    assert "too large: 50.0 MiB" in results

    (bad / "chat.session").write_bytes(b"not a session file")
    ask(page, "Still there?", 1)
    with page.expect_file_chooser() as chooser:
        page.click("#load")
    chooser.value.set_files(str(bad / "chat.session"))
    notice_has(page, "Your conversation is unchanged")
    assert "Still there?" in page.inner_text("#chat") and "turns 1" in page.inner_text("#status")
    page.click("#save")
    page.wait_for_selector("#saved a")  # the saved conversation, ready to download
    page.click("#reset")
    notice_has(page, "conversation reset")
    assert "turns 0" in page.inner_text("#status")
    assert ui_server.alive()
