"""The client for ``vllm serve``'s OpenAI-compatible API: chat completions (plain and streamed), tools, vLLM's own
sampling parameters and structured outputs, cached prompt tokens, timeouts and retries.

Sync calls share one ``httpx.Client`` (thread-safe, created on first use). An ``httpx.AsyncClient`` belongs to
the event loop it runs on, so each async call (a whole batch, or one stream) opens its own and closes it: no
connection outlives its loop, whichever loop the caller runs.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import weakref
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import httpx

from frugal_chains.accounting.usage import Usage
from frugal_chains.errors import ConfigurationError, VLLMServerError
from frugal_chains.vllm._tools import (
    ForcedCallStream,
    ForcedTools,
    finish_reason_with_calls,
    forced_tools,
    parse_forced_tool_calls,
)
from frugal_chains.vllm.types import (
    ChatRequest,
    Completion,
    CompletionChunk,
    TokenLogprob,
    ToolCall,
    ToolCallDelta,
)

if TYPE_CHECKING:
    from frugal_chains.vllm.serve import ServerHealth

__all__ = ["ServerClient"]

_RETRY_STATUS = frozenset({408, 429})
_STRUCTURED_FIELD = {"json": "json", "regex": "regex", "choice": "choice", "grammar": "grammar"}


def normalize_base_url(base_url: str) -> str:
    """``base_url`` without a trailing slash, ending in ``/v1`` (added when the URL has no path)."""
    if not isinstance(base_url, str) or not base_url.strip():
        raise ConfigurationError(
            "base_url must be the server's OpenAI API address, e.g. 'http://127.0.0.1:8000/v1'.",
            field="base_url",
        )
    url = base_url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigurationError(
            f"base_url must start with http:// or https:// and name a host, got {base_url!r} "
            "(e.g. 'http://127.0.0.1:8000/v1').",
            field="base_url",
        )
    if not parts.path:
        url += "/v1"
    return url


def server_root(base_url: str) -> str:
    """The server's root (where vLLM serves ``/health``): ``base_url`` without its ``/v1``."""
    return base_url[: -len("/v1")] if base_url.endswith("/v1") else base_url


class _Retry(Exception):
    """One failed attempt that may be retried: the status to report and what went wrong."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class _Fatal(Exception):
    """A failure that is not retried (a 4xx other than 408/429, or a stream cut after its first chunk)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _error_text(response: httpx.Response) -> str:
    """The server's error message (vLLM: ``{"error": {"message": ...}}``; older: ``{"message": ...}``)."""
    try:
        data = response.json()
    except ValueError:
        return response.text[:300].strip() or response.reason_phrase
    if isinstance(data, Mapping):
        err = data.get("error", data)
        if isinstance(err, Mapping) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
        if data.get("detail"):
            return str(data["detail"])
    return json.dumps(data)[:300]


def _check_status(response: httpx.Response) -> None:
    status = response.status_code
    if status < 400:
        return
    message = _error_text(response)
    if status in _RETRY_STATUS or status >= 500:
        raise _Retry(status, f"HTTP {status}: {message}")
    raise _Fatal(status, message)


def _transport_reason(error: httpx.TransportError) -> str:
    if isinstance(error, httpx.TimeoutException):
        return f"no answer in time ({type(error).__name__})"
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def _usage(data: Any) -> Usage | None:
    if not isinstance(data, Mapping):
        return None
    prompt = int(data.get("prompt_tokens") or 0)
    details = data.get("prompt_tokens_details")
    cached = int(details.get("cached_tokens") or 0) if isinstance(details, Mapping) else 0
    completion_details = data.get("completion_tokens_details")
    reasoning = (
        int(completion_details.get("reasoning_tokens") or 0) if isinstance(completion_details, Mapping) else 0
    )
    output = int(data.get("completion_tokens") or 0)
    return Usage(
        input_tokens=prompt,
        output_tokens=output,
        cache_read_tokens=min(cached, prompt),
        reasoning_tokens=min(reasoning, output),
    )


def _logprobs(data: Any) -> tuple[TokenLogprob, ...] | None:
    if not isinstance(data, Mapping) or not isinstance(data.get("content"), list):
        return None
    out = []
    for t in data["content"]:
        top = tuple(
            (str(alt.get("token", "")), float(alt.get("logprob", 0.0)))
            for alt in t.get("top_logprobs") or ()
            if isinstance(alt, Mapping)
        )
        out.append(TokenLogprob(token=str(t.get("token", "")), logprob=float(t.get("logprob", 0.0)), top=top))
    return tuple(out)


def _parse_completion(response: httpx.Response, fallback_model: str) -> Completion:
    """An OpenAI chat completion, or :class:`_Retry` (502) when the answer is not one."""
    try:
        data = response.json()
    except ValueError:
        snippet = response.text[:120].strip().replace("\n", " ")
        raise _Retry(502, f"the answer is not JSON ({snippet!r})") from None
    try:
        choice = data["choices"][0]
        message = choice["message"]
        calls = tuple(
            ToolCall(
                id=str(c.get("id") or f"call_{i}"),
                name=str(c["function"]["name"]),
                arguments=str(c["function"].get("arguments") or ""),
            )
            for i, c in enumerate(message.get("tool_calls") or ())
        )
        return Completion(
            text=str(message.get("content") or ""),
            model=str(data.get("model") or fallback_model),
            usage=_usage(data.get("usage")) or Usage(),
            tool_calls=calls,
            finish_reason=choice.get("finish_reason"),
            logprobs=_logprobs(choice.get("logprobs")),
            request_id=data.get("id"),
        )
    except (KeyError, IndexError, TypeError, AttributeError, ConfigurationError) as e:
        snippet = json.dumps(data)[:120] if not isinstance(data, str) else data[:120]
        raise _Retry(
            502, f"the answer is not an OpenAI chat completion ({type(e).__name__}: {snippet})"
        ) from None


class _StreamParser:
    """Turns SSE ``data:`` lines into :class:`CompletionChunk` objects; the last one has ``finish_reason`` and
    ``usage`` (vLLM sends usage in a chunk of its own, after the finishing one)."""

    def __init__(self, fallback_model: str) -> None:
        self.model = fallback_model
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.done = False

    def feed(self, line: str) -> CompletionChunk | None:
        if not line.startswith("data:"):
            return None  # comments, event names, blank lines
        payload = line[len("data:") :].strip()
        if payload == "[DONE]":
            self.done = True
            return None
        try:
            data = json.loads(payload)
        except ValueError:
            raise _Retry(502, f"a stream event is not JSON ({payload[:120]!r})") from None
        if not isinstance(data, Mapping):
            raise _Retry(502, f"a stream event is not an object ({payload[:120]!r})")
        if "error" in data and not data.get("choices"):
            err = data["error"]
            message = err.get("message") if isinstance(err, Mapping) else err
            status = err.get("code") if isinstance(err, Mapping) else None
            raise _Fatal(status if isinstance(status, int) and status >= 400 else 500, str(message))
        self.model = str(data.get("model") or self.model)
        usage = _usage(data.get("usage"))
        if usage is not None:
            self.usage = usage
        text = ""
        deltas: list[ToolCallDelta] = []
        logprobs: list[TokenLogprob] = []
        for choice in data.get("choices") or ():
            delta = choice.get("delta") or {}
            text += str(delta.get("content") or "")
            for i, tc in enumerate(delta.get("tool_calls") or ()):
                fn = tc.get("function") or {}
                deltas.append(
                    ToolCallDelta(
                        index=int(tc.get("index", i)),
                        id=tc.get("id"),
                        name=fn.get("name"),
                        arguments=str(fn.get("arguments") or ""),
                    )
                )
            logprobs.extend(_logprobs(choice.get("logprobs")) or ())
            if choice.get("finish_reason"):
                self.finish_reason = str(choice["finish_reason"])
        if not text and not deltas and not logprobs:
            return None
        return CompletionChunk(
            text=text,
            model=self.model,
            tool_calls=tuple(deltas),
            logprobs=tuple(logprobs) if logprobs else None,
        )

    def last(self) -> CompletionChunk:
        if not self.done and self.finish_reason is None:
            raise _Retry(502, "the stream ended before its last event")
        return CompletionChunk(model=self.model, finish_reason=self.finish_reason, usage=self.usage)


def _forced_completion(forced: ForcedTools | None, completion: Completion) -> Completion:
    """A forced call's answer: the JSON the server decoded, turned into tool calls (see ``_tools``). Text that
    is not valid JSON (cut short by ``max_tokens``) stays plain text; calls the server parsed itself are kept."""
    if forced is None:
        return completion
    calls = completion.tool_calls or parse_forced_tool_calls(forced, completion.text)
    if not calls:
        return completion
    return replace(
        completion,
        text="" if not completion.tool_calls else completion.text,
        tool_calls=calls,
        finish_reason=finish_reason_with_calls(completion.finish_reason, True),
    )


class _ForcedChunks:
    """Reshapes a forced call's stream: its text becomes tool-call pieces (a named call's arguments as they come,
    a ``"required"`` answer's calls whole at the end). Chunks without a forced call pass through unchanged."""

    def __init__(self, forced: ForcedTools | None) -> None:
        self._calls = ForcedCallStream(forced) if forced is not None else None
        self._server_calls = False

    def shape(self, chunk: CompletionChunk) -> CompletionChunk | None:
        if self._calls is None:
            return chunk
        if chunk.tool_calls:  # the server parsed calls itself: hand them on as they are
            self._server_calls = True
            return chunk
        pieces = self._calls.feed(chunk.text)
        if not pieces and not chunk.logprobs:
            return None
        return CompletionChunk(model=chunk.model, tool_calls=pieces, logprobs=chunk.logprobs)

    def last(self, chunk: CompletionChunk) -> CompletionChunk:
        if self._calls is None:
            return chunk
        if self._server_calls:
            return replace(chunk, finish_reason=finish_reason_with_calls(chunk.finish_reason, True))
        text, deltas, has_call = self._calls.finish()
        return replace(
            chunk,
            text=text,
            tool_calls=deltas,
            finish_reason=finish_reason_with_calls(chunk.finish_reason, has_call),
        )


class ServerClient:
    """A client for a running ``vllm serve`` (its OpenAI-compatible API); implements
    :class:`~frugal_chains.vllm.VLLMClient`.

    Requests go to ``POST {base_url}/chat/completions``: the messages (the server renders them with the model's
    chat template), tools and ``tool_choice`` (a forced call, ``"required"`` or a named function, goes as guided
    decoding over the tools' schema and needs no tool-call parser on the server: see
    :meth:`request_body`), :class:`~frugal_chains.vllm.SamplingOptions` (vLLM-only ones such as
    ``top_k`` and ``repetition_penalty``, and ``extra``, at the top level of the body: what the OpenAI SDK's
    ``extra_body`` does), structured output in vLLM's ``structured_outputs`` field, and logprobs. Streams ask for
    usage (``stream_options.include_usage``); the last chunk carries it. Cached prompt tokens come from
    ``usage.prompt_tokens_details.cached_tokens`` (the server reports them with ``--enable-prompt-tokens-details``;
    0 otherwise). ``model`` defaults to the first model of ``GET /v1/models``, looked up once on first use.

    Connection errors, timeouts, 408, 429, 5xx and answers that are not chat completions are retried
    ``max_retries`` times with exponential back-off (``retry_backoff_s``, doubled each time), then raise
    :class:`~frugal_chains.errors.VLLMServerError` (503: unreachable, 502: unreadable, else the server's status),
    which a cascade escalates past. Other 4xx raise at once with the server's message. A stream is retried only
    if it fails before its first chunk; after that it raises, so no text is ever repeated. ``generate`` sends a
    batch concurrently (at most ``max_concurrency`` at a time) and the server batches them.

    Example:
        >>> from frugal_chains.testing import FakeVLLMServer
        >>> from frugal_chains.vllm import ChatRequest, SamplingOptions, ServerClient
        >>> with FakeVLLMServer(["Paris."], model="smollm2") as server:  # in your app: vllm serve on :8000
        ...     client = ServerClient(server.base_url)
        ...     request = ChatRequest(messages=[{"role": "user", "content": "Capital of France?"}],
        ...                           options=SamplingOptions(max_tokens=16, top_k=20))
        ...     answer = client.generate([request])[0]
        ...     client.close()
        >>> answer.text, answer.model, answer.usage.input_tokens
        ('Paris.', 'smollm2', 4)
        >>> server.requests[0]["top_k"]
        20
    """

    mode: Literal["server"] = "server"

    def __init__(
        self,
        base_url: str,
        *,
        model: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 2,
        retry_backoff_s: float = 0.5,
        headers: Mapping[str, str] | None = None,
        max_concurrency: int = 32,
    ) -> None:
        self.base_url = normalize_base_url(base_url)
        if model is not None and (not isinstance(model, str) or not model):
            raise ConfigurationError(
                f"model must be the served model name (or None to ask the server), got {model!r}.",
                field="model",
            )
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise ConfigurationError(
                f"timeout must be a positive number of seconds, got {timeout!r}.", field="timeout"
            )
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ConfigurationError(
                f"max_retries must be a non-negative int, got {max_retries!r}.", field="max_retries"
            )
        if (
            isinstance(retry_backoff_s, bool)
            or not isinstance(retry_backoff_s, int | float)
            or retry_backoff_s < 0
        ):
            raise ConfigurationError(
                f"retry_backoff_s must be a non-negative number of seconds, got {retry_backoff_s!r}.",
                field="retry_backoff_s",
            )
        if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int) or max_concurrency < 1:
            raise ConfigurationError(
                f"max_concurrency must be a positive int, got {max_concurrency!r}.", field="max_concurrency"
            )
        self.api_key = api_key
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.retry_backoff_s = float(retry_backoff_s)
        self.max_concurrency = max_concurrency
        self._headers = {"Accept": "application/json", **dict(headers or {})}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._model = model
        self._lock = threading.Lock()  # guards the pooled sync client
        self._model_lock = threading.Lock()  # one model lookup at a time
        self._client: httpx.Client | None = None

    def __repr__(self) -> str:
        return f"ServerClient({self.base_url!r}, model={self._model!r})"

    # -- the model ------------------------------------------------------------------------------------------------

    @property
    def model(self) -> str:
        """The served model name: the one given, else the first of ``GET /v1/models`` (asked once)."""
        if self._model is None:
            with self._model_lock:
                if self._model is None:
                    self._model = self._with_retries("/models", self._discover_once)
        return self._model

    async def _amodel(self) -> str:
        if self._model is None:
            async with self._async_client() as client:
                found = await self._awith_retries("/models", lambda: self._adiscover_once(client))
            with self._model_lock:
                if self._model is None:
                    self._model = found
        return self._model

    def _models_from(self, response: httpx.Response) -> str:
        _check_status(response)
        try:
            ids = [str(m["id"]) for m in response.json()["data"]]
        except (ValueError, KeyError, TypeError):
            raise _Retry(502, f"GET /v1/models did not list models ({response.text[:120]!r})") from None
        if not ids:
            raise _Fatal(404, "the server serves no model (GET /v1/models is empty)")
        return ids[0]

    def _discover_once(self) -> str:
        return self._models_from(self._sync_client().get(self.base_url + "/models"))

    async def _adiscover_once(self, client: httpx.AsyncClient) -> str:
        return self._models_from(await client.get(self.base_url + "/models"))

    # -- HTTP plumbing --------------------------------------------------------------------------------------------

    def _timeout(self) -> httpx.Timeout:
        return httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0))

    def _sync_client(self) -> httpx.Client:
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    limits = httpx.Limits(
                        max_connections=self.max_concurrency, max_keepalive_connections=self.max_concurrency
                    )
                    self._client = httpx.Client(headers=self._headers, timeout=self._timeout(), limits=limits)
                    # A client dropped without close() (a ChatVLLM that goes out of scope) closes its pooled
                    # connections when it is collected, instead of leaving their sockets to the garbage collector.
                    weakref.finalize(self, self._client.close)
                client = self._client
        return client

    def _async_client(self) -> httpx.AsyncClient:
        limits = httpx.Limits(
            max_connections=self.max_concurrency, max_keepalive_connections=self.max_concurrency
        )
        return httpx.AsyncClient(headers=self._headers, timeout=self._timeout(), limits=limits)

    def _backoff(self, attempt: int) -> float:
        return float(self.retry_backoff_s * (2 ** (attempt - 1)))

    def _error(self, path: str, status: int, reason: str, attempts: int, *, fatal: bool) -> VLLMServerError:
        url = self.base_url + path
        if fatal:
            return VLLMServerError(
                f"vLLM server at {url} refused the request (HTTP {status}): {reason}",
                url=url,
                status_code=status,
                attempts=attempts,
            )
        if status == 503 and not reason.startswith("HTTP"):
            check = (
                f"check that `vllm serve` is running and reachable there (`frugal-chains vllm health "
                f"{self.base_url}`), that base_url ends in /v1, and raise timeout= if answers are slow"
            )
        elif status == 502:
            check = "check that base_url points at `vllm serve` (not a proxy or another service) and the server's log"
        else:
            check = "check the server's log; it may be overloaded or restarting"
        return VLLMServerError(
            f"vLLM server at {url} gave no answer after {attempts} attempt{'s' if attempts != 1 else ''}: "
            f"{reason.rstrip('.')}. {check[0].upper()}{check[1:]}.",
            url=url,
            status_code=status,
            attempts=attempts,
        )

    def _with_retries(self, path: str, call: Any) -> Any:
        last: _Retry | None = None
        for attempt in range(1, self.max_retries + 2):
            if attempt > 1:
                time.sleep(self._backoff(attempt - 1))
            try:
                return call()
            except _Fatal as e:
                raise self._error(path, e.status, e.reason, attempt, fatal=True) from None
            except _Retry as e:
                last = e
            except httpx.TransportError as e:
                last = _Retry(503, _transport_reason(e))
        assert last is not None
        raise self._error(path, last.status, last.reason, self.max_retries + 1, fatal=False)

    async def _awith_retries(self, path: str, call: Any) -> Any:
        last: _Retry | None = None
        for attempt in range(1, self.max_retries + 2):
            if attempt > 1:
                await asyncio.sleep(self._backoff(attempt - 1))
            try:
                return await call()
            except _Fatal as e:
                raise self._error(path, e.status, e.reason, attempt, fatal=True) from None
            except _Retry as e:
                last = e
            except httpx.TransportError as e:
                last = _Retry(503, _transport_reason(e))
        assert last is not None
        raise self._error(path, last.status, last.reason, self.max_retries + 1, fatal=False)

    # -- requests -------------------------------------------------------------------------------------------------

    def request_body(self, request: ChatRequest, *, model: str, stream: bool = False) -> dict[str, Any]:
        """The JSON body sent for ``request`` (vLLM-only parameters at the top level, as ``extra_body`` does).

        A forced tool call (``tool_choice`` ``"required"`` or a named function) is sent as guided decoding
        against the tools' JSON schema (``structured_outputs.json``) with ``tool_choice="none"``, so it needs no
        tool-call parser on the server and works for any model; the answer's JSON is turned into tool calls by
        this client. (``"none"`` rather than no ``tool_choice``: the server reads a missing one as ``"auto"``,
        which it refuses without ``--enable-auto-tool-choice``.) The tools stay in the body, so the chat
        template still shows them to the model. ``"auto"`` and ``"none"`` go to the server as they are."""
        forced = forced_tools(request)
        body: dict[str, Any] = {"model": model, "messages": [dict(m) for m in request.messages]}
        body.update(request.options.to_openai())
        if request.tools:
            body["tools"] = [dict(t) for t in request.tools]
        if forced is not None:
            body["tool_choice"] = "none"
            body["structured_outputs"] = {"json": forced.schema}
        else:
            if request.tool_choice is not None:
                body["tool_choice"] = request.tool_choice
            if request.structured is not None:
                body["structured_outputs"] = {
                    _STRUCTURED_FIELD[request.structured.kind]: request.structured.value
                }
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body

    def _post_once(self, body: dict[str, Any], model: str) -> Completion:
        response = self._sync_client().post(self.base_url + "/chat/completions", json=body)
        _check_status(response)
        return _parse_completion(response, model)

    async def _apost_once(self, client: httpx.AsyncClient, body: dict[str, Any], model: str) -> Completion:
        response = await client.post(self.base_url + "/chat/completions", json=body)
        _check_status(response)
        return _parse_completion(response, model)

    def _one(self, request: ChatRequest) -> Completion:
        model = self.model
        body = self.request_body(request, model=model)
        result: Completion = self._with_retries("/chat/completions", lambda: self._post_once(body, model))
        return _forced_completion(forced_tools(request), result)

    def generate(self, requests: Sequence[ChatRequest]) -> list[Completion]:
        """One answer per request, in order; a batch is sent concurrently (the server batches them)."""
        requests = list(requests)
        if not requests:
            return []
        if len(requests) == 1:
            return [self._one(requests[0])]
        self.model  # noqa: B018  (look the model up once, before the threads start)
        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(requests))) as pool:
            return list(pool.map(self._one, requests))

    async def agenerate(self, requests: Sequence[ChatRequest]) -> list[Completion]:
        """:meth:`generate` without blocking the event loop (the requests run as concurrent tasks)."""
        requests = list(requests)
        if not requests:
            return []
        model = await self._amodel()
        limit = asyncio.Semaphore(self.max_concurrency)
        async with self._async_client() as client:

            async def one(request: ChatRequest) -> Completion:
                body = self.request_body(request, model=model)
                async with limit:
                    result: Completion = await self._awith_retries(
                        "/chat/completions", lambda: self._apost_once(client, body, model)
                    )
                return _forced_completion(forced_tools(request), result)

            return list(await asyncio.gather(*(one(r) for r in requests)))

    def stream(self, request: ChatRequest) -> Iterator[CompletionChunk]:
        """The answer in pieces as the server sends them; the last chunk has ``finish_reason`` and ``usage``."""
        model = self.model
        body = self.request_body(request, model=model, stream=True)
        forced = forced_tools(request)
        path = "/chat/completions"
        last: _Retry | None = None
        for attempt in range(1, self.max_retries + 2):
            if attempt > 1:
                time.sleep(self._backoff(attempt - 1))
            yielded = False
            try:
                with self._sync_client().stream("POST", self.base_url + path, json=body) as response:
                    if response.status_code >= 400:
                        response.read()
                        _check_status(response)
                    parser, shaper = _StreamParser(model), _ForcedChunks(forced)
                    for line in response.iter_lines():
                        chunk = parser.feed(line)
                        if chunk is not None:
                            chunk = shaper.shape(chunk)
                        if chunk is not None:
                            yielded = True
                            yield chunk
                        if parser.done:
                            break
                    yield shaper.last(parser.last())
                    return
            except _Fatal as e:
                raise self._error(path, e.status, e.reason, attempt, fatal=True) from None
            except (_Retry, httpx.TransportError) as e:
                failure = e if isinstance(e, _Retry) else _Retry(503, _transport_reason(e))
                if yielded:
                    raise self._cut(path, failure, attempt) from None
                last = failure
        assert last is not None
        raise self._error(path, last.status, last.reason, self.max_retries + 1, fatal=False)

    def _cut(self, path: str, failure: _Retry, attempt: int) -> VLLMServerError:
        url = self.base_url + path
        return VLLMServerError(
            f"vLLM server at {url} broke off a streamed answer after its first chunks ({failure.reason}); not "
            f"retried, so no text is repeated (attempt {attempt}). Check the server's log.",
            url=url,
            status_code=502 if failure.status == 502 else 503,
            attempts=attempt,
        )

    async def astream(self, request: ChatRequest) -> AsyncIterator[CompletionChunk]:
        """:meth:`stream` without blocking the event loop."""
        model = await self._amodel()
        body = self.request_body(request, model=model, stream=True)
        forced = forced_tools(request)
        path = "/chat/completions"
        last: _Retry | None = None
        async with self._async_client() as client:
            for attempt in range(1, self.max_retries + 2):
                if attempt > 1:
                    await asyncio.sleep(self._backoff(attempt - 1))
                yielded = False
                try:
                    async with client.stream("POST", self.base_url + path, json=body) as response:
                        if response.status_code >= 400:
                            await response.aread()
                            _check_status(response)
                        parser, shaper = _StreamParser(model), _ForcedChunks(forced)
                        async for line in response.aiter_lines():
                            chunk = parser.feed(line)
                            if chunk is not None:
                                chunk = shaper.shape(chunk)
                            if chunk is not None:
                                yielded = True
                                yield chunk
                            if parser.done:
                                break
                        yield shaper.last(parser.last())
                        return
                except _Fatal as e:
                    raise self._error(path, e.status, e.reason, attempt, fatal=True) from None
                except (_Retry, httpx.TransportError) as e:
                    failure = e if isinstance(e, _Retry) else _Retry(503, _transport_reason(e))
                    if yielded:
                        raise self._cut(path, failure, attempt) from None
                    last = failure
        assert last is not None
        raise self._error(path, last.status, last.reason, self.max_retries + 1, fatal=False)

    # -- the rest -------------------------------------------------------------------------------------------------

    def health(self) -> ServerHealth:
        """The server's health and models (never raises for a down server: ``ok`` is False)."""
        from frugal_chains.vllm.serve import check_health

        return check_health(self.base_url, timeout=min(self.timeout, 5.0), api_key=self.api_key)

    def close(self) -> None:
        """Close the pooled connections (the client opens new ones if used again)."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def __enter__(self) -> ServerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
