"""The OpenAI chat-completions protocol, as plain data: request parsing and validation, response and
stream-chunk bodies, error bodies. No web framework and no torch here (app.server serves it).

Request fields used: ``messages`` (system/developer, user, assistant, tool), ``max_tokens`` /
``max_completion_tokens``, ``temperature``, ``top_p``, ``seed``, ``stop`` (a string or a list),
``n`` (1 only), ``stream`` and ``stream_options.include_usage``. Other fields are ignored, as
OpenAI-compatible servers do, so clients that send ``user``, ``logprobs: false`` etc. still work.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

MAX_STOP_STRINGS = 16
# OpenAI roles -> app.prompt roles. "developer" is OpenAI's newer name for system; tool results are
# material to read, as in app.langchain.
ROLE_MAP = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant",
            "tool": "passage", "function": "passage"}


class APIError(Exception):
    """An error answered in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.kind = kind or _KINDS.get(status, "invalid_request_error")

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


_KINDS = {404: "not_found_error", 405: "invalid_request_error", 413: "invalid_request_error",
          500: "server_error", 503: "server_error"}


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param, code)


@dataclass
class ChatRequest:
    """A validated chat-completions request. ``history`` is every message before the last user
    message, as (app.prompt role, text); ``question`` is the last user message."""

    history: list[tuple[str, str]]
    question: str
    model: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    stream: bool = False
    include_usage: bool = False


def parse_chat_request(body: Any, max_tokens_limit: int) -> ChatRequest:
    """Validate a decoded JSON body; APIError(400) naming the field for anything wrong."""
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    history, question = _messages(body.get("messages"))
    n = body.get("n")
    if n is not None and (not _is_int(n) or n != 1):
        raise bad_request(f"n={n!r} is not supported: this server returns exactly one choice (n=1)", "n")
    max_tokens = body.get("max_completion_tokens")
    param = "max_completion_tokens"
    if max_tokens is None:
        max_tokens, param = body.get("max_tokens"), "max_tokens"
    if max_tokens is not None:
        if not _is_int(max_tokens) or max_tokens < 1:
            raise bad_request(f"{param} must be a positive integer, got {max_tokens!r}", param)
        if max_tokens > max_tokens_limit:
            raise bad_request(f"{param}={max_tokens} is more than this server allows ({max_tokens_limit})", param)
    temperature = _number(body, "temperature", 0, 2)
    top_p = _number(body, "top_p", 0, 1)
    if top_p == 0:  # OpenAI accepts 0; the sampler needs a positive nucleus: the top token alone
        top_p = 1e-9
    seed = body.get("seed")
    if seed is not None and not _is_int(seed):
        raise bad_request(f"seed must be an integer, got {seed!r}", "seed")
    stream = body.get("stream") or False
    if not isinstance(stream, bool):
        raise bad_request(f"stream must be true or false, got {stream!r}", "stream")
    options = body.get("stream_options") or {}
    include_usage = bool(options.get("include_usage")) if isinstance(options, dict) else False
    model = body.get("model")
    return ChatRequest(history, question, model if isinstance(model, str) else None, max_tokens, temperature, top_p,
                       seed, _stop(body.get("stop")), stream, include_usage)


def _messages(messages: Any) -> tuple[list[tuple[str, str]], str]:
    if not isinstance(messages, list) or not messages:
        raise bad_request("messages must be a non-empty list of {role, content} objects", "messages")
    parsed = []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise bad_request(f"{where} must be an object with role and content", where)
        role = m.get("role")
        if role not in ROLE_MAP:
            raise bad_request(f"{where}.role {role!r} is not one of {sorted(ROLE_MAP)}", f"{where}.role")
        parsed.append((ROLE_MAP[role], _content(m.get("content"), f"{where}.content")))
    last = max((i for i, (role, _) in enumerate(parsed) if role == "user"), default=None)
    if last is None:
        raise bad_request("messages has no user message: the last user message is the question", "messages")
    if last != len(parsed) - 1:
        raise bad_request("the last message must be the user's question (continuing an assistant message is "
                          "not supported)", "messages")
    question = parsed[last][1]
    if not question.strip():
        raise bad_request("the question (the last user message) is empty", f"messages[{last}].content")
    return parsed[:last], question


def _content(content: Any, where: str) -> str:
    """A message's text: a string, null (an assistant message with tool calls) or a list of text parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise bad_request(f"{where}: only text content is supported (got a {kind!r} part)", where)
            texts.append(part["text"])
        return "\n".join(texts)
    raise bad_request(f"{where} must be a string or a list of text parts", where)


def _stop(stop: Any) -> list[str]:
    if stop is None:
        return []
    items = [stop] if isinstance(stop, str) else stop
    if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
        raise bad_request("stop must be a string or a list of strings", "stop")
    if len(items) > MAX_STOP_STRINGS:
        raise bad_request(f"at most {MAX_STOP_STRINGS} stop strings, got {len(items)}", "stop")
    return [s for s in items if s]


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _number(body: dict, name: str, lo: float, hi: float) -> float | None:
    x = body.get(name)
    if x is None:
        return None
    if isinstance(x, bool) or not isinstance(x, int | float) or not lo <= x <= hi:
        raise bad_request(f"{name} must be a number from {lo} to {hi}, got {x!r}", name)
    return float(x)


# -- responses --------------------------------------------------------------------------------------
FINISH_REASONS = {"eos": "stop", "stop": "stop", "cancelled": "stop", "length": "length"}


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def usage_json(prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cached_tokens}}


def completion_json(cid: str, model: str, text: str, stop_reason: str, usage: dict, extra: dict) -> dict:
    """A ``chat.completion`` body; ``extra`` goes under ``retnet_rag`` (sources, stop reason)."""
    return {"id": cid, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": FINISH_REASONS.get(stop_reason, "stop"), "logprobs": None}],
            "usage": usage, "retnet_rag": extra}


def chunk_json(cid: str, model: str, delta: dict, finish_reason: str | None = None, extra: dict | None = None,
               created: int | None = None) -> dict:
    """One ``chat.completion.chunk``: a delta of the single choice."""
    out = {"id": cid, "object": "chat.completion.chunk", "created": created or int(time.time()), "model": model,
           "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}]}
    if extra is not None:
        out["retnet_rag"] = extra
    return out


def usage_chunk_json(cid: str, model: str, usage: dict, created: int | None = None) -> dict:
    """The last chunk when ``stream_options.include_usage`` is set: no choices, only usage."""
    return {"id": cid, "object": "chat.completion.chunk", "created": created or int(time.time()), "model": model,
            "choices": [], "usage": usage}


def models_json(model_ids: list[str], created: int) -> dict:
    return {"object": "list", "data": [{"id": m, "object": "model", "created": created, "owned_by": "retnet-rag"}
                                       for m in model_ids]}
