"""The OpenAI-compatible server (app.server), driven over loopback by the official openai client: chat with
and without streaming, sources, stop strings, OpenAI-shaped errors, a bounded queue, concurrency, shutdown."""

from __future__ import annotations

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

openai = pytest.importorskip("openai")  # the dev extra; starlette + uvicorn are the server extra
pytest.importorskip("uvicorn")

import httpx  # noqa: E402  (comes with openai)

from app import prompt as L  # noqa: E402
from app.chat_worker import ChatEngine  # noqa: E402
from app.openai_api import ChatRequest  # noqa: E402
from app.qa import MultiDocQA  # noqa: E402
from app.server import ChatServer, create_app  # noqa: E402
from retrieval import HashEmbedder  # noqa: E402

from .app_testutil import scripted_tokens  # noqa: E402

QUESTION = "What does the -r option of rsync do?"


@pytest.fixture
def qa(special_model, special_tok, docs_dir, data_dir):
    with MultiDocQA("docs", data_dir=data_dir, model=special_model, tokenizer=special_tok, embedder=HashEmbedder(64),
                    k=2, max_new_tokens=6) as qa:
        qa.add(docs_dir, progress=False)
        yield qa


def _start(qa, **options):
    return ChatServer(create_app(qa, **options), "127.0.0.1", 0).start()


@pytest.fixture
def server(qa):
    srv = _start(qa)
    yield srv
    srv.stop()


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=30)


def ask(client, content=QUESTION, model="retnet-rag", **kwargs):
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": content}], **kwargs)


def post(server, body, **kwargs) -> httpx.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(f"{server.url}/v1/chat/completions", content=data, timeout=30,
                      headers={"Content-Type": "application/json"}, **kwargs)


# -- answering ---------------------------------------------------------------------------------------
def test_chat_completion_is_the_apps_answer_with_sources(client, qa):
    r = ask(client)
    assert r.object == "chat.completion" and r.model == "retnet-rag:docs" and len(r.choices) == 1
    choice = r.choices[0]
    assert choice.message.role == "assistant" and choice.finish_reason in ("stop", "length")
    assert choice.message.content == qa.ask(QUESTION).text  # one user message: exactly MultiDocQA's answer
    assert 0 < r.usage.completion_tokens <= 6 and r.usage.prompt_tokens > 20
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    sources = r.model_extra["retnet_rag"]["sources"]
    assert [s["n"] for s in sources] == [1, 2] and sources[0]["title"] == "rsync"
    assert "copies directories recursively" in sources[0]["text"]


def test_streaming_gives_the_same_answer_in_openai_chunks(client, server):
    plain = ask(client)
    chunks = list(ask(client, stream=True, stream_options={"include_usage": True}))
    first, last, usage = chunks[0], chunks[-2], chunks[-1]
    assert first.choices[0].delta.role == "assistant"
    assert first.model_extra["retnet_rag"]["sources"][0]["title"] == "rsync"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    assert last.choices[0].finish_reason == plain.choices[0].finish_reason
    assert usage.choices == [] and usage.usage.completion_tokens == plain.usage.completion_tokens
    assert len({c.id for c in chunks}) == 1 and all(c.object == "chat.completion.chunk" for c in chunks)
    raw = post(server, {"messages": [{"role": "user", "content": QUESTION}], "stream": True})
    assert raw.headers["content-type"].startswith("text/event-stream")
    events = [e for e in raw.text.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"


def test_history_is_laid_out_as_session_turns(client, qa):
    history = [("system", "Answer briefly."), ("user", "What is gzip?"), ("assistant", "A compressor.")]
    req = ChatRequest(history=history, question="And tar?")
    sources = qa.search("And tar?")
    turn = ChatEngine(qa, 10**6).layout(req, "And tar?", sources)
    reader = qa.reader
    first = reader.layout_turn("What is gzip?", [], first_turn=True, instructions="Answer briefly.")
    answer = L.encode_text(reader.tokenizer, "A compressor.") + list(reader.stops.end_ids)
    assert turn.prompt_ids == first.ids + answer + reader.layout_turn("And tar?", sources).prompt_ids
    assert sum(turn.prompt_chunk_lengths) == len(turn.prompt_ids)
    messages = [{"role": r, "content": t} for r, t in history] + [{"role": "user", "content": "And tar?"}]
    r = client.chat.completions.create(model="retnet-rag", messages=messages)
    assert r.usage.prompt_tokens == len(turn.prompt_ids)
    # A chat front end resends the whole history each time: the prefix-state cache reads it only once.
    messages += [{"role": "assistant", "content": r.choices[0].message.content}, {"role": "user", "content": "Why?"}]
    again = client.chat.completions.create(model="retnet-rag", messages=messages)
    assert again.usage.prompt_tokens_details.cached_tokens >= len(first.ids + answer)


def test_a_conversation_sent_as_messages_is_read_as_a_session_reads_it(special_model, special_tok, data_dir,
                                                                        monkeypatch):
    qa = MultiDocQA(None, model=special_model, tokenizer=special_tok, max_new_tokens=5)
    with qa.session() as s:
        with monkeypatch.context() as m:  # a first answer that is valid text, so its tokens survive the round trip
            scripted_tokens(m, [*special_tok.encode("Hi.").ids, special_tok.token_to_id(L.END)])
            first = s.ask("Hello there?")
        second = s.ask("And then?")
    assert first.text == "Hi." and second.text
    messages = [{"role": "user", "content": "Hello there?"}, {"role": "assistant", "content": first.text},
                {"role": "user", "content": "And then?"}]
    with _start(qa, data_dir=data_dir) as srv:
        c = openai.OpenAI(base_url=f"{srv.url}/v1", api_key="x", max_retries=0, timeout=30)
        r = c.chat.completions.create(model="retnet-rag", messages=messages)
    assert r.choices[0].message.content == second.text


def test_without_a_collection_the_model_answers_from_the_messages(special_model, special_tok, data_dir):
    qa = MultiDocQA(None, model=special_model, tokenizer=special_tok, max_new_tokens=4)
    with _start(qa, data_dir=data_dir) as srv:
        c = openai.OpenAI(base_url=f"{srv.url}/v1", api_key="x", max_retries=0, timeout=30)
        assert [m.id for m in c.models.list()] == ["retnet-rag"]
        r = ask(c, "Hello?", extra_body={"user": "me", "logprobs": False, "unknown_field": 1})  # unknown: ignored
        assert r.model_extra["retnet_rag"]["sources"] == [] and r.usage.completion_tokens <= 4


def test_stop_strings_and_sampling_fields(client, special_tok, monkeypatch):
    def scripted():  # a fresh script per request: "abcXYZdef", then "f" forever
        scripted_tokens(monkeypatch, special_tok.encode("abcXYZdef").ids)

    scripted()
    r = ask(client, max_tokens=12, stop=["XY", "nothing"])
    assert r.choices[0].message.content == "abc" and r.choices[0].finish_reason == "stop"
    scripted()
    assert ask(client, max_tokens=12, stop="Zd").choices[0].message.content == "abcXY"
    scripted()
    chunks = list(ask(client, max_tokens=12, stop="XY", stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "abc"
    scripted()
    r = ask(client, max_tokens=4)
    assert r.choices[0].message.content == "abcX" and r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 4


def test_seeded_sampling_repeats(client):
    a, b = (ask(client, temperature=1.5, top_p=0.9, seed=7, max_completion_tokens=5) for _ in range(2))
    assert a.choices[0].message.content == b.choices[0].message.content and a.usage.completion_tokens <= 5


def test_models_and_health(client, server):
    assert [m.id for m in client.models.list()] == ["retnet-rag", "retnet-rag:docs"]
    assert client.models.retrieve("retnet-rag:docs").owned_by == "retnet-rag"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4")
    health = httpx.get(f"{server.url}/health").json()
    assert health["status"] == "ok" and health["model"] == "retnet-rag:docs" and health["waiting"] == 0


def test_request_fields_map_to_the_apps_options():
    from app.openai_api import parse_chat_request

    req = parse_chat_request({
        "model": "anything", "max_tokens": 9, "max_completion_tokens": 5, "temperature": 0.5, "top_p": 0,
        "seed": 3, "stop": "END", "stream": True, "stream_options": {"include_usage": True}, "n": 1,
        "messages": [{"role": "developer", "content": "Be brief."}, {"role": "tool", "content": "42 is the answer."},
                     {"role": "assistant", "content": None},
                     {"role": "user", "content": [{"type": "text", "text": "What"},
                                                  {"type": "text", "text": "is it?"}]}]},
        max_tokens_limit=100)
    assert req.history == [("system", "Be brief."), ("passage", "42 is the answer."), ("assistant", "")]
    assert req.question == "What\nis it?" and req.max_tokens == 5 and req.temperature == 0.5
    assert 0 < req.top_p < 1e-6 and req.seed == 3 and req.stop == ["END"] and req.stream and req.include_usage


def test_the_model_name_picks_the_collection(client, data_dir, tmp_path):
    from retrieval import Collection

    (tmp_path / "more").mkdir()
    (tmp_path / "more" / "zip.txt").write_text("Zip packs files into one archive. The -r option recurses into folders.")
    with Collection.open_or_create("more", data_dir, embedder=HashEmbedder(64)) as col:
        col.add([str(tmp_path / "more")], progress=False)
    assert [m.id for m in client.models.list()] == ["retnet-rag", "retnet-rag:docs", "retnet-rag:more"]

    def titles(model):
        r = ask(client, model=model)
        return r.model, [s["title"] for s in r.model_extra["retnet_rag"]["sources"]]

    assert titles("retnet-rag:more") == ("retnet-rag:more", ["zip"])
    assert titles("retnet-rag") == titles("gpt-4o") == titles("retnet-rag:docs")  # the server's own collection
    assert titles("retnet-rag")[0] == "retnet-rag:docs" and titles("retnet-rag")[1][0] == "rsync"
    with pytest.raises(openai.NotFoundError, match="retnet-rag:more"):
        ask(client, model="retnet-rag:nope")


# -- errors -------------------------------------------------------------------------------------------
def _error(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    return err


@pytest.mark.parametrize(("body", "param"), [
    ({"messages": []}, "messages"),
    ({}, "messages"),
    ({"messages": [{"role": "system", "content": "hi"}]}, "messages"),
    ({"messages": [{"role": "user", "content": "   "}]}, "messages[0].content"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
     "messages[0].content"),
    ({"messages": [{"role": "user", "content": "hi"}], "n": 2}, "n"),
    ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}, "max_tokens"),
    ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 10**6}, "max_tokens"),
    ({"messages": [{"role": "user", "content": "hi"}], "temperature": 9}, "temperature"),
    ({"messages": [{"role": "user", "content": "hi"}], "stop": [1, 2]}, "stop"),
    ({"messages": [{"role": "user", "content": "hi"}], "stream": "yes"}, "stream"),
    ([1, 2], None),
])
def test_bad_requests_are_400_naming_the_field(server, body, param):
    err = _error(post(server, body), 400)
    assert err["type"] == "invalid_request_error" and err["param"] == param


def test_errors_through_the_openai_client(client, server):
    with pytest.raises(openai.BadRequestError, match="n=1"):
        ask(client, n=2)
    with pytest.raises(openai.BadRequestError, match="too long"):
        ask(client, "why " * 400)  # over the question limit (256 tokens)
    with pytest.raises(openai.BadRequestError, match="too long"):
        ask(client, "why " * 400, stream=True)  # still a 400, not a broken stream
    with pytest.raises(openai.APIStatusError) as e:
        ask(client, "x" * (2 << 20))  # a 2 MB body
    assert e.value.status_code == 413
    assert _error(post(server, b"{not json"), 400)["code"] == "invalid_json"
    assert _error(post(server, b"\xff\xfe"), 400)["code"] == "invalid_json"
    assert _error(httpx.get(f"{server.url}/v1/completions"), 404)["type"] == "not_found_error"
    _error(httpx.get(f"{server.url}/v1/chat/completions"), 405)
    assert ask(client).choices[0].message.content is not None  # the server is fine afterwards


def test_unexpected_errors_are_500_without_details(client, monkeypatch):
    real = ChatEngine.run

    def broken(self, job):
        if job.request.question == "break":
            raise RuntimeError("secret internal detail")
        return real(self, job)

    monkeypatch.setattr(ChatEngine, "run", broken)
    with pytest.raises(openai.InternalServerError) as e:
        ask(client, "break")
    assert e.value.status_code == 500
    assert "secret" not in str(e.value.body) and "Traceback" not in str(e.value.body)
    assert ask(client).choices[0].message.content is not None  # the worker goes on


def test_an_error_mid_stream_ends_it_with_an_error_event(client, monkeypatch, special_tok):
    import retnet.generation as G

    real, calls = G.next_token, {"n": 0}

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("secret internal detail")
        return real(*args, **kwargs)

    monkeypatch.setattr(G, "next_token", failing)
    stream = ask(client, stream=True, max_tokens=6)
    with pytest.raises(openai.APIError) as e:
        list(stream)
    assert "internal server error" in str(e.value) and "secret" not in str(e.value)


# -- load -----------------------------------------------------------------------------------------------
def test_concurrent_requests_all_complete(client):
    expected = ask(client).choices[0].message.content

    def two(i):
        return [ask(client, stream=i % 2 == 1) for _ in range(2)]

    with ThreadPoolExecutor(8) as pool:
        results = [r for pair in pool.map(two, range(8)) for r in pair]
    assert len(results) == 16
    for r in results:
        text = r.choices[0].message.content if not isinstance(r, openai.Stream) else \
            "".join(c.choices[0].delta.content or "" for c in r if c.choices)
        assert text == expected


def test_full_queue_answers_503_at_once(qa, monkeypatch):
    """One request runs (held), one waits (queue of 1): the third is refused promptly; then both finish."""
    real, running, release = ChatEngine.run, threading.Event(), threading.Event()

    def held(self, job):
        running.set()
        assert release.wait(20)
        return real(self, job)

    monkeypatch.setattr(ChatEngine, "run", held)
    with _start(qa, queue_size=1) as srv:
        c = openai.OpenAI(base_url=f"{srv.url}/v1", api_key="x", max_retries=0, timeout=30)
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(ask, c)
            assert running.wait(10)
            second = pool.submit(ask, c)
            deadline = time.monotonic() + 10
            while srv.server.config.app.state.worker.waiting < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            t0 = time.monotonic()
            with pytest.raises(openai.APIStatusError) as e:
                ask(c)
            assert e.value.status_code == 503 and time.monotonic() - t0 < 2
            assert e.value.response.headers["retry-after"] == "1"
            release.set()
            assert first.result(20).choices[0].message.content is not None
            assert second.result(20).choices[0].message.content is not None


def test_a_dropped_stream_stops_its_answer(client, server, monkeypatch, special_tok):
    """A client that leaves mid-stream cancels the rest of its answer; the next request is served."""
    calls = scripted_tokens(monkeypatch, special_tok.encode("abc").ids)  # then "c" forever, up to max_tokens
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", timeout=30,
                      json={"messages": [{"role": "user", "content": "hi"}], "stream": True, "max_tokens": 4000}) as r:
        for line in r.iter_lines():
            if '"content": "c"' in line:
                break
    assert ask(client, max_tokens=3).choices[0].message.content == "ccc"  # served after the first one ended
    assert calls["n"] < 1000  # far from the 4000 tokens asked for


def test_server_shuts_down_cleanly(qa):
    srv = _start(qa)
    c = openai.OpenAI(base_url=f"{srv.url}/v1", api_key="x", max_retries=0, timeout=30)
    assert ask(c).choices[0].message.content is not None
    worker = srv.server.config.app.state.worker
    srv.stop()
    assert not srv._thread.is_alive() and not worker._thread.is_alive()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", srv.port), timeout=2):
        pass


def test_busy_port_is_a_clear_error(server):
    from app.errors import AppError

    with pytest.raises(AppError, match="cannot listen on 127.0.0.1"):
        ChatServer(create_app(server.server.config.app.state.worker.engine.qa), "127.0.0.1", server.port)


# -- the command --------------------------------------------------------------------------------------
def test_serve_command_wires_options(tiny_model_dir, data_dir, monkeypatch, capsys, special_model, special_tok):
    import app.encoder
    import app.server
    from app.cli import main

    # The first model load in a process pays torch's lazy imports (seconds); the end-to-end test loads for real.
    monkeypatch.setattr(app.encoder, "load_model", lambda path, device=None: (special_model, special_tok))
    seen = {}

    def fake_serve(qa, host, port, queue_size, data_dir):
        seen.update(collection=qa.collection, host=host, port=port, queue=queue_size, data_dir=data_dir,
                    max_new_tokens=qa.options.sampling.max_new_tokens)

    monkeypatch.setattr(app.server, "serve", fake_serve)
    assert main(["serve", "--model", str(tiny_model_dir), "--port", "0", "--max-new-tokens", "7",
                 "--queue-size", "3", "--data-dir", str(data_dir)]) == 0
    assert seen == {"collection": None, "host": "127.0.0.1", "port": 0, "queue": 3, "max_new_tokens": 7,
                    "data_dir": data_dir}
    assert main(["serve", "--model", str(tiny_model_dir), "-c", "nope", "--data-dir", str(data_dir)]) == 1
    assert "no collection 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    assert "OpenAI" in capsys.readouterr().out


@pytest.mark.slow  # a subprocess: python start-up and imports
def test_serve_command_end_to_end(tiny_model_dir, tmp_path):
    import os
    import signal
    import subprocess
    import sys

    env = {**os.environ, "RETNET_RAG_DATA_DIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--model", str(tiny_model_dir), "--port", "0",
                             "--max-new-tokens", "3"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    try:
        line = proc.stdout.readline()
        url = line.split(" on ")[1].split()[0]
        c = openai.OpenAI(base_url=url, api_key="x", max_retries=0, timeout=30)
        assert ask(c, "Hi?").usage.completion_tokens <= 3
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0, proc.stderr.read()
