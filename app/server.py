"""An OpenAI-compatible HTTP server: ``retnet-rag serve`` (needs the ``server`` extra: starlette + uvicorn).

    POST /v1/chat/completions   chat, non-streaming or ``stream: true`` (server-sent events ending in [DONE])
    GET  /v1/models             the models: one per collection (``retnet-rag:NAME``) and the model alone
    GET  /health                liveness and queue length

Any OpenAI client works against it (``OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="none")``).
The model name picks the collection (``Models``; the server's own by default). The last user message
is the question: with a collection, passages are retrieved for it and laid out as MultiDocQA does;
the earlier messages are read as the conversation before it, into a fresh state per request
(app.chat_worker). The answer's sources come in an extra field, ``retnet_rag: {"sources": [...]}``
(in the first chunk when streaming).

Errors are OpenAI's JSON shape, ``{"error": {"message", "type", "param", "code"}}``: 400 bad input,
404 unknown route, 405 wrong method, 413 body over the limit, 503 queue full (with Retry-After),
500 anything unexpected (the traceback goes to the server's log, never to the client).

Starlette + uvicorn because they are maintained, small, already installed with gradio/fastapi (the UI
needs them), and handle streaming, disconnects and graceful shutdown that a stdlib server would
make us write by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import sys
import threading
import time
from pathlib import Path

try:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("retnet-rag serve needs starlette and uvicorn: pip install 'retnet-rag[server]'") from e

from .chat_worker import ChatEngine, Job, ModelWorker, QueueFullError
from .defaults import default_data_dir
from .errors import AppError
from .openai_api import (
    FINISH_REASONS,
    APIError,
    bad_request,
    chunk_json,
    completion_id,
    completion_json,
    models_json,
    parse_chat_request,
    usage_chunk_json,
    usage_json,
)

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
MAX_BODY_BYTES = 1 << 20
MAX_TOKENS_LIMIT = 4096  # the most a request may ask for (max_tokens)
MAX_PROMPT_TOKENS = 32768  # history + passages + question; RetNet reads any length, but not for free
QUEUE_SIZE = 16


def model_id(collection_name: str | None) -> str:
    return f"retnet-rag:{collection_name}" if collection_name else "retnet-rag"


class Models:
    """Model names pick collections: ``retnet-rag:NAME`` answers from collection NAME of the data directory;
    ``retnet-rag`` (listed first) and any other name (clients that insist on e.g. "gpt-4o") from the
    server's own: its ``--collection``, or the messages alone without one."""

    def __init__(self, qa, data_dir=None):
        col = qa.collection
        self.default = model_id(getattr(col, "name", None))
        path = getattr(col, "path", None)
        if data_dir is None:
            data_dir = Path(path).parent if path is not None else default_data_dir()
        self.data_dir = Path(data_dir)

    def collections(self) -> list[str]:
        from retrieval import Collection

        return Collection.list(self.data_dir)

    def ids(self) -> list[str]:
        return [model_id(None), *(model_id(n) for n in self.collections())]

    def collection_for(self, model: str | None) -> str | None:
        """A Job's ``collection`` (None: the server's own) for a model name; 404 for an unknown collection."""
        prefix = model_id(None) + ":"
        if not model or not model.startswith(prefix):
            return None
        if model[len(prefix):] not in self.collections():
            raise APIError(404, f"model {model!r} not found; this server has {', '.join(self.ids())}", "model",
                           "model_not_found")
        return model[len(prefix):]


def create_app(qa, *, data_dir=None, queue_size: int = QUEUE_SIZE, max_body_bytes: int = MAX_BODY_BYTES,
               max_tokens_limit: int = MAX_TOKENS_LIMIT, max_prompt_tokens: int = MAX_PROMPT_TOKENS) -> Starlette:
    """The ASGI app answering with ``qa`` (a MultiDocQA; collection None = no retrieval) and, by model
    name, the other collections of ``data_dir`` (default: where qa's collection lives). Its model
    thread starts and stops with the app's lifespan."""
    models = Models(qa, data_dir)
    created = int(time.time())
    worker = ModelWorker(ChatEngine(qa, max_prompt_tokens, models.data_dir), queue_size)

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "model": models.default, "waiting": worker.waiting,
                             "queue_size": queue_size})

    async def list_models(request: Request) -> JSONResponse:
        return JSONResponse(models_json(models.ids(), created))

    async def get_model(request: Request) -> JSONResponse:
        name = request.path_params["model"]
        if name not in models.ids():
            raise APIError(404, f"model {name!r} not found; this server has {', '.join(models.ids())}", "model",
                           "model_not_found")
        return JSONResponse(models_json([name], created)["data"][0])

    async def chat(request: Request):
        req = parse_chat_request(await _read_json(request, max_body_bytes), max_tokens_limit)
        collection = models.collection_for(req.model)
        name = models.default if collection is None else model_id(collection)
        job = Job(req, asyncio.get_running_loop(), collection)
        try:
            worker.submit(job)
        except QueueFullError as e:
            raise APIError(503, f"{e}; retry shortly", code="server_busy") from None
        try:
            kind, value = await _next_event(job, request)  # errors before the answer starts keep their status
            if kind == "error":
                raise value
        except BaseException:
            job.cancelled.set()
            raise
        cid = completion_id()
        extra = {"sources": [s.to_dict() for s in value]}
        if req.stream:
            return StreamingResponse(_sse(job, cid, name, extra, req.include_usage), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        try:
            while True:
                kind, value = await _next_event(job, request)
                if kind == "error":
                    raise value
                if kind == "done":
                    break
        finally:
            job.cancelled.set()  # a no-op once done; stops the answer if this request is abandoned
        answer = value
        extra["stop_reason"] = answer.stop_reason
        usage = usage_json(answer.usage.prompt_tokens, answer.usage.answer_tokens, answer.usage.cached_tokens)
        return JSONResponse(completion_json(cid, name, answer.text, answer.stop_reason, usage, extra))

    @contextlib.asynccontextmanager
    async def lifespan(app):
        worker.start()
        try:
            yield
        finally:
            await asyncio.to_thread(worker.stop)

    routes = [Route("/health", health), Route("/v1/models", list_models), Route("/v1/models/{model:path}", get_model),
              Route("/v1/chat/completions", _guarded(chat), methods=["POST"])]
    # APIError and HTTPException are answered where they happen; Exception is the last resort.
    handlers = {APIError: _as_response, HTTPException: _http_error, Exception: _as_response}
    app = Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan)
    app.state.worker = worker
    return app


def _guarded(endpoint):
    """Turn the errors a request can cause into OpenAI error responses at the endpoint itself."""

    async def wrapped(request: Request):
        try:
            return await endpoint(request)
        except Exception as e:
            return _error_response(e)

    return wrapped


def _as_api_error(e: BaseException) -> APIError:
    if isinstance(e, APIError):
        return e
    if isinstance(e, AppError):  # bad input found by the app (empty or too long question)
        return APIError(400, str(e))
    logger.error("unexpected error answering a request", exc_info=e)
    return APIError(500, "internal server error (details are in the server's log)")


def _error_response(e: BaseException) -> JSONResponse:
    e = _as_api_error(e)
    headers = {"Retry-After": "1"} if e.status == 503 else None
    return JSONResponse(e.body(), status_code=e.status, headers=headers)


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    """Routing errors (404, 405) in OpenAI's shape."""
    if exc.status_code == 404:
        return _error_response(APIError(404, f"no route {request.method} {request.url.path}; this server has "
                                             "/v1/chat/completions, /v1/models and /health", code="not_found"))
    return _error_response(APIError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}"))


async def _as_response(request: Request, exc: Exception) -> JSONResponse:
    return _error_response(exc)


async def _read_json(request: Request, limit: int):
    """The body as JSON; 413 past ``limit`` bytes (the rest of a moderately large body is read and
    dropped first, so the client sees the answer instead of a reset connection)."""
    declared = request.headers.get("content-length", "")
    too_big = declared.isdigit() and int(declared) > limit
    if too_big and int(declared) > 16 * limit:
        raise APIError(413, f"the request body is {declared} bytes; the limit is {limit}", code="body_too_large")
    body, size = bytearray(), 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > 16 * limit:
            break
        if size <= limit:
            body += chunk
    if too_big or size > limit:
        raise APIError(413, f"the request body is over the limit of {limit} bytes", code="body_too_large")
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise bad_request(f"the request body is not valid JSON ({e})", code="invalid_json") from None


async def _next_event(job: Job, request: Request):
    """The job's next event; cancels the job if the client disconnects while it waits."""
    get = asyncio.ensure_future(job.events.get())  # one get for all the polls: no event can be lost
    try:
        while True:
            done, _ = await asyncio.wait({get}, timeout=1.0)
            if done:
                return get.result()
            if await request.is_disconnected():
                job.cancelled.set()
                raise APIError(499, "the client disconnected")
    finally:
        get.cancel()


async def _sse(job: Job, cid: str, name: str, extra: dict, include_usage: bool):
    """The answer as chat.completion.chunk events, then ``data: [DONE]``."""
    created = int(time.time())

    def event(obj) -> str:
        return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"

    try:
        yield event(chunk_json(cid, name, {"role": "assistant", "content": ""}, extra=extra, created=created))
        started = False  # leading whitespace is dropped, as the non-streaming answer's text is stripped
        while True:
            kind, value = await job.events.get()
            if kind == "piece":
                text = value if started else value.lstrip()
                if text:
                    started = True
                    yield event(chunk_json(cid, name, {"content": text}, created=created))
            elif kind == "done":
                u = value.usage
                yield event(chunk_json(cid, name, {}, FINISH_REASONS.get(value.stop_reason, "stop"),
                                       extra={"stop_reason": value.stop_reason}, created=created))
                if include_usage:
                    yield event(usage_chunk_json(cid, name, usage_json(u.prompt_tokens, u.answer_tokens,
                                                                       u.cached_tokens), created))
                break
            else:  # an error after the headers went out: OpenAI clients raise on an error event
                yield event(_as_api_error(value).body())
                break
        yield "data: [DONE]\n\n"
    finally:
        job.cancelled.set()  # the client went away (or we are done): stop decoding for it


class ChatServer:
    """Serve an app on ``host:port`` with uvicorn (port 0: an ephemeral port, see ``port``/``url``).

    ``serve_forever()`` blocks (Ctrl-C stops it); ``start()``/``stop()`` run it on a background thread
    (tests, notebooks); as a context manager it starts and stops."""

    def __init__(self, app, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, log_level: str = "warning"):
        # Binding here, not in uvicorn, makes a busy port fail before anything else and tells us an ephemeral port.
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind((host, port))
            self.sock.listen(2048)  # connections made before uvicorn runs wait in the backlog, not refused
        except OSError as e:
            self.sock.close()
            raise AppError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
        self.host, self.port = host, self.sock.getsockname()[1]
        config = uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=5, lifespan="on")
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def serve_forever(self) -> None:
        self.server.run(sockets=[self.sock])

    def start(self, timeout: float = 30.0) -> ChatServer:
        self._thread = threading.Thread(target=self.serve_forever, name="retnet-rag-http", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start on {self.url}")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 15.0) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
        self.sock.close()

    def __enter__(self) -> ChatServer:
        return self if self._thread is not None else self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def serve(qa, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, queue_size: int = QUEUE_SIZE,
          log_level: str = "info", data_dir=None) -> None:
    """Serve ``qa`` until interrupted (``retnet-rag serve``)."""
    server = ChatServer(create_app(qa, data_dir=data_dir, queue_size=queue_size), host, port, log_level)
    qa.ask("warm-up", max_new_tokens=1)  # loads the embedder and torch's kernels now, not in the first request
    print(f"retnet-rag: serving {model_id(getattr(qa.collection, 'name', None))!r} on {server.url}/v1 "
          f"(OpenAI-compatible; Ctrl-C stops)", flush=True)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"retnet-rag: warning: listening on {host}: anyone who can reach it can query the collection "
              "(there is no authentication)", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:  # uvicorn has shut down gracefully and re-raises the signal: Ctrl-C is the way out
        pass
