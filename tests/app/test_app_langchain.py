"""LangChain: RetNetLLM, ChatRetNet (with the standard unit tests), CollectionRetriever and an LCEL chain."""

from __future__ import annotations

import asyncio
import tempfile
import threading
import time
from functools import cache
from pathlib import Path

import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("langchain_tests")

from langchain_core.callbacks import BaseCallbackHandler  # noqa: E402
from langchain_core.documents import Document  # noqa: E402
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage  # noqa: E402
from langchain_core.output_parsers import StrOutputParser  # noqa: E402
from langchain_core.runnables import RunnablePassthrough  # noqa: E402
from langchain_tests.integration_tests import ChatModelIntegrationTests, RetrieversIntegrationTests  # noqa: E402
from langchain_tests.unit_tests import ChatModelUnitTests  # noqa: E402

from app import prompt as L  # noqa: E402
from app.encoder import Reader  # noqa: E402
from app.langchain import ChatRetNet, CollectionRetriever, RetNetLLM, format_passages, get_reader, rag_prompt  # noqa: E402
from app.qa import CollectionNotFoundError  # noqa: E402
from retrieval import Collection, HashEmbedder  # noqa: E402

from .app_testutil import DOCS, scripted_tokens, special_tokenizer, tiny_model  # noqa: E402


@cache
def _standard_model_dir() -> str:
    path = Path(tempfile.mkdtemp(prefix="retnet-rag-lc-")) / "model"
    tok = special_tokenizer()
    tiny_model(vocab_size=tok.get_vocab_size(), seed=2).save_pretrained(path, tokenizer=tok)
    return str(path)


class TestChatRetNetStandard(ChatModelUnitTests):
    @property
    def chat_model_class(self):
        return ChatRetNet

    @property
    def chat_model_params(self) -> dict:
        return {"model_path": _standard_model_dir()}

    # bind_tools/with_structured_output exist only to raise a clear NotImplementedError
    @property
    def has_tool_calling(self) -> bool:
        return False

    @property
    def has_structured_output(self) -> bool:
        return False


class TestChatRetNetIntegration(ChatModelIntegrationTests):
    """The standard integration suite against the bundled 17M model on the CPU (greedy, short answers)."""

    # the suite's async tests need the mark; its sync tests only warn about it
    pytestmark = [pytest.mark.asyncio,
                  pytest.mark.filterwarnings("ignore:.*marked with '@pytest.mark.asyncio' but it is not an async")]

    @property
    def chat_model_class(self):
        return ChatRetNet

    @property
    def chat_model_params(self) -> dict:
        return {"max_tokens": 8}

    # one local model per instance: a per-call ``model`` only labels traces, it does not switch models
    @property
    def supports_model_override(self) -> bool:
        return False

    # no tool-call format, hence no structured output or JSON mode either; text in, text out (the suite's
    # image, audio, PDF and Anthropic-input switches are off by default)
    @property
    def has_tool_calling(self) -> bool:
        return False

    @property
    def has_structured_output(self) -> bool:
        return False


@cache
def _standard_collection_dir() -> str:
    root = Path(tempfile.mkdtemp(prefix="retnet-rag-lc-col-"))
    docs = root / "docs"
    docs.mkdir()
    for name, text in DOCS.items():
        (docs / name).write_text(text)
    with Collection.open_or_create("std", root / "collections", embedder=HashEmbedder(64)) as col:
        col.add([str(docs)])
    return str(root / "collections")


class TestCollectionRetrieverStandard(RetrieversIntegrationTests):
    # the suite has one async test (pytest-asyncio comes with langchain-tests); the mark reaches its sync
    # tests too, which pytest-asyncio only warns about
    pytestmark = [pytest.mark.asyncio,
                  pytest.mark.filterwarnings("ignore:.*marked with '@pytest.mark.asyncio' but it is not an async")]

    @property
    def retriever_constructor(self):
        return CollectionRetriever

    @property
    def retriever_constructor_params(self) -> dict:
        return {"collection": "std", "data_dir": _standard_collection_dir()}

    @property
    def retriever_query_example(self) -> str:
        return "What does rsync -r do?"


class Collect(BaseCallbackHandler):
    def __init__(self):
        self.tokens: list[str] = []

    def on_llm_new_token(self, token, **kwargs):
        self.tokens.append(token)


@pytest.fixture
def lc_reader(special_model, special_tok):
    return Reader(special_model, special_tok, max_new_tokens=12)


def test_llm_call_stream_callbacks_and_stop(lc_reader, special_tok, monkeypatch):
    script = scripted_tokens(monkeypatch, [*special_tok.encode("Paris is big. More").ids,
                                           special_tok.token_to_id(L.END)])
    llm = RetNetLLM(reader=lc_reader, max_tokens=30)
    assert llm._llm_type == "retnet-rag" and llm._identifying_params["max_tokens"] == 30
    assert llm.invoke("Capital of France?") == "Paris is big. More"
    script["n"] = 0
    assert llm.invoke("Capital of France?", stop=[". "]) == "Paris is big"
    script["n"] = 0
    handler = Collect()
    chunks = list(llm.stream("Capital of France?", config={"callbacks": [handler]}, stop=["More"]))
    assert "".join(chunks).strip() == "Paris is big." and "".join(handler.tokens).strip() == "Paris is big."
    assert len([c for c in chunks if c]) > 1  # really streamed, piece by piece


def test_llm_reads_plain_and_marked_prompts(lc_reader, monkeypatch):
    seen = []
    orig = lc_reader.ingest_chunks
    monkeypatch.setattr(lc_reader, "ingest_chunks", lambda ids, lengths, *a: seen.append((ids, lengths))
                        or orig(ids, lengths, *a))
    tok = lc_reader.tokenizer
    RetNetLLM(reader=lc_reader, max_tokens=2).invoke("Plain question?")
    assert seen[-1][0] == L.encode_turn(tok, "Plain question?", layout="pq").ids
    marked = f"{L.PASSAGE}Doc\nText one.\n{L.PASSAGE}Text two.\n{L.QUESTION}Which?"
    RetNetLLM(reader=lc_reader, max_tokens=2).invoke(marked)
    ids, lengths = seen[-1]
    assert len(lengths) == 3 and ids.count(tok.token_to_id(L.PASSAGE)) == 2 and ids[-1] == tok.token_to_id(L.ANSWER)
    RetNetLLM(reader=lc_reader, max_tokens=2, raw_prompt=True).invoke("just text")
    assert seen[-1][0] == tok.encode("just text").ids


def test_chat_messages_streaming_and_usage(lc_reader, special_tok, monkeypatch):
    script = scripted_tokens(monkeypatch, [*special_tok.encode("Hi you").ids, special_tok.token_to_id(L.END)])
    chat = ChatRetNet(reader=lc_reader)
    msgs = [SystemMessage("Be brief."), HumanMessage("q1"), AIMessage("a1"), ToolMessage("tool says", tool_call_id="1"),
            HumanMessage("q2")]
    out = chat.invoke(msgs)
    assert out.content == "Hi you" and out.response_metadata["stop_reason"] == "eos"
    assert out.usage_metadata["output_tokens"] == len(special_tok.encode("Hi you").ids)
    rendered = special_tok.decode(chat._turn(msgs).ids, skip_special_tokens=False)
    assert rendered == (f"{L.SYSTEM}Be brief.\n{L.QUESTION}q1\n{L.ANSWER}a1{L.END}{L.PASSAGE}tool says\n"
                        f"{L.QUESTION}q2\n{L.ANSWER}")
    handler = Collect()
    script["n"] = 0
    chunks = list(chat.stream(msgs, config={"callbacks": [handler]}))
    assert "".join(c.content for c in chunks) == "Hi you" == "".join(handler.tokens)
    assert chunks[-1].usage_metadata["total_tokens"] > 0


def test_no_hidden_state_between_calls(lc_reader):
    chat = ChatRetNet(reader=lc_reader, max_tokens=6)
    first = chat.invoke("What is rsync?").content
    chat.invoke("Something else entirely, to disturb any hidden state.")
    assert chat.invoke("What is rsync?").content == first


def test_model_path_loads_once(tiny_model_dir):
    a = ChatRetNet(model_path=str(tiny_model_dir), max_tokens=2)
    b = RetNetLLM(model_path=str(tiny_model_dir), max_tokens=2)
    a.invoke("hi"), b.invoke("hi")
    assert a._reader() is b._reader() is get_reader(tiny_model_dir)


def test_retriever_and_lcel_chain(qa, monkeypatch):
    retriever = CollectionRetriever(collection=qa.collection, k=2)
    docs = retriever.invoke("What does rsync -r do?")
    assert all(isinstance(d, Document) for d in docs) and len(docs) == 2
    assert docs[0].metadata["title"] == "rsync" and "-r option" in docs[0].page_content
    assert {"source", "page", "doc_id", "score", "start", "end"} <= set(docs[0].metadata)
    rendered = format_passages(docs)
    assert rendered.index("rsync\n") > rendered.index(docs[1].metadata["title"])  # most relevant last

    chat = ChatRetNet(reader=qa.reader, max_tokens=5)
    seen = []
    orig = qa.reader.ingest_chunks
    monkeypatch.setattr(qa.reader, "ingest_chunks", lambda ids, lengths, *a: seen.append(len(lengths))
                        or orig(ids, lengths, *a))
    chain = {"context": retriever | format_passages, "question": RunnablePassthrough()} | rag_prompt() | chat \
        | StrOutputParser()
    out = chain.invoke("What does rsync -r do?")
    assert isinstance(out, str)
    assert seen and seen[-1] >= 3  # one chunk per passage, then the question
    # streaming through the chain works too
    assert "".join(chain.stream("What does rsync -r do?")) == out


def test_retriever_per_call_k_documents_and_rerank(qa):
    retriever = CollectionRetriever(collection=qa.collection, k=2)
    assert len(retriever.invoke("What does rsync -r do?", k=1)) == 1
    assert len(retriever.invoke("What does rsync -r do?", k=3)) == 3
    assert retriever.invoke("What does rsync -r do?", k=0) == []
    assert len(retriever.invoke("What does rsync -r do?")) == 2  # the default is untouched
    assert len(retriever.batch(["rsync", "gzip"], k=1)[1]) == 1
    one = retriever.invoke("What does rsync -r do?", k=1)[0]
    other = next(d for d in retriever.invoke("compress", k=3) if d.metadata["doc_id"] != one.metadata["doc_id"])
    only = retriever.invoke("What does rsync -r do?", k=3, documents=[other.metadata["doc_id"]])
    assert only and {d.metadata["doc_id"] for d in only} == {other.metadata["doc_id"]}
    assert len(retriever.invoke("What does rsync -r do?", rerank=False)) == 2
    with pytest.raises(TypeError, match="per-call options are k, documents and rerank"):
        retriever.invoke("rsync", filter={"x": 1})
    with pytest.raises(ValueError, match="k must be"):
        retriever.invoke("rsync", k=-1)


def test_retriever_async_per_call_k(qa):
    retriever = CollectionRetriever(collection=qa.collection, k=3)
    assert len(asyncio.run(retriever.ainvoke("What does rsync -r do?", k=1))) == 1


def test_retriever_by_collection_name(qa, data_dir):
    by_name = CollectionRetriever(collection="docs", data_dir=data_dir, k=2)  # a Path or a str
    by_object = CollectionRetriever(collection=qa.collection, k=2)
    q = "What does rsync -r do?"
    assert [d.page_content for d in by_name.invoke(q)] == [d.page_content for d in by_object.invoke(q)]
    by_name.close(), by_object.close()  # closes only what the retriever opened
    assert len(by_object.invoke(q)) == 2
    with pytest.raises(CollectionNotFoundError, match="no collection 'nope'.*collections there: docs"):
        CollectionRetriever(collection="nope", data_dir=str(data_dir))
    with pytest.raises(ValueError, match="needs a collection"):
        CollectionRetriever(collection=None)


def test_token_counting_uses_the_model_tokenizer(lc_reader, special_tok):
    chat, llm = ChatRetNet(reader=lc_reader), RetNetLLM(reader=lc_reader)
    text = "What does rsync -r do?"
    want = special_tok.encode(text, add_special_tokens=False).ids
    assert chat.get_token_ids(text) == llm.get_token_ids(text) == want
    assert chat.get_num_tokens(text) == llm.get_num_tokens(text) == len(want) > 0
    msgs = [SystemMessage("Be brief."), HumanMessage(text)]
    assert chat.get_num_tokens_from_messages(msgs) == len(chat._turn(msgs).prompt_ids) > len(want)
    assert chat.get_num_tokens_from_messages([]) == 0
    custom = ChatRetNet(reader=lc_reader, custom_get_token_ids=lambda t: [1, 2, 3])
    assert custom.get_num_tokens(text) == 3


def test_tools_and_structured_output_are_refused_clearly(lc_reader):
    chat = ChatRetNet(reader=lc_reader)

    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    with pytest.raises(NotImplementedError, match="does not support tool calling"):
        chat.bind_tools([add])
    with pytest.raises(NotImplementedError, match="does not support tool calling"):
        chat.get_num_tokens_from_messages([HumanMessage("hi")], tools=[add])
    with pytest.raises(NotImplementedError, match="does not support structured output"):
        chat.with_structured_output({"title": "x", "type": "object", "properties": {}})


# -- native async ------------------------------------------------------------------------------------

def _slow_tokens(monkeypatch, ids, delay: float):
    """scripted_tokens, each token taking ``delay`` seconds; records the threads that decode."""
    import retnet.generation as G

    calls = scripted_tokens(monkeypatch, ids)
    fast = G.next_token
    calls["threads"] = set()

    def slow(*a, **kw):
        calls["threads"].add(threading.current_thread().name)
        time.sleep(delay)
        return fast(*a, **kw)

    monkeypatch.setattr(G, "next_token", slow)
    return calls


def _decode_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "retnet-rag-decode"]


def test_astream_is_incremental_and_leaves_the_loop_free(lc_reader, special_tok, monkeypatch):
    text = "one two three four five"
    script = _slow_tokens(monkeypatch, [*special_tok.encode(text).ids, special_tok.token_to_id(L.END)], 0.015)
    chat = ChatRetNet(reader=lc_reader, max_tokens=30)
    handler = Collect()

    async def main():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.005)
                ticks += 1

        task = asyncio.create_task(ticker())
        seen = [(chunk.content, ticks) async for chunk in chat.astream("q", config={"callbacks": [handler]})]
        task.cancel()
        return seen

    pieces = [(c, n) for c, n in asyncio.run(main()) if c]
    assert "".join(c for c, _ in pieces) == text == "".join(handler.tokens)
    assert len(pieces) >= 3
    assert pieces[-1][1] - pieces[0][1] >= 3  # the loop ran while the model decoded (blocked, it would not)
    assert script["threads"] == {"retnet-rag-decode"}  # our worker, not LangChain's executor fallback
    script["n"], script["threads"] = 0, set()
    out = asyncio.run(chat.ainvoke("q", stop=["three"]))
    assert out.content == "one two" and out.response_metadata["stop_reason"] == "stop"
    assert script["threads"] == {"retnet-rag-decode"}
    script["n"] = 0
    assert chat.invoke("q", stop=["three"]).content == out.content


def test_async_equals_sync_for_greedy_decoding(lc_reader):
    chat, llm = ChatRetNet(reader=lc_reader, max_tokens=10), RetNetLLM(reader=lc_reader, max_tokens=10)
    q = "What does rsync -r do?"
    sync_msg = chat.invoke(q)
    handler = Collect()

    async def main():
        msg = await chat.ainvoke(q, config={"callbacks": [handler]})
        streamed = [c async for c in chat.astream(q)]
        text = await llm.ainvoke(q)
        llm_chunks = [c async for c in llm.astream(q)]
        return msg, streamed, text, llm_chunks

    msg, streamed, text, llm_chunks = asyncio.run(main())
    assert msg.content == sync_msg.content == "".join(handler.tokens)
    assert msg.usage_metadata == sync_msg.usage_metadata
    assert "".join(c.content for c in streamed) == sync_msg.content
    assert streamed[-1].chunk_position == "last" and streamed[-1].usage_metadata == sync_msg.usage_metadata
    assert text == "".join(llm_chunks) == llm.invoke(q)
    assert asyncio.run(chat.abatch([q, q]))[1].content == sync_msg.content


def test_async_cancellation_stops_the_decode_thread(lc_reader, special_tok, monkeypatch):
    ids = special_tok.encode("go on and on and on and on and on and on and on and on").ids
    script = _slow_tokens(monkeypatch, ids, 0.02)  # no end marker: it would run to max_tokens
    chat = ChatRetNet(reader=lc_reader, max_tokens=400)

    async def ended() -> bool:
        deadline = time.monotonic() + 5
        while _decode_threads() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return not _decode_threads()

    async def consume(first: asyncio.Event):
        async for chunk in chat.astream("q"):
            if chunk.content:
                first.set()

    async def main():
        first = asyncio.Event()
        task = asyncio.create_task(consume(first))
        await first.wait()
        assert _decode_threads()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await ended()
        n_cancel = script["n"]
        stream = chat.astream("q")  # leaving a stream early: aclose
        assert (await anext(stream)) is not None
        await stream.aclose()
        assert await ended()
        # ainvoke cancelled mid-answer
        script["n"] = 0
        task = asyncio.create_task(chat.ainvoke("q"))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await ended()
        return n_cancel

    n_cancel = asyncio.run(main())
    assert n_cancel < 50  # far from the 400 it would have decoded
    n = script["n"]
    time.sleep(0.1)
    assert script["n"] == n < 50  # nothing decodes after the consumer went away


def test_async_errors_reach_the_caller(lc_reader):
    with pytest.raises(ValueError, match="no messages"):
        asyncio.run(ChatRetNet(reader=lc_reader)._agenerate([]))
    assert not _decode_threads()
