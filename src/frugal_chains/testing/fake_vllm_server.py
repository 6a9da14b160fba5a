"""A fake ``vllm serve``: an OpenAI-compatible HTTP server on a free loopback port, in a background thread, with
no model. It answers chat completions (plain and streamed), lists its model and reports health, counts prompt
tokens and prefix-cache hits the way vLLM does, and can fail its first requests on purpose."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

from frugal_chains.errors import ConfigurationError

__all__ = ["FakeVLLMServer"]

Failure = Literal["503", "garbage", "close", "hang", "cut"]
_FAILURES = ("503", "garbage", "close", "hang", "cut")
Answer = str | Mapping[str, Any]
Answers = Sequence[str] | Callable[[dict[str, Any]], Answer]

_MAX_MODEL_LEN = 2048
_HANG_S = 120.0  # a hanging request gives up after this (or when the server stops)


def _render(messages: Sequence[Any]) -> list[str]:
    """The prompt's words: each message as ``<|role|> content`` (a stand-in for the model's chat template)."""
    words: list[str] = []
    for m in messages:
        if not isinstance(m, Mapping):
            continue
        words.append(f"<|{m.get('role', '')}|>")
        content = m.get("content")
        if isinstance(content, list):  # OpenAI content parts
            content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
        words.extend(str(content or "").split())
        for call in m.get("tool_calls") or ():
            fn = call.get("function", {}) if isinstance(call, Mapping) else {}
            words.extend(f"{fn.get('name', '')} {fn.get('arguments', '')}".split())
    return words


def _common_prefix(a: Sequence[str], b: Sequence[str]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _pieces(text: str, n: int) -> list[str]:
    """``text`` cut into about ``n`` pieces at word boundaries (joined they give ``text`` back)."""
    if not text:
        return []
    words = text.split(" ")
    size = max(1, -(-len(words) // n))
    out = [" ".join(words[i : i + size]) for i in range(0, len(words), size)]
    return [p + " " for p in out[:-1]] + [out[-1]]


class FakeVLLMServer:
    """An OpenAI-compatible server that behaves like ``vllm serve`` for tests: no model, no network beyond
    loopback, microseconds per answer.

    It serves ``POST /v1/chat/completions`` (plain JSON, or server-sent events when ``stream`` is true, several
    chunks per answer and a final usage chunk when ``stream_options.include_usage`` is set), ``GET /v1/models``
    and ``GET /health``.

    ``answers`` is a list of strings given in turn (cycled), or a callable that gets the request body and returns
    the answer text or an assistant message dict (``{"content": None, "tool_calls": [...]}`` for tool calls).
    Usage counts the whitespace words of the rendered messages as prompt tokens; ``cached_tokens`` (in
    ``usage.prompt_tokens_details``) is the longest word prefix shared with an earlier prompt, rounded down to
    ``block_size`` like vLLM's block-level prefix cache. A request with the wrong ``model`` gets vLLM's 404, and
    one whose prompt plus ``max_tokens`` exceeds 2048 tokens gets vLLM's 400.

    ``fail_first=N`` makes the first N chat requests fail with ``failure``: ``"503"`` (an error status),
    ``"garbage"`` (a 200 whose body is not JSON), ``"close"`` (the connection drops with no answer), ``"hang"``
    (no answer until the client times out) or ``"cut"`` (a stream drops after its first chunks; a plain answer is
    cut mid-JSON). ``requests`` holds every chat request body received, failed ones included, in order.

    Example:
        >>> import httpx
        >>> from frugal_chains.testing import FakeVLLMServer
        >>> with FakeVLLMServer(["Paris."], model="smollm2") as server:
        ...     r = httpx.post(server.base_url + "/chat/completions",
        ...                    json={"model": "smollm2", "messages": [{"role": "user", "content": "Capital?"}]})
        >>> answer = r.json()
        >>> answer["choices"][0]["message"]["content"], answer["usage"]["prompt_tokens"]
        ('Paris.', 2)
        >>> server.base_url.endswith("/v1"), len(server.requests)
        (True, 1)
    """

    def __init__(
        self,
        answers: Answers = ("Hello from the fake vLLM server.",),
        *,
        model: str = "fake-vllm",
        fail_first: int = 0,
        failure: Failure = "503",
        block_size: int = 16,
    ) -> None:
        if not callable(answers):
            answers = tuple(answers)
            if not answers or not all(isinstance(a, str) for a in answers):
                raise ConfigurationError(
                    "FakeVLLMServer answers must be a non-empty list of strings or a callable(body) -> str | dict.",
                    field="answers",
                )
        if failure not in _FAILURES:
            raise ConfigurationError(
                f"FakeVLLMServer failure must be one of {', '.join(_FAILURES)}, got {failure!r}.",
                field="failure",
            )
        if isinstance(fail_first, bool) or not isinstance(fail_first, int) or fail_first < 0:
            raise ConfigurationError(
                f"FakeVLLMServer fail_first must be a non-negative int, got {fail_first!r}.",
                field="fail_first",
            )
        if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
            raise ConfigurationError(
                f"FakeVLLMServer block_size must be a positive int, got {block_size!r}.", field="block_size"
            )
        self.model = model
        self.fail_first = fail_first
        self.failure: Failure = failure
        self.block_size = block_size
        self._answers = answers
        self._lock = threading.Lock()
        self._turn = 0
        self._prompts: list[list[str]] = []
        self._stopping = threading.Event()
        self.requests: list[dict[str, Any]] = []
        """Every chat request body received, in order (failed attempts included)."""
        self.request_headers: list[dict[str, str]] = []
        """The headers of each request in :attr:`requests`."""
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False
        self._connections: set[socket.socket] = set()
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.02,), name="FakeVLLMServer", daemon=True
        )
        self._thread.start()
        self._stopped = False

    # -- public ---------------------------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>/v1`` (what ``ServerClient`` and ``ChatVLLM(base_url=...)`` take)."""
        return f"http://127.0.0.1:{self.port}/v1"

    def stop(self) -> None:
        """Stop serving (hanging requests give up); idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        with self._lock:  # drop kept-alive connections too, so a stopped server answers nothing
            connections, self._connections = list(self._connections), set()
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=10)

    def __enter__(self) -> FakeVLLMServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- answering ------------------------------------------------------------------------------------------------

    def _next_answer(self, body: dict[str, Any]) -> dict[str, Any]:
        if callable(self._answers):
            answer = self._answers(body)
        else:
            with self._lock:
                answer = self._answers[self._turn % len(self._answers)]
                self._turn += 1
        if isinstance(answer, str):
            return {"role": "assistant", "content": answer}
        if isinstance(answer, Mapping):
            message = {"role": "assistant", "content": None, **answer}
            calls = []
            for i, call in enumerate(message.get("tool_calls") or ()):
                fn = dict(call.get("function", {}))
                args = fn.get("arguments", "")
                fn["arguments"] = args if isinstance(args, str) else json.dumps(args)
                calls.append(
                    {"id": call.get("id") or f"chatcmpl-tool-{i}", "type": "function", "function": fn}
                )
            if calls:
                message["tool_calls"] = calls
            return message
        raise TypeError(f"FakeVLLMServer answer callable returned {answer!r}, not a str or dict")

    def _usage(self, body: dict[str, Any], message: Mapping[str, Any]) -> dict[str, Any]:
        words = _render(body.get("messages") or ())
        with self._lock:
            best = max((_common_prefix(words, p) for p in self._prompts), default=0)
            self._prompts.append(words)
        cached = (min(best, len(words) - 1) // self.block_size) * self.block_size if words else 0
        out_words = len(str(message.get("content") or "").split())
        for call in message.get("tool_calls") or ():
            out_words += len(call["function"]["arguments"].split()) + 1
        completion = max(1, out_words)
        return {
            "prompt_tokens": len(words),
            "completion_tokens": completion,
            "total_tokens": len(words) + completion,
            "prompt_tokens_details": {"cached_tokens": cached},
        }

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                return

            def setup(self) -> None:
                super().setup()
                with server._lock:
                    server._connections.add(self.connection)

            def finish(self) -> None:
                with server._lock:
                    server._connections.discard(self.connection)
                with contextlib.suppress(OSError):
                    super().finish()

            def _send_json(self, status: int, payload: Any) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _error(self, status: int, message: str, kind: str) -> None:
                self._send_json(
                    status, {"error": {"message": message, "type": kind, "param": None, "code": status}}
                )

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0].rstrip("/")
                if path == "/health":
                    self.send_response(200)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif path == "/v1/models":
                    self._send_json(
                        200,
                        {
                            "object": "list",
                            "data": [
                                {
                                    "id": server.model,
                                    "object": "model",
                                    "created": int(time.time()),
                                    "owned_by": "vllm",
                                    "root": server.model,
                                    "max_model_len": _MAX_MODEL_LEN,
                                }
                            ],
                        },
                    )
                else:
                    self._error(404, f"Not Found: {path}", "NotFoundError")

            def do_POST(self) -> None:
                path = self.path.split("?", 1)[0].rstrip("/")
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                if path != "/v1/chat/completions":
                    self._error(404, f"Not Found: {path}", "NotFoundError")
                    return
                try:
                    body = json.loads(raw or b"null")
                except ValueError:
                    body = None
                with server._lock:
                    server.requests.append(
                        body if isinstance(body, dict) else {"_raw": raw.decode(errors="replace")}
                    )
                    server.request_headers.append({k.lower(): v for k, v in self.headers.items()})
                    attempt = len(server.requests)
                failing = attempt <= server.fail_first
                if failing and server.failure != "cut":
                    self._fail(server.failure)
                    return
                if (
                    not isinstance(body, dict)
                    or not isinstance(body.get("messages"), list)
                    or not body["messages"]
                ):
                    self._error(400, "messages: a non-empty list of messages is required", "BadRequestError")
                    return
                if body.get("model") not in (None, server.model):
                    self._error(404, f"The model `{body.get('model')}` does not exist.", "NotFoundError")
                    return
                prompt_len = len(_render(body["messages"]))
                max_tokens = body.get("max_tokens") or body.get("max_completion_tokens") or 0
                if isinstance(max_tokens, int) and prompt_len + max_tokens > _MAX_MODEL_LEN:
                    self._error(
                        400,
                        f"This model's maximum context length is {_MAX_MODEL_LEN} tokens. However, you requested "
                        f"{prompt_len + max_tokens} tokens ({prompt_len} in the messages, {max_tokens} in the "
                        "completion). Please reduce the length of the messages or completion.",
                        "BadRequestError",
                    )
                    return
                message = server._next_answer(body)
                usage = server._usage(body, message)
                if body.get("stream"):
                    self._stream(body, message, usage, cut=failing)
                else:
                    self._answer(body, message, usage, cut=failing)

            def _fail(self, failure: str) -> None:
                if failure == "503":
                    self._error(503, "The server is overloaded; try again later.", "ServiceUnavailableError")
                elif failure == "garbage":
                    data = b"<html><body>502 Bad Gateway (a proxy, not vLLM)</body></html>"
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                elif failure == "close":
                    self.close_connection = True
                else:  # hang
                    server._stopping.wait(_HANG_S)
                    self.close_connection = True

            def _logprobs(self, text: str, top: int) -> dict[str, Any]:
                content = []
                for w in text.split():
                    content.append(
                        {
                            "token": w,
                            "logprob": -0.25,
                            "bytes": list(w.encode()),
                            "top_logprobs": [
                                {"token": w, "logprob": -0.25, "bytes": list(w.encode())},
                                {"token": w.upper(), "logprob": -2.5, "bytes": list(w.upper().encode())},
                            ][:top],
                        }
                    )
                return {"content": content}

            def _answer(
                self, body: dict[str, Any], message: dict[str, Any], usage: dict[str, Any], *, cut: bool
            ) -> None:
                choice: dict[str, Any] = {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": "tool_calls" if message.get("tool_calls") else "stop",
                }
                if body.get("logprobs"):
                    choice["logprobs"] = self._logprobs(
                        str(message.get("content") or ""), body.get("top_logprobs") or 0
                    )
                payload = {
                    "id": f"chatcmpl-{uuid.uuid4().hex}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": server.model,
                    "choices": [choice],
                    "usage": usage,
                }
                if not cut:
                    self._send_json(200, payload)
                    return
                data = json.dumps(payload).encode()[:40]
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _stream(
                self, body: dict[str, Any], message: dict[str, Any], usage: dict[str, Any], *, cut: bool
            ) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                cid = f"chatcmpl-{uuid.uuid4().hex}"
                created = int(time.time())
                include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

                def chunk(choices: list[dict[str, Any]], usage_: dict[str, Any] | None = None) -> None:
                    data: dict[str, Any] = {
                        "id": cid,
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": server.model,
                        "choices": choices,
                    }
                    if include_usage:
                        data["usage"] = usage_
                    self.wfile.write(b"data: " + json.dumps(data).encode() + b"\n\n")
                    self.wfile.flush()

                deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
                deltas += [{"content": p} for p in _pieces(str(message.get("content") or ""), 4)]
                for i, call in enumerate(message.get("tool_calls") or ()):
                    fn = call["function"]
                    deltas.append(
                        {
                            "tool_calls": [
                                {
                                    "index": i,
                                    "id": call["id"],
                                    "type": "function",
                                    "function": {"name": fn["name"], "arguments": ""},
                                }
                            ]
                        }
                    )
                    deltas += [
                        {"tool_calls": [{"index": i, "function": {"arguments": p}}]}
                        for p in _pieces(fn["arguments"], 3)
                    ]
                want_logprobs = bool(body.get("logprobs"))
                for n, delta in enumerate(deltas):
                    choice: dict[str, Any] = {
                        "index": 0,
                        "delta": delta,
                        "logprobs": None,
                        "finish_reason": None,
                    }
                    if want_logprobs and delta.get("content"):
                        choice["logprobs"] = self._logprobs(delta["content"], body.get("top_logprobs") or 0)
                    chunk([choice])
                    if cut and n >= 1:
                        return  # the connection drops mid-stream
                finish = "tool_calls" if message.get("tool_calls") else "stop"
                chunk([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish}])
                if include_usage:
                    chunk([], usage)
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()

        return Handler
