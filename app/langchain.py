"""LangChain integration: an LLM, a chat model and a retriever over a collection.

    from app.langchain import ChatRetNet, CollectionRetriever, RetNetLLM, format_passages, rag_prompt
    retriever = CollectionRetriever(collection=qa.collection, k=4)   # or collection="docs" (a name)
    chat = ChatRetNet(model_path="data/model")             # or reader=qa.reader
    chain = {"context": retriever | format_passages, "question": RunnablePassthrough()} | rag_prompt() | chat
    chain.invoke("What does rsync -r do?")

Every call starts from an empty state and reads its whole input (prompt, or the
message history): no hidden conversation state is shared between calls. For a
conversation whose state persists, use ``app.Session`` explicitly. Repeated
input prefixes are served by the reader's prefix-state cache, which never
changes an output, only how fast it comes.

Prompts are read with the app's layout markers (``app.prompt``): a plain prompt
is a question (``<|question|>prompt\\n<|answer|>``); a prompt that writes markers
out (``format_passages`` does) is parsed into system/passage/question/answer
segments, one chunk per passage; ``raw_prompt=True`` reads the text as is.
Chat messages map to segments: system -> ``<|system|>``, human -> ``<|question|>``,
AI -> ``<|answer|>...<|endoftext|>``, tool/other messages -> ``<|passage|>``.

The retriever takes ``k``, ``documents`` (ids) and ``rerank`` per call too: ``retriever.invoke(q, k=1)``.
Tokens are counted with the model's own tokenizer (``get_num_tokens``; for messages, the prompt as
the model reads it). Tool calling and structured output are not supported: ``bind_tools`` and
``with_structured_output`` raise NotImplementedError saying so.

Async (``ainvoke``, ``astream``, ``abatch``) is native: prefill and decode run in a worker thread that
hands each piece to the event loop, which never waits on torch; cancelling the consumer (task cancel,
leaving ``astream`` early) stops the decode before its next token. The retriever's async path runs
the (quick, synchronous) search in LangChain's executor.

``timeout``, ``max_retries`` and ``api_key`` are accepted (LangChain's standard
parameters) and ignored: the model runs locally.

With a grounded reader (``reader=Reader(..., grounded=True)``, see app.grounding) the answer
quotes the passages of the input, and the quoted spans come back in the metadata
(``response_metadata["quotes"]`` of the chat message, ``generation_info["quotes"]`` of the LLM's
last streamed chunk): each with ``source`` (the passage's number in the order read, 1 = first),
character offsets ``start``/``end`` into that passage's text, the ``text`` and its ``score``;
``refused`` says whether the answer is the refusal sentence.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import aclosing
from functools import partial
from pathlib import Path
from typing import Any

try:
    from langchain_core.callbacks import (
        AsyncCallbackManagerForLLMRun,
        CallbackManagerForLLMRun,
        CallbackManagerForRetrieverRun,
    )
    from langchain_core.documents import Document
    from langchain_core.language_models.chat_models import BaseChatModel
    from langchain_core.language_models.llms import LLM
    from langchain_core.messages import (
        AIMessage,
        AIMessageChunk,
        BaseMessage,
        HumanMessage,
        SystemMessage,
    )
    from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult, GenerationChunk
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_core.retrievers import BaseRetriever
    from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("app.langchain needs langchain-core: pip install 'retnet-rag[langchain]'") from e

from . import prompt as L
from .decoder import AnswerStream
from .defaults import DEFAULT_CACHE_BYTES, DEFAULT_K
from .encoder import Reader
from .retrieve import retrieve

__all__ = ["ChatRetNet", "CollectionRetriever", "RetNetLLM", "format_passages", "rag_prompt", "get_reader"]

_READERS: dict[tuple, Reader] = {}
_READERS_LOCK = threading.Lock()


def get_reader(model_path: str | Path | None = None, device: str | None = None,
               cache_bytes: int = DEFAULT_CACHE_BYTES) -> Reader:
    """A Reader for a model directory, loaded once per process and shared (default: the bundled model)."""
    from .defaults import default_model_dir

    path = Path(model_path).expanduser().resolve() if model_path else default_model_dir().resolve()
    key = (str(path), device, cache_bytes)
    with _READERS_LOCK:
        reader = _READERS.get(key)
        if reader is None:
            reader = _READERS[key] = Reader.from_pretrained(path, device=device, cache=cache_bytes)
        return reader


_DONE = object()


class _ThreadedAnswer:
    """An answer decoded in a worker thread and read from the event loop (the native async path).

    ``start`` (prefill included: it may load the model and read a long prompt) and the decode run in
    one thread, which hands each text piece to the loop with ``call_soon_threadsafe``; the loop never
    waits on torch. ``async for piece in answer.pieces()``; afterwards ``answer.stream`` is the
    finished AnswerStream. Leaving early (break + aclose, task cancellation, a closed loop) stops the
    decode before its next token, closes the stream there (stop_reason "cancelled") and, while the
    loop runs, waits for the thread to end.
    """

    def __init__(self, start: Callable[[], AnswerStream]):
        self._start = start
        self.stream: AnswerStream | None = None
        self.thread: threading.Thread | None = None

    async def pieces(self) -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        cancel = threading.Event()

        def post(item: tuple) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is closed: nobody reads any more
                cancel.set()

        def work() -> None:
            error: BaseException | None = None
            try:
                stream = self.stream = self._start()
                while not cancel.is_set():
                    piece = next(stream, _DONE)
                    if piece is _DONE:
                        break
                    post((piece,))
                if cancel.is_set():
                    stream.close()  # here, in the thread that runs its generator
            except Exception as e:  # handed to the loop and raised there
                error = e
            finally:
                post((_DONE, error))

        self.thread = threading.Thread(target=work, name="retnet-rag-decode", daemon=True)
        self.thread.start()
        done: tuple | None = None
        try:
            while True:
                item = await queue.get()
                if item[0] is _DONE:
                    done = item
                    break
                yield item[0]
        finally:
            if done is None:  # left early: stop the decode and wait for the thread's last word
                cancel.set()
                while (await queue.get())[0] is not _DONE:
                    pass
            self.thread.join()  # after its last word the thread only has to return
        if done[1] is not None:
            raise done[1]


class _RetNetParams(BaseModel):
    """Fields and helpers shared by RetNetLLM and ChatRetNet."""

    model_config = ConfigDict(arbitrary_types_allowed=True, populate_by_name=True, protected_namespaces=())

    model_name: str = Field(default="retnet-rag", alias="model")
    model_path: str | None = None
    reader: Any = Field(default=None, exclude=True)
    device: str | None = None
    prefix_cache_bytes: int = DEFAULT_CACHE_BYTES
    max_tokens: int | None = None
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    seed: int | None = None
    stop: list[str] | None = None
    timeout: float | None = None
    max_retries: int = 0
    streaming: bool = False

    def _reader(self) -> Reader:
        if self.reader is not None:
            return self.reader
        return get_reader(self.model_path, self.device, self.prefix_cache_bytes)

    def _sampling(self, reader: Reader, kwargs: dict) -> dict:
        opts = {"max_new_tokens": kwargs.pop("max_tokens", self.max_tokens),
                "temperature": kwargs.pop("temperature", self.temperature),
                "top_k": kwargs.pop("top_k", self.top_k), "top_p": kwargs.pop("top_p", self.top_p),
                "repetition_penalty": kwargs.pop("repetition_penalty", self.repetition_penalty),
                "seed": kwargs.pop("seed", self.seed)}
        kwargs.pop("model", None)  # a per-call model name only labels traces
        return opts

    def _start(self, turn: L.TurnTokens, stop: Sequence[str] | None, kwargs: dict) -> AnswerStream:
        """Read the turn into a fresh state and return the answer stream."""
        reader = self._reader()
        cfg = reader.sampling_config(**self._sampling(reader, kwargs))
        stops = [*reader.stops.stop_strings, *(self.stop or []), *(stop or [])]
        ing = reader.ingest_chunks(turn.prompt_ids, turn.prompt_chunk_lengths,
                                   turn.segment_end[: len(turn.prompt_chunk_lengths)], reader.new_state(),
                                   reader.root_key())
        from .grounding import passages_from_turn
        from .types import Usage

        # Grounding needs the passages' text; a plain reader never reads it.
        sources = passages_from_turn(reader.tokenizer, turn) if getattr(reader.options, "grounded", False) else ()
        return AnswerStream(reader, ing.state, ing.logits, ing.key, sampling=cfg, stop_strings=stops,
                            usage=Usage(ing.prompt_tokens, ing.cached_tokens), sources=sources)

    def get_token_ids(self, text: str) -> list[int]:
        """Token ids of ``text`` with the model's own tokenizer (no special tokens added);
        ``custom_get_token_ids``, when set, wins."""
        if self.custom_get_token_ids is not None:
            return self.custom_get_token_ids(text)
        return L.encode_text(self._reader().tokenizer, text)

    def _params(self) -> dict:
        return {"model_name": self.model_name, "model_path": self.model_path, "max_tokens": self.max_tokens,
                "temperature": self.temperature, "top_k": self.top_k, "top_p": self.top_p,
                "repetition_penalty": self.repetition_penalty, "seed": self.seed}


_FIELDS_DOC = """
    model_path: model directory (None: the bundled default model); or pass ``reader=`` (an app Reader,
        e.g. ``MultiDocQA(...).reader``) to share a loaded model.
    max_tokens, temperature (0 = greedy), top_k, top_p, repetition_penalty, seed: sampling.
    stop: extra stop strings (the layout's own stops always apply).
"""


class RetNetLLM(_RetNetParams, LLM):
    __doc__ = "A RetNet model as a LangChain LLM: each call reads the prompt into an empty state." + _FIELDS_DOC

    raw_prompt: bool = False  # read the prompt text as is (markers in it are still special tokens)

    @property
    def _llm_type(self) -> str:
        return "retnet-rag"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return self._params()

    def _turn(self, prompt: str) -> L.TurnTokens:
        reader = self._reader()
        if self.raw_prompt:
            ids = L.encode_text(reader.tokenizer, prompt)
            if not ids:
                raise ValueError("the prompt is empty")
            n = reader.max_chunk
            lengths = [min(n, len(ids) - i) for i in range(0, len(ids), n)]
            return L.TurnTokens(ids, lengths, ["raw"] * len(lengths), [None] * len(lengths), [True] * len(lengths),
                                len(ids), "raw")
        messages = L.split_marked_text(prompt)
        if not messages:
            raise ValueError("the prompt is empty")
        return L.encode_messages(reader.tokenizer, messages, reader.max_chunk)

    def _call(self, prompt: str, stop: list[str] | None = None, run_manager: CallbackManagerForLLMRun | None = None,
              **kwargs: Any) -> str:
        stream = self._start(self._turn(prompt), stop, kwargs)
        for piece in stream:
            if run_manager is not None:
                run_manager.on_llm_new_token(piece)
        return stream.text

    def _stream(self, prompt: str, stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> Iterator[GenerationChunk]:
        stream = self._start(self._turn(prompt), stop, kwargs)
        for piece in stream:
            chunk = GenerationChunk(text=piece)
            if run_manager is not None:
                run_manager.on_llm_new_token(piece, chunk=chunk)
            yield chunk
        yield GenerationChunk(text="", generation_info=_llm_info(stream))

    # Native async: the decode runs in a worker thread that hands pieces to the event loop.
    async def _acall(self, prompt: str, stop: list[str] | None = None,
                     run_manager: AsyncCallbackManagerForLLMRun | None = None, **kwargs: Any) -> str:
        answer = _ThreadedAnswer(lambda: self._start(self._turn(prompt), stop, kwargs))
        async with aclosing(answer.pieces()) as pieces:
            async for piece in pieces:
                if run_manager is not None:
                    await run_manager.on_llm_new_token(piece)
        return answer.stream.text

    async def _astream(self, prompt: str, stop: list[str] | None = None,
                       run_manager: AsyncCallbackManagerForLLMRun | None = None,
                       **kwargs: Any) -> AsyncIterator[GenerationChunk]:
        answer = _ThreadedAnswer(lambda: self._start(self._turn(prompt), stop, kwargs))
        async with aclosing(answer.pieces()) as pieces:
            async for piece in pieces:
                chunk = GenerationChunk(text=piece)
                if run_manager is not None:
                    await run_manager.on_llm_new_token(piece, chunk=chunk)
                yield chunk
        yield GenerationChunk(text="", generation_info=_llm_info(answer.stream))


class ChatRetNet(_RetNetParams, BaseChatModel):
    __doc__ = ("A RetNet model as a LangChain chat model (streaming): each call reads the whole message history "
               "into an empty state." + _FIELDS_DOC)


    @property
    def _llm_type(self) -> str:
        return "retnet-rag-chat"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return self._params()

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any):
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_provider"] = "retnet-rag"
        params["ls_model_name"] = kwargs["model"] if isinstance(kwargs.get("model"), str) else self.model_name
        return params

    def get_num_tokens_from_messages(self, messages: list[BaseMessage], tools: Sequence[Any] | None = None) -> int:
        """Tokens the model reads for these messages: their text in the app's layout, markers included,
        up to and including the answer marker (what ``invoke`` would read)."""
        if tools:
            self.bind_tools(tools)  # raises: tools are not supported
        if not messages:
            return 0
        if self.custom_get_token_ids is not None:
            return super().get_num_tokens_from_messages(messages)
        return len(self._turn(messages).prompt_ids)

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any):
        """Not supported: raises NotImplementedError."""
        raise NotImplementedError(
            "ChatRetNet does not support tool calling: the RetNet reader has no tool-call format. "
            "Retrieve in the chain instead (CollectionRetriever | format_passages), or pass tool results "
            "as ToolMessages, which are read as passages.")

    def with_structured_output(self, schema: Any, *, include_raw: bool = False, **kwargs: Any):
        """Not supported: raises NotImplementedError."""
        raise NotImplementedError(
            "ChatRetNet does not support structured output (no tool calling or JSON mode); "
            "parse its text answer yourself, e.g. with an output parser.")

    def _turn(self, messages: list[BaseMessage]) -> L.TurnTokens:
        reader = self._reader()
        segments: list[tuple[str, str]] = []
        for m in messages:
            text = m.text if isinstance(m.text, str) else str(m.content)
            if isinstance(m, SystemMessage):
                segments.append(("system", text))
            elif isinstance(m, HumanMessage):
                # A human message may write passages out with markers (see format_passages).
                segments.extend(L.split_marked_text(text) if "<|" in text else [("user", text)])
            elif isinstance(m, AIMessage):
                segments.append(("assistant", text))
            else:  # tool results and anything else: material to read
                segments.append(("passage", text))
        if not segments:
            raise ValueError("no messages to answer")
        return L.encode_messages(reader.tokenizer, segments, reader.max_chunk)

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        stream = self._start(self._turn(messages), stop, kwargs)
        for piece in stream:
            if run_manager is not None:
                run_manager.on_llm_new_token(piece)
        return self._result(stream)

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        stream = self._start(self._turn(messages), stop, kwargs)
        for piece in stream:
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=piece))
            if run_manager is not None:
                run_manager.on_llm_new_token(piece, chunk=chunk)
            yield chunk
        yield self._last_chunk(stream)

    # Native async: the decode runs in a worker thread that hands pieces to the event loop.
    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                         run_manager: AsyncCallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        answer = _ThreadedAnswer(lambda: self._start(self._turn(messages), stop, kwargs))
        async with aclosing(answer.pieces()) as pieces:
            async for piece in pieces:
                if run_manager is not None:
                    await run_manager.on_llm_new_token(piece)
        return self._result(answer.stream)

    async def _astream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                       run_manager: AsyncCallbackManagerForLLMRun | None = None,
                       **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        answer = _ThreadedAnswer(lambda: self._start(self._turn(messages), stop, kwargs))
        async with aclosing(answer.pieces()) as pieces:
            async for piece in pieces:
                chunk = ChatGenerationChunk(message=AIMessageChunk(content=piece))
                if run_manager is not None:
                    await run_manager.on_llm_new_token(piece, chunk=chunk)
                yield chunk
        yield self._last_chunk(answer.stream)

    def _result(self, stream: AnswerStream) -> ChatResult:
        message = AIMessage(content=stream.text, usage_metadata=_usage(stream),
                            response_metadata=self._response_metadata(stream))
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _last_chunk(self, stream: AnswerStream) -> ChatGenerationChunk:
        return ChatGenerationChunk(message=AIMessageChunk(content="", usage_metadata=_usage(stream),
                                                          response_metadata=self._response_metadata(stream),
                                                          chunk_position="last"))

    def _response_metadata(self, stream: AnswerStream) -> dict:
        return {"model_name": self.model_name, "stop_reason": stream.stop_reason,
                "cached_tokens": stream.usage.cached_tokens, **_quotes(stream)}


def _quotes(stream: AnswerStream) -> dict:
    """Grounded answers' quotes (and refusal) as metadata; nothing for a free answer."""
    if stream.grounding is None:
        return {}
    return {"quotes": [q.to_dict() for q in stream.quotes], "refused": stream.refused}


def _llm_info(stream: AnswerStream) -> dict:
    """The LLM's last chunk's generation_info."""
    return {"stop_reason": stream.stop_reason, "answer_tokens": len(stream.token_ids), **_quotes(stream)}


def _usage(stream: AnswerStream) -> dict:
    n_in, n_out = stream.usage.prompt_tokens, len(stream.token_ids)
    return {"input_tokens": n_in, "output_tokens": n_out, "total_tokens": n_in + n_out}


class CollectionRetriever(BaseRetriever):
    """A retrieval.Collection as a LangChain retriever, ranked like the app ranks (dense search, then
    lexical re-ranking unless ``rerank=False``). Documents carry title, source, page and score.

    ``collection`` is a Collection or a collection's name (opened from ``data_dir``, default: the app's
    data directory; a name that does not exist raises ``app.qa.CollectionNotFoundError``; ``close()``
    closes a collection the retriever opened).
    ``k``, ``documents`` and ``rerank`` are defaults; each can be given per call:
    ``retriever.invoke(query, k=1, documents=[doc_id])``.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    collection: Any
    k: int = DEFAULT_K
    documents: list[str] | None = None  # restrict to these document ids
    rerank: bool = True
    data_dir: str | Path | None = None  # where a collection given by name is looked up
    embedder: Any = Field(default=None, exclude=True)  # for a collection given by name (default: its own)
    _owns_collection: bool = PrivateAttr(default=False)

    @model_validator(mode="after")
    def _open_by_name(self) -> CollectionRetriever:
        if isinstance(self.collection, (str, os.PathLike)):
            from retrieval import Collection

            from .qa import require_collection

            name = str(self.collection)
            require_collection(name, self.data_dir)
            self.collection = Collection.open(name, self.data_dir, embedder=self.embedder)
            self._owns_collection = True
        if self.collection is None:
            raise ValueError("CollectionRetriever needs a collection (a Collection or a collection name)")
        return self

    def close(self) -> None:
        """Close the collection if this retriever opened it (given by name); a Collection passed in is
        left to its owner."""
        if self._owns_collection:
            self.collection.close()
            self._owns_collection = False

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun,
                                k: int | None = None, documents: list[str] | None = None,
                                rerank: bool | None = None, **kwargs: Any) -> list[Document]:
        kwargs.pop("verbose", None)  # LangChain's own option, passed along with the search kwargs
        if kwargs:
            raise TypeError(f"CollectionRetriever does not take {', '.join(sorted(kwargs))}; "
                            "per-call options are k, documents and rerank")
        k = self.k if k is None else k
        if not isinstance(k, int) or isinstance(k, bool) or k < 0:
            raise ValueError(f"k must be a whole number >= 0, not {k!r}")
        hits = retrieve(self.collection, query, k, documents=self.documents if documents is None else documents,
                        rerank=self.rerank if rerank is None else rerank)
        return [Document(page_content=h.text, metadata={
            "title": h.title, "source": h.source, "page": h.page, "doc_id": h.doc_id, "score": h.score,
            "start": h.start, "end": h.end, "passage_id": h.passage_id}) for h in hits]

    async def _aget_relevant_documents(self, query: str, *, run_manager: Any, **kwargs: Any) -> list[Document]:
        # retrieval is synchronous (numpy and SQLite): run it off the event loop, per-call options included
        from langchain_core.runnables.config import run_in_executor

        return await run_in_executor(None, partial(self._get_relevant_documents, query,
                                                   run_manager=run_manager.get_sync(), **kwargs))


def format_passages(docs: Sequence[Document]) -> str:
    """Documents (best first) as passage segments, most relevant last (nearest the question)."""
    parts = []
    for d in reversed(list(docs)):
        title = (d.metadata or {}).get("title")
        body = L.neutralize(d.page_content.strip())
        parts.append(f"{L.PASSAGE}{L.neutralize(title)}\n{body}\n" if title else f"{L.PASSAGE}{body}\n")
    return "".join(parts)


def rag_prompt(instructions: str | None = None) -> ChatPromptTemplate:
    """A prompt taking ``context`` (from ``format_passages``) and ``question``."""
    messages = [("system", instructions)] if instructions else []
    # Braces in the markers are not template variables; only {context} and {question} are.
    messages.append(("human", "{context}" + L.QUESTION + "{question}"))
    return ChatPromptTemplate.from_messages(messages)
